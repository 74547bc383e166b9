"""Numeric cores of the zonotope explorer (spec zonotope.md §2.3, §3): the vertex QP, the chamber LP
and the cone-membership test used to flip one example. No I/O, no input checking.

Xt is the homogenised data [n, D]; a joint vertex is a 0/1 pattern matrix P [m, n] with output signs
s [m]. The vertex QP is solved by calling Clarabel directly on the normal equations, with a residual-variable
form as fallback (benchmarks/bench_zonotope.py compares this with a compiled-parameter cvxpy problem and
with a fresh cvxpy problem per solve).
"""
from __future__ import annotations

import clarabel
import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog, nnls

QP_TOL = 1e-10  # Clarabel gap and feasibility tolerances: tight, so the QP value matches the ReLU loss

ProblemData = tuple[sp.csc_matrix, np.ndarray, sp.csc_matrix, np.ndarray, list]


def _normal_equations(M: np.ndarray, y: np.ndarray, G: sp.csc_matrix) -> ProblemData:
    """min ½ wᵀ(MᵀM)w − (Mᵀy)ᵀw s.t. G w >= 0: few variables, but squares the conditioning of M."""
    return (sp.csc_matrix(np.triu(M.T @ M)), -M.T @ y, -G, np.zeros(G.shape[0]),
            [clarabel.NonnegativeConeT(G.shape[0])])


def _residual_variables(M: np.ndarray, y: np.ndarray, G: sp.csc_matrix) -> ProblemData:
    """min ½‖r‖² over (w, r) s.t. M w − r = y, G w >= 0: n more variables, robust on unbounded optimal faces."""
    n, p = M.shape
    P = sp.block_diag([sp.csc_matrix((p, p)), sp.identity(n)], format="csc")
    A = sp.vstack([sp.hstack([sp.csc_matrix(M), -sp.identity(n)]),
                   sp.hstack([-G, sp.csc_matrix((G.shape[0], n))])], format="csc")
    b = np.concatenate([y, np.zeros(G.shape[0])])
    return P, np.zeros(p + n), A, b, [clarabel.ZeroConeT(n), clarabel.NonnegativeConeT(G.shape[0])]


def _clarabel(P: sp.csc_matrix, q: np.ndarray, A: sp.csc_matrix, b: np.ndarray,
              cones: list) -> clarabel.DefaultSolution:
    """min ½ xᵀPx + qᵀx s.t. b − A x in cones, silently, with tolerances QP_TOL."""
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = QP_TOL
    return clarabel.DefaultSolver(P, q, A, b, cones, settings).solve()


def prediction_matrix(Xt: np.ndarray, patterns: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """M [n, mD] with predictions M vec(W) = Σ_j s_j D_j Xt w_j on the closed chamber of `patterns`."""
    B = patterns * signs[:, None]  # [m, n], entries s_j 1[i ∈ S_j]
    return (B.T[:, :, None] * Xt[:, None, :]).reshape(Xt.shape[0], -1)  # [n, m*D]


def cone_constraints(Xt: np.ndarray, patterns: np.ndarray) -> sp.csc_matrix:
    """G [mn, mD] block-diagonal: G vec(W) >= 0 ⇔ (2·1[i ∈ S_j] − 1)⟨w_j, x̃_i⟩ >= 0 for all j, i (spec §3)."""
    m, n = patterns.shape
    D = Xt.shape[1]
    sigma = 2.0 * patterns - 1.0  # [m, n]
    data = (sigma[:, None, :] * Xt.T[None, :, :]).reshape(-1)  # column (j, k) holds σ_j * Xt[:, k]
    rows = (np.arange(m)[:, None, None] * n + np.arange(n)[None, None, :]).repeat(D, axis=1).reshape(-1)
    indptr = np.arange(0, m * D * n + 1, n)
    return sp.csc_matrix((data, rows, indptr), shape=(m * n, m * D))


def solve_vertex_qp(Xt: np.ndarray, y: np.ndarray, patterns: np.ndarray,
                    signs: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimise ½‖M vec(W) − y‖² subject to G vec(W) >= 0; returns W [m, D] and the QP value.

    Units whose pattern is empty contribute nothing and get w_j = 0 without entering the QP.
    """
    W = np.zeros((patterns.shape[0], Xt.shape[1]))  # [m, D]
    live = patterns.any(axis=1)
    if not live.any():
        return W, 0.5 * float(y @ y)
    # scale columns of X̃ and y to max |.| = 1 (patterns are unchanged): w = w_scaled * y_scale / column_scale
    column_scale = np.abs(Xt).max(axis=0)  # [D]
    column_scale[column_scale == 0] = 1.0
    y_scale = max(float(np.abs(y).max()), np.finfo(float).tiny)
    Xs = Xt / column_scale  # [n, D]
    M = prediction_matrix(Xs, patterns[live].astype(float), signs[live])  # [n, m'D]
    G = cone_constraints(Xs, patterns[live])
    # the normal equations are fast but can stall (InsufficientProgress) when the optimal face is unbounded,
    # e.g. two units on one chamber with opposite signs; the residual form then still converges
    for formulation in (_normal_equations, _residual_variables):
        solution = _clarabel(*formulation(M, y / y_scale, G))
        if str(solution.status) == "Solved":
            break
    else:
        if str(solution.status) != "AlmostSolved":
            raise RuntimeError(f"vertex QP failed: Clarabel status {solution.status}")
    w = np.asarray(solution.x)[:M.shape[1]]  # [m'D]
    residual = y_scale * (M @ w) - y  # [n]
    W[live] = w.reshape(-1, Xt.shape[1]) * y_scale / column_scale
    return W, 0.5 * float(residual @ residual)


def feasibility_margin(G: np.ndarray) -> float:
    """max t s.t. G w >= t, −1 <= w_k <= 1, t <= 1 (spec §2.3); G [n, D] has rows σ_i x̃_i."""
    n, D = G.shape
    cost = np.zeros(D + 1)
    cost[-1] = -1.0  # maximise t
    A_ub = np.hstack([-G, np.ones((n, 1))])  # t − σ_i ⟨w, x̃_i⟩ <= 0
    bounds = [(-1.0, 1.0)] * D + [(None, 1.0)]
    result = linprog(cost, A_ub=A_ub, b_ub=np.zeros(n), bounds=bounds, method="highs")
    return -float(result.fun)


def cone_residual(G: np.ndarray, g: np.ndarray) -> float:
    """Distance from g [D] to the cone spanned by the rows of G [k, D] (non-negative least squares)."""
    if len(G) == 0:  # the cone of no vectors is {0}; scipy's nnls does not accept an empty matrix
        return float(np.linalg.norm(g))
    return float(nnls(G.T, g)[1])
