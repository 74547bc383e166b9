"""Figures for the Load page: label balance and image grids."""
from __future__ import annotations

import numpy as np
import plotly.express as px
import plotly.graph_objects as go

from analysis.figures.style import paper_layout


def label_counts(labels: np.ndarray, label_names: list[str], title: str = "Examples per class") -> go.Figure:
    """Bar chart of how many examples carry each label (unknown labels as '(none)')."""
    names = [label_names[i] if i >= 0 else "(none)" for i in labels]
    order = [n for n in [*label_names, "(none)"] if n in set(names)]
    counts = [names.count(n) for n in order]
    fig = go.Figure(go.Bar(x=order, y=counts, marker_color="#4C72B0"))
    return paper_layout(fig, title=title, xaxis_title="label", yaxis_title="examples", height=280)


def image_grid(images: np.ndarray, captions: list[str], n_cols: int = 8) -> go.Figure:
    """Grey images [k, H, W] in a grid with one caption each."""
    fig = px.imshow(images, facet_col=0, facet_col_wrap=n_cols, color_continuous_scale="gray_r",
                    binary_string=False, facet_row_spacing=0.08, facet_col_spacing=0.01)
    for annotation, caption in zip(fig.layout.annotations, captions):
        annotation.text = caption
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    fig.update_layout(coloraxis_showscale=False)
    rows = int(np.ceil(len(images) / n_cols))
    return paper_layout(fig, height=110 * rows + 40)
