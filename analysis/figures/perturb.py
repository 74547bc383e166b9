"""Figures for component perturbations: KL against magnitude, KL ratios across components, and the
probability of the original prediction for flipped examples."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures.style import paper_layout
from analysis.perturb.evaluation import PerturbationResult

TOP_COLOR, BASELINE_COLOR, RATIO_COLOR = "#C44E52", "#4C72B0", "#555"
BEFORE_COLOR, AFTER_COLOR = "#8C8C8C", "#C44E52"
LOG_FLOOR = 1e-12  # KL values are drawn at least this high on log axes


def kl_sweep_figure(results: Sequence[PerturbationResult], *, title: str | None = None) -> go.Figure:
    """Mean KL on the top and baseline examples against magnitude (log-log), KL ratio on a secondary axis."""
    if not results:
        raise ValueError("results must hold at least one PerturbationResult, got none")
    ordered = sorted(results, key=lambda r: r.magnitude)
    x = [r.magnitude for r in ordered]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for name, values, color in (("top examples", [r.kl_top for r in ordered], TOP_COLOR),
                                ("baseline", [r.kl_baseline for r in ordered], BASELINE_COLOR)):
        fig.add_trace(go.Scatter(x=x, y=np.maximum(values, LOG_FLOOR), name=name, mode="lines+markers",
                                 line=dict(color=color)), secondary_y=False)
    ratios = [r.kl_ratio if np.isfinite(r.kl_ratio) else None for r in ordered]  # inf/NaN leave a gap
    fig.add_trace(go.Scatter(x=x, y=ratios, name="KL ratio (top / baseline)",
                             mode="lines+markers", line=dict(color=RATIO_COLOR, dash="dash")), secondary_y=True)
    is_d, k = ordered[0].delta is not None, ordered[0].component
    x_title = "δ (sign step of the merge)" if is_d else "magnitude ε = ‖θ' − θ₀‖₂"
    fig.update_xaxes(type="log", title_text=x_title)
    fig.update_yaxes(type="log", title_text="mean KL(p_perturbed ‖ p_original)", secondary_y=False)
    fig.update_yaxes(type="log", title_text="KL ratio", secondary_y=True)
    fig.update_layout(legend=dict(orientation="h", y=1.12, x=0))
    return paper_layout(fig, title=title or f"Component {k}: perturbation sweep", height=360)


def kl_ratio_histogram(table: pd.DataFrame, *, n_bins: int = 30,
                       title: str = "KL ratio across components") -> go.Figure:
    """Histogram of the per-component KL ratios of perturb_all on a log axis (bins even in log10)."""
    ratios = table["kl_ratio"].to_numpy(dtype=float)
    shown = ratios[np.isfinite(ratios) & (ratios > 0)]
    if len(shown) == 0:
        raise ValueError("table has no finite positive kl_ratio to draw; every baseline KL was 0 or NaN")
    logs = np.log10(shown)
    low, high = np.floor(logs.min()), np.ceil(logs.max())
    high = max(high, low + 1)
    fig = go.Figure(go.Histogram(x=logs, xbins=dict(start=low, end=high, size=(high - low) / n_bins),
                                 marker_color=TOP_COLOR, hovertemplate="10^%{x}: %{y} components<extra></extra>"))
    ticks = np.arange(low, high + 1)
    fig.update_xaxes(tickvals=ticks, ticktext=[f"{10.0 ** t:g}" for t in ticks])
    if low <= 0 <= high:
        fig.add_vline(x=0, line_dash="dot", line_color="#888", annotation_text="ratio 1")
    hidden = len(ratios) - len(shown)
    note = f" ({hidden} not drawn: infinite or undefined)" if hidden else ""
    return paper_layout(fig, title=title + note, xaxis_title="KL ratio (top / baseline), log scale",
                        yaxis_title="components", height=320)


def flipped_probability_figure(result: PerturbationResult, *, label_names: Sequence[str] | None = None,
                               max_examples: int = 30) -> go.Figure:
    """For the examples whose prediction flipped: probability of the original prediction before and after."""
    flipped = result.examples[result.examples["flipped"]].head(max_examples)
    fig = go.Figure()
    if flipped.empty:
        fig.add_annotation(text="no prediction flipped", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return paper_layout(fig, title=f"Component {result.component}: flipped predictions", height=260)

    def name(c: int) -> str:
        return label_names[c] if label_names is not None else str(c)

    x = [f"#{i} ({s})" for i, s in zip(flipped["index"], flipped["set"])]
    hover = [f"{name(a)} → {name(b)}" for a, b in zip(flipped["original_prediction"], flipped["new_prediction"])]
    fig.add_trace(go.Bar(x=x, y=flipped["p_original_before"], name="before", marker_color=BEFORE_COLOR,
                         hovertext=hover))
    fig.add_trace(go.Bar(x=x, y=flipped["p_original_after"], name="after", marker_color=AFTER_COLOR,
                         hovertext=hover))
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.12, x=0))
    fig.update_yaxes(range=[0, 1])
    return paper_layout(fig, title=f"Component {result.component}: flipped predictions",
                        xaxis_title="example (set)", yaxis_title="p(original prediction)", height=320)
