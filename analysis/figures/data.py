"""Figures for the Load page: label balance (image grids: analysis.figures.components.example_grid)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from analysis.figures.style import paper_layout


def label_counts(labels: np.ndarray, label_names: list[str], title: str = "Examples per class") -> go.Figure:
    """Bar chart of how many examples carry each label (unknown labels as '(none)')."""
    names = [label_names[i] if i >= 0 else "(none)" for i in labels]
    order = [n for n in [*label_names, "(none)"] if n in set(names)]
    counts = [names.count(n) for n in order]
    fig = go.Figure(go.Bar(x=order, y=counts, marker_color="#4C72B0"))
    return paper_layout(fig, title=title, xaxis_title="label", yaxis_title="examples", height=280)
