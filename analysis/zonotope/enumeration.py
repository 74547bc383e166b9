"""Chambers of the arrangement, i.e. vertices of Z (spec §2.2-2.4): the vectorised ray method for data in
general position, BFS over single-example flips for degenerate data, the 1-skeleton and the chamber LP."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from analysis.zonotope.arrangement import (GENERAL_POSITION_TOL, _arrangement, _Arrangement, _check_method,
                                           _check_pattern, _unit_rows, homogenize)
from kernels.zonotope_qp import cone_residual, feasibility_margin

FEASIBLE_TOL = 1e-9  # strict-margin LP (spec §2.3) on unit-norm rows: feasible iff t* > this
CONE_TOL = 1e-9  # BFS flip test: g_i is a wall iff its distance to cone(other g_k) exceeds this
RAY_WORK_LIMIT = 1e9  # pattern bits the ray method may emit (≈ 10-20 s on 2 cores)
BFS_WORK_LIMIT = 5e5  # cone tests the BFS may run (≈ 20 s)
RAY_CHUNK_BITS = 2e7  # pattern bits emitted per vectorised chunk of the ray method


@dataclass(frozen=True)
class Zonotope:
    """Vertices, activation patterns and 1-skeleton of Z; row v of every array is one vertex."""

    vertices: np.ndarray  # [V, D] float, v_S = Σ_{i∈S} x̃_i
    patterns: np.ndarray  # [V, n] bool, the chamber S of each vertex
    edges: np.ndarray  # [E, 2] int, vertex pairs that differ by flipping one (group of equal) example(s)


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


def _enumerate(arr: _Arrangement, method: str) -> np.ndarray:
    """The chambers of arr over its distinct hyperplanes, P_u [V, n_u] bool, ordered by the packed bits of the
    expanded patterns [V, n] (method already checked)."""
    n, d = len(arr.group), arr.Xt.shape[1] - 1
    P = None
    if method in ("auto", "ray"):
        ray_work = _ray_work(arr)
        if ray_work > RAY_WORK_LIMIT:
            raise _size_error(n, d, ray_work, RAY_WORK_LIMIT, "pattern bits")
        P = _ray_patterns(arr.U)
        if P is None and method == "ray":
            raise ValueError("chambers: method='ray' needs data in general position (no d+1 inputs on a common "
                             "hyperplane); use method='bfs' or 'auto'")
    if P is None:
        if _bfs_work(arr) > BFS_WORK_LIMIT:
            raise _size_error(n, d, _bfs_work(arr), BFS_WORK_LIMIT, "cone tests")
        P = _bfs_patterns(arr.U)
    return P[np.argsort(_codes(P[:, arr.group]))]  # one canonical order for every method


def chambers(X: np.ndarray, *, method: str = "auto") -> np.ndarray:
    """Every feasible activation pattern of one unit, i.e. every vertex of Z: bool [V, n].

    method: "ray" (general position, vectorised), "bfs" (single-example flips, works for degenerate
    data) or "auto" (ray, falling back to BFS when the data are not in general position).
    """
    method = _check_method(method)
    arr = _arrangement(homogenize(X))
    return _enumerate(arr, method)[:, arr.group]


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
    method = _check_method(method)
    arr = _arrangement(homogenize(X))
    P = _enumerate(arr, method)  # [V, n_u]
    patterns = P[:, arr.group]  # [V, n]
    return Zonotope(vertices=patterns.astype(float) @ arr.Xt, patterns=patterns, edges=_edges(P))


def _margin(R: np.ndarray, pattern: np.ndarray) -> float:
    """Strict margin t* of the chamber LP (spec §2.3) on the unit-norm rows R = _unit_rows(X̃) [n, D]."""
    return feasibility_margin(np.where(pattern, 1.0, -1.0)[:, None] * R)


def is_feasible(X: np.ndarray, pattern: np.ndarray) -> bool:
    """Is there a unit w with ⟨w, x̃_i⟩ > 0 exactly on `pattern` [n]? (strict-margin LP, spec §2.3)"""
    Xt = homogenize(X)
    return _margin(_unit_rows(Xt), _check_pattern(pattern, Xt.shape[0])) > FEASIBLE_TOL
