"""Greedy local search over vertices of Z^m (spec §6.1): best-improvement moves along edges of the joint
zonotope (one unit crosses one wall) and output-sign flips, each scored by its vertex QP."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from analysis.zonotope.arrangement import (_arrangement, _Arrangement, _check_count, _check_patterns, _check_signs,
                                           _check_y, _groups, _unit_rows, homogenize)
from analysis.zonotope.enumeration import (FEASIBLE_TOL, _bfs_patterns, _bfs_work, _margin, _ray_patterns,
                                           _ray_work)
from analysis.zonotope.gd import gd_train
from analysis.zonotope.vertex import _random_patterns, doubling_vertex, doubling_width
from kernels.zonotope_qp import solve_vertex_qp

IMPROVE_TOL = 1e-7  # greedy accepts a move only if it lowers the loss by more than this
ORACLE_RAY_LIMIT = 5e7  # greedy enumerates chambers for O(1) flip checks below this ray work (≈ 0.5 s) ...
ORACLE_BFS_LIMIT = 5e4  # ... or this BFS work for degenerate data (≈ 2 s); otherwise it runs LPs


@dataclass(frozen=True)
class SearchStep:
    """One state of a greedy search: the joint vertex, the output signs and the vertex QP value."""

    patterns: np.ndarray  # [m, n] bool
    signs: np.ndarray  # [m] float ±1
    loss: float  # ½·SSE


@dataclass(frozen=True)
class SearchResult:
    """Final state of greedy_search and the path that led there (path[0] is the start)."""

    loss: float  # ½·SSE
    patterns: np.ndarray  # [m, n] bool
    signs: np.ndarray  # [m] float ±1
    W: np.ndarray  # [m, D]
    path: tuple[SearchStep, ...]
    n_solves: int  # vertex QPs solved (memoised states are not counted again)


def _chamber_test(arr: _Arrangement) -> Callable[[np.ndarray], bool]:
    """Membership of a pattern [n] in the chamber set: a set lookup when enumeration is cheap, else the LP."""
    P = _ray_patterns(arr.U) if _ray_work(arr) <= ORACLE_RAY_LIMIT else None
    if P is None and _bfs_work(arr) <= ORACLE_BFS_LIMIT:
        P = _bfs_patterns(arr.U)
    if P is not None:
        known = {row.tobytes() for row in P[:, arr.group]}
        return lambda pattern: pattern.tobytes() in known
    R = _unit_rows(arr.Xt)  # [n, D]
    cache: dict[bytes, bool] = {}

    def lp_test(pattern: np.ndarray) -> bool:
        key = pattern.tobytes()
        if key not in cache:
            cache[key] = _margin(R, pattern) > FEASIBLE_TOL
        return cache[key]

    return lp_test


class _VertexValues:
    """Memoised vertex QP values, keyed on the unordered set of (sign, pattern) units."""

    def __init__(self, Xt: np.ndarray, y: np.ndarray):
        self.Xt, self.y = Xt, y
        self.cache: dict[tuple, float] = {}

    def __call__(self, patterns: np.ndarray, signs: np.ndarray) -> float:
        key = tuple(sorted((float(s), p.tobytes()) for p, s in zip(patterns, signs)))
        if key not in self.cache:
            self.cache[key] = solve_vertex_qp(self.Xt, self.y, patterns, signs)[1]
        return self.cache[key]


def _neighbours(patterns: np.ndarray, signs: np.ndarray, groups: list[np.ndarray],
                is_chamber: Callable[[np.ndarray], bool], sign_moves: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Adjacent joint vertices (one unit crosses one wall) and, optionally, single output-sign flips."""
    for j in range(len(signs)):
        for group in groups:
            row = patterns[j].copy()
            row[group] = ~row[group]
            if is_chamber(row):
                moved = patterns.copy()
                moved[j] = row
                yield moved, signs
        if sign_moves:
            flipped = signs.copy()
            flipped[j] = -flipped[j]
            yield patterns, flipped


def _best_move(value: _VertexValues, moves: Iterator[tuple[np.ndarray, np.ndarray]]
               ) -> tuple[float, np.ndarray, np.ndarray] | None:
    """The move with the lowest vertex QP value (the first on ties) as (value, patterns, signs); None if no move."""
    return min(((value(P, s), P, s) for P, s in moves), key=lambda move: move[0], default=None)


def _initial_vertex(X: np.ndarray, Xt: np.ndarray, y: np.ndarray, m: int, init: str | tuple[np.ndarray, np.ndarray],
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Start of the greedy search: patterns [m, n] bool and signs [m] (spec §6.1 initialisations); Xt = X̃ [n, D]."""
    if isinstance(init, tuple):
        return _check_patterns(init[0], Xt.shape[0], m), _check_signs(init[1], m)
    if init == "random":
        rng = np.random.default_rng(seed)
        return _random_patterns(Xt, m, rng), rng.choice([-1.0, 1.0], size=m)
    if init == "gd":
        result = gd_train(X, y, m, seed=seed)
        return result.pattern_trace[-1].patterns, result.signs
    if init == "doubling":
        width = doubling_width(Xt.shape[0], Xt.shape[1] - 1)
        if m != width:
            raise ValueError(f"init='doubling' needs m = 2*ceil(n/(d+1)) = {width}, got m={m}")
        solution = doubling_vertex(X, y, seed=seed)
        return solution.patterns, solution.signs
    raise ValueError(f"init must be 'random', 'gd', 'doubling' or a (patterns, signs) pair, got {init!r}")


def greedy_search(X: np.ndarray, y: np.ndarray, m: int, *, init: str | tuple[np.ndarray, np.ndarray] = "random",
                  sign_moves: bool = True, seed: int = 0, max_steps: int = 200) -> SearchResult:
    """Best-improvement local search on the graph of Z^m (plus output-sign flips) until no move helps."""
    Xt = homogenize(X)
    y = _check_y(y, Xt.shape[0])
    m = _check_count("m", m)
    max_steps = _check_count("max_steps", max_steps, minimum=0)
    patterns, signs = _initial_vertex(X, Xt, y, m, init, seed)
    arr = _arrangement(Xt)  # built once: the flip groups and the chamber test share it
    is_chamber, value = _chamber_test(arr), _VertexValues(Xt, y)
    groups = _groups(arr)
    path = [SearchStep(patterns=patterns, signs=signs, loss=value(patterns, signs))]
    for _ in range(max_steps):
        best = _best_move(value, _neighbours(patterns, signs, groups, is_chamber, sign_moves))
        if best is None or best[0] >= path[-1].loss - IMPROVE_TOL:
            break
        loss, patterns, signs = best
        path.append(SearchStep(patterns=patterns, signs=signs, loss=loss))
    W, loss = solve_vertex_qp(Xt, y, patterns, signs)
    return SearchResult(loss=loss, patterns=patterns, signs=signs, W=W, path=tuple(path),
                        n_solves=len(value.cache))
