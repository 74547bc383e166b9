"""LRM-NPEFF: min_{W ≥ 0, G} Σ_i ‖F_i − Σ_k W_ik g_k g_kᵀ‖²_F without forming F_i (spec §3, §9).

With X [n*c, m] (rows a_ijᵀ) everything goes through AG = X Gᵀ and Wagᵀ X:
L = tr_xx − 2⟨W, N⟩ + ⟨WᵀW, HH⟩, N_ik = Σ_j AG[(i,j), k]², HH = (GGᵀ)∘².
G is held transposed, Gt = Gᵀ [m_p, r], so the sparse products are X @ Gt and Xᵀ @ Wag (Wagᵀ X = (Xᵀ Wag)ᵀ),
both from one copy of X (kernels.sparse_products). Under torch.distributed each rank holds a column slice of X
and Gt (kernels.distributed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from kernels.denormals import floored_, unfloored_
from kernels.distributed import Checkpoint, LossMonitor, all_reduce_sum_, checkpoint_due, rank_generator
from kernels.sparse_products import SparseProducts

MU_EPS = 1e-9  # W <- W * N / (W @ HH + eps)
REFRESH_EVERY = 50  # recompute AG and GG from G this often; in between they are updated with the step
# (checkpoints fall on refreshes, so a resumed fit recomputes AG, GG exactly where the uninterrupted one did)
EXAMPLE_BLOCK = 256  # the line search's float64 sums over classes take this many examples at a time


@dataclass(frozen=True)
class LrmProblem:
    """The normalized, pruned PEF matrix as held by one rank."""

    X: SparseProducts  # X [n*c, m_p], this rank's columns
    n_examples: int  # n
    tr_xx: float  # Σ_i ‖A_iᵀA_i‖²_F over all ranks' columns


@dataclass(frozen=True)
class LrmSchedule:
    """G-only warm-up then joint iterations; `step` picks the plain or the line-search G step."""

    n_iters_g_only: int
    n_iters: int
    lr: float
    step: Literal["line_search", "plain"]
    ortho_reg: float


def tr_xx_from_grams(grams: torch.Tensor) -> float:
    """tr_xx = Σ_i ‖F_i‖²_F = Σ_i ‖A_iᵀA_i‖²_F from the full grams [n, c, c] (spec §10.1)."""
    return float(grams.double().square().sum())


def init_factors(n: int, m_local: int, m_total: int, r: int, seed: int, rank: int,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """W ~ U(0,1] [n, r] and this rank's Gt ~ N(0, 2/(r m)) [m_local, r] from the generator seed + rank.

    The variance gives E‖g_k‖² = 2/r over all m columns (spec §3.3); rank 0's W is the one broadcast.
    """
    gen = rank_generator(seed, rank)
    W = 1 - torch.rand(n, r, generator=gen, dtype=dtype)  # (0, 1]
    Gt = torch.randn(m_local, r, generator=gen, dtype=dtype).mul_(math.sqrt(2 / (r * m_total)))  # one [m_p, r]
    return W, Gt


def shared_products(problem: LrmProblem, Gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AG = X Gᵀ [n*c, r] and GG = G Gᵀ [r, r], summed over the column partitions."""
    AG = problem.X.x_times(Gt)  # [n*c, r]
    GG = Gt.T @ Gt  # [r, r]
    all_reduce_sum_(AG, GG)
    return AG, GG


def numerator(AG: torch.Tensor, n: int) -> torch.Tensor:
    """N [n, r] with N_ik = g_kᵀ F_i g_k = Σ_j AG[(i,j), k]²."""
    return AG.view(n, -1, AG.shape[1]).square().sum(dim=1)


def true_loss(tr_xx: float, W: torch.Tensor, N: torch.Tensor, HH: torch.Tensor) -> float:
    """L = tr_xx − 2⟨W, N⟩ + ⟨WᵀW, HH⟩, accumulated in float64 and clipped at 0 (float32 cancellation)."""
    W64 = W.double()
    loss = tr_xx - 2 * float((W64 * N.double()).sum()) + float(((W64.T @ W64) * HH.double()).sum())
    return max(loss, 0.0)


def w_step(W: torch.Tensor, N: torch.Tensor, HH: torch.Tensor, eps: float = MU_EPS) -> torch.Tensor:
    """Lee–Seung step for ∇_W L = 2(W·HH − N): W <- W ∘ N / (W·HH + eps)  [n, r], floored at the smallest normal
    (kernels/denormals.py)."""
    return floored_(W * N / (W @ HH + eps))


def g_gradient(problem: LrmProblem, Gt: torch.Tensor, W: torch.Tensor, AG: torch.Tensor, GG: torch.Tensor,
               ortho_reg: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """∇_G L (+ λ ∇‖GGᵀ − (2/r)I‖²_F) for this rank's columns, transposed: [m_p, r] (into `out` when given).

    ∇_G L = 4[((WᵀW)∘GG) G − Wagᵀ X] with Wag[(i,j), k] = W_ik AG[(i,j), k] (spec §3.2, pitfall §7.2);
    the regularizer folds into the same [r, r] factor, so the [m_p, r] result takes one pass after Xᵀ Wag.
    """
    n, r = W.shape
    Wag = (W.unsqueeze(1) * AG.view(n, -1, r)).reshape(-1, r)  # [n*c, r]
    M = (W.T @ W) * GG  # [r, r]
    if ortho_reg > 0:
        # ∇‖GGᵀ − sI‖²_F = 4(GGᵀ − sI)G with s = 2/r; it enters Ĝ (¼ of the gradient) as λ(GG − sI)G
        M = M + ortho_reg * (GG - (2 / r) * torch.eye(r, dtype=GG.dtype, device=GG.device))
    return problem.X.xt_times(Wag, out=out).addmm_(Gt, M, beta=-4, alpha=4)  # 4(Gᵀ M − Xᵀ Wag)


def direction_products(problem: LrmProblem, Gt: torch.Tensor, Dt: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a step direction D (Dt [m_p, r]): AD = X Dᵀ [n*c, r], GD = G Dᵀ [r, r], DD = D Dᵀ [r, r], summed.

    GD is not taken from AGᵀ Wag (which skips an [r, m] × [m, r] product): AG is only updated between
    refreshes, and feeding its drift back through GD into GG left a planted fit's loss 30x higher.
    """
    AD = problem.X.x_times(Dt)  # [n*c, r]
    GD = Gt.T @ Dt  # [r, r]
    DD = Dt.T @ Dt  # [r, r]
    all_reduce_sum_(AD, GD, DD)
    return AD, GD, DD


def step_polynomial(W: torch.Tensor, AG: torch.Tensor, AD: torch.Tensor, GG: torch.Tensor, GD: torch.Tensor,
                    DD: torch.Tensor, ortho_reg: float) -> np.ndarray:
    """Coefficients [c1, c2, c3, c4] of L(G − ηD) − L(G) = Σ_q c_q η^q for fixed W (exact: L is quartic in G).

    With AG(η) = AG − η AD: N(η) = N − 2η N1 + η² N2; with S = GD + GDᵀ: GG(η) = GG − ηS + η²DD, and
    HH(η) = GG(η)∘² = GG² − 2η GG∘S + η²(S² + 2 GG∘DD) − 2η³ S∘DD + η⁴ DD²; Ω = WᵀW.
    """
    n, r = W.shape
    W64, GG64, DD64 = W.double(), GG.double(), DD.double()
    S = GD.double() + GD.double().T  # [r, r]
    Omega = W64.T @ W64  # [r, r]
    N1, N2 = _direction_numerators(AG.view(n, -1, r), AD.view(n, -1, r))  # [n, r] each
    coefficients = torch.stack([
        4 * (W64 * N1).sum() - 2 * (Omega * GG64 * S).sum(),
        -2 * (W64 * N2).sum() + (Omega * (S.square() + 2 * GG64 * DD64)).sum(),
        -2 * (Omega * S * DD64).sum(),
        (Omega * DD64.square()).sum(),
    ])
    if ortho_reg > 0:
        # λ‖B − ηS + η²DD‖² with B = GG − (2/r)I
        B = GG64 - (2 / r) * torch.eye(r, dtype=torch.float64, device=GG.device)
        coefficients += ortho_reg * torch.stack([
            -2 * (B * S).sum(), S.square().sum() + 2 * (B * DD64).sum(), -2 * (S * DD64).sum(), DD64.square().sum()])
    return coefficients.cpu().numpy()


def _direction_numerators(AG: torch.Tensor, AD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """N1 = Σ_j AG∘AD and N2 = Σ_j AD² [n, r] in float64, for AG, AD [n, c, r]; EXAMPLE_BLOCK examples at a time, so
    the float64 copies stay small beside the fit's [m, r] arrays (whole, they held ~8 MiB at the text demo's peak)."""
    n, _, r = AG.shape
    N1 = torch.empty(n, r, dtype=torch.float64, device=AG.device)
    N2 = torch.empty_like(N1)
    for a in range(0, n, EXAMPLE_BLOCK):
        ag, ad = AG[a:a + EXAMPLE_BLOCK].double(), AD[a:a + EXAMPLE_BLOCK].double()  # [b, c, r]
        torch.sum(ag.mul_(ad), dim=1, out=N1[a:a + EXAMPLE_BLOCK])
        torch.sum(ad.square_(), dim=1, out=N2[a:a + EXAMPLE_BLOCK])
    return N1, N2


def line_search(coefficients: np.ndarray) -> float:
    """The η ≥ 0 minimizing c1 η + c2 η² + c3 η³ + c4 η⁴ (0 when no η > 0 lowers it; nan passes through)."""
    if not np.isfinite(coefficients).all():
        return math.nan  # the loss guard then names the iteration
    c1, c2, c3, c4 = coefficients
    # stationary points: 4 c4 η³ + 3 c3 η² + 2 c2 η + c1 = 0
    roots = np.roots(np.trim_zeros([4 * c4, 3 * c3, 2 * c2, c1], "f"))
    candidates = [0.0] + [float(z.real) for z in roots if abs(z.imag) <= 1e-9 * abs(z) and z.real > 0]
    return min(candidates, key=lambda eta: np.polyval([c4, c3, c2, c1, 0.0], eta))


def run_lrm_npeff(problem: LrmProblem, W: torch.Tensor, Gt: torch.Tensor, schedule: LrmSchedule,
                  monitor: LossMonitor, *, start: int = 0, checkpoint: Checkpoint | None = None,
                  checkpoint_every: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit W [n, r] and this rank's Gt [m_p, r] from the given initial values; returns the final pair, Gt updated
    in place (the caller's tensor: pass a copy to keep the initial values).

    Each iteration: [joint phase: W MU step] → G step D = ∇L with the same AG, GG and the new W
    (spec §3.3). step="plain": G <- G − lr D exactly as in the reference. step="line_search": η = lr·η*,
    η* the exact minimizer of the quartic L(G − ηD). Both move AG, GG with the step (AG <- AG − η X Dᵀ),
    so an iteration costs the same two sparse products X Dᵀ and Xᵀ Wag as the reference's X Gᵀ and Wagᵀ X.
    A fit resumed from W, Gt after `start` updates (with the monitor holding their losses) continues exactly
    as the uninterrupted one when `start` is a multiple of REFRESH_EVERY; checkpoint(done, W, Gt) is called
    every `checkpoint_every` updates (a multiple of REFRESH_EVERY, after the refresh).
    """
    AG, GG = shared_products(problem, Gt)
    total = schedule.n_iters_g_only + schedule.n_iters
    done, Dt = start, None  # Dt: one buffer for every iteration's step direction
    for t in range(start, total):
        joint = t >= schedule.n_iters_g_only
        N, HH = numerator(AG, problem.n_examples), GG.square()
        if monitor.record(t, true_loss(problem.tr_xx, W, N, HH), can_stop=joint):
            break
        if joint:
            W = w_step(W, N, HH)
        Dt = g_gradient(problem, Gt, W, AG, GG, schedule.ortho_reg, out=Dt)  # [m_p, r]
        AD, GD, DD = direction_products(problem, Gt, Dt)
        eta = schedule.lr
        if schedule.step == "line_search":
            eta *= line_search(step_polynomial(W, AG, AD, GG, GD, DD, schedule.ortho_reg))
        # G <- G − η D, and the products that follow it: AG <- AG − η AD, GG <- GG − η(GD + GDᵀ) + η² DD
        Gt.add_(Dt, alpha=-eta)  # in place: a copy would keep the caller's Gt alive beside it, 3 [m_p, r] arrays
        done = t + 1
        if done % REFRESH_EVERY == 0:
            AG, GG = shared_products(problem, Gt)
        else:
            AG, GG = AG.add_(AD, alpha=-eta), GG - eta * (GD + GD.T) + eta**2 * DD
        if checkpoint is not None and checkpoint_due(done, checkpoint_every, total):
            Dt = None  # the checkpoint's copy of G takes D's memory (the next iteration makes D anew): 2 at the peak
            checkpoint(done, W, Gt)
    AG, GG = shared_products(problem, Gt)
    monitor.finish(done, true_loss(problem.tr_xx, W, numerator(AG, problem.n_examples), GG.square()))
    return W, Gt


def normalize_components(W: torch.Tensor, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """g_k <- g_k / ‖g_k‖ and W[:, k] <- W[:, k] ‖g_k‖², which leaves every W_ik g_k g_kᵀ unchanged (§3.4).

    G: [r, m] full components; returns (W [n, r], G [r, m]).
    """
    sq = G.square().sum(dim=1)  # [r] ‖g_k‖²
    return W * (sq + 1e-12), G / (sq.sqrt() + 1e-12).unsqueeze(1)


def fit_w(X: torch.Tensor, n: int, Gt: torch.Tensor, W: torch.Tensor, n_iters: int) -> torch.Tensor:
    """Coefficients W [n, r] for fixed G (Gt [m, r]) by n_iters MU steps on one chunk X [n*c, m] (§3.8)."""
    N = numerator(X @ Gt, n)  # [n, r], constant
    HH = (Gt.T @ Gt).square()  # [r, r], constant
    for _ in range(n_iters):
        W = w_step(W, N, HH)
    return unfloored_(W)
