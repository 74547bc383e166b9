"""Figures of the Compare page: the score matrix of two decompositions in matched order, and the stability of
each component of a reference run. Plain functions returning go.Figure."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from analysis.compare import Matching
from analysis.figures.style import paper_layout

BLUE, GREY = "#4C72B0", "#B0B0B0"
MAX_CELL_TEXT = 20  # write the scores into the cells up to this many components a side


def matched_heatmap(matching: Matching, scores: np.ndarray, *, name_a: str, name_b: str, score_name: str,
                    labels_a: Sequence[str] | None = None) -> go.Figure:
    """scores [r_a, r_b] (one of the matching's matrices) with rows and columns in matched order: each matched
    pair on the diagonal, the unmatched components last. labels_a: a's tick labels (names), default the numbers."""
    rows, cols = matching.matched_order()
    z = np.asarray(scores, dtype=float)[np.ix_(rows, cols)]  # [r_a, r_b]
    ticks_a = [str(k) if labels_a is None else labels_a[k] for k in rows]
    x = [f"{name_b} {k}" for k in cols]
    y = [f"{name_a} {t}" for t in ticks_a]
    small = max(z.shape) <= MAX_CELL_TEXT
    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, zmin=0, zmax=1, colorscale="Blues", colorbar=dict(title=score_name),
                               texttemplate="%{z:.2f}" if small else None,
                               hovertemplate=f"{name_a} %{{y}}<br>{name_b} %{{x}}<br>{score_name} %{{z:.3f}}"
                                             "<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-45)
    side = 28 * max(z.shape) + 160
    return paper_layout(fig, title=f"{score_name}: {name_a} vs {name_b}, matched pairs on the diagonal",
                        xaxis_title=f"components of {name_b} (matched order)", height=min(max(side, 320), 900))


def stability_figure(mean: np.ndarray, low: np.ndarray, *, score_name: str, n_others: int) -> go.Figure:
    """Each reference component's stability (mean matched score over the other runs, bars) and its worst
    match (markers)."""
    k = [str(i) for i in range(len(mean))]
    fig = go.Figure([go.Bar(x=k, y=mean, marker_color=BLUE, name="mean"),
                     go.Scatter(x=k, y=low, mode="markers", marker=dict(color="#222", symbol="line-ew-open", size=14),
                                name="min")])
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(type="category")
    fig.update_layout(legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return paper_layout(fig, title=f"Stability over {n_others} other run(s)", xaxis_title="reference component",
                        yaxis_title=f"matched {score_name}", height=300)
