"""Figures for component perturbations: KL against magnitude, KL ratios across components, and the
probability of the original prediction for flipped examples."""
from __future__ import annotations

import math
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
MAX_DECADE_TICKS = 8  # a log axis spanning more decades labels every second (third, ...) decade
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def tick_label(value: float) -> str:
    """A log-axis label: plain for 0.001 <= value < 10⁴ ('0.02', '500'), else '2×10⁻⁵' (no SI prefixes)."""
    if 1e-3 <= value < 1e4:
        return f"{value:g}"
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = round(value / 10.0 ** exponent, 6)
    power = "10" + str(exponent).translate(SUPERSCRIPT)
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


def log_ticks(values: Sequence[float]) -> list[float]:
    """Tick values 1, 2, 5 × 10^k (only powers of ten beyond 3 decades) from the last one at or below the
    smallest finite positive value to the first one at or above the largest: both ends are labelled."""
    shown = np.asarray([v for v in values if v is not None and np.isfinite(v) and v > 0], dtype=float)
    if len(shown) == 0:
        return []
    low, high = math.log10(shown.min()), math.log10(shown.max())
    span = high - low
    step = max(1, math.ceil(span / MAX_DECADE_TICKS))
    mantissas = (1, 2, 5) if span <= 3 else (1,)
    decades = range(math.floor(low) - step, math.ceil(high) + step + 1)
    ladder = sorted(m * 10.0 ** k for k in decades if k % step == 0 for m in mantissas)  # [L] increasing
    first = max(i for i, v in enumerate(ladder) if math.log10(v) <= low + 1e-9)
    last = min(i for i, v in enumerate(ladder) if math.log10(v) >= high - 1e-9)
    return ladder[min(first, last - 1):max(last, first + 1) + 1]


def log_axis(values: Sequence[float], *, pad: float = 0.04) -> dict:
    """A log axis labelled at log_ticks(values), its range from the first tick to the last (padded by `pad`
    decades so end markers are not cut); {} when no value is finite and positive."""
    ticks = log_ticks(values)
    if not ticks:
        return {"type": "log", "exponentformat": "power"}
    return {"type": "log", "tickvals": ticks, "ticktext": [tick_label(t) for t in ticks],
            "range": [math.log10(ticks[0]) - pad, math.log10(ticks[-1]) + pad]}


def _legend_under_title(fig: go.Figure) -> go.Figure:
    """The title on the first line of the top margin and the horizontal legend on the second, so the legend
    never covers the title."""
    return fig.update_layout(title=dict(y=0.98, yanchor="top", yref="container"), margin=dict(t=80),
                             legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom"))


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
    kl = [max(v, LOG_FLOOR) for r in ordered for v in (r.kl_top, r.kl_baseline) if not np.isnan(v)]
    fig.update_xaxes(title_text=x_title, **log_axis(x))
    fig.update_yaxes(title_text="mean KL(p_perturbed ‖ p_original)", secondary_y=False, **log_axis(kl))
    fig.update_yaxes(title_text="KL ratio", secondary_y=True, showgrid=False, **log_axis(ratios))
    paper_layout(fig, title=title or f"Component {k}: perturbation sweep", height=390)
    return _legend_under_title(fig)


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
                                 marker_color=TOP_COLOR, hovertemplate="10^%{x:.2f}: %{y} components<extra></extra>"))
    ticks = log_ticks(shown)  # the bars sit on log10(ratio): ticks at log10 of round ratios, labelled by ratio
    fig.update_xaxes(tickvals=np.log10(ticks), ticktext=[tick_label(t) for t in ticks],
                     range=[math.log10(ticks[0]), math.log10(ticks[-1])])
    if math.log10(ticks[0]) <= 0 <= math.log10(ticks[-1]):
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
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1])
    paper_layout(fig, title=f"Component {result.component}: flipped predictions",
                 xaxis_title="example (set)", yaxis_title="p(original prediction)", height=350)
    return _legend_under_title(fig)
