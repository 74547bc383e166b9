"""Tests for analysis.zonotope against the known answers of spec zonotope.md §8."""
from __future__ import annotations

import re
from itertools import product
from math import ceil, comb

import cvxpy as cp
import numpy as np
import pytest
from scipy.spatial import ConvexHull

from analysis import zonotope
from analysis.zonotope import (
    chambers,
    doubling_vertex,
    gd_train,
    global_optimum,
    greedy_search,
    homogenize,
    is_feasible,
    random_vertex_losses,
    solve_vertex,
    zonotope_graph,
)

FIG1 = np.array([(1, 0.2), (-0.5, 1), (-1, -0.7), (0.3, -1.2), (1.5, 1.1)])
XOR_X = np.array([(1, 1), (1, -1), (-1, 1), (-1, -1)], dtype=float)
XOR_Y = np.array([0, 1, 1, 0], dtype=float)


def general_position_count(n: int, d: int) -> int:
    """2 Σ_{k<d+1} C(n−1, k) (spec §2.2)."""
    return 2 * sum(comb(n - 1, k) for k in range(d + 1))


def relu_loss(X: np.ndarray, y: np.ndarray, W: np.ndarray, signs: np.ndarray) -> float:
    """½·SSE of Σ_j s_j ReLU(⟨w_j, x̃⟩), written out with a loop over units."""
    Xt = homogenize(X)
    prediction = sum(s * np.maximum(Xt @ w, 0.0) for w, s in zip(W, signs))
    return 0.5 * float(np.sum((prediction - y) ** 2))


def pattern_set(P: np.ndarray) -> set[bytes]:
    return {row.astype(bool).tobytes() for row in P}


def hull_patterns(X: np.ndarray) -> set[bytes]:
    """Subsets S whose sum Σ_{i∈S} x̃_i is a vertex of the hull of all 2^n subset sums (spec §2.4 item 3)."""
    Xt = homogenize(X)
    subsets = np.array(list(product([False, True], repeat=len(X))))  # [2^n, n]
    hull = ConvexHull(subsets.astype(float) @ Xt, qhull_options="Qs Qx" if Xt.shape[1] >= 4 else None)
    return pattern_set(subsets[hull.vertices])


def teacher(n: int, d: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, labels of a random ReLU teacher, and the teacher's patterns and signs."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((width, d + 1))
    signs = rng.choice([-1.0, 1.0], size=width)
    H = homogenize(X) @ W.T  # [n, width]
    return X, np.maximum(H, 0.0) @ signs, (H > 0).T, signs


# ---------------------------------------------------------------------------------------------
# Enumeration (§8.1-8.4)


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


# ---------------------------------------------------------------------------------------------
# Vertex programs (§8.5, 8.6, 8.10)


def test_xor():
    Z = zonotope_graph(XOR_X)
    assert (len(Z.patterns), len(Z.edges)) == (14, 24)
    assert global_optimum(XOR_X, XOR_Y, 1).loss == pytest.approx(0.5, abs=1e-7)
    best = global_optimum(XOR_X, XOR_Y, 2)
    assert best.loss < 1e-9
    assert relu_loss(XOR_X, XOR_Y, best.W, best.signs) < 1e-9
    exact = solve_vertex(XOR_X, XOR_Y, [[0, 1, 1, 1], [0, 0, 0, 1]], [1, -1])  # spec: {2,3,4}+, {4}−
    assert exact.loss < 1e-9


def test_discontinuity_in_the_data():
    y = np.array([0.0, 1.0, 0.0])
    assert global_optimum(np.array([(-1, 0), (0, 0), (1, 0)]), y, 1).loss == pytest.approx(1 / 3, abs=1e-7)
    middle = np.array([False, True, False])
    assert not is_feasible(np.array([(-1, 0), (0, 0), (1, 0)]), middle)
    for eps in (0.1, 0.01, 0.001):
        X = np.array([(-1, 0), (0, eps), (1, 0)])
        best = global_optimum(X, y, 1)
        assert best.loss < 1e-9
        assert is_feasible(X, middle)
        np.testing.assert_allclose(best.W[0, 1:] * [eps, 1], [2.64, -1.64], atol=0.01)


def test_discontinuity_with_duplicate_inputs():
    y = np.array([0.0, 1.0, 0.5])
    assert global_optimum(np.array([[0.0], [0.0], [1.0]]), y, 2).loss == pytest.approx(0.25, abs=1e-7)
    for eps in (0.1, 0.01):
        assert global_optimum(np.array([[0.0], [eps], [1.0]]), y, 2).loss < 1e-9


def test_continuity_at_general_position():
    rng = np.random.default_rng(8)
    X, E = rng.standard_normal((10, 2)), rng.standard_normal((10, 2))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2
    base = global_optimum(X, y, 1).loss
    gaps = [abs(global_optimum(X + delta * E, y, 1).loss - base) for delta in (1e-2, 1e-3, 1e-4)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-2


@pytest.mark.parametrize("seed", range(4))
def test_qp_value_is_the_network_loss(seed):
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((30, 2)), rng.standard_normal(30)
    m = 3
    patterns = (homogenize(X) @ rng.standard_normal((m, 3)).T > 0).T
    solution = solve_vertex(X, y, patterns, rng.choice([-1.0, 1.0], size=m))
    assert relu_loss(X, y, solution.W, solution.signs) == pytest.approx(solution.loss, rel=1e-7, abs=1e-9)
    H = homogenize(X) @ solution.W.T  # [n, m], signs must follow the patterns (closed chambers)
    assert (np.where(patterns.T, H, -H) >= -1e-7).all()


def test_qp_matches_a_fresh_cvxpy_problem():
    rng = np.random.default_rng(9)
    X, y = rng.standard_normal((20, 2)), rng.standard_normal(20)
    Xt = homogenize(X)
    patterns = (Xt @ rng.standard_normal((2, 3)).T > 0).T
    signs = np.array([1.0, -1.0])
    W = cp.Variable((2, 3))
    H = Xt @ W.T
    prediction = cp.sum(cp.multiply((patterns * signs[:, None]).T, H), axis=1)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(prediction - y)),
                         [cp.multiply((2.0 * patterns - 1).T, H) >= 0])
    problem.solve(solver=cp.CLARABEL)
    assert solve_vertex(X, y, patterns, signs).loss == pytest.approx(problem.value, rel=1e-6)


@pytest.mark.parametrize("x_scale, y_scale", [(1.0, 1.0), (1e-3, 1e3), (1e3, 1e-3)])
def test_opposite_units_on_one_chamber_fit_any_affine_function(x_scale, y_scale):
    rng = np.random.default_rng(19)
    X, y = x_scale * rng.standard_normal((25, 2)), y_scale * rng.standard_normal(25)
    Xt = homogenize(X)
    ols = 0.5 * np.sum((Xt @ np.linalg.lstsq(Xt, y, rcond=None)[0] - y) ** 2)
    solution = solve_vertex(X, y, np.ones((2, 25)), [1, -1])  # unbounded optimal face: w⁺ − w⁻ is free
    assert solution.loss == pytest.approx(ols, rel=1e-7)
    assert relu_loss(X, y, solution.W, solution.signs) == pytest.approx(ols, rel=1e-7)


def test_empty_units_are_zero():
    X, y = FIG1, np.arange(5.0)
    solution = solve_vertex(X, y, np.zeros((2, 5)), [1, -1])
    assert solution.loss == pytest.approx(0.5 * y @ y)
    assert not solution.W.any()


# ---------------------------------------------------------------------------------------------
# Vertex selection, search and GD (§8.8, 8.9, 8.11)


@pytest.mark.parametrize("n, d", [(10, 1), (12, 2), (25, 2), (30, 3)])
def test_doubling_vertex_interpolates(n, d):
    rng = np.random.default_rng(n + d)
    X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    solution = doubling_vertex(X, y)
    K = ceil(n / (d + 1))
    assert solution.W.shape == (2 * K, d + 1)
    assert solution.loss < 1e-9
    assert relu_loss(X, y, solution.W, solution.signs) < 1e-9
    np.testing.assert_array_equal((homogenize(X) @ solution.W.T > 0).T, solution.patterns)
    assert solve_vertex(X, y, solution.patterns, solution.signs).loss < 1e-9
    half = solution.patterns[::2]
    assert solve_vertex(X, y, half, np.ones(K)).loss > 1e-3
    assert solve_vertex(X, y, half, np.resize([1.0, -1.0], K)).loss > 1e-3


def test_exhaustive_bounds_greedy_gd_and_random_vertices():
    rng = np.random.default_rng(11)
    X, y = FIG1, rng.standard_normal(5)
    best = global_optimum(X, y, 2)
    assert relu_loss(X, y, best.W, best.signs) == pytest.approx(best.loss, abs=1e-8)
    greedy = [greedy_search(X, y, 2, seed=seed).loss for seed in range(4)]
    gd = [gd_train(X, y, 2, seed=seed, steps=800).loss for seed in range(2)]
    median = np.median(random_vertex_losses(X, y, 2, 40))
    assert min(greedy + gd) >= best.loss - 1e-7
    assert max(greedy) <= median
    at_best = greedy_search(X, y, 2, init=(best.patterns, best.signs))
    assert len(at_best.path) == 1
    assert at_best.loss == pytest.approx(best.loss, abs=1e-8)


@pytest.mark.parametrize("m", [3, 4])
def test_teacher_vertex_is_realisable(m):
    X, y, patterns, signs = teacher(30, 2, 3, seed=12)
    assert solve_vertex(X, y, patterns, signs).loss < 1e-9
    extra = np.zeros((m - 3, 30), dtype=bool)
    result = greedy_search(X, y, m, init=(np.vstack([patterns, extra]), np.concatenate([signs, np.ones(m - 3)])))
    assert result.loss < 1e-9


def test_greedy_path_walks_edges_and_improves():
    X, y, _, _ = teacher(25, 2, 6, seed=13)
    result = greedy_search(X, y, 2, seed=1)
    known = pattern_set(chambers(X))
    for before, after in zip(result.path, result.path[1:]):
        unit_moves = (before.patterns ^ after.patterns).sum()
        sign_moves = (before.signs != after.signs).sum()
        assert (unit_moves, sign_moves) in ((1, 0), (0, 1))
        assert after.loss < before.loss - 1e-7
        assert pattern_set(after.patterns) <= known
    assert result.loss == pytest.approx(result.path[-1].loss, abs=1e-9)
    assert relu_loss(X, y, result.W, result.signs) == pytest.approx(result.loss, rel=1e-7, abs=1e-9)
    assert result.n_solves >= len(result.path)


def test_greedy_with_lp_flip_checks_matches_enumeration(monkeypatch):
    X, y, _, _ = teacher(15, 2, 4, seed=18)
    enumerated = greedy_search(X, y, 2, seed=5)
    monkeypatch.setattr(zonotope, "ORACLE_RAY_LIMIT", 0)
    monkeypatch.setattr(zonotope, "ORACLE_BFS_LIMIT", 0)
    with_lp = greedy_search(X, y, 2, seed=5)
    assert [step.loss for step in with_lp.path] == [step.loss for step in enumerated.path]


def test_greedy_without_sign_moves_keeps_signs():
    X, y, _, _ = teacher(20, 2, 4, seed=14)
    result = greedy_search(X, y, 2, sign_moves=False, seed=3, max_steps=5)
    assert all(np.array_equal(step.signs, result.path[0].signs) for step in result.path)
    assert len(result.path) <= 6


def test_greedy_from_doubling_and_gd_vertices():
    rng = np.random.default_rng(15)
    X, y = rng.standard_normal((9, 2)), rng.standard_normal(9)
    assert greedy_search(X, y, 6, init="doubling").loss < 1e-9
    gd = gd_train(X, y, 2, seed=0)
    polished = greedy_search(X, y, 2, init="gd", seed=0)
    assert polished.path[0].loss <= gd.loss + 1e-9
    assert polished.loss <= polished.path[0].loss


def test_gd_pattern_trace_is_consistent():
    X, y, _, _ = teacher(20, 2, 4, seed=16)
    result = gd_train(X, y, 3, seed=2, steps=600)
    steps = [change.step for change in result.pattern_trace]
    assert steps[0] == 0 and steps == sorted(set(steps))
    for before, after in zip(result.pattern_trace, result.pattern_trace[1:]):
        assert not np.array_equal(before.patterns, after.patterns)
    np.testing.assert_array_equal(result.pattern_trace[-1].patterns, (homogenize(X) @ result.W.T > 0).T)
    assert result.losses.shape == (601,)
    assert result.losses[-1] == result.loss
    assert relu_loss(X, y, result.W, result.signs) == pytest.approx(result.loss, rel=1e-9)
    at_vertex = solve_vertex(X, y, result.pattern_trace[-1].patterns, result.signs)
    assert at_vertex.loss <= result.loss + 1e-9


def test_random_vertex_losses():
    rng = np.random.default_rng(17)
    X, y = rng.standard_normal((15, 2)), rng.standard_normal(15)
    losses = random_vertex_losses(X, y, 3, 12, seed=4)
    assert losses.shape == (12,)
    assert (losses >= 0).all() and (losses <= 0.5 * y @ y + 1e-9).all()
    np.testing.assert_array_equal(losses, random_vertex_losses(X, y, 3, 12, seed=4))


# ---------------------------------------------------------------------------------------------
# Bad inputs


def test_homogenize():
    Xt = homogenize([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(Xt, [[1, 2, 1], [3, 4, 1]])


@pytest.mark.parametrize("call, message", [
    (lambda: homogenize(np.ones(5)), "X must be a 2-D array [n, d], got shape (5,)"),
    (lambda: homogenize(np.ones((0, 2))), "X must have at least one row and one column, got shape (0, 2)"),
    (lambda: chambers(np.array([[0.0, np.nan]])), "X must be finite, got 1 NaN or inf entries"),
    (lambda: chambers(FIG1, method="exact"), "method must be 'auto', 'ray' or 'bfs', got 'exact'"),
    (lambda: solve_vertex(FIG1, np.ones(4), np.ones((1, 5)), [1]),
     "y must be a 1-D array of length n=5 (one target per row of X), got shape (4,)"),
    (lambda: solve_vertex(FIG1, [0, 0, 0, 0, np.inf], np.ones((1, 5)), [1]), "y must be finite, got 1 NaN or inf entries"),
    (lambda: solve_vertex(FIG1, np.ones(5), np.ones((1, 4)), [1]),
     "patterns must have shape (m, 5) (units x examples, m >= 1), got (1, 4)"),
    (lambda: solve_vertex(FIG1, np.ones(5), np.full((1, 5), 2), [1]), "patterns must be boolean or 0/1, got other values"),
    (lambda: solve_vertex(FIG1, np.ones(5), np.ones((2, 5)), [1, 0]),
     "signs must be a 1-D array of m=2 entries, each +1 or -1, got [1.0, 0.0]"),
    (lambda: is_feasible(FIG1, np.ones(4)), "pattern must have shape (5,), one entry per row of X, got (4,)"),
    (lambda: global_optimum(FIG1, np.ones(5), 0), "m must be an integer >= 1, got 0"),
    (lambda: greedy_search(FIG1, np.ones(5), 1.5), "m must be an integer >= 1, got 1.5"),
    (lambda: greedy_search(FIG1, np.ones(5), 2, init="best"),
     "init must be 'random', 'gd', 'doubling' or a (patterns, signs) pair, got 'best'"),
    (lambda: greedy_search(FIG1, np.ones(5), 3, init="doubling"),
     "init='doubling' needs m = 2*ceil(n/(d+1)) = 4, got m=3"),
    (lambda: greedy_search(FIG1, np.ones(5), 2, init=(np.ones((3, 5)), [1, 1])),
     "patterns must have shape (2, 5) (units x examples, m >= 1), got (3, 5)"),
    (lambda: random_vertex_losses(FIG1, np.ones(5), 2, 0), "n_samples must be an integer >= 1, got 0"),
    (lambda: gd_train(FIG1, np.ones(5), 2, lr=0.0), "lr must be > 0, got 0.0"),
    (lambda: gd_train(FIG1, np.ones(5), 2, steps=0), "steps must be an integer >= 1, got 0"),
    (lambda: global_optimum(np.random.default_rng(0).standard_normal((20, 2)), np.ones(20), 2),
     "global_optimum: n=20, d=2, m=2 needs C(762, 2) = 289941 convex programs (limit 20000); exhaustive search "
     "is for tiny problems only, use greedy_search"),
    (lambda: doubling_vertex(np.ones((4, 2)), np.ones(4)),
     "doubling_vertex: two inputs project to the same point along u (duplicate inputs); the construction needs "
     "data in general position"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()
