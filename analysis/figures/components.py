"""Figures of the component browser: coefficient histogram, label breakdown, similar components, module
profiles, example map, image grids and input attributions. Plain functions returning go.Figure."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis.figures.style import house_layout, paper_layout

BLUE, GREY, RED = "#4C72B0", "#B0B0B0", "#C44E52"
PALETTE = qualitative.D3 + qualitative.Pastel
ATTRIBUTION_SCALE = "RdBu"
MAX_CATEGORIES = 20  # colour at most this many categories; the rest are "other"
# the example map coloured by correctness: each colour named in the legend, wrong predictions stand out
CORRECTNESS_COLORS = {"no gold label": GREY, "correct": BLUE, "wrong": RED}  # drawn in this order: wrong on top


def coefficient_histogram(column: np.ndarray, *, k: int, threshold: float | None = None,
                          n_bins: int = 50) -> go.Figure:
    """Histogram of component k's coefficients over all examples (log counts), notable threshold marked."""
    column = np.asarray(column, dtype=float)
    marks = {}
    if threshold is not None and threshold > 0:
        marks = dict(shapes=[dict(type="line", x0=threshold, x1=threshold, xref="x", y0=0, y1=1, yref="y domain",
                                  line=dict(dash="dot", color="#222", width=2))],
                     annotations=[dict(text="notable", x=threshold, xref="x", y=1, yref="y domain",
                                       xanchor="left", yanchor="top", showarrow=False)])
    return go.Figure(go.Histogram(x=column, nbinsx=n_bins, marker_color=BLUE, name="examples"), house_layout(
        title=f"Coefficients of component {k}", height=300, xaxis=dict(title=dict(text="coefficient W[:, k]")),
        yaxis=dict(type="log", dtick=1, title=dict(text="examples")), **marks))


def label_breakdown_figure(frame: pd.DataFrame, *, k: int, n_top: int) -> go.Figure:
    """Gold-label and prediction fractions of the top examples vs all examples (components.breakdown), side by
    side on a shared y axis."""
    traces, panels = [], (("gold label", "x", "y", (0, 0.45)), ("prediction", "x2", "y2", (0.55, 1)))
    for what, x, y, _ in panels:
        for group, color in (("top examples", BLUE), ("all examples", GREY)):
            part = frame[(frame["what"] == what) & (frame["group"] == group)]
            traces.append(go.Bar(x=part["label"], y=part["fraction"], marker_color=color, xaxis=x, yaxis=y,
                                 name=f"top {n_top}" if group == "top examples" else "all examples",
                                 showlegend=x == "x", legendgroup=group))
    return go.Figure(traces, house_layout(
        title=f"Labels of component {k}'s top examples", height=340, top=75, barmode="group",
        legend=dict(orientation="h", y=-0.25),
        xaxis=dict(domain=panels[0][3], anchor="y", type="category"),
        xaxis2=dict(domain=panels[1][3], anchor="y2", type="category"),
        yaxis=dict(anchor="x", range=[0, 1], title=dict(text="fraction")),
        yaxis2=dict(anchor="x2", matches="y", showticklabels=False),
        annotations=[dict(text=what, x=sum(domain) / 2, xref="paper", y=1, yref="paper", xanchor="center",
                          yanchor="bottom", showarrow=False, font=dict(size=16)) for what, _, _, domain in panels]))
def annotation_breakdown_figure(frame: pd.DataFrame, *, name: str, k: int, n_top: int) -> go.Figure:
    """Fractions of an annotation's values (a ground-truth column) among the top examples vs all examples
    (components.annotation_breakdown)."""
    fig = go.Figure()
    for group, color in (("top examples", BLUE), ("all examples", GREY)):
        part = frame[frame["group"] == group]
        fig.add_trace(go.Bar(x=part["value"], y=part["fraction"], marker_color=color,
                             name=f"top {n_top}" if group == "top examples" else "all examples"))
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.25))
    fig.update_yaxes(title_text="fraction", range=[0, 1])
    fig.update_xaxes(type="category", title_text=name)
    return paper_layout(fig, title=f"{name} of component {k}'s top examples", height=340)


def similar_components_figure(frame: pd.DataFrame, *, k: int) -> go.Figure:
    """|cos| of component k's direction with its most similar components (components.most_similar)."""
    bars = go.Bar(x=[f"{c}" for c in frame["component"]], y=frame["abs_cos"], marker_color=BLUE,
                  text=[f"{v:.2f}" for v in frame["abs_cos"]], textposition="outside")
    return go.Figure(bars, house_layout(title=f"Components most similar to {k}", height=300,
                                        xaxis=dict(type="category", title=dict(text="component")),
                                        yaxis=dict(range=[0, 1.1], title=dict(text="|cos|"))))


def module_profile_figure(shares: pd.Series, *, k: int, by: str = "module") -> go.Figure:
    """Share of ‖g_k‖² per module or layer (in parameter order, top to bottom)."""
    bars = go.Bar(x=shares.to_numpy(), y=list(shares.index), orientation="h", marker_color=BLUE,
                  text=[f"{v:.0%}" for v in shares], textposition="outside")
    return go.Figure(bars, house_layout(
        title=f"Where component {k}'s direction lives ({by})", height=max(220, 60 + 22 * len(shares)),
        xaxis=dict(range=[0, min(1.0, float(shares.max()) * 1.2 + 0.05)], tickformat=".0%",
                   title=dict(text="share of ‖g‖²")),
        yaxis=dict(autorange="reversed", automargin=True)))


def module_shares_figure(shares: pd.DataFrame) -> go.Figure:
    """Every component's share of ‖g‖² per module (components.group_profiles [r, modules]) as a heatmap: one
    row per component, modules in parameter order, each cell's hover naming component, module and share."""
    z = shares.to_numpy(dtype=float)  # [r, modules]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(shares.columns), y=[str(c) for c in range(len(z))], colorscale="Blues", zmin=0, zmax=1,
        text=[[f"{v:.0%}" for v in row] for row in z], texttemplate="%{text}" if z.size <= 400 else None,
        colorbar=dict(title="share of ‖g‖²", tickformat=".0%"),
        hovertemplate="component %{y} · module %{x}<br>share of ‖g‖²: %{z:.1%}<extra></extra>"))
    fig.update_xaxes(type="category", tickangle=-30, automargin=True)
    fig.update_yaxes(type="category", autorange="reversed")
    return paper_layout(fig, title="Where each component's direction lives (module)", xaxis_title="module",
                        yaxis_title="component", height=max(260, 120 + 24 * len(z)))


def _category_colors(values: Sequence) -> tuple[list[str], dict[str, str]]:
    """Category names (the most frequent MAX_CATEGORIES kept, the rest 'other') and one colour each."""
    labels = pd.Series([str(v) for v in values])
    keep = labels.value_counts().index[:MAX_CATEGORIES]
    labels = labels.where(labels.isin(keep), "other")
    order = sorted(labels.unique(), key=lambda s: (s == "other", len(s), s))
    colors = {c: ("#DDDDDD" if c == "other" else PALETTE[i % len(PALETTE)]) for i, c in enumerate(order)}
    return labels.tolist(), colors


def correctness(correct: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[n] CORRECTNESS_COLORS names: 'correct' / 'wrong' for examples with a gold label [n] known, else
    'no gold label'."""
    return np.where(~np.asarray(known, bool), "no gold label", np.where(correct, "correct", "wrong"))


def example_map(xy: np.ndarray, colour: Sequence, *, colour_name: str, hover: Sequence[str],
                indices: np.ndarray | None = None, title: str = "Examples by their coefficients (UMAP)",
                colors: Mapping[str, str] | None = None) -> go.Figure:
    """Scatter of UMAP coordinates [n, 2], one trace per category, each named in the legend; customdata holds
    the example index. `colors` fixes the categories and their colours (e.g. CORRECTNESS_COLORS)."""
    xy = np.asarray(xy, dtype=float)
    indices = np.arange(len(xy)) if indices is None else np.asarray(indices)
    if colors is None:
        categories, colors = _category_colors(colour)
    else:
        categories = [str(v) for v in colour]
        colors = {name: color for name, color in colors.items() if name in set(categories)}
    categories = np.asarray(categories)
    hover = np.asarray(hover, dtype=object)
    scatter = go.Scattergl if len(xy) > 5000 else go.Scatter
    fig = go.Figure()
    for name, color in colors.items():
        mask = categories == name
        fig.add_trace(scatter(x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=name, customdata=indices[mask],
                              text=hover[mask], hovertemplate="#%{customdata}: %{text}<extra></extra>",
                              marker=dict(size=5, color=color, opacity=0.8)))
    fig.update_xaxes(showticklabels=False, showline=False, ticks="", title=None)
    fig.update_yaxes(showticklabels=False, showline=False, ticks="", title=None, scaleanchor="x")
    fig.update_layout(legend_title_text=colour_name, showlegend=True, dragmode="lasso")
    return paper_layout(fig, title=title, height=520)


def _square_pixels(fig: go.Figure, n_panels: int) -> None:
    """Lock each subplot's y scale to its own x axis so pixels stay square."""
    for i in range(1, n_panels + 1):
        suffix = "" if i == 1 else str(i)
        fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"


GREY_SCALE = "gray_r"  # grey images: 0 is drawn white, 1 black (ink on paper, as digits are usually shown)


def _image_trace(image: np.ndarray, **heatmap) -> go.BaseTraceType:
    """A grey image [H, W] in [0, 1] as a heatmap (GREY_SCALE: dark = 1), or an RGB one [H, W, 3] as go.Image."""
    if image.ndim == 3:
        return go.Image(z=np.round(np.clip(image, 0, 1) * 255), colormodel="rgb",
                        hovertemplate="(%{x}, %{y}): %{z}<extra></extra>")
    return go.Heatmap(z=image, colorscale=GREY_SCALE, zmin=0, zmax=1, showscale=False, **heatmap)


def zero_image_description(image: np.ndarray) -> str:
    """How the all-zero image (the pixel attributions' baseline) looks where images like this one are drawn:
    white for grey images (GREY_SCALE), black for RGB."""
    look = "drawn white here, like the background of these images" if np.ndim(image) == 2 else "black"
    return f"the all-zero image (every pixel 0; {look})"


def example_grid(images: np.ndarray, captions: Sequence[str], *, n_cols: int = 8,
                 title: str | None = None) -> go.Figure:
    """Grey [b, H, W] or RGB [b, H, W, 3] images in [0, 1], row-major from the top left in the given order, each
    under its caption (spec §5 collages: descending coefficient). Built with make_subplots so caption i is
    always image i's."""
    images = np.asarray(images, dtype=float)
    b = len(images)
    n_cols = max(1, min(n_cols, b))
    n_rows = max(1, -(-b // n_cols))
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=list(captions) + [""] * (n_rows * n_cols - b),
                        horizontal_spacing=0.015, vertical_spacing=min(0.12, 0.5 / n_rows))
    for i, image in enumerate(images):
        fig.add_trace(_image_trace(image, hovertemplate="(%{x}, %{y}): %{z:.2f}<extra></extra>"),
                      row=i // n_cols + 1, col=i % n_cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    _square_pixels(fig, b)
    fig.update_annotations(font_size=10)
    paper_layout(fig, title=title, height=60 + 130 * n_rows)
    return fig.update_layout(margin_t=70 if title else 30)


def _wrap(n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n) // width, np.arange(n) % width


def token_attribution_figure(tokens: Sequence[str], scores: Mapping[str, np.ndarray], *,
                             width: int = 12) -> go.Figure:
    """Tokens as cells coloured by attribution (red positive, blue negative), wrapped every `width` tokens;
    one panel per entry of scores (e.g. predicted class, component), each scaled to its own max |score|."""
    n = len(tokens)
    n_rows = max(1, -(-n // width))
    fig = make_subplots(rows=len(scores), cols=1, subplot_titles=list(scores), vertical_spacing=0.12)
    rows, cols = _wrap(n, width)
    for panel, values in enumerate(scores.values(), start=1):
        values = np.asarray(values, dtype=float)
        scale = float(np.abs(values).max()) or 1.0
        z = np.full((n_rows, width), np.nan)
        text = np.full((n_rows, width), "", dtype=object)
        z[rows, cols] = values / scale
        text[rows, cols] = list(tokens)
        fig.add_trace(go.Heatmap(z=z, text=text, texttemplate="%{text}", textfont=dict(size=12),
                                 customdata=np.where(np.isnan(z), np.nan, z * scale),
                                 colorscale=ATTRIBUTION_SCALE, reversescale=True, zmin=-1, zmax=1,
                                 showscale=panel == 1, colorbar=dict(title="attribution / max", len=0.6),
                                 hovertemplate="%{text}: %{customdata:.3g}<extra></extra>", xgap=2, ygap=2),
                      row=panel, col=1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    paper_layout(fig, height=90 + len(scores) * (40 + 34 * n_rows))
    return fig.update_layout(margin_t=45)


def pixel_attribution_figure(image: np.ndarray, scores: Mapping[str, np.ndarray]) -> go.Figure:
    """The image (grey [H, W] or RGB [H, W, 3]) and one attribution map [H, W] per entry of scores (diverging,
    symmetric around 0)."""
    fig = make_subplots(rows=1, cols=1 + len(scores), subplot_titles=["input", *scores], horizontal_spacing=0.04)
    fig.add_trace(_image_trace(np.asarray(image, dtype=float)), row=1, col=1)
    for col, values in enumerate(scores.values(), start=2):
        values = np.asarray(values, dtype=float)
        scale = float(np.abs(values).max()) or 1.0
        fig.add_trace(go.Heatmap(z=values / scale, customdata=values, colorscale=ATTRIBUTION_SCALE,
                                 reversescale=True, zmin=-1, zmax=1, showscale=col == 2,
                                 colorbar=dict(title="attr. / max", len=0.8),
                                 hovertemplate="(%{x}, %{y}): %{customdata:.3g}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    _square_pixels(fig, 1 + len(scores))
    paper_layout(fig, height=300)
    return fig.update_layout(margin_t=45)
