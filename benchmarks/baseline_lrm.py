"""The LRM-NPEFF iteration as it was before issue #16, kept as the baseline of benchmarks/bench_npeff.py.

X and Xᵀ both as torch CSR tensors with int64 indices (torch converts them to int32 on every product), built
from all entries at once; X @ Gt and X @ Dt row by row. The unchanged pieces (W step, line search, loss)
are imported from kernels.lrm_npeff.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from kernels import sparse as sp
from kernels.distributed import LossMonitor
from kernels.lrm_npeff import (REFRESH_EVERY, LrmSchedule, line_search, numerator, step_polynomial, true_loss,
                               w_step)


def to_csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor with int64 indices and column indices sorted within each row."""
    order = torch.argsort(rows * shape[1] + cols)
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=shape[0]).cumsum(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, cols[order], values[order], shape, check_invariants=False)


def csr_pair(entries: sp.Entries) -> tuple[torch.Tensor, torch.Tensor]:
    """X [n_rows, n_cols] and Xᵀ [n_cols, n_rows], both CSR with int64 indices."""
    X = to_csr(entries.rows, entries.cols, entries.values, (entries.n_rows, entries.n_cols))
    Xt = to_csr(entries.cols, entries.rows, entries.values, (entries.n_cols, entries.n_rows))
    return X, Xt


@dataclass(frozen=True)
class LrmProblem:
    X: torch.Tensor  # [n*c, m] CSR int64
    Xt: torch.Tensor  # [m, n*c] CSR int64
    n_examples: int
    tr_xx: float


def shared_products(problem: LrmProblem, Gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return problem.X @ Gt, Gt.T @ Gt


def g_gradient(problem: LrmProblem, Gt: torch.Tensor, W: torch.Tensor, AG: torch.Tensor, GG: torch.Tensor,
               ortho_reg: float) -> torch.Tensor:
    n, r = W.shape
    Wag = (W.unsqueeze(1) * AG.view(n, -1, r)).reshape(-1, r)  # [n*c, r]
    grad = (problem.Xt @ Wag).neg_().addmm_(Gt, (W.T @ W) * GG)  # [m, r]
    if ortho_reg > 0:
        grad.addmm_(Gt, GG, alpha=ortho_reg).add_(Gt, alpha=-ortho_reg * 2 / r)
    return grad.mul_(4)


def direction_products(problem: LrmProblem, Gt: torch.Tensor, Dt: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return problem.X @ Dt, Gt.T @ Dt, Dt.T @ Dt


def run_lrm_npeff(problem: LrmProblem, W: torch.Tensor, Gt: torch.Tensor, schedule: LrmSchedule,
                  monitor: LossMonitor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-#16 iteration loop (single process, no checkpoints)."""
    AG, GG = shared_products(problem, Gt)
    total = schedule.n_iters_g_only + schedule.n_iters
    done = 0
    for t in range(total):
        joint = t >= schedule.n_iters_g_only
        N, HH = numerator(AG, problem.n_examples), GG.square()
        if monitor.record(t, true_loss(problem.tr_xx, W, N, HH), can_stop=joint):
            break
        if joint:
            W = w_step(W, N, HH)
        Dt = g_gradient(problem, Gt, W, AG, GG, schedule.ortho_reg)
        AD, GD, DD = direction_products(problem, Gt, Dt)
        eta = schedule.lr
        if schedule.step == "line_search":
            eta *= line_search(step_polynomial(W, AG, AD, GG, GD, DD, schedule.ortho_reg))
        Gt = Dt.mul_(-eta).add_(Gt)
        done = t + 1
        if done % REFRESH_EVERY == 0:
            AG, GG = shared_products(problem, Gt)
        else:
            AG, GG = AG.add_(AD, alpha=-eta), GG - eta * (GD + GD.T) + eta**2 * DD
    AG, GG = shared_products(problem, Gt)
    monitor.finish(done, true_loss(problem.tr_xx, W, numerator(AG, problem.n_examples), GG.square()))
    return W, Gt
