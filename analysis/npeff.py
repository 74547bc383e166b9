"""NPEFF decompositions of per-example Fishers: LRM-NPEFF, D-NPEFF and coefficients for new examples.

The PEFs are normalized to unit Frobenius norm, pruned to the parameters that occur in at least
`min_nnz_per_col` sparse PEFs, and factorized on `device` in float32 (spec §1.5-1.7, §2, §3). The same
call runs in one process or, under `torchrun` with torch.distributed initialized, with every rank
owning a slice of the kept parameters (kernels.distributed); every rank then returns the full result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch

from analysis.models import resolve_device
from analysis.pefs import DiagPefs, LrmPefs
from kernels import d_npeff, lrm_npeff
from kernels import sparse as sp
from kernels.distributed import (ColumnSlice, LossMonitor, Progress, all_reduce_sum_, broadcast_from_root_,
                                 column_slice, gather_columns, rank_and_world, rank_generator)

DEFAULT_LR = 1.0  # with step="line_search": take the exact minimizer along the gradient
DEFAULT_N_ITERS_G_ONLY = 50
DEFAULT_CHUNK_SIZE = 4096  # examples per coefficient-fitting chunk


@dataclass(frozen=True)
class LrmDecomposition:
    """LRM-NPEFF result: F_i ≈ Σ_k W_ik g_k g_kᵀ with unit-norm pseudo-Fisher vectors g_k."""

    W: np.ndarray  # [n, r] float32, ≥ 0, coefficients (rescaled by ‖g_k‖², spec §3.4)
    G: np.ndarray  # [r, m] float32, unit-norm rows over the kept parameters
    kept: np.ndarray  # [m] int64, parameter index (into the M parameters) of each column of G
    n_parameters: int  # M
    losses: np.ndarray  # [n_logged] float64, true loss after 0, 1, ... updates and of the returned factors
    relative_error: float  # final loss / tr_xx

    @property
    def n_components(self) -> int:
        return int(self.G.shape[0])

    def full_component(self, k: int) -> np.ndarray:
        """g_k scattered into parameter space: [M], zeros outside `kept`."""
        return _scatter(self.G[k], self.kept, self.n_parameters)


@dataclass(frozen=True)
class DiagDecomposition:
    """D-NPEFF result: f_i ≈ Σ_k W_ik h_k with non-negative unit-norm components h_k."""

    W: np.ndarray  # [n, r] float32, ≥ 0, coefficients (rescaled by ‖h_k‖)
    H: np.ndarray  # [r, m] float32, ≥ 0, unit-norm rows over the kept parameters
    kept: np.ndarray  # [m] int64
    n_parameters: int  # M
    losses: np.ndarray  # [n_logged] float64, ‖A − WH‖²_F after 0, 1, ... updates and of the returned factors
    relative_error: float  # final loss / ‖A‖²_F

    @property
    def n_components(self) -> int:
        return int(self.H.shape[0])

    def full_component(self, k: int) -> np.ndarray:
        """h_k scattered into parameter space: [M], zeros outside `kept`."""
        return _scatter(self.H[k], self.kept, self.n_parameters)


def _scatter(component: np.ndarray, kept: np.ndarray, n_parameters: int) -> np.ndarray:
    full = np.zeros(n_parameters, dtype=component.dtype)
    full[kept] = component
    return full


# ----------------------------------------------------------------------------------------------- validation

def _check_at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def _check_common(pefs: LrmPefs | DiagPefs, kind: type, n_components: int, n_iters: int, tol: float | None,
                  min_nnz_per_col: int) -> None:
    if not isinstance(pefs, kind):
        raise TypeError(f"pefs must be {kind.__name__}, got {type(pefs).__name__}")
    _check_at_least("n_components", n_components, 1)
    _check_at_least("n_iters", n_iters, 1)
    _check_at_least("min_nnz_per_col", min_nnz_per_col, 1)
    if pefs.n_examples == 0:
        raise ValueError("pefs must hold at least one example, got 0")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be > 0 or None, got {tol}")


def _check_init(init: tuple[np.ndarray, np.ndarray], n: int, r: int, m: int, factor: str) -> None:
    W0, C0 = init
    if np.shape(W0) != (n, r) or np.shape(C0) != (r, m):
        raise ValueError(f"init must be (W [{n}, {r}], {factor} [{r}, {m}]) over the kept parameters, "
                         f"got shapes {np.shape(W0)} and {np.shape(C0)}")


# ---------------------------------------------------------------------------------------------- preprocessing

def _tensor(array: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A copy on device (PEF arrays may be read-only memory maps, which torch must not share)."""
    return torch.tensor(array, dtype=dtype, device=device)


def _lrm_entries(pefs: LrmPefs, device: torch.device, examples: slice = slice(None)) -> sp.Entries:
    """Normalized entries of X [n*c, M] for the given examples (spec §1.5-1.6)."""
    entries = sp.lrm_entries(_tensor(pefs.values[examples], torch.float32, device),
                             _tensor(pefs.indices[examples], torch.int64, device),
                             _tensor(pefs.class_offsets[examples], torch.int64, device), pefs.n_parameters)
    return sp.normalize(entries, sp.lrm_scales(_tensor(pefs.norms[examples], torch.float32, device)))


def _diag_entries(pefs: DiagPefs, device: torch.device, examples: slice = slice(None)) -> sp.Entries:
    """Normalized entries of A [n, M] for the given examples (spec §1.6)."""
    entries = sp.diag_entries(_tensor(pefs.values[examples], torch.float32, device),
                              _tensor(pefs.indices[examples], torch.int64, device), pefs.n_parameters)
    return sp.normalize(entries, sp.diag_scales(_tensor(pefs.norms[examples], torch.float32, device)))


def _prune(entries: sp.Entries, min_nnz_per_col: int) -> tuple[sp.Entries, torch.Tensor]:
    """(entries over the kept columns, kept [m])."""
    kept = sp.prune_columns(entries, min_nnz_per_col)
    if len(kept) == 0:
        raise ValueError(f"no parameter has >= {min_nnz_per_col} non-zero PEF entries; "
                         f"lower min_nnz_per_col (now {min_nnz_per_col})")
    return sp.restrict_columns(entries, kept), kept


def _my_columns(m: int) -> tuple[int, ColumnSlice]:
    """(rank, the kept columns this rank owns)."""
    rank, world_size = rank_and_world()
    return rank, column_slice(m, rank, world_size)


def _lrm_problem(local: sp.Entries, n: int) -> lrm_npeff.LrmProblem:
    """X, Xᵀ of this rank's columns and tr_xx = Σ_i ‖A_iᵀA_i‖²_F over all columns (grams summed over ranks)."""
    grams = sp.example_grams(local)  # [n, c, c]
    all_reduce_sum_(grams)
    X, Xt = sp.csr_pair(local)
    return lrm_npeff.LrmProblem(X, Xt, n, lrm_npeff.tr_xx_from_grams(grams))


def _diag_problem(local: sp.Entries) -> d_npeff.DiagProblem:
    """A, Aᵀ of this rank's columns and ‖A‖²_F over all columns."""
    sq_norm = local.values.double().square().sum()
    all_reduce_sum_(sq_norm)
    A, At = sp.csr_pair(local)
    return d_npeff.DiagProblem(A, At, float(sq_norm))


def _initial(init: tuple[np.ndarray, np.ndarray] | None, draw: Callable[[], tuple[torch.Tensor, torch.Tensor]],
             cols: ColumnSlice, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [n, r], this rank's transposed component block [m_p, r]) from `init` or the seeded draw; W from rank 0."""
    if init is None:
        W, Ct = (t.to(device) for t in draw())
    else:
        W, Ct = _tensor(init[0], torch.float32, device), _tensor(init[1], torch.float32, device).T[cols.start:cols.stop]
    W = W.contiguous()
    broadcast_from_root_(W)
    return W, Ct.contiguous()


# --------------------------------------------------------------------------------------------------- LRM-NPEFF

def fit_lrm_npeff(pefs: LrmPefs, n_components: int, *, n_iters: int, n_iters_g_only: int = DEFAULT_N_ITERS_G_ONLY,
                  lr: float = DEFAULT_LR, step: Literal["line_search", "plain"] = "line_search", ortho_reg: float = 0.0,
                  seed: int = 0, device: str | torch.device | None = None, tol: float | None = None,
                  progress: Progress | None = None, min_nnz_per_col: int = 1,
                  init: tuple[np.ndarray, np.ndarray] | None = None) -> LrmDecomposition:
    """Factorize the LRM-PEFs into n_components rank-1 PSD components W_ik g_k g_kᵀ (spec §3).

    n_iters_g_only G steps with W frozen at its random init, then n_iters joint iterations (W MU step,
    then G step); tol stops the joint phase early when the loss falls by less than tol (relative) over
    10 iterations. Init: W ~ U(0,1], G ~ N(0, 2/(r m)) from seed + rank, or `init` = (W0 [n, r],
    G0 [r, m] over the kept parameters). ortho_reg adds λ‖GGᵀ − (2/r)I‖²_F.

    step="plain" is G <- G − lr ∇L exactly as in the reference (default there lr=1e-3), but its stable
    range shifts with n, r and the data (about r/(4n) at init for unit-norm F_i). The default
    step="line_search" takes lr times the exact minimizer of L along −∇L: for fixed W, L is a quartic in
    G whose coefficients come from products the iteration needs anyway, so there is nothing to tune,
    the loss never increases and planted components are found in a few dozen iterations. The 50 G-only
    warm-up steps turn G towards the data before the MU step zeroes the coefficients of badly started
    components (without them, planted r=16 problems lost a component for half of the seeds).
    """
    _check_common(pefs, LrmPefs, n_components, n_iters, tol, min_nnz_per_col)
    _check_at_least("n_iters_g_only", n_iters_g_only, 0)
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if step not in ("line_search", "plain"):
        raise ValueError(f"step must be 'line_search' or 'plain', got {step!r}")
    if not ortho_reg >= 0:
        raise ValueError(f"ortho_reg must be >= 0, got {ortho_reg}")
    dev = resolve_device(device)
    entries, kept = _prune(_lrm_entries(pefs, dev), min_nnz_per_col)
    n, r, m = pefs.n_examples, n_components, len(kept)
    if init is not None:
        _check_init(init, n, r, m, "G")
    rank, cols = _my_columns(m)
    problem = _lrm_problem(sp.slice_columns(entries, cols.start, cols.stop), n)
    del entries  # the CSR matrices replace the COO entries
    tr_xx = problem.tr_xx
    W, Gt = _initial(init, lambda: lrm_npeff.init_factors(n, cols.size, m, r, seed, rank), cols, dev)
    schedule = lrm_npeff.LrmSchedule(n_iters_g_only, n_iters, lr, step, ortho_reg)
    monitor = LossMonitor("LRM-NPEFF", n_iters_g_only + n_iters, tol, progress,
                          f"lower lr (now {lr}) or check the PEFs for Inf")
    W, Gt = lrm_npeff.run_lrm_npeff(problem, W, Gt, schedule, monitor)
    W, G = lrm_npeff.normalize_components(W, gather_columns(Gt, m).T)
    losses = np.asarray(monitor.losses, dtype=np.float64)
    return LrmDecomposition(W=W.cpu().numpy(), G=G.contiguous().cpu().numpy(), kept=kept.cpu().numpy(),
                            n_parameters=pefs.n_parameters, losses=losses,
                            relative_error=float(losses[-1] / tr_xx) if tr_xx > 0 else 0.0)


# ------------------------------------------------------------------------------------------------------ D-NPEFF

def fit_d_npeff(pefs: DiagPefs, n_components: int, *, n_iters: int, seed: int = 0,
                device: str | torch.device | None = None, tol: float | None = None,
                progress: Progress | None = None, min_nnz_per_col: int = 1,
                init: tuple[np.ndarray, np.ndarray] | None = None) -> DiagDecomposition:
    """Non-negative factorization f_i ≈ Σ_k W_ik h_k of the D-PEFs by Lee–Seung MU, W then H (spec §2).

    Init: W, H ~ U(0,1] from seed + rank (W from rank 0), or `init` = (W0 [n, r], H0 [r, m] over the
    kept parameters). tol stops when the loss falls by less than tol (relative) over 10 iterations.
    """
    _check_common(pefs, DiagPefs, n_components, n_iters, tol, min_nnz_per_col)
    dev = resolve_device(device)
    entries, kept = _prune(_diag_entries(pefs, dev), min_nnz_per_col)
    n, r, m = pefs.n_examples, n_components, len(kept)
    if init is not None:
        _check_init(init, n, r, m, "H")
    rank, cols = _my_columns(m)
    problem = _diag_problem(sp.slice_columns(entries, cols.start, cols.stop))
    del entries  # the CSR matrices replace the COO entries
    sq_norm = problem.sq_norm
    W, Ht = _initial(init, lambda: d_npeff.init_factors(n, cols.size, r, seed, rank), cols, dev)
    monitor = LossMonitor("D-NPEFF", n_iters, tol, progress, "check the PEFs for Inf or NaN")
    W, Ht = d_npeff.run_d_npeff(problem, W, Ht, n_iters, monitor)
    W, H = d_npeff.normalize_components(W, gather_columns(Ht, m).T)
    losses = np.asarray(monitor.losses, dtype=np.float64)
    return DiagDecomposition(W=W.cpu().numpy(), H=H.contiguous().cpu().numpy(), kept=kept.cpu().numpy(),
                             n_parameters=pefs.n_parameters, losses=losses,
                             relative_error=float(losses[-1] / sq_norm) if sq_norm > 0 else 0.0)


# ------------------------------------------------------------------------------------------ coefficient fitting

def fit_coefficients(decomposition: LrmDecomposition | DiagDecomposition, pefs: LrmPefs | DiagPefs, *,
                     n_iters: int, seed: int = 0, device: str | torch.device | None = None,
                     chunk_size: int = DEFAULT_CHUNK_SIZE, progress: Progress | None = None) -> np.ndarray:
    """W [n_new, r] ≥ 0 for new PEFs with the components fixed, by n_iters MU steps (spec §2, §3.8).

    The PEFs are normalized and restricted to decomposition.kept chunk_size examples at a time (which
    bounds memory); W's init U(0,1] is drawn for all examples at once, so the result does not depend on
    chunk_size. progress(done_examples, n_examples, None) is called after each chunk.
    """
    is_lrm = isinstance(decomposition, LrmDecomposition)
    if not is_lrm and not isinstance(decomposition, DiagDecomposition):
        raise TypeError(f"decomposition must be LrmDecomposition or DiagDecomposition, "
                        f"got {type(decomposition).__name__}")
    kind = LrmPefs if is_lrm else DiagPefs
    if not isinstance(pefs, kind):
        raise TypeError(f"pefs must be {kind.__name__} to match a {type(decomposition).__name__}, "
                        f"got {type(pefs).__name__}")
    if pefs.n_parameters != decomposition.n_parameters:
        raise ValueError(f"pefs.n_parameters must be {decomposition.n_parameters} to match the decomposition, "
                         f"got {pefs.n_parameters}")
    _check_at_least("n_iters", n_iters, 1)
    _check_at_least("chunk_size", chunk_size, 1)
    dev = resolve_device(device)
    kept = _tensor(decomposition.kept, torch.int64, dev)
    components = decomposition.G if is_lrm else decomposition.H  # [r, m]
    Ct = _tensor(components, torch.float32, dev).T.contiguous()  # [m, r]
    n, r = pefs.n_examples, components.shape[0]
    W0 = 1 - torch.rand(n, r, generator=rank_generator(seed, 0))  # [n, r], U(0, 1]
    chunks = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        entries = (_lrm_entries if is_lrm else _diag_entries)(pefs, dev, slice(start, stop))
        chunk = sp.restrict_columns(entries, kept)
        X = sp.to_csr(chunk.rows, chunk.cols, chunk.values, (chunk.n_rows, chunk.n_cols))
        W = W0[start:stop].to(dev)
        W = lrm_npeff.fit_w(X, stop - start, Ct, W, n_iters) if is_lrm else d_npeff.fit_w(X, Ct, W, n_iters)
        if not torch.isfinite(W).all():
            raise FloatingPointError(f"coefficient fitting: W became non-finite for examples [{start}, {stop}); "
                                     f"check the PEFs for Inf or NaN")
        chunks.append(W.cpu())
        if progress is not None:
            progress(stop, n, None)
    return torch.cat(chunks).numpy()
