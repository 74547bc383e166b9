"""LRM-NPEFF (spec §3): F_i ≈ Σ_k W_ik g_k g_kᵀ with unit-norm pseudo-Fisher vectors g_k."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import numpy as np
import torch

from analysis.allocator import released_allocations
from analysis.npeff.common import (DEFAULT_CHECKPOINT_EVERY, Decomposition, FieldSpec, FitCheckpoint, FitConfig,
                                   FitSetup, check_at_least, check_checkpointing, check_finite_positive,
                                   checkpoint_callback, fit_setup, initial_factors, result_arrays, start_from)
from analysis.npeff.pef_matrix import read_rows
from analysis.pefs import LrmPefs
from kernels import lrm_npeff
from kernels import sparse as sp
from kernels.denormals import flushed_denormals, unfloored_
from kernels.sparse_products import sparse_products
from kernels.distributed import LossMonitor, Progress, all_reduce_sum_, gather_columns

DEFAULT_LR = 1.0  # with step="line_search": take the exact minimizer along the gradient
DEFAULT_N_ITERS_G_ONLY = 50


@dataclass(frozen=True)
class LrmFitConfig(FitConfig):
    """LRM-NPEFF settings: n_iters_g_only G steps with W frozen, then n_iters joint iterations.

    step="plain" is G <- G − lr ∇L exactly as in the reference (default there lr=1e-3), but its stable
    range shifts with n, r and the data (about r/(4n) at init for unit-norm F_i). The default
    step="line_search" takes lr times the exact minimizer of L along −∇L: for fixed W, L is a quartic in
    G whose coefficients come from products the iteration needs anyway, so there is nothing to tune,
    the loss never increases and planted components are found in a few dozen iterations. The 50 G-only
    warm-up steps turn G towards the data before the MU step zeroes the coefficients of badly started
    components (without them, planted r=16 problems lost a component for half of the seeds).
    ortho_reg adds λ‖GGᵀ − (2/r)I‖²_F.
    """

    n_iters_g_only: int = DEFAULT_N_ITERS_G_ONLY
    lr: float = DEFAULT_LR
    step: Literal["line_search", "plain"] = "line_search"
    ortho_reg: float = 0.0

    ui: ClassVar[tuple[FieldSpec, ...]] = (
        FieldSpec("n_iters_g_only", "G-only warm-up iterations", 0, 10_000,
                  "G steps with W frozen before the joint iterations"),
        FieldSpec("ortho_reg", "Orthogonal regularization λ", 0.0, 100.0, "adds λ‖GGᵀ − (2/r)I‖²_F to the loss"),
    )

    def validate(self) -> None:
        super().validate()
        check_at_least("n_iters_g_only", self.n_iters_g_only, 0)
        check_finite_positive("lr", self.lr)
        if self.step not in ("line_search", "plain"):
            raise ValueError(f"step must be 'line_search' or 'plain', got {self.step!r}")
        if not self.ortho_reg >= 0:
            raise ValueError(f"ortho_reg must be >= 0, got {self.ortho_reg}")

    @property
    def total_iters(self) -> int:
        return self.n_iters_g_only + self.n_iters

    def phase(self, iteration: int) -> str:
        return "warm-up" if iteration < self.n_iters_g_only else "joint"


def lrm_entries(pefs: LrmPefs, device: torch.device, examples: slice = slice(None)) -> sp.Entries:
    """Normalized entries of X [n*c, M] for the given examples (spec §1.5-1.6)."""
    def rows(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(read_rows(array, examples)).to(device=device, dtype=dtype)

    entries = sp.lrm_entries(rows(pefs.values, torch.float32), rows(pefs.indices, torch.int64),
                             rows(pefs.class_offsets, torch.int64), pefs.n_parameters)
    return sp.normalize(entries, sp.lrm_scales(rows(pefs.norms, torch.float32)))


@dataclass(frozen=True)
class LrmDecomposition(Decomposition):
    """LRM-NPEFF result: F_i ≈ Σ_k W_ik g_k g_kᵀ; losses are true losses, relative_error = loss / tr_xx."""

    G: np.ndarray  # [r, m] float32, unit-norm rows over the kept parameters

    factor = "G"
    pefs_type = LrmPefs

    @staticmethod
    def coefficient_entries(pefs: LrmPefs, device: torch.device, examples: slice) -> sp.Entries:
        return lrm_entries(pefs, device, examples)

    @staticmethod
    def fit_w(X: torch.Tensor, n: int, Ct: torch.Tensor, W: torch.Tensor, n_iters: int) -> torch.Tensor:
        return lrm_npeff.fit_w(X, n, Ct, W, n_iters)


def _lrm_problem(setup: FitSetup) -> lrm_npeff.LrmProblem:
    """The products of this rank's columns of X and tr_xx = Σ_i ‖A_iᵀA_i‖²_F over all columns (grams summed
    over ranks)."""
    grams = setup.example_stats.to(setup.device)  # [n, c, c]
    all_reduce_sum_(grams)
    return lrm_npeff.LrmProblem(sparse_products(setup.X, setup.device), setup.n, lrm_npeff.tr_xx_from_grams(grams))


def fit_lrm(pefs: LrmPefs, config: LrmFitConfig, *, device: str | torch.device | None = None,
            progress: Progress | None = None, init: tuple[np.ndarray, np.ndarray] | None = None,
            checkpoint: Callable[[FitCheckpoint], None] | None = None,
            checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, resume: FitCheckpoint | None = None) -> LrmDecomposition:
    """Factorize the LRM-PEFs into config.n_components rank-1 PSD components W_ik g_k g_kᵀ (spec §3).

    Init: W ~ U(0,1], G ~ N(0, 2/(r m)) from seed + rank, or `init` = (W0 [n, r], G0 [r, m] over the kept
    parameters). Under torchrun every rank owns a column slice and returns the full result.
    Single process only: checkpoint(state) is called every checkpoint_every updates (a multiple of
    REFRESH_EVERY), and a fit given `resume` = such a state ends exactly as the uninterrupted fit.
    """
    check_checkpointing(checkpoint, resume, checkpoint_every, multiple_of=lrm_npeff.REFRESH_EVERY)
    setup = fit_setup(pefs, LrmPefs, config, lrm_entries, device, init, "G", resume,
                      rows_per_example=lambda p: p.n_classes, example_stat=sp.example_grams)
    problem = _lrm_problem(setup)
    start, done, losses = start_from(init, resume)
    W, Gt = initial_factors(start, lambda: lrm_npeff.init_factors(setup.n, setup.cols.size, setup.m, setup.r,
                                                                  config.seed, setup.rank), setup.cols, setup.device)
    schedule = lrm_npeff.LrmSchedule(config.n_iters_g_only, config.n_iters, config.lr, config.step, config.ortho_reg)
    monitor = LossMonitor("LRM-NPEFF", config.total_iters, config.tol, progress,
                          f"lower lr (now {config.lr}) or check the PEFs for Inf", losses=losses)
    # an iteration's small temporaries are not kept beside the [m, r] arrays; W's decaying coefficients never go
    # subnormal (on Intel CPUs those made the later iterations 6x slower)
    with released_allocations(), flushed_denormals():
        W, Gt = lrm_npeff.run_lrm_npeff(problem, W, Gt, schedule, monitor, start=done,
                                        checkpoint=checkpoint_callback(checkpoint, config, monitor),
                                        checkpoint_every=checkpoint_every)
        G = gather_columns(Gt, setup.m).T.contiguous()  # [r, m]
        del Gt  # the fit's largest array: normalizing its transposed view, then copying, held three of them at once
        W, G = lrm_npeff.normalize_components(unfloored_(W), G)
    return LrmDecomposition(G=G.cpu().numpy(), n_parameters=pefs.n_parameters,
                            **result_arrays(W, setup, monitor, problem.tr_xx))


def fit_lrm_npeff(pefs: LrmPefs, n_components: int, *, n_iters: int, device: str | torch.device | None = None,
                  progress: Progress | None = None, init: tuple[np.ndarray, np.ndarray] | None = None,
                  checkpoint: Callable[[FitCheckpoint], None] | None = None,
                  checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, resume: FitCheckpoint | None = None,
                  **settings) -> LrmDecomposition:
    """fit_lrm with the settings as keywords (n_iters_g_only, lr, step, ortho_reg, seed, tol, min_nnz_per_col)."""
    return fit_lrm(pefs, LrmFitConfig(n_components=n_components, n_iters=n_iters, **settings), device=device,
                   progress=progress, init=init, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                   resume=resume)
