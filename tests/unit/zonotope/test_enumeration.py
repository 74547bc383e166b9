"""Tests for analysis.zonotope.enumeration: chambers, the graph of Z and the chamber LP (spec zonotope.md §8.1-8.4)."""
from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from analysis.zonotope import chambers, homogenize, is_feasible, zonotope_graph
from tests.unit.zonotope.conftest import FIG1, XOR_X, general_position_count, hull_patterns, pattern_set


@pytest.mark.parametrize("d, n", [(1, 3), (1, 5), (1, 8), (2, 3), (2, 5), (2, 8), (3, 5), (3, 8)])
def test_vertex_count_matches_formula_bfs_and_hull(d, n):
    X = np.random.default_rng(10 * d + n).standard_normal((n, d))
    ray, bfs = chambers(X, method="ray"), chambers(X, method="bfs")
    assert len(ray) == general_position_count(n, d)
    np.testing.assert_array_equal(ray, bfs)
    assert pattern_set(ray) == hull_patterns(X)


@pytest.mark.parametrize("n, vertices, edges", [(5, 22, 40), (8, 58, 112), (20, 382, 760)])
def test_plane_counts_and_edges(n, vertices, edges):
    X = np.random.default_rng(n).standard_normal((n, 2))
    Z = zonotope_graph(X)
    assert len(Z.patterns) == vertices == n * n - n + 2
    assert len(Z.edges) == edges == 2 * n * (n - 1)
    assert np.array_equal(np.sort(zonotope_graph(X, method="bfs").edges, axis=0), np.sort(Z.edges, axis=0))


@pytest.mark.parametrize("d, expected", [(2, 2452), (3, 39300)])
def test_ray_method_at_fifty_points(d, expected):
    X = np.random.default_rng(50 + d).standard_normal((50, d))
    assert len(chambers(X)) == expected == general_position_count(50, d)


def test_edges_are_single_flips_along_generators():
    X = np.random.default_rng(3).standard_normal((7, 3))
    Z = zonotope_graph(X)
    flips = Z.patterns[Z.edges[:, 0]] ^ Z.patterns[Z.edges[:, 1]]  # [E, n]
    assert (flips.sum(axis=1) == 1).all()
    steps = Z.vertices[Z.edges[:, 1]] - Z.vertices[Z.edges[:, 0]]
    generators = homogenize(X)[flips.argmax(axis=1)]
    np.testing.assert_allclose(np.abs(steps), np.abs(generators), atol=1e-12)
    np.testing.assert_allclose(Z.vertices, Z.patterns.astype(float) @ homogenize(X))


def test_figure1_point_set():
    Xt = homogenize(FIG1)
    dets = [abs(np.linalg.det(Xt[list(t)])) for t in ((0, 1, 2), (0, 1, 3), (0, 1, 4), (0, 2, 3), (0, 2, 4),
                                                      (0, 3, 4), (1, 2, 3), (1, 2, 4), (1, 3, 4), (2, 3, 4))]
    assert min(dets) == pytest.approx(0.07, abs=5e-3)
    Z = zonotope_graph(FIG1)
    assert (len(Z.patterns), len(Z.edges)) == (22, 40)
    assert np.bincount(Z.patterns.sum(axis=1), minlength=6).tolist() == [1, 4, 6, 6, 4, 1]


@pytest.mark.parametrize("X", [FIG1, XOR_X, np.random.default_rng(4).standard_normal((9, 3))])
def test_complement_symmetry(X):
    P = chambers(X)
    assert pattern_set(P) == pattern_set(~P)
    assert pattern_set(np.zeros((1, len(X)))) <= pattern_set(P)
    assert pattern_set(np.ones((1, len(X)))) <= pattern_set(P)


def test_singleton_feasible_iff_hull_vertex():
    X = np.random.default_rng(5).standard_normal((12, 2))
    hull = set(ConvexHull(X).vertices.tolist())
    singletons = {i for i in range(len(X)) if is_feasible(X, np.eye(len(X), dtype=bool)[i])}
    assert singletons == hull
    assert {int(np.flatnonzero(p)[0]) for p in chambers(X) if p.sum() == 1} == hull
    assert sum(p.sum() == 1 for p in chambers(FIG1)) == 4


def test_lp_agrees_with_enumeration_on_every_flip():
    X = np.random.default_rng(6).standard_normal((8, 2))
    known = pattern_set(chambers(X))
    for pattern in chambers(X):
        for i in range(len(X)):
            flipped = pattern.copy()
            flipped[i] = ~flipped[i]
            assert is_feasible(X, flipped) == (flipped.tobytes() in known)


def test_degenerate_data_use_bfs():
    X = np.array([(-1, 0), (0, 0), (1, 0), (0.3, 1.0), (-0.4, -0.9)])  # three collinear points
    with pytest.raises(ValueError, match=re.escape("chambers: method='ray' needs data in general position")):
        chambers(X, method="ray")
    P = chambers(X)
    assert len(P) < general_position_count(5, 2)
    assert pattern_set(P) == hull_patterns(X)
    np.testing.assert_array_equal(P, chambers(X, method="bfs"))


def test_duplicate_inputs_move_together():
    X = np.array([[0.0], [0.0], [1.0], [-0.5]])
    Z = zonotope_graph(X)
    assert (Z.patterns[:, 0] == Z.patterns[:, 1]).all()
    assert pattern_set(Z.patterns) == hull_patterns(X)
    flips = (Z.patterns[Z.edges[:, 0]] ^ Z.patterns[Z.edges[:, 1]]).sum(axis=1)
    assert set(flips.tolist()) == {1, 2}


@pytest.mark.parametrize("X, count", [(np.array([[0.5, 1.0]]), 2), (np.array([[0.5, 1.0], [1.0, -1.0]]), 4),
                                      (np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]), 6)])
def test_tiny_and_collinear_sets(X, count):
    P = chambers(X)
    assert len(P) == count
    np.testing.assert_array_equal(P, chambers(X, method="bfs"))
    assert pattern_set(P) == pattern_set(~P)


def test_too_many_points_are_refused():
    X = np.random.default_rng(7).standard_normal((400, 3))
    with pytest.raises(ValueError, match=r"^chambers: n=400 points in d=3 would take minutes .*use fewer points$"):
        chambers(X)


@pytest.mark.parametrize("call, message", [
    (lambda: chambers(FIG1, method="exact"), "method must be 'auto', 'ray' or 'bfs', got 'exact'"),
    (lambda: is_feasible(FIG1, np.ones(4)), "pattern must have shape (5,), one entry per row of X, got (4,)"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()
