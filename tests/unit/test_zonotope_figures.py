"""Tests for the zonotope figure builders: plain functions that return Plotly figures."""
from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis.figures.zonotope import (
    chamber_polygon,
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
    assert fig.data[-1].marker.showscale
    assert sum(trace.line.color == "#d62728" for trace in filled(fig)) == 1


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
