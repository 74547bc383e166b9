"""Tests for the zonotope figure builders: plain functions that return Plotly figures."""
from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis.figures.zonotope import (
    chamber_polygon,
    chamber_unit,
    data_figure,
    loss_trace_figure,
    seed_comparison_figure,
    slice_extent,
    slice_figure,
    unit_paths,
    width_figure,
    zonotope_figure,
)
from analysis.zonotope import best_unit_losses, gd_train, greedy_search, homogenize, solve_vertex, zonotope_graph

FIG1 = np.array([(1, 0.2), (-0.5, 1), (-1, -0.7), (0.3, -1.2), (1.5, 1.1)])
Y1 = np.array([1.0, -0.5, 0.3, 0.8, -1.2])


@pytest.fixture(scope="module")
def fig1_zonotope():
    return zonotope_graph(FIG1)


def filled(fig: go.Figure) -> list[go.Scatter]:
    return [trace for trace in fig.data if getattr(trace, "fill", None) == "toself"]


def test_best_unit_losses_take_the_better_sign(fig1_zonotope):
    losses = best_unit_losses(FIG1, Y1, fig1_zonotope.patterns)
    for v in (0, 7, 21):
        pattern = fig1_zonotope.patterns[v][None]
        expected = min(solve_vertex(FIG1, Y1, pattern, [s]).loss for s in (1, -1))
        assert losses[v] == pytest.approx(expected)
    assert (losses <= 0.5 * Y1 @ Y1 + 1e-9).all()


def test_data_figure_draws_the_unit_line():
    w = np.array([1.0, -2.0, 0.3])
    fig = data_figure(FIG1, Y1, w=w, active=homogenize(FIG1) @ w > 0)
    points, ring, line = fig.data
    assert len(points.x) == 5 and list(points.text) == ["1", "2", "3", "4", "5"]
    assert len(ring.x) == int((homogenize(FIG1) @ w > 0).sum())
    ends = np.column_stack([line.x, line.y, np.ones(len(line.x))])
    assert len(ends) == 2
    np.testing.assert_allclose(ends @ w, 0.0, atol=1e-9)


def test_data_figure_needs_two_dimensional_inputs():
    with pytest.raises(ValueError, match=re.escape("data_figure draws 2-D inputs: X must have shape (n, 2), got (4, 3)")):
        data_figure(np.ones((4, 3)))


def test_slice_matches_figure_one(fig1_zonotope):
    upper, lower = (slice_figure(FIG1, fig1_zonotope.patterns, bias=b) for b in (1.0, -1.0))
    assert len(filled(upper)) == len(filled(lower)) == 16
    drawn = [{frozenset(np.flatnonzero(p)) for p in fig1_zonotope.patterns
              if len(chamber_polygon(FIG1, p, b, slice_extent(FIG1, b))) >= 3} for b in (1.0, -1.0)]
    assert len(drawn[0] & drawn[1]) == 10
    lines = [trace for trace in upper.data if trace.mode == "lines+text"]
    assert [trace.text[0] for trace in lines] == ["H1", "H2", "H3", "H4", "H5"]


def test_chamber_polygons_obey_their_half_planes(fig1_zonotope):
    extent = slice_extent(FIG1)
    for pattern in fig1_zonotope.patterns:
        polygon = chamber_polygon(FIG1, pattern, 1.0, extent)
        if len(polygon):
            sides = (polygon @ FIG1.T + 1.0) * np.where(pattern, 1.0, -1.0)  # [k, n]
            assert (sides >= -1e-9).all()
            assert (np.abs(polygon) <= extent + 1e-9).all()


def test_slice_extent_holds_every_crossing():
    X = np.random.default_rng(0).standard_normal((8, 2))
    extent = slice_extent(X)
    for i in range(8):
        for j in range(i + 1, 8):
            crossing = np.linalg.solve(X[[i, j]], [-1.0, -1.0])
            assert (np.abs(crossing) < extent).all()


def test_slice_values_and_highlight(fig1_zonotope):
    values = best_unit_losses(FIG1, Y1, fig1_zonotope.patterns)
    fig = slice_figure(FIG1, fig1_zonotope.patterns, values, highlight=21)
    assert fig.data[-2].marker.showscale
    outline = fig.data[-1]
    assert outline.line.color == "#d62728" and outline.fill is None
    polygon = chamber_polygon(FIG1, fig1_zonotope.patterns[21], 1.0, slice_extent(FIG1))
    np.testing.assert_allclose(np.column_stack([outline.x, outline.y]), np.vstack([polygon, polygon[:1]]))


def test_zonotope_figure_layers(fig1_zonotope):
    Z = fig1_zonotope
    values = best_unit_losses(FIG1, Y1, Z.patterns)
    fig = zonotope_figure(Z, values, paths=[np.array([0, 1]), Z.vertices[[3, 5, 7]]], current=1)
    mesh, edges, vertices = fig.data[:3]
    assert isinstance(mesh, go.Mesh3d) and len(mesh.i) == 2 * 20  # 20 parallelograms, 2 triangles each
    assert len(edges.x) == 3 * len(Z.edges)
    np.testing.assert_allclose(vertices.marker.color, values)
    path_traces = [trace for trace in fig.data[3:] if trace.mode == "lines+markers"]
    assert [len(trace.x) for trace in path_traces] == [2, 3]
    markers = [trace for trace in fig.data[3:] if trace.mode == "markers"]
    np.testing.assert_allclose([markers[0].x[0], markers[1].x[0]], [Z.vertices[1, 0], Z.vertices[5, 0]])


def test_zonotope_figure_needs_plane_data():
    Z = zonotope_graph(np.random.default_rng(1).standard_normal((5, 3)))
    with pytest.raises(ValueError, match=re.escape("zonotope_figure draws d=2 data (Z in R^3), got vertices of "
                                                   "dimension 4")):
        zonotope_figure(Z)


def test_unit_paths_follow_edges(fig1_zonotope):
    result = greedy_search(FIG1, Y1, 2, seed=3)
    paths = unit_paths(fig1_zonotope, [step.patterns for step in result.path])
    edges = {tuple(sorted(e)) for e in fig1_zonotope.edges.tolist()}
    assert len(paths) == 2
    for path in paths:
        assert len(path) == len(result.path)
        assert all(a == b or tuple(sorted((a, b))) in edges for a, b in zip(path, path[1:]))


def test_loss_trace_figure():
    greedy = greedy_search(FIG1, Y1, 2, seed=0)
    gd = gd_train(FIG1, Y1, 2, steps=300)
    fig = loss_trace_figure(greedy, gd)
    gd_line, changes, greedy_line = fig.data
    assert len(gd_line.x) == 301
    assert len(changes.x) == len(gd.pattern_trace)
    assert greedy_line.xaxis == "x2" and len(greedy_line.y) == len(greedy.path)
    assert fig.layout.yaxis.type == "log"


def test_seed_comparison_and_width_figures():
    fig = seed_comparison_figure({"greedy": [1.0, 2.0], "GD": [3.0, 4.0, 5.0]})
    assert [trace.name for trace in fig.data] == ["greedy", "GD"]
    fig = width_figure([2, 4, 8], [np.ones(5), np.ones(5) / 2, np.zeros(5)], doubling_width=8, zero_loss=3.0)
    assert len(fig.data) == 3
    assert [shape.x0 for shape in fig.layout.shapes if shape.type == "line" and shape.x0 == shape.x1] == [8]


def _line_points(trace) -> np.ndarray:
    """The homogenised end points (x, y, 1) [k, 3] of a line trace."""
    return np.column_stack([trace.x, trace.y, np.ones(len(trace.x))])


def test_data_figure_plays_every_steps_line_and_active_set():
    ws = [np.array([1.0, -2.0, 0.3]), np.array([0.2, 1.0, -0.1]), np.array([-1.0, 0.5, 0.4])]
    steps = [(w, homogenize(FIG1) @ w > 0) for w in ws]
    fig = data_figure(FIG1, Y1, steps=steps, labels=["move 0", "move 1", "move 2"])
    assert [frame.name for frame in fig.frames] == ["0", "1", "2"]
    for frame, (w, active) in zip(fig.frames, steps):
        ring, line = frame.data
        assert list(frame.traces) == [1, 2] and len(ring.x) == active.sum()
        assert len(line.x) == 2
        np.testing.assert_allclose(_line_points(line) @ w, 0.0, atol=1e-9)  # this step's boundary, not the last's
    np.testing.assert_allclose(_line_points(fig.data[2]) @ ws[-1], 0.0, atol=1e-9)  # the last step shows first
    (menu,), (slider,) = fig.layout.updatemenus, fig.layout.sliders
    assert [b.label for b in menu.buttons] == ["▶ Play", "❚❚ Pause"] and menu.buttons[0].method == "animate"
    assert [step.label for step in slider.steps] == ["move 0", "move 1", "move 2"] and slider.active == 2
    assert len(data_figure(FIG1, Y1, steps=steps[:1]).frames) == 0  # one step: nothing to play


def test_slice_and_zonotope_figures_play_the_path(fig1_zonotope):
    Z = fig1_zonotope
    result = greedy_search(FIG1, Y1, 2, seed=3)
    states = [step.patterns for step in result.path]
    paths = unit_paths(Z, states)
    labels = [f"greedy move {t}" for t in range(len(states))]
    fig = zonotope_figure(Z, paths=paths, steps=list(range(len(states))), labels=labels)
    assert len(fig.frames) == len(states) > 1
    for t, frame in enumerate(fig.frames):
        here = np.array([[marker.x[0], marker.y[0], marker.z[0]] for marker in frame.data])
        np.testing.assert_allclose(here, Z.vertices[[path[t] for path in paths]])
    extent = slice_extent(FIG1)
    chamber = [int(path) for path in paths[0]]
    fig = slice_figure(FIG1, Z.patterns, steps=chamber, labels=labels)
    for frame, v in zip(fig.frames, chamber):
        polygon = chamber_polygon(FIG1, Z.patterns[v], 1.0, extent)
        outline = np.column_stack([frame.data[0].x, frame.data[0].y])
        np.testing.assert_allclose(outline, np.vstack([polygon, polygon[:1]]) if len(polygon) >= 3 else
                                   np.empty((0, 2)))


def test_loss_axes_use_powers_of_ten_not_si_prefixes():
    greedy = greedy_search(FIG1, Y1, 2, seed=0)
    figs = [loss_trace_figure(greedy), seed_comparison_figure({"greedy": [1e-20, 2e-20]}),
            width_figure([1, 2], [np.ones(3), np.zeros(3)], doubling_width=2)]
    assert [fig.layout.yaxis.exponentformat for fig in figs] == ["power"] * 3


def test_an_unused_unit_still_gets_a_line_that_splits_its_active_set():
    patterns = zonotope_graph(FIG1).patterns
    for pattern in patterns[[1, 7, 12, 20]]:
        fig = data_figure(FIG1, Y1, w=np.zeros(3), active=pattern)  # a vertex QP left this unit at w = 0
        (x0, y0), (x1, y1) = zip(fig.data[2].x, fig.data[2].y)
        side = (x1 - x0) * (FIG1[:, 1] - y0) - (y1 - y0) * (FIG1[:, 0] - x0)  # which side of the line each input is
        assert (side[pattern] > 0).all() and (side[~pattern] < 0).all() or \
               (side[pattern] < 0).all() and (side[~pattern] > 0).all()
        w = chamber_unit(FIG1, pattern)
        np.testing.assert_array_equal(homogenize(FIG1) @ w > 0, pattern)


def test_player_labels_default_to_step_numbers_and_must_match_the_steps():
    steps = [(None, np.array([1, 0, 0, 1, 1], bool)), (None, np.array([1, 1, 0, 1, 1], bool))]
    assert [s.label for s in data_figure(FIG1, steps=steps).layout.sliders[0].steps] == ["step 0", "step 1"]
    with pytest.raises(ValueError, match=re.escape("labels must name each of the 2 steps, got 1 labels")):
        data_figure(FIG1, steps=steps, labels=["only one"])
