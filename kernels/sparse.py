"""Sparse PEF matrices: entries of X, per-example normalization, column pruning, CSR (spec §1.5-1.7).

LRM: row i*c + j of X [n*c, m] is a_ijᵀ, column j of A_i, so F_i = Σ_j a_ij a_ijᵀ. D: row i is f_iᵀ.
All indices are int64 (spec §10.6).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch

LRM_NORM_EPS = 1e-12  # divide by max(sqrt(‖F_i‖_F), eps)
DIAG_NORM_EPS = 1e-9  # divide by ‖f_i‖ + eps


@dataclass(frozen=True)
class Entries:
    """The non-zero entries (COO) of a PEF matrix with `rows_per_example` rows per example."""

    rows: torch.Tensor  # [nnz] int64, example * rows_per_example + class
    cols: torch.Tensor  # [nnz] int64, column in [0, n_cols)
    values: torch.Tensor  # [nnz] float
    n_examples: int
    rows_per_example: int  # c for LRM, 1 for D
    n_cols: int

    @property
    def n_rows(self) -> int:
        return self.n_examples * self.rows_per_example

    @property
    def examples(self) -> torch.Tensor:
        """[nnz] int64, the example of each entry."""
        return self.rows // self.rows_per_example


def lrm_entries(values: torch.Tensor, indices: torch.Tensor, class_offsets: torch.Tensor,
                n_parameters: int) -> Entries:
    """Entries of X from LRM-PEF arrays values/indices [n, k] and class_offsets [n, c+1]; zeros are dropped."""
    n, k = values.shape
    c = class_offsets.shape[1] - 1
    position = torch.arange(k, device=values.device).expand(n, k).contiguous()  # [n, k]
    # class of entry t of example i = #{j in 1..c-1 : offsets[i, j] <= t}
    classes = torch.searchsorted(class_offsets[:, 1:c].contiguous(), position, right=True)  # [n, k]
    rows = torch.arange(n, device=values.device).unsqueeze(1) * c + classes  # [n, k]
    return _drop_zeros(Entries(rows.reshape(-1), indices.reshape(-1).to(torch.int64), values.reshape(-1),
                               n, c, n_parameters))


def diag_entries(values: torch.Tensor, indices: torch.Tensor, n_parameters: int) -> Entries:
    """Entries of the D-PEF matrix A [n, M] from values/indices [n, k]; zeros are dropped."""
    n, k = values.shape
    rows = torch.arange(n, device=values.device).repeat_interleave(k)  # [n*k]
    return _drop_zeros(Entries(rows, indices.reshape(-1).to(torch.int64), values.reshape(-1), n, 1, n_parameters))


def _drop_zeros(entries: Entries) -> Entries:
    keep = entries.values != 0
    return replace(entries, rows=entries.rows[keep], cols=entries.cols[keep], values=entries.values[keep])


def lrm_scales(norms: torch.Tensor) -> torch.Tensor:
    """Per-example divisor max(sqrt(‖F_i‖_F), 1e-12) that gives F_i = A_iA_iᵀ unit Frobenius norm."""
    return norms.sqrt().clamp_min(LRM_NORM_EPS)


def diag_scales(norms: torch.Tensor) -> torch.Tensor:
    """Per-example divisor ‖f_i‖₂ + 1e-9 of the D-PEFs (additive eps, as in the reference)."""
    return norms + DIAG_NORM_EPS


def normalize(entries: Entries, scales: torch.Tensor) -> Entries:
    """Divide every entry of example i by scales[i] ([n])."""
    return replace(entries, values=entries.values / scales.to(entries.values.dtype)[entries.examples])


def prune_columns(entries: Entries, min_nnz_per_col: int) -> torch.Tensor:
    """kept [m] int64: the columns with at least min_nnz_per_col entries over all rows, ascending."""
    counts = torch.bincount(entries.cols, minlength=entries.n_cols)  # [n_cols]
    return torch.nonzero(counts >= min_nnz_per_col).squeeze(1)


def restrict_columns(entries: Entries, kept: torch.Tensor) -> Entries:
    """Keep only the entries in columns `kept` (new -> old map) and renumber them 0..len(kept)-1."""
    new_of_old = torch.full((entries.n_cols,), -1, dtype=torch.int64, device=entries.cols.device)
    new_of_old[kept] = torch.arange(len(kept), device=kept.device)
    cols = new_of_old[entries.cols]  # [nnz], -1 outside kept
    inside = cols >= 0
    return replace(entries, rows=entries.rows[inside], cols=cols[inside], values=entries.values[inside],
                   n_cols=len(kept))


def slice_columns(entries: Entries, start: int, stop: int) -> Entries:
    """The entries in columns [start, stop), renumbered from 0 (one rank's partition); all columns: no copy."""
    if start == 0 and stop == entries.n_cols:
        return entries
    inside = (entries.cols >= start) & (entries.cols < stop)
    return replace(entries, rows=entries.rows[inside], cols=entries.cols[inside] - start,
                   values=entries.values[inside], n_cols=stop - start)


def to_csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor with int64 indices and column indices sorted within each row."""
    order = torch.argsort(rows * shape[1] + cols)
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=shape[0]).cumsum(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, cols[order], values[order], shape, check_invariants=False)


def csr_pair(entries: Entries) -> tuple[torch.Tensor, torch.Tensor]:
    """X [n_rows, n_cols] and Xᵀ [n_cols, n_rows], both CSR: Xᵀ @ dense is the fast form of denseᵀ @ X."""
    X = to_csr(entries.rows, entries.cols, entries.values, (entries.n_rows, entries.n_cols))
    Xt = to_csr(entries.cols, entries.rows, entries.values, (entries.n_cols, entries.n_rows))
    return X, Xt


def example_grams(entries: Entries) -> torch.Tensor:
    """[n, c, c] Gram matrices A_iᵀA_i of the entries held here (sum them over column partitions).

    Entries are grouped by (example, column) so that Gram_i[j, l] = Σ_p A_i[p, j] A_i[p, l].
    """
    n, c = entries.n_examples, entries.rows_per_example
    examples = entries.examples
    keys, pair = torch.unique(examples * entries.n_cols + entries.cols, return_inverse=True)  # [u], [nnz]
    Y = torch.zeros(len(keys), c, dtype=entries.values.dtype, device=keys.device)  # [u, c]
    Y.index_put_((pair, entries.rows % c), entries.values, accumulate=True)
    pair_example = keys // entries.n_cols  # [u]
    grams = torch.zeros(n, c, c, dtype=entries.values.dtype, device=keys.device)
    for j in range(c):
        grams[:, j].index_add_(0, pair_example, Y[:, j : j + 1] * Y)
    return grams
