"""Plotly builders for the zonotope explorer (spec zonotope.md §7): the data panel, the w_D = ±1 slice
of parameter space, the 3-D zonotope, loss traces and the seed and width studies.

Plain functions that take arrays and results from analysis.zonotope and return go.Figure. Examples
are labelled 1..n in every figure, as H_1..H_n are in the paper's Figure 1.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from scipy.spatial import ConvexHull, QhullError

from analysis.figures.style import paper_layout
from analysis.zonotope import GdResult, SearchResult, Zonotope

COLORSCALE = "Viridis"
LINE_COLOR = "#444"
PATH_COLORS = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
LOG_FLOOR = 1e-12  # losses are drawn at least this high on log axes
HIGHLIGHT = "#d62728"
FRAME_MS = 700  # how long the player shows each step
LOSS_AXIS = dict(exponentformat="power", showexponent="all")  # 10⁻⁶, not the SI prefix µ


def _player(fig: go.Figure, frames: Sequence[go.Frame], labels: Sequence[str]) -> go.Figure:
    """Plotly's ▶ / ❚❚ buttons and a step slider over `frames` (frame i is named str(i)), starting at the last;
    the step's label shows above the slider's right end (tick labels are hidden: sixty would overlap)."""
    if len(frames) < 2:
        return fig
    labels = list(labels) or [f"step {i}" for i in range(len(frames))]
    if len(labels) != len(frames):
        raise ValueError(f"labels must name each of the {len(frames)} steps, got {len(labels)} labels")
    fig.frames = [frame.update(name=str(i)) for i, frame in enumerate(frames)]
    play = dict(frame=dict(duration=FRAME_MS, redraw=True), transition=dict(duration=0), fromcurrent=True)
    still = dict(frame=dict(duration=0, redraw=True), transition=dict(duration=0), mode="immediate")
    fig.update_layout(
        updatemenus=[dict(type="buttons", direction="left", x=0, xanchor="left", y=0, yanchor="top",
                          pad=dict(t=55), showactive=False,
                          buttons=[dict(label="▶ Play", method="animate", args=[None, play]),
                                   dict(label="❚❚ Pause", method="animate", args=[[None], still])])],
        sliders=[dict(active=len(frames) - 1, x=0, len=1, y=0, yanchor="top", pad=dict(t=68, b=0),
                      currentvalue=dict(prefix="", xanchor="right", font=dict(size=13, color="#222")),
                      font=dict(color="rgba(0,0,0,0)"), ticklen=4, transition=dict(duration=0),
                      steps=[dict(label=label, method="animate", args=[[str(i)], still])
                             for i, label in enumerate(labels)])])
    return fig.update_layout(margin=dict(b=fig.layout.margin.b + 115))


def _set_text(pattern: np.ndarray) -> str:
    """Active set of a pattern [n] as hover text, 1-based: 'S = {1, 3}'."""
    return "S = {" + ", ".join(str(i + 1) for i in np.flatnonzero(pattern)) + "}"


def _colors(values: np.ndarray) -> list[str]:
    """One colour per value on COLORSCALE, scaled to the range of the finite values."""
    low, high = np.nanmin(values), np.nanmax(values)
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return sample_colorscale(COLORSCALE, list(np.clip(scaled, 0.0, 1.0)))


def _colorbar_trace(values: np.ndarray, label: str) -> go.Scatter:
    """An invisible trace that only carries the colour bar for polygon fills."""
    return go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
                      marker=dict(color=[float(np.nanmin(values)), float(np.nanmax(values))],
                                  colorscale=COLORSCALE, showscale=True, colorbar=dict(title=label)))


def _check_2d(X: np.ndarray, what: str) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"{what} draws 2-D inputs: X must have shape (n, 2), got {X.shape}")
    return X


# ---------------------------------------------------------------------------------------------
# Data panel


def _line_in_box(normal: np.ndarray, offset: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The segment of {p : ⟨normal, p⟩ + offset = 0} inside the box [low, high]: [k <= 2, 2]."""
    box = np.array([low, [high[0], low[1]], high, [low[0], high[1]]])  # [4, 2]
    polygon = _clip(box, normal, offset)
    on_line = np.abs(polygon @ normal + offset) <= 1e-9 * (1 + np.abs(polygon).max(initial=0.0))
    return polygon[on_line]


def chamber_unit(X: np.ndarray, pattern: np.ndarray) -> np.ndarray | None:
    """A unit w = (w₁, w₂, ±1) [3] whose active set is exactly `pattern` [n]: the centroid of its chamber on the
    slice w₃ = +1, else on w₃ = −1 (every open chamber meets one); None when it meets neither."""
    X = _check_2d(X, "chamber_unit")
    for bias in (1.0, -1.0):
        polygon = chamber_polygon(X, pattern, bias, slice_extent(X, bias))
        if len(polygon) >= 3 and _area(polygon) > 0:
            return np.append(polygon.mean(axis=0), bias)  # the mean of a convex polygon's corners is inside it
    return None


def _unit_traces(X: np.ndarray, w: np.ndarray | None, active: np.ndarray | None, low: np.ndarray,
                 high: np.ndarray) -> list[go.Scatter]:
    """The ring around a unit's active inputs and its line ⟨w, x̃⟩ = 0 in the box [low, high]; a unit without
    direction in input space (w None or w₁ = w₂ = 0, as a network may leave a unit unused) is replaced by
    chamber_unit of its active set. Empty traces when neither is given."""
    on = np.zeros(len(X), dtype=bool) if active is None else np.asarray(active, dtype=bool)
    segment = np.empty((0, 2))
    if active is not None and (w is None or np.linalg.norm(np.asarray(w)[:2]) == 0):
        w = chamber_unit(X, on)
    if w is not None and np.linalg.norm(np.asarray(w)[:2]) > 0:
        segment = _line_in_box(np.asarray(w[:2], dtype=float), float(w[2]), low, high)
    return [go.Scatter(x=X[on, 0], y=X[on, 1], mode="markers", name="active",
                       marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(color=HIGHLIGHT, width=2)),
                       hoverinfo="skip"),
            go.Scatter(x=segment[:, 0], y=segment[:, 1], mode="lines", name="⟨w, x̃⟩ = 0",
                       line=dict(color=HIGHLIGHT, width=2))]


def data_figure(X: np.ndarray, y: np.ndarray | None = None, w: np.ndarray | None = None,
                active: np.ndarray | None = None, *,
                steps: Sequence[tuple[np.ndarray | None, np.ndarray]] = (), labels: Sequence[str] = ()) -> go.Figure:
    """Training inputs X [n, 2] coloured by y, the active set of a unit ringed and its line ⟨w, x̃⟩ = 0.

    steps: (w [D] or None, active [n]) of one unit per step of a search, played as frames named by `labels`
    (the last step is shown first; w and active are then ignored)."""
    X = _check_2d(X, "data_figure")
    pad = 0.15 * max(float(np.ptp(X, axis=0).max()), 1.0)
    low, high = X.min(axis=0) - pad, X.max(axis=0) + pad
    names = [str(i + 1) for i in range(len(X))]
    marker = dict(size=12, color="#555" if y is None else np.asarray(y, dtype=float), colorscale="RdBu_r",
                  showscale=y is not None, colorbar=dict(title="y"), line=dict(color="white", width=1))
    fig = go.Figure(go.Scatter(x=X[:, 0], y=X[:, 1], mode="markers+text", text=names, textposition="top right",
                               marker=marker, name="inputs", hovertemplate="x%{text}: (%{x:.3g}, %{y:.3g})"))
    if steps:
        w, active = steps[-1]
    if w is not None or active is not None or steps:
        fig.add_traces(_unit_traces(X, w, active, low, high))  # traces 1 and 2, redrawn by each frame
    frames = [go.Frame(data=_unit_traces(X, w_t, a_t, low, high), traces=[1, 2]) for w_t, a_t in steps]
    paper_layout(fig, title="Training data", xaxis=dict(range=[low[0], high[0]], title="x₁"),
                 yaxis=dict(range=[low[1], high[1]], title="x₂", scaleanchor="x"),
                 legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"))
    return _player(fig, frames, labels)


# ---------------------------------------------------------------------------------------------
# Slice of parameter space w_D = bias


def _clip(polygon: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """Sutherland–Hodgman: the part of a convex polygon [k, 2] with ⟨normal, p⟩ + offset >= 0."""
    if len(polygon) == 0:
        return polygon
    side = polygon @ normal + offset  # [k]
    nxt = np.roll(np.arange(len(polygon)), -1)
    kept = []
    for a, b in zip(range(len(polygon)), nxt):
        if side[a] >= 0:
            kept.append(polygon[a])
        if (side[a] >= 0) != (side[b] >= 0):
            t = side[a] / (side[a] - side[b])
            kept.append(polygon[a] + t * (polygon[b] - polygon[a]))
    return np.array(kept).reshape(-1, 2)


def _area(polygon: np.ndarray) -> float:
    """Shoelace area of a polygon [k, 2]."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(x @ np.roll(y, -1) - y @ np.roll(x, -1)))


def _slice_points(X: np.ndarray, bias: float) -> tuple[np.ndarray, np.ndarray]:
    """The point of each line H_i on the slice nearest 0 [n', 2], and the crossings of the lines [k, 2]."""
    X = X[np.einsum("ij,ij->i", X, X) > 1e-24]  # an input at the origin has its line at infinity
    feet = -bias * X / np.einsum("ij,ij->i", X, X)[:, None]  # [n, 2]
    i, j = np.triu_indices(len(X), k=1)
    A = np.stack([X[i], X[j]], axis=1)  # [pairs, 2, 2]
    A = A[np.abs(np.linalg.det(A)) > 1e-12]
    crossings = np.linalg.solve(A, np.full((len(A), 2, 1), -bias))[..., 0]  # [k, 2]
    return feet, crossings


def slice_extent(X: np.ndarray, bias: float = 1.0) -> float:
    """Half-width of a box around 0 that holds every crossing of the lines H_i on the slice and the point of
    each line nearest 0, so every chamber meeting the slice meets the box."""
    return 1.15 * float(np.abs(np.vstack(_slice_points(_check_2d(X, "slice_extent"), bias))).max())


def _view_extent(X: np.ndarray, bias: float) -> float:
    """Half-width of the initial view: every nearest point and the inner 80% of the crossings (nearly
    parallel lines cross far out; zooming out shows them)."""
    feet, crossings = (np.abs(points).max(axis=1) for points in _slice_points(X, bias))
    inner = float(np.quantile(crossings, 0.8)) if len(crossings) else 0.0
    return 1.15 * max(float(feet.max()) if len(feet) else 1.0, inner)


def chamber_polygon(X: np.ndarray, pattern: np.ndarray, bias: float, extent: float) -> np.ndarray:
    """The chamber of `pattern` [n] on the slice w_D = bias, clipped to the box [−extent, extent]²: [k, 2]."""
    box = extent * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    polygon = box
    for x_i, on in zip(np.asarray(X, dtype=float), pattern):
        sign = 1.0 if on else -1.0  # σ_i (⟨x_i, w⟩ + bias) >= 0
        polygon = _clip(polygon, sign * x_i, sign * bias)
    return polygon


def _outline(X: np.ndarray, pattern: np.ndarray | None, bias: float, extent: float) -> go.Scatter:
    """The outline of the chamber of `pattern` [n] on the slice (empty when None or off the slice)."""
    polygon = np.empty((0, 2)) if pattern is None else chamber_polygon(X, pattern, bias, extent)
    closed = np.vstack([polygon, polygon[:1]]) if len(polygon) >= 3 else np.empty((0, 2))
    return go.Scatter(x=closed[:, 0], y=closed[:, 1], mode="lines", line=dict(color=HIGHLIGHT, width=3),
                      showlegend=False, hoverinfo="skip", name="unit's chamber")


def slice_figure(X: np.ndarray, patterns: np.ndarray, values: np.ndarray | None = None, bias: float = 1.0,
                 extent: float | None = None, highlight: int | None = None, value_label: str = "½SSE", *,
                 steps: Sequence[int | None] = (), labels: Sequence[str] = ()) -> go.Figure:
    """Chambers of one unit on the plane w_D = bias (spec Fig. 1 centre), filled by `values` [V] or by |S|,
    with the lines H_i; `highlight` outlines the chamber patterns[highlight].

    steps: the highlighted chamber (an index of patterns, or None) per step of a search, played as frames
    named by `labels` (the last is shown first). Chambers are clipped to [−extent, extent]² (default:
    slice_extent, so all of them are drawn); the initial view shows the central part when extent is not given.
    """
    X = _check_2d(X, "slice_figure")
    patterns = np.asarray(patterns, dtype=bool)
    view = _view_extent(X, bias) if extent is None else extent
    extent = slice_extent(X, bias) if extent is None else extent
    shade = patterns.sum(axis=1).astype(float) if values is None else np.asarray(values, dtype=float)
    label = "|S|" if values is None else value_label
    fill = _colors(shade)
    fig = go.Figure()
    for v, pattern in enumerate(patterns):
        polygon = chamber_polygon(X, pattern, bias, extent)
        if len(polygon) < 3 or _area(polygon) <= 1e-14 * extent ** 2:
            continue
        closed = np.vstack([polygon, polygon[:1]])
        fig.add_trace(go.Scatter(x=closed[:, 0], y=closed[:, 1], mode="lines", fill="toself", fillcolor=fill[v],
                                 line=dict(color="white", width=0.5), showlegend=False, hoveron="fills",
                                 text=f"{_set_text(pattern)}<br>{label} = {shade[v]:.4g}", hoverinfo="text"))
    for i, x_i in enumerate(X):
        segment = _line_in_box(x_i, bias, -extent * np.ones(2), extent * np.ones(2))
        if len(segment):
            fig.add_trace(go.Scatter(x=segment[:, 0], y=segment[:, 1], mode="lines+text", showlegend=False,
                                     line=dict(color=LINE_COLOR, width=1), text=[f"H{i + 1}", ""],
                                     textposition="top center", hoverinfo="skip"))
    fig.add_trace(_colorbar_trace(shade, label))
    if steps:
        highlight = steps[-1]
    if highlight is not None or steps:
        fig.add_trace(_outline(X, None if highlight is None else patterns[highlight], bias, extent))
    last = len(fig.data) - 1
    frames = [go.Frame(data=[_outline(X, None if v is None else patterns[v], bias, extent)], traces=[last])
              for v in steps]
    paper_layout(fig, title=f"Activation regions on the slice w₃ = {bias:g}",
                 xaxis=dict(range=[-view, view], title="w₁"),
                 yaxis=dict(range=[-view, view], title="w₂", scaleanchor="x"))
    return _player(fig, frames, labels)


# ---------------------------------------------------------------------------------------------
# The zonotope in 3-D


def unit_paths(Z: Zonotope, states: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Vertex indices visited by each unit over a sequence of joint patterns [m, n]: m arrays [len(states)]."""
    index = {row.tobytes(): v for v, row in enumerate(Z.patterns)}
    return [np.array([index[np.asarray(state[j], dtype=bool).tobytes()] for state in states])
            for j in range(len(states[0]))]


def _path_points(Z: Zonotope, path: np.ndarray) -> np.ndarray:
    """A path given as vertex indices [k] or as points [k, 3], as points [k, 3]."""
    path = np.asarray(path)
    return Z.vertices[path] if path.ndim == 1 else path.astype(float)


def _edge_trace(Z: Zonotope) -> go.Scatter3d:
    """All edges of Z as one line trace, segments separated by None."""
    ends = Z.vertices[Z.edges]  # [E, 2, 3]
    gaps = np.full((len(ends), 1, 3), np.nan)
    lines = np.concatenate([ends, gaps], axis=1).reshape(-1, 3)
    return go.Scatter3d(x=lines[:, 0], y=lines[:, 1], z=lines[:, 2], mode="lines", name="edges",
                        line=dict(color=LINE_COLOR, width=2), hoverinfo="skip")


def _here(points: np.ndarray, step: int, color: str) -> go.Scatter3d:
    """A unit's marker at `step` of its path points [k, 3] (the last point beyond the end)."""
    here = points[min(step, len(points) - 1)]
    return go.Scatter3d(x=[here[0]], y=[here[1]], z=[here[2]], mode="markers", showlegend=False,
                        marker=dict(size=10, color=color, symbol="diamond"), hoverinfo="skip")


def zonotope_figure(Z: Zonotope, values: np.ndarray | None = None, paths: Sequence[np.ndarray] = (),
                    current: int | None = None, value_label: str = "best one-unit ½SSE", *,
                    steps: Sequence[int] = (), labels: Sequence[str] = ()) -> go.Figure:
    """Z as a translucent hull with its edges and vertices (coloured by `values` [V]); each of `paths` (vertex
    indices [k] or points [k, 3], one per unit) is overlaid, and step `current` of every path is marked.

    steps: path steps played as frames named by `labels`, the markers moving along the paths (the last step is
    shown first; current is then ignored)."""
    if Z.vertices.shape[1] != 3:
        raise ValueError(f"zonotope_figure draws d=2 data (Z in R^3), got vertices of dimension {Z.vertices.shape[1]}")
    V = Z.vertices
    fig = go.Figure()
    try:
        hull = ConvexHull(V)
        fig.add_trace(go.Mesh3d(x=V[:, 0], y=V[:, 1], z=V[:, 2], i=hull.simplices[:, 0], j=hull.simplices[:, 1],
                                k=hull.simplices[:, 2], color="#9ecae1", opacity=0.2, flatshading=True,
                                hoverinfo="skip", name="Z"))
    except QhullError:  # degenerate data give a flat Z: edges and vertices still show it
        pass
    fig.add_trace(_edge_trace(Z))
    hover = [_set_text(p) + ("" if values is None else f"<br>{value_label} = {values[v]:.4g}")
             for v, p in enumerate(Z.patterns)]
    marker = dict(size=4, color="#555") if values is None else dict(
        size=5, color=np.asarray(values, dtype=float), colorscale=COLORSCALE, showscale=True,
        colorbar=dict(title=value_label))
    fig.add_trace(go.Scatter3d(x=V[:, 0], y=V[:, 1], z=V[:, 2], mode="markers", marker=marker, name="vertices",
                               text=hover, hoverinfo="text"))
    points = [_path_points(Z, path) for path in paths]
    colors = [PATH_COLORS[j % len(PATH_COLORS)] for j in range(len(paths))]
    for j, (line, color) in enumerate(zip(points, colors)):
        fig.add_trace(go.Scatter3d(x=line[:, 0], y=line[:, 1], z=line[:, 2], mode="lines+markers",
                                   name=f"unit {j + 1}", line=dict(color=color, width=6), marker=dict(size=3)))
    if steps:
        current = steps[-1]
    markers = list(range(len(fig.data), len(fig.data) + len(paths)))  # one marker trace per unit
    if current is not None:
        fig.add_traces([_here(line, current, color) for line, color in zip(points, colors)])
    frames = [go.Frame(data=[_here(line, t, color) for line, color in zip(points, colors)], traces=markers)
              for t in steps]
    paper_layout(fig, title="Zonotope Z", scene=dict(xaxis_title="w₁", yaxis_title="w₂", zaxis_title="w₃",
                                                     aspectmode="data"),
                 legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"), height=600)
    return _player(fig, frames, labels)


# ---------------------------------------------------------------------------------------------
# Search traces and studies


def loss_trace_figure(greedy: SearchResult | None = None, gd: GdResult | None = None) -> go.Figure:
    """½SSE against step for gradient descent (bottom axis, Adam steps) and greedy search (top axis, moves);
    GD's activation-pattern changes are ticked on its curve."""
    fig = go.Figure()
    if gd is not None:
        steps = np.arange(len(gd.losses))
        fig.add_trace(go.Scatter(x=steps, y=np.maximum(gd.losses, LOG_FLOOR), mode="lines", name="GD (Adam)",
                                 line=dict(color="#1f77b4")))
        changes = np.array([change.step for change in gd.pattern_trace])
        fig.add_trace(go.Scatter(x=changes, y=np.maximum(gd.losses[changes], LOG_FLOOR), mode="markers",
                                 name="GD pattern change", marker=dict(symbol="line-ns-open", size=8, color="#1f77b4")))
    if greedy is not None:
        losses = np.array([step.loss for step in greedy.path])
        fig.add_trace(go.Scatter(x=np.arange(len(losses)), y=np.maximum(losses, LOG_FLOOR), mode="lines+markers",
                                 name="greedy", xaxis="x2", line=dict(color="#d62728")))
    return paper_layout(fig, title="Loss along the search", yaxis=dict(type="log", title="½SSE", **LOSS_AXIS),
                  xaxis=dict(title="GD step"),
                  xaxis2=dict(title="greedy move", overlaying="x", side="top", showgrid=False),
                  legend=dict(x=0.98, xanchor="right", y=0.98))


def seed_comparison_figure(losses: Mapping[str, Sequence[float]]) -> go.Figure:
    """Box plot of final ½SSE per method over seeds, e.g. {"greedy": [...], "GD": [...]}, every seed shown."""
    fig = go.Figure([go.Box(y=list(values), name=name, boxpoints="all", jitter=0.3, pointpos=0,
                            marker=dict(size=6), line=dict(width=1.5)) for name, values in losses.items()])
    return paper_layout(fig, title="Final loss over seeds", yaxis=dict(title="½SSE", **LOSS_AXIS), showlegend=False)


def width_figure(widths: Sequence[int], losses: Sequence[np.ndarray], doubling_width: int,
                 zero_loss: float | None = None) -> go.Figure:
    """Random-vertex ½SSE (one box per width m) with the doubling width 2⌈n/(d+1)⌉ and, optionally, ½‖y‖²."""
    fig = go.Figure([go.Box(x=np.full(len(values), m), y=values, name=f"m={m}", boxpoints="outliers",
                            marker_color="#1f77b4", showlegend=False) for m, values in zip(widths, losses)])
    fig.add_vline(x=doubling_width, line=dict(color="#d62728", dash="dash"),
                  annotation_text=f"doubling width {doubling_width}", annotation_position="top")
    if zero_loss is not None:
        fig.add_hline(y=zero_loss, line=dict(color=LINE_COLOR, dash="dot"), annotation_text="zero network ½‖y‖²",
                      annotation_position="top left")
    return paper_layout(fig, title="Random vertices against width", xaxis=dict(title="hidden units m"),
                  yaxis=dict(title="½SSE at a random vertex", rangemode="tozero", **LOSS_AXIS))
