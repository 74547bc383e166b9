"""One clean paper style for every figure: white background, readable fonts, no UI chrome."""
from __future__ import annotations

import plotly.graph_objects as go

FONT = dict(family="Helvetica, Arial, sans-serif", size=13, color="#222")


def paper_layout(fig: go.Figure, *, title: str | None = None, height: int | None = None,
                 **axes: str) -> go.Figure:
    """Apply the house style; `axes` may hold xaxis_title / yaxis_title."""
    fig.update_layout(template="simple_white", font=FONT, margin=dict(l=50, r=20, t=40 if title else 15, b=45),
                      title=dict(text=title, x=0.01, font=dict(size=15)) if title else None, **axes)
    if height:
        fig.update_layout(height=height)
    return fig
