"""Homogenised inputs, their hyperplane arrangement and the input checks every zonotope function shares."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENERAL_POSITION_TOL = 1e-9  # |det| of D unit-norm homogenised points below this counts as degenerate
DUPLICATE_DECIMALS = 12  # unit-norm rows equal after rounding to this many decimals are one hyperplane
RANK_TOL = 1e-10  # singular values below this (relative) do not count towards the rank


@dataclass(frozen=True)
class _Arrangement:
    """Homogenised inputs X̃ and their distinct hyperplanes, as unit normals in the span of X̃'s rows (same
    chambers). Built once per public call and passed to everything that needs it."""

    Xt: np.ndarray  # [n, D] the homogenised inputs, D = d + 1
    U: np.ndarray  # [n_u, r] unit-norm rows, r = rank(X̃)
    group: np.ndarray  # [n] int, row of U for each example (duplicate inputs share one)


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


def _check_method(method: str) -> str:
    if method not in ("auto", "ray", "bfs"):
        raise ValueError(f"method must be 'auto', 'ray' or 'bfs', got {method!r}")
    return method


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


def _unit_rows(Xt: np.ndarray) -> np.ndarray:
    """Rows of X̃ scaled to unit norm: chambers only see the directions of the x̃_i."""
    return Xt / np.linalg.norm(Xt, axis=1, keepdims=True)


def _arrangement(Xt: np.ndarray) -> _Arrangement:
    """Merge duplicate hyperplanes of X̃ [n, D] and express the normals in an orthonormal basis of their span."""
    distinct, group = np.unique(np.round(_unit_rows(Xt), DUPLICATE_DECIMALS), axis=0, return_inverse=True)
    distinct = _unit_rows(distinct)  # [n_u, D]
    _, singular, Vt = np.linalg.svd(distinct, full_matrices=False)
    rank = int(np.count_nonzero(singular > RANK_TOL * singular[0]))
    U = distinct @ Vt[:rank].T  # [n_u, r]
    return _Arrangement(Xt=Xt, U=_unit_rows(U), group=group)


def _groups(arr: _Arrangement) -> list[np.ndarray]:
    """The examples on each distinct hyperplane: index arrays, one per row of U (they flip together)."""
    return [np.flatnonzero(arr.group == g) for g in range(arr.group.max() + 1)]
