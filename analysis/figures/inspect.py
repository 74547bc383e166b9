"""Figures of the Inspect tab: an input's coefficients on every component, beside those of the example it
started from."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from analysis.figures.style import paper_layout

COLOURS = ("#C44E52", "#B0B0B0")  # the inspected input, then the example it started from


def coefficients_figure(series: Mapping[str, np.ndarray], names: Sequence[str]) -> go.Figure:
    """Grouped bars of coefficient vectors [r], one group per component (ticks 'k' or 'k · name' [r])."""
    fig = go.Figure()
    ticks = [str(t) for t in names]
    for (label, values), colour in zip(series.items(), COLOURS):
        fig.add_trace(go.Bar(x=ticks, y=np.asarray(values, dtype=float), name=label, marker_color=colour,
                             hovertemplate="component %{x}: %{y:.4g}<extra>" + label + "</extra>"))
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.12, x=0))
    fig.update_xaxes(type="category")
    return paper_layout(fig, height=320, xaxis_title="component", yaxis_title="coefficient")
