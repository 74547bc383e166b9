"""Shared data and slow obvious oracles for the analysis.zonotope tests (known answers of spec zonotope.md §8)."""
from __future__ import annotations

from itertools import product
from math import comb

import numpy as np
from scipy.spatial import ConvexHull

from analysis.zonotope import homogenize

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
