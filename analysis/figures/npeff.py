"""Figures for NPEFF runs: loss curves."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from analysis.figures.style import paper_layout


def loss_curve(losses: np.ndarray, *, n_iters_g_only: int = 0, title: str = "NPEFF loss") -> go.Figure:
    """True loss per logged step (log scale), with the end of the G-only warm-up marked."""
    losses = np.asarray(losses, dtype=float)
    fig = go.Figure(go.Scatter(x=np.arange(len(losses)), y=losses, mode="lines", line=dict(color="#4C72B0")))
    if 0 < n_iters_g_only < len(losses):
        fig.add_vline(x=n_iters_g_only, line_dash="dot", line_color="#888",
                      annotation_text="joint updates start", annotation_position="top right")
    fig.update_yaxes(type="log" if len(losses) and losses.min() > 0 else "linear")
    return paper_layout(fig, title=title, xaxis_title="iteration", yaxis_title="loss", height=300)
