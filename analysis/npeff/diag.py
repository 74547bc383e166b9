"""D-NPEFF (spec §2): non-negative factorization f_i ≈ Σ_k W_ik h_k of the diagonal PEFs by Lee–Seung MU."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from analysis.npeff.common import (DEFAULT_CHECKPOINT_EVERY, Decomposition, FitCheckpoint, FitConfig, FitSetup,
                                   check_checkpointing, checkpoint_callback, fit_setup, initial_factors,
                                   result_arrays, start_from)
from analysis.npeff.pef_matrix import read_rows
from analysis.pefs import DiagPefs
from kernels import d_npeff
from kernels import sparse as sp
from kernels.denormals import flushed_denormals, unfloored_
from kernels.sparse_products import sparse_products
from kernels.distributed import LossMonitor, Progress, all_reduce_sum_, gather_columns


@dataclass(frozen=True)
class DiagFitConfig(FitConfig):
    """D-NPEFF settings: n_iters MU iterations (W then H); no settings beyond the common ones."""


def diag_entries(pefs: DiagPefs, device: torch.device, examples: slice = slice(None)) -> sp.Entries:
    """Normalized entries of A [n, M] for the given examples (spec §1.6)."""
    def rows(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(read_rows(array, examples)).to(device=device, dtype=dtype)

    entries = sp.diag_entries(rows(pefs.values, torch.float32), rows(pefs.indices, torch.int64), pefs.n_parameters)
    return sp.normalize(entries, sp.diag_scales(rows(pefs.norms, torch.float32)))


@dataclass(frozen=True)
class DiagDecomposition(Decomposition):
    """D-NPEFF result: f_i ≈ Σ_k W_ik h_k; losses are ‖A − WH‖²_F, relative_error = loss / ‖A‖²_F."""

    H: np.ndarray  # [r, m] float32, ≥ 0, unit-norm rows over the kept parameters

    factor = "H"
    pefs_type = DiagPefs

    @staticmethod
    def coefficient_entries(pefs: DiagPefs, device: torch.device, examples: slice) -> sp.Entries:
        return diag_entries(pefs, device, examples)

    @staticmethod
    def fit_w(X: torch.Tensor, n: int, Ct: torch.Tensor, W: torch.Tensor, n_iters: int) -> torch.Tensor:
        return d_npeff.fit_w(X, Ct, W, n_iters)


def example_sq_norms(entries: sp.Entries) -> torch.Tensor:
    """[n] float64: ‖a_i‖² of each example's entries (summed over the column partitions: ‖A‖²_F)."""
    sq = torch.zeros(entries.n_examples, dtype=torch.float64)
    return sq.index_add_(0, entries.examples, entries.values.double().square())


def _diag_problem(setup: FitSetup) -> d_npeff.DiagProblem:
    """The products of this rank's columns of A and ‖A‖²_F over all columns."""
    sq_norm = setup.example_stats.sum().to(setup.device)
    all_reduce_sum_(sq_norm)
    return d_npeff.DiagProblem(sparse_products(setup.X, setup.device), float(sq_norm))


def fit_diag(pefs: DiagPefs, config: DiagFitConfig, *, device: str | torch.device | None = None,
             progress: Progress | None = None, init: tuple[np.ndarray, np.ndarray] | None = None,
             checkpoint: Callable[[FitCheckpoint], None] | None = None,
             checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, resume: FitCheckpoint | None = None
             ) -> DiagDecomposition:
    """Factorize the D-PEFs by MU, W then H (spec §2).

    Init: W, H ~ U(0,1] from seed + rank (W from rank 0), or `init` = (W0 [n, r], H0 [r, m] over the kept
    parameters). Under torchrun every rank owns a column slice and returns the full result.
    Single process only: checkpoint(state) is called every checkpoint_every updates, and a fit given
    `resume` = such a state ends exactly as the uninterrupted fit.
    """
    check_checkpointing(checkpoint, resume, checkpoint_every)
    setup = fit_setup(pefs, DiagPefs, config, diag_entries, device, init, "H", resume,
                      rows_per_example=lambda p: 1, example_stat=example_sq_norms)
    problem = _diag_problem(setup)
    start, done, losses = start_from(init, resume)
    W, Ht = initial_factors(start, lambda: d_npeff.init_factors(setup.n, setup.cols.size, setup.r, config.seed,
                                                                setup.rank), setup.cols, setup.device)
    monitor = LossMonitor("D-NPEFF", config.n_iters, config.tol, progress, "check the PEFs for Inf or NaN",
                          losses=losses)
    with flushed_denormals():  # MU's decaying entries never go subnormal (slow on Intel CPUs: kernels/denormals.py)
        W, Ht = d_npeff.run_d_npeff(problem, W, Ht, config.n_iters, monitor, start=done,
                                    checkpoint=checkpoint_callback(checkpoint, config, monitor),
                                    checkpoint_every=checkpoint_every)
    W, H = d_npeff.normalize_components(unfloored_(W), unfloored_(gather_columns(Ht, setup.m)).T)
    return DiagDecomposition(H=H.contiguous().cpu().numpy(), n_parameters=pefs.n_parameters,
                             **result_arrays(W, setup, monitor, problem.sq_norm))


def fit_d_npeff(pefs: DiagPefs, n_components: int, *, n_iters: int, device: str | torch.device | None = None,
                progress: Progress | None = None, init: tuple[np.ndarray, np.ndarray] | None = None,
                checkpoint: Callable[[FitCheckpoint], None] | None = None,
                checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, resume: FitCheckpoint | None = None,
                **settings) -> DiagDecomposition:
    """fit_diag with the settings as keywords (seed, tol, min_nnz_per_col)."""
    return fit_diag(pefs, DiagFitConfig(n_components=n_components, n_iters=n_iters, **settings), device=device,
                    progress=progress, init=init, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                    resume=resume)
