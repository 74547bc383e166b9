"""Convex programs on vertices of Z^m (spec §3, §5): one vertex QP, the exhaustive global optimum, per-chamber
best losses, random vertices and the doubling construction that interpolates any labels."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import ceil, comb

import numpy as np

from analysis.zonotope.arrangement import (GENERAL_POSITION_TOL, _arrangement, _check_count, _check_patterns,
                                           _check_signs, _check_y, _unit_rows, homogenize)
from analysis.zonotope.enumeration import _enumerate
from kernels.zonotope_qp import solve_vertex_qp

GLOBAL_QP_LIMIT = 20_000  # convex programs global_optimum may solve


@dataclass(frozen=True)
class VertexSolution:
    """Best network on one joint vertex: f(x) = Σ_j signs_j ReLU(⟨W_j, x̃⟩)."""

    loss: float  # ½·SSE
    W: np.ndarray  # [m, D] first-layer weights, bias last
    patterns: np.ndarray  # [m, n] bool, the joint vertex
    signs: np.ndarray  # [m] float, output signs ±1


def _relu_loss(Xt: np.ndarray, y: np.ndarray, W: np.ndarray, signs: np.ndarray) -> float:
    """½‖Σ_j s_j ReLU(X̃ w_j) − y‖² with real ReLUs."""
    residual = np.maximum(Xt @ W.T, 0.0) @ signs - y  # [n]
    return 0.5 * float(residual @ residual)


def solve_vertex(X: np.ndarray, y: np.ndarray, patterns: np.ndarray, signs: np.ndarray) -> VertexSolution:
    """Best ½·SSE network whose unit j stays in the closed chamber patterns[j] with output sign signs[j]."""
    Xt = homogenize(X)
    y = _check_y(y, Xt.shape[0])
    patterns = _check_patterns(patterns, Xt.shape[0])
    signs = _check_signs(signs, patterns.shape[0])
    W, loss = solve_vertex_qp(Xt, y, patterns, signs)
    return VertexSolution(loss=loss, W=W, patterns=patterns, signs=signs)


def _padded(best: VertexSolution, m: int, n: int, D: int) -> VertexSolution:
    """Pad a solution with zero units (empty pattern, sign +1) up to m units."""
    pad = m - best.W.shape[0]
    return VertexSolution(loss=best.loss, W=np.vstack([best.W, np.zeros((pad, D))]),
                          patterns=np.vstack([best.patterns, np.zeros((pad, n), dtype=bool)]),
                          signs=np.concatenate([best.signs, np.ones(pad)]))


def global_optimum(X: np.ndarray, y: np.ndarray, m: int) -> VertexSolution:
    """Exact optimum by exhaustive search over sets of distinct (chamber, sign) units (spec §3); tiny problems only."""
    Xt = homogenize(X)
    n, D = Xt.shape
    y = _check_y(y, n)
    m = _check_count("m", m)
    arr = _arrangement(Xt)
    P = _enumerate(arr, "auto")[:, arr.group]  # [V, n], as chambers(X)
    P = P[P.any(axis=1)]  # the empty chamber contributes nothing
    units = [(p, s) for s in (1.0, -1.0) for p in P]
    k = min(m, len(units))  # adding a unit never hurts (w = 0 is allowed), so sets of size k suffice
    if comb(len(units), k) > GLOBAL_QP_LIMIT:
        raise ValueError(f"global_optimum: n={n}, d={D - 1}, m={m} needs C({len(units)}, {k}) = "
                         f"{comb(len(units), k)} convex programs (limit {GLOBAL_QP_LIMIT}); exhaustive search is "
                         "for tiny problems only, use greedy_search")
    best = None
    for chosen in combinations(units, k):
        patterns = np.array([p for p, _ in chosen])
        signs = np.array([s for _, s in chosen])
        W, loss = solve_vertex_qp(Xt, y, patterns, signs)
        if best is None or loss < best.loss:
            best = VertexSolution(loss=loss, W=W, patterns=patterns, signs=signs)
    return _padded(best, m, n, D)


def best_unit_losses(X: np.ndarray, y: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """For each one-unit vertex in patterns [V, n], min over s = ±1 of the vertex QP value: [V] (for colouring Z)."""
    Xt = homogenize(X)
    y = _check_y(y, Xt.shape[0])
    patterns = _check_patterns(patterns, Xt.shape[0])
    return np.array([min(solve_vertex_qp(Xt, y, p[None], np.array([s]))[1] for s in (1.0, -1.0))
                     for p in patterns])


def _random_patterns(Xt: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Patterns [m, n] of m Gaussian units w_j ~ N(0, I_D) (biases included): chambers weighted by solid angle."""
    return (Xt @ rng.standard_normal((m, Xt.shape[1])).T > 0).T


def random_vertex_losses(X: np.ndarray, y: np.ndarray, m: int, n_samples: int, *, seed: int = 0) -> np.ndarray:
    """Vertex QP values at n_samples random joint vertices (spec §5.1 (a), signs half + half −): [n_samples]."""
    Xt = homogenize(X)
    y = _check_y(y, Xt.shape[0])
    m = _check_count("m", m)
    n_samples = _check_count("n_samples", n_samples)
    rng = np.random.default_rng(seed)
    signs = np.where(np.arange(m) < (m + 1) // 2, 1.0, -1.0)
    return np.array([solve_vertex_qp(Xt, y, _random_patterns(Xt, m, rng), signs)[1] for _ in range(n_samples)])


def doubling_width(n: int, d: int) -> int:
    """2⌈n/(d+1)⌉: the width at which the doubling construction provably fits any labels."""
    return 2 * ceil(n / (d + 1))


def _doubling_blocks(X: np.ndarray, seed: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Sort the inputs along a Gaussian direction u and cut them into blocks of D (spec §5.2 steps 1-2).

    Returns u [d], the blocks (index arrays, in sorted order) and the thresholds t_k [K] (t_0 unused).
    """
    n, d = X.shape
    u = np.random.default_rng(seed).standard_normal(d)
    p = X @ u  # [n]
    order = np.argsort(p)
    blocks = [order[start:start + d + 1] for start in range(0, n, d + 1)]  # the last may be shorter
    thresholds = np.array([0.0] + [(p[a].max() + p[b].min()) / 2 for a, b in zip(blocks, blocks[1:])])
    gaps = [p[b].min() - p[a].max() for a, b in zip(blocks, blocks[1:])]
    if min(gaps, default=np.inf) <= GENERAL_POSITION_TOL * np.abs(p).max():
        raise ValueError("doubling_vertex: two inputs project to the same point along u (duplicate inputs); the "
                         "construction needs data in general position")
    return u, blocks, thresholds


def doubling_vertex(X: np.ndarray, y: np.ndarray, *, seed: int = 0) -> VertexSolution:
    """Zero-loss network with 2⌈n/(d+1)⌉ units on nested suffix chambers, in closed form (spec §5.2)."""
    Xt = homogenize(X)
    n, D = Xt.shape
    y = _check_y(y, n)
    u, blocks, thresholds = _doubling_blocks(np.asarray(X, dtype=float), seed)
    fitted = np.zeros(n)  # Σ_{l<k} ⟨u_l, x̃_i⟩ on the suffix sets so far
    W, patterns = [], []
    for k, block in enumerate(blocks):
        suffix = np.zeros(n, dtype=bool)
        suffix[np.concatenate(blocks[k:])] = True
        if np.linalg.matrix_rank(_unit_rows(Xt[block]), tol=GENERAL_POSITION_TOL) < len(block):
            raise ValueError(f"doubling_vertex: block {k} of the inputs sorted along u is affinely dependent; the "
                             "construction needs data in general position")
        # u_k = X̃_{B_k}^{-1}(y_{B_k} − Σ_{l<k} X̃_{B_k} u_l), least norm when the last block is short
        u_k = np.linalg.lstsq(Xt[block], y[block] - fitted[block], rcond=None)[0]  # [D]
        fitted[suffix] += Xt[suffix] @ u_k
        c_k = np.eye(D)[-1] if k == 0 else np.append(u, -thresholds[k])  # realises the suffix chamber
        lam = 1.0 + np.max(np.abs(Xt @ u_k) / np.abs(Xt @ c_k))
        W += [lam * c_k + u_k, lam * c_k]
        patterns += [suffix, suffix]
    W = np.array(W)  # [2K, D]
    signs = np.tile([1.0, -1.0], len(blocks))
    return VertexSolution(loss=_relu_loss(Xt, y, W, signs), W=W, patterns=np.array(patterns), signs=signs)
