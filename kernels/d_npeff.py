"""D-NPEFF: Lee–Seung multiplicative-update NMF min_{W, H ≥ 0} ‖A − WH‖²_F on sparse D-PEFs (spec §2).

A [n, m] holds the normalized, pruned D-PEFs. H is held transposed, Ht = Hᵀ [m_p, r], so that the sparse
products are A Hᵀ and WᵀA = (Aᵀ W)ᵀ, both from one copy of A (kernels.sparse_products). Under
torch.distributed each rank holds a column slice of A and Ht; A Hᵀ [n, r], H Hᵀ [r, r] and the loss terms
are summed across ranks, W is replicated.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.denormals import floored_, unfloored_
from kernels.distributed import Checkpoint, LossMonitor, all_reduce_sum_, checkpoint_due, rank_generator
from kernels.sparse_products import SparseProducts

MU_EPS = 1e-8  # training, both factors
FIT_EPS = 1e-7  # coefficient fitting with H fixed


@dataclass(frozen=True)
class DiagProblem:
    """The normalized, pruned D-PEF matrix as held by one rank."""

    A: SparseProducts  # A [n, m_p], this rank's columns
    sq_norm: float  # ‖A‖²_F over all ranks' columns


def init_factors(n: int, m_local: int, r: int, seed: int, rank: int,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """W ~ U(0,1] [n, r] and this rank's Ht ~ U(0,1] [m_local, r] from the generator seed + rank."""
    gen = rank_generator(seed, rank)
    W = 1 - torch.rand(n, r, generator=gen, dtype=dtype)
    Ht = 1 - torch.rand(m_local, r, generator=gen, dtype=dtype)
    return W, Ht


def w_step(W: torch.Tensor, AHt: torch.Tensor, HHt: torch.Tensor, eps: float = MU_EPS) -> torch.Tensor:
    """W <- W ∘ (A Hᵀ) / (W (H Hᵀ) + eps)  [n, r], floored at the smallest normal (kernels/denormals.py)."""
    return floored_(W * AHt / (W @ HHt + eps))


def h_step(Ht: torch.Tensor, AtW: torch.Tensor, WtW: torch.Tensor, eps: float = MU_EPS) -> torch.Tensor:
    """H <- H ∘ (WᵀA) / ((WᵀW) H + eps), transposed: Ht <- Ht ∘ (Aᵀ W) / (Ht (WᵀW) + eps)  [m_p, r], floored."""
    return floored_(Ht * AtW / (Ht @ WtW + eps))


def nmf_loss(sq_norm: float, W: torch.Tensor, WtW: torch.Tensor, AHt: torch.Tensor, HHt: torch.Tensor) -> float:
    """‖A − WH‖²_F = ‖A‖² − 2⟨W, A Hᵀ⟩ + ⟨WᵀW, H Hᵀ⟩, products summed in float64 and clipped at 0."""
    cross = float((W * AHt).sum(dtype=torch.float64))
    return max(sq_norm - 2 * cross + float((WtW * HHt).sum(dtype=torch.float64)), 0.0)


def shared_products(problem: DiagProblem, Ht: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A Hᵀ [n, r] and H Hᵀ [r, r], summed over the column partitions."""
    AHt = problem.A.x_times(Ht)  # [n, r]
    HHt = Ht.T @ Ht  # [r, r]
    all_reduce_sum_(AHt, HHt)
    return AHt, HHt


def run_d_npeff(problem: DiagProblem, W: torch.Tensor, Ht: torch.Tensor, n_iters: int,
                monitor: LossMonitor, *, start: int = 0, checkpoint: Checkpoint | None = None,
                checkpoint_every: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MU iterations, W first then H (spec §2); returns W [n, r] and this rank's Ht [m_p, r].

    A fit resumed from W, Ht after `start` updates (with the monitor holding their losses) continues exactly
    as the uninterrupted one; checkpoint(done, W, Ht) is called every `checkpoint_every` updates.
    """
    AHt, HHt = shared_products(problem, Ht)
    WtW = W.T @ W  # [r, r]
    done = start
    for t in range(start, n_iters):
        if monitor.record(t, nmf_loss(problem.sq_norm, W, WtW, AHt, HHt), can_stop=True):
            break
        W = w_step(W, AHt, HHt)
        WtW = W.T @ W
        Ht = h_step(Ht, problem.A.xt_times(W), WtW)  # Aᵀ W: [m_p, r]
        AHt, HHt = shared_products(problem, Ht)
        done = t + 1
        if checkpoint is not None and checkpoint_due(done, checkpoint_every, n_iters):
            checkpoint(done, W, Ht)
    monitor.finish(done, nmf_loss(problem.sq_norm, W, WtW, AHt, HHt))
    return W, Ht


def normalize_components(W: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_k <- h_k / ‖h_k‖ and W[:, k] <- W[:, k] ‖h_k‖, which leaves WH unchanged. H: [r, m]."""
    norm = H.norm(dim=1)  # [r]
    return W * (norm + 1e-12), H / (norm + 1e-12).unsqueeze(1)


def fit_w(A: torch.Tensor, Ht: torch.Tensor, W: torch.Tensor, n_iters: int) -> torch.Tensor:
    """Coefficients W [n, r] for fixed H (Ht [m, r]) on one chunk A [n, m]: W <- W∘(AHᵀ)/(W HHᵀ + 1e-7)."""
    AHt = A @ Ht  # [n, r], constant
    HHt = Ht.T @ Ht  # [r, r], constant
    for _ in range(n_iters):
        W = w_step(W, AHt, HHt, FIT_EPS)
    return unfloored_(W)
