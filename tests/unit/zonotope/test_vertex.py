"""Tests for analysis.zonotope.vertex: vertex QPs, the exhaustive optimum, random and doubling vertices
(spec zonotope.md §8.5-8.8, 8.10)."""
from __future__ import annotations

import re
from math import ceil

import cvxpy as cp
import numpy as np
import pytest

from analysis.zonotope import (doubling_vertex, global_optimum, homogenize, is_feasible, random_vertex_losses,
                               solve_vertex, zonotope_graph)
from tests.unit.zonotope.conftest import FIG1, XOR_X, XOR_Y, relu_loss


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


def test_random_vertex_losses():
    rng = np.random.default_rng(17)
    X, y = rng.standard_normal((15, 2)), rng.standard_normal(15)
    losses = random_vertex_losses(X, y, 3, 12, seed=4)
    assert losses.shape == (12,)
    assert (losses >= 0).all() and (losses <= 0.5 * y @ y + 1e-9).all()
    np.testing.assert_array_equal(losses, random_vertex_losses(X, y, 3, 12, seed=4))


@pytest.mark.parametrize("call, message", [
    (lambda: global_optimum(FIG1, np.ones(5), 0), "m must be an integer >= 1, got 0"),
    (lambda: random_vertex_losses(FIG1, np.ones(5), 2, 0), "n_samples must be an integer >= 1, got 0"),
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
