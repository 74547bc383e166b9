"""Tests for analysis.zonotope.search: greedy vertex search, bounded by the exhaustive optimum and compared with
GD and random vertices (spec zonotope.md §8.9, 8.11)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from analysis.zonotope import (chambers, gd_train, global_optimum, greedy_search, random_vertex_losses, search,
                               solve_vertex)
from tests.unit.zonotope.conftest import FIG1, pattern_set, relu_loss, teacher


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
    monkeypatch.setattr(search, "ORACLE_RAY_LIMIT", 0)
    monkeypatch.setattr(search, "ORACLE_BFS_LIMIT", 0)
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


@pytest.mark.parametrize("call, message", [
    (lambda: greedy_search(FIG1, np.ones(5), 1.5), "m must be an integer >= 1, got 1.5"),
    (lambda: greedy_search(FIG1, np.ones(5), 2, init="best"),
     "init must be 'random', 'gd', 'doubling' or a (patterns, signs) pair, got 'best'"),
    (lambda: greedy_search(FIG1, np.ones(5), 3, init="doubling"),
     "init='doubling' needs m = 2*ceil(n/(d+1)) = 4, got m=3"),
    (lambda: greedy_search(FIG1, np.ones(5), 2, init=(np.ones((3, 5)), [1, 1])),
     "patterns must have shape (2, 5) (units x examples, m >= 1), got (3, 5)"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()
