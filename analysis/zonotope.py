"""Zonotope view of shallow ReLU training (spec zonotope.md, Matena & Raffel 2022).

A unit with weights w ∈ R^D acts on homogenised inputs x̃ = (x, 1); its activation pattern
S = {i : ⟨w, x̃_i⟩ > 0} is a chamber of the central arrangement {H_i = x̃_i^⊥}, i.e. a vertex
v_S = Σ_{i∈S} x̃_i of the zonotope Z = Σ_i [0, x̃_i]. With the patterns of all m units fixed, the
network f(x) = Σ_j s_j ReLU(⟨w_j, x̃⟩) is linear in W, and ½·SSE is a QP (kernels/zonotope_qp.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import ceil, comb
from typing import Callable, Iterator

import numpy as np
import torch

from kernels.zonotope_qp import cone_residual, feasibility_margin, solve_vertex_qp

GENERAL_POSITION_TOL = 1e-9  # |det| of D unit-norm homogenised points below this counts as degenerate
FEASIBLE_TOL = 1e-9  # strict-margin LP (spec §2.3) on unit-norm rows: feasible iff t* > this
CONE_TOL = 1e-9  # BFS flip test: g_i is a wall iff its distance to cone(other g_k) exceeds this
DUPLICATE_DECIMALS = 12  # unit-norm rows equal after rounding to this many decimals are one hyperplane
RANK_TOL = 1e-10  # singular values below this (relative) do not count towards the rank
IMPROVE_TOL = 1e-7  # greedy accepts a move only if it lowers the loss by more than this
RAY_WORK_LIMIT = 1e9  # pattern bits the ray method may emit (≈ 10-20 s on 2 cores)
BFS_WORK_LIMIT = 5e5  # cone tests the BFS may run (≈ 20 s)
ORACLE_RAY_LIMIT = 5e7  # greedy enumerates chambers for O(1) flip checks below this ray work (≈ 0.5 s) ...
ORACLE_BFS_LIMIT = 5e4  # ... or this BFS work for degenerate data (≈ 2 s); otherwise it runs LPs
GLOBAL_QP_LIMIT = 20_000  # convex programs global_optimum may solve
RAY_CHUNK_BITS = 2e7  # pattern bits emitted per vectorised chunk of the ray method


@dataclass(frozen=True)
class Zonotope:
    """Vertices, activation patterns and 1-skeleton of Z; row v of every array is one vertex."""

    vertices: np.ndarray  # [V, D] float, v_S = Σ_{i∈S} x̃_i
    patterns: np.ndarray  # [V, n] bool, the chamber S of each vertex
    edges: np.ndarray  # [E, 2] int, vertex pairs that differ by flipping one (group of equal) example(s)


@dataclass(frozen=True)
class VertexSolution:
    """Best network on one joint vertex: f(x) = Σ_j signs_j ReLU(⟨W_j, x̃⟩)."""

    loss: float  # ½·SSE
    W: np.ndarray  # [m, D] first-layer weights, bias last
    patterns: np.ndarray  # [m, n] bool, the joint vertex
    signs: np.ndarray  # [m] float, output signs ±1


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


@dataclass(frozen=True)
class PatternChange:
    """The activation pattern GD is in from `step` on (step t = parameters after t Adam updates)."""

    step: int
    patterns: np.ndarray  # [m, n] bool


@dataclass(frozen=True)
class GdResult:
    """Full-batch Adam on ½·SSE, reported in the reparameterised form W_j = |a_j| w_j, s_j = sign(a_j)."""

    loss: float  # ½·SSE at the final parameters
    W: np.ndarray  # [m, D]
    signs: np.ndarray  # [m] float ±1
    pattern_trace: tuple[PatternChange, ...]  # first entry is step 0, last is the final pattern
    losses: np.ndarray  # [steps + 1], losses[t] after t updates


@dataclass(frozen=True)
class _Arrangement:
    """The distinct hyperplanes of X̃, as unit normals in the span of X̃'s rows (same chambers)."""

    U: np.ndarray  # [n_u, r] unit-norm rows, r = rank(X̃)
    group: np.ndarray  # [n] int, row of U for each example (duplicate inputs share one)


# ---------------------------------------------------------------------------------------------
# Input checks and homogenisation


def homogenize(X: np.ndarray) -> np.ndarray:
    """X̃ = [X, 1]: append the constant input that carries each unit's bias; X [n, d] -> [n, d+1]."""
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array [n, d], got shape {X.shape}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must have at least one row and one column, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"X must be finite, got {np.count_nonzero(~np.isfinite(X))} NaN or inf entries")
    return np.hstack([X, np.ones((X.shape[0], 1))])


def _check_y(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.shape != (n,):
        raise ValueError(f"y must be a 1-D array of length n={n} (one target per row of X), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"y must be finite, got {np.count_nonzero(~np.isfinite(y))} NaN or inf entries")
    return y


def _check_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_bool(name: str, array: np.ndarray) -> np.ndarray:
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or 0/1, got other values")
    return array.astype(bool)


def _check_pattern(pattern: np.ndarray, n: int) -> np.ndarray:
    pattern = np.asarray(pattern)
    if pattern.shape != (n,):
        raise ValueError(f"pattern must have shape ({n},), one entry per row of X, got {pattern.shape}")
    return _as_bool("pattern", pattern)


def _check_patterns(patterns: np.ndarray, n: int, m: int | None = None) -> np.ndarray:
    patterns = np.asarray(patterns)
    rows_ok = patterns.ndim == 2 and (patterns.shape[0] == m if m is not None else patterns.shape[0] >= 1)
    if not rows_ok or patterns.shape[1] != n:
        raise ValueError(f"patterns must have shape ({'m' if m is None else m}, {n}) (units x examples, m >= 1), "
                         f"got {patterns.shape}")
    return _as_bool("patterns", patterns)


def _check_signs(signs: np.ndarray, m: int) -> np.ndarray:
    signs = np.asarray(signs, dtype=float)
    if signs.shape != (m,) or not np.isin(signs, (-1.0, 1.0)).all():
        raise ValueError(f"signs must be a 1-D array of m={m} entries, each +1 or -1, got {signs.tolist()}")
    return signs


def _relu_loss(Xt: np.ndarray, y: np.ndarray, W: np.ndarray, signs: np.ndarray) -> float:
    """½‖Σ_j s_j ReLU(X̃ w_j) − y‖² with real ReLUs."""
    residual = np.maximum(Xt @ W.T, 0.0) @ signs - y  # [n]
    return 0.5 * float(residual @ residual)


# ---------------------------------------------------------------------------------------------
# The arrangement and its chambers (spec §2.2-2.4)


def _unit_rows(Xt: np.ndarray) -> np.ndarray:
    """Rows of X̃ scaled to unit norm: chambers only see the directions of the x̃_i."""
    return Xt / np.linalg.norm(Xt, axis=1, keepdims=True)


def _arrangement(Xt: np.ndarray) -> _Arrangement:
    """Merge duplicate hyperplanes and express the normals in an orthonormal basis of their span."""
    distinct, group = np.unique(np.round(_unit_rows(Xt), DUPLICATE_DECIMALS), axis=0, return_inverse=True)
    distinct = _unit_rows(distinct)  # [n_u, D]
    _, singular, Vt = np.linalg.svd(distinct, full_matrices=False)
    rank = int(np.count_nonzero(singular > RANK_TOL * singular[0]))
    U = distinct @ Vt[:rank].T  # [n_u, r]
    return _Arrangement(U=_unit_rows(U), group=group)


def _max_chambers(n_u: int, r: int) -> int:
    """2 Σ_{k<r} C(n_u − 1, k): the chamber count in general position, an upper bound otherwise."""
    return 2 * sum(comb(n_u - 1, k) for k in range(r))


def _ray_work(arr: _Arrangement) -> float:
    """Pattern bits the ray method emits: C(n_u, r−1) subsets x 2^r sign completions x n_u."""
    n_u, r = arr.U.shape
    return float(comb(n_u, r - 1)) * 2 ** r * n_u


def _bfs_work(arr: _Arrangement) -> float:
    """Cone tests the BFS runs at most: one per chamber and example."""
    return float(_max_chambers(*arr.U.shape)) * arr.U.shape[0]


def _codes(P: np.ndarray) -> np.ndarray:
    """One opaque sortable key per pattern row: P [V, n] bool -> [V] void (packed bits)."""
    packed = np.ascontiguousarray(np.packbits(P, axis=1))  # [V, ceil(n/8)]
    return packed.view(np.dtype((np.void, packed.shape[1]))).ravel()


def _decode(codes: np.ndarray, n: int) -> np.ndarray:
    """Inverse of _codes: [V] void -> [V, n] bool."""
    packed = codes.view(np.uint8).reshape(len(codes), -1)
    return np.unpackbits(packed, axis=1, count=n).astype(bool)


def _cofactor_rays(A: np.ndarray) -> np.ndarray:
    """Null vector of each (r−1) x r matrix in A [C, r−1, r] by cofactors: ρ_k = (−1)^k det(A without column k)."""
    C, k, r = A.shape
    if k == 0:
        return np.ones((C, 1))
    minors = [np.linalg.det(np.delete(A, col, axis=2)) for col in range(r)]  # r x [C]
    return np.stack(minors, axis=1) * (-1.0) ** np.arange(r)  # [C, r]


def _ray_chunk(U: np.ndarray, T: np.ndarray) -> np.ndarray | None:
    """Chamber codes around the extreme rays ±ρ_T for the subsets T [C, r−1]; None if degenerate."""
    C, k = T.shape
    rays = _cofactor_rays(U[T])  # [C, r]
    values = rays @ U.T  # [C, n_u], ⟨ρ_T, u_i⟩ = det(U_T ∪ {i}) for i ∉ T
    on_ray = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(on_ray, T, True, axis=1)
    if np.abs(values[~on_ray]).min(initial=np.inf) <= GENERAL_POSITION_TOL:
        return None
    base = np.concatenate([values > 0, values < 0])  # [2C, n_u], patterns of +ρ_T and −ρ_T off T
    T2 = np.concatenate([T, T])  # [2C, k]
    bits = ((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1).astype(bool)  # [2^k, k] completions on T
    P = np.repeat(base[:, None, :], 2 ** k, axis=1)  # [2C, 2^k, n_u]
    P[np.arange(2 * C)[:, None, None], np.arange(2 ** k)[None, :, None], T2[:, None, :]] = bits[None]
    return np.unique(_codes(P.reshape(-1, U.shape[0])))


def _ray_patterns(U: np.ndarray) -> np.ndarray | None:
    """All chambers of a general-position arrangement U [n_u, r]; None if the arrangement is degenerate."""
    n_u, r = U.shape
    subsets = np.array(list(combinations(range(n_u), r - 1)), dtype=np.intp).reshape(comb(n_u, r - 1), r - 1)
    chunk = max(1, int(RAY_CHUNK_BITS // (2 ** r * n_u)))
    codes = []
    for start in range(0, len(subsets), chunk):
        found = _ray_chunk(U, subsets[start:start + chunk])
        if found is None:
            return None
        codes.append(found)
    return _decode(np.unique(np.concatenate(codes)), n_u)


def _flip_is_wall(U: np.ndarray, pattern: np.ndarray, i: int) -> bool:
    """Is pattern ⊕ {i} feasible? By Gordan, iff g_i = σ_i u_i is not in the cone of the other g_k."""
    G = np.where(pattern, 1.0, -1.0)[:, None] * U  # [n_u, r]
    return cone_residual(np.delete(G, i, axis=0), G[i]) > CONE_TOL


def _bfs_patterns(U: np.ndarray) -> np.ndarray:
    """All chambers by BFS over single-example flips from the all-active chamber."""
    found = [np.ones(U.shape[0], dtype=bool)]
    seen = {found[0].tobytes()}
    for pattern in found:  # `found` grows while we iterate: breadth-first order
        for i in range(U.shape[0]):
            flipped = pattern.copy()
            flipped[i] = ~flipped[i]
            if flipped.tobytes() not in seen and _flip_is_wall(U, pattern, i):
                seen.add(flipped.tobytes())
                found.append(flipped)
    return np.array(found)


def _size_error(n: int, d: int, work: float, limit: float, unit: str) -> ValueError:
    return ValueError(f"chambers: n={n} points in d={d} would take minutes ({work:.1e} {unit}, limit {limit:.0e}); "
                      "use fewer points")


def _enumerate(X: np.ndarray, method: str) -> tuple[_Arrangement, np.ndarray]:
    """The arrangement of X and its chambers over the distinct hyperplanes, P_u [V, n_u] bool, ordered by the
    packed bits of the expanded patterns [V, n]."""
    if method not in ("auto", "ray", "bfs"):
        raise ValueError(f"method must be 'auto', 'ray' or 'bfs', got {method!r}")
    Xt = homogenize(X)
    arr = _arrangement(Xt)
    d = Xt.shape[1] - 1
    P = None
    if method in ("auto", "ray"):
        if _ray_work(arr) > RAY_WORK_LIMIT:
            raise _size_error(len(arr.group), d, _ray_work(arr), RAY_WORK_LIMIT, "pattern bits")
        P = _ray_patterns(arr.U)
        if P is None and method == "ray":
            raise ValueError("chambers: method='ray' needs data in general position (no d+1 inputs on a common "
                             "hyperplane); use method='bfs' or 'auto'")
    if P is None:
        if _bfs_work(arr) > BFS_WORK_LIMIT:
            raise _size_error(len(arr.group), d, _bfs_work(arr), BFS_WORK_LIMIT, "cone tests")
        P = _bfs_patterns(arr.U)
    return arr, P[np.argsort(_codes(P[:, arr.group]))]  # one canonical order for every method


def chambers(X: np.ndarray, *, method: str = "auto") -> np.ndarray:
    """Every feasible activation pattern of one unit, i.e. every vertex of Z: bool [V, n].

    method: "ray" (general position, vectorised), "bfs" (single-example flips, works for degenerate
    data) or "auto" (ray, falling back to BFS when the data are not in general position).
    """
    arr, P = _enumerate(X, method)
    return P[:, arr.group]


def _edges(P: np.ndarray) -> np.ndarray:
    """Pairs of rows of P [V, n_u] that differ in exactly one entry: [E, 2] int, smaller index first."""
    codes = _codes(P)  # [V]
    order = np.argsort(codes)
    packed = codes.view(np.uint8).reshape(len(P), -1)
    edges = []
    for i in range(P.shape[1]):
        flipped = packed.copy()
        flipped[:, i // 8] ^= np.uint8(0x80 >> (i % 8))
        target = flipped.view(codes.dtype).ravel()
        j = order[np.minimum(np.searchsorted(codes[order], target), len(P) - 1)]
        hit = (codes[j] == target) & (np.arange(len(P)) < j)
        edges.append(np.stack([np.flatnonzero(hit), j[hit]], axis=1))
    return np.concatenate(edges).astype(np.intp)


def zonotope_graph(X: np.ndarray, *, method: str = "auto") -> Zonotope:
    """Vertices, patterns and edges of Z (method as in `chambers`)."""
    arr, P = _enumerate(X, method)
    patterns = P[:, arr.group]  # [V, n]
    return Zonotope(vertices=patterns.astype(float) @ homogenize(X), patterns=patterns, edges=_edges(P))


def _margin(Xt: np.ndarray, pattern: np.ndarray) -> float:
    """Strict margin t* of the chamber LP (spec §2.3) on unit-norm rows."""
    return feasibility_margin(np.where(pattern, 1.0, -1.0)[:, None] * _unit_rows(Xt))


def is_feasible(X: np.ndarray, pattern: np.ndarray) -> bool:
    """Is there a unit w with ⟨w, x̃_i⟩ > 0 exactly on `pattern` [n]? (strict-margin LP, spec §2.3)"""
    Xt = homogenize(X)
    return _margin(Xt, _check_pattern(pattern, Xt.shape[0])) > FEASIBLE_TOL


# ---------------------------------------------------------------------------------------------
# Convex programs on vertices (spec §3, §5)


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
    P = chambers(X)
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


# ---------------------------------------------------------------------------------------------
# Gradient descent baseline (spec §6.2)


def _gd_init(d: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """He-normal first layer with zero biases, W [m, d+1]; output weights a ~ N(0, 1/m) [m]."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(m, d, generator=gen, dtype=torch.float64) * (2.0 / d) ** 0.5
    W = torch.cat([weights, torch.zeros(m, 1, dtype=torch.float64)], dim=1)
    a = torch.randn(m, generator=gen, dtype=torch.float64) / m ** 0.5
    return W.requires_grad_(), a.requires_grad_()


def gd_train(X: np.ndarray, y: np.ndarray, m: int, *, seed: int = 0, steps: int = 3000,
             lr: float = 1e-2) -> GdResult:
    """Full-batch Adam on ½·SSE of f(x) = Σ_j a_j ReLU(⟨w_j, x̃⟩), recording every activation-pattern change.

    The spec's protocol uses 20k steps; the default 3000 keeps the dashboard responsive.
    """
    Xt_np = homogenize(X)
    y = _check_y(y, Xt_np.shape[0])
    m = _check_count("m", m)
    steps = _check_count("steps", steps)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    Xt, target = torch.from_numpy(Xt_np), torch.from_numpy(y)
    W, a = _gd_init(Xt_np.shape[1] - 1, m, seed)
    optimizer = torch.optim.Adam([W, a], lr=lr)
    losses = torch.empty(steps + 1, dtype=torch.float64)
    trace: list[PatternChange] = []
    previous = None
    for step in range(steps + 1):
        H = Xt @ W.T  # [n, m]
        loss = 0.5 * (torch.relu(H) @ a - target).square().sum()
        losses[step] = loss.detach()
        pattern = (H.detach() > 0).T  # [m, n]
        if previous is None or not torch.equal(pattern, previous):
            trace.append(PatternChange(step=step, patterns=pattern.numpy().copy()))
            previous = pattern
        if step == steps:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    a_np = a.detach().numpy()
    return GdResult(loss=float(losses[-1]), W=np.abs(a_np)[:, None] * W.detach().numpy(),
                    signs=np.where(a_np >= 0, 1.0, -1.0), pattern_trace=tuple(trace), losses=losses.numpy())


# ---------------------------------------------------------------------------------------------
# Greedy local search over vertices of Z^m (spec §6.1)


def _chamber_test(X: np.ndarray) -> Callable[[np.ndarray], bool]:
    """Membership of a pattern [n] in the chamber set: a set lookup when enumeration is cheap, else the LP."""
    Xt = homogenize(X)
    arr = _arrangement(Xt)
    P = _ray_patterns(arr.U) if _ray_work(arr) <= ORACLE_RAY_LIMIT else None
    if P is None and _bfs_work(arr) <= ORACLE_BFS_LIMIT:
        P = _bfs_patterns(arr.U)
    if P is not None:
        known = {row.tobytes() for row in P[:, arr.group]}
        return lambda pattern: pattern.tobytes() in known
    cache: dict[bytes, bool] = {}

    def lp_test(pattern: np.ndarray) -> bool:
        key = pattern.tobytes()
        if key not in cache:
            cache[key] = _margin(Xt, pattern) > FEASIBLE_TOL
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


def _initial_vertex(X: np.ndarray, y: np.ndarray, m: int, init: str | tuple[np.ndarray, np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Start of the greedy search: patterns [m, n] bool and signs [m] (spec §6.1 initialisations)."""
    Xt = homogenize(X)
    if isinstance(init, tuple):
        return _check_patterns(init[0], Xt.shape[0], m), _check_signs(init[1], m)
    if init == "random":
        rng = np.random.default_rng(seed)
        return _random_patterns(Xt, m, rng), rng.choice([-1.0, 1.0], size=m)
    if init == "gd":
        result = gd_train(X, y, m, seed=seed)
        return result.pattern_trace[-1].patterns, result.signs
    if init == "doubling":
        width = 2 * ceil(Xt.shape[0] / Xt.shape[1])
        if m != width:
            raise ValueError(f"init='doubling' needs m = 2*ceil(n/(d+1)) = {width}, got m={m}")
        solution = doubling_vertex(X, y, seed=seed)
        return solution.patterns, solution.signs
    raise ValueError(f"init must be 'random', 'gd', 'doubling' or a (patterns, signs) pair, got {init!r}")


def greedy_search(X: np.ndarray, y: np.ndarray, m: int, *, init: str | tuple[np.ndarray, np.ndarray] = "random", sign_moves: bool = True,
                  seed: int = 0, max_steps: int = 200) -> SearchResult:
    """Best-improvement local search on the graph of Z^m (plus output-sign flips) until no move helps."""
    Xt = homogenize(X)
    y = _check_y(y, Xt.shape[0])
    m = _check_count("m", m)
    max_steps = _check_count("max_steps", max_steps, minimum=0)
    patterns, signs = _initial_vertex(X, y, m, init, seed)
    group = _arrangement(Xt).group
    groups = [np.flatnonzero(group == g) for g in range(group.max() + 1)]
    is_chamber, value = _chamber_test(X), _VertexValues(Xt, y)
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
