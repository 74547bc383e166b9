"""Figures for NPEFF runs: loss curves."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from analysis.figures.style import paper_layout

WARM_UP_FILL = "rgba(136, 136, 136, 0.12)"


def loss_curve(losses: Sequence[float], *, iterations: Sequence[int] | None = None, n_iters_g_only: int = 0,
               total: int | None = None, title: str = "NPEFF loss") -> go.Figure:
    """True loss against the iteration it was logged at (log scale), with the G-only warm-up shaded and named.

    iterations: the iteration of each loss (what the progress callback reports with it); default 0, 1, ...,
    which is right for a stored Decomposition.losses (losses[t] = loss after t updates). total: the run's
    iteration count, so that a live curve's axis spans the whole run.
    """
    losses = np.asarray(losses, dtype=float)
    x = np.arange(len(losses)) if iterations is None else np.asarray(iterations, dtype=int)
    if x.shape != losses.shape:
        raise ValueError(f"iterations must hold one iteration per loss ({len(losses)}), got {len(x)}")
    end = total if total is not None else (int(x.max()) if len(x) else 0)
    fig = go.Figure(go.Scatter(x=x, y=losses, mode="lines+markers" if len(x) < 2 else "lines",
                               line=dict(color="#4C72B0"),
                               hovertemplate="iteration %{x}<br>loss %{y:.4g}<extra></extra>"))
    if n_iters_g_only > 0 and end > 0:
        fig.add_vrect(x0=0, x1=min(n_iters_g_only, end), fillcolor=WARM_UP_FILL, line_width=0, layer="below",
                      annotation_text="G-only warm-up", annotation_position="top left")
        if n_iters_g_only < end:
            fig.add_vline(x=n_iters_g_only, line_dash="dot", line_color="#888",
                          annotation_text="joint updates start", annotation_position="bottom right")
    fig.update_yaxes(type="log" if len(losses) and losses.min() > 0 else "linear")
    if total is not None:
        fig.update_xaxes(range=[0, total])
    return paper_layout(fig, title=title, xaxis_title="iteration", yaxis_title="loss", height=300)
