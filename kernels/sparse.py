"""Sparse PEF matrices: entries of X, per-example normalization, column pruning, CSR (spec §1.5-1.7).

LRM: row i*c + j of X [n*c, m] is a_ijᵀ, column j of A_i, so F_i = Σ_j a_ij a_ijᵀ. D: row i is f_iᵀ.
Entries (COO) hold int64 indices; the matrices a fit keeps hold int32 indices where every index fits
and int64 otherwise (spec §10.6). A fit holds X once, by columns (CscMatrix, filled block by block).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch

LRM_NORM_EPS = 1e-12  # divide by max(sqrt(‖F_i‖_F), eps)
DIAG_NORM_EPS = 1e-9  # divide by ‖f_i‖ + eps
INT32_LIMIT = torch.iinfo(torch.int32).max  # the largest index or offset an int32 index array may hold


def index_dtype(largest: int) -> torch.dtype:
    """int32 when every index and offset is <= `largest` <= INT32_LIMIT (half the bytes, and torch's and
    scipy's sparse products take it without converting), else int64."""
    return torch.int32 if largest <= INT32_LIMIT else torch.int64


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


def kept_columns(counts: torch.Tensor, min_nnz_per_col: int) -> torch.Tensor:
    """kept [m] int64: the columns whose entry count (counts [n_cols]) is at least min_nnz_per_col, ascending."""
    return torch.nonzero(counts >= min_nnz_per_col).squeeze(1)


def prune_columns(entries: Entries, min_nnz_per_col: int) -> torch.Tensor:
    """kept [m] int64: the columns with at least min_nnz_per_col entries over all rows, ascending."""
    return kept_columns(torch.bincount(entries.cols, minlength=entries.n_cols), min_nnz_per_col)


def column_map(kept: torch.Tensor, n_cols: int) -> torch.Tensor:
    """new_of_old [n_cols] int64: the position of each column in `kept`, -1 for the others."""
    new_of_old = torch.full((n_cols,), -1, dtype=torch.int64, device=kept.device)
    new_of_old[kept] = torch.arange(len(kept), device=kept.device)
    return new_of_old


def renumber_columns(entries: Entries, new_of_old: torch.Tensor, n_kept: int) -> Entries:
    """Keep the entries whose column maps to >= 0 under new_of_old [n_cols], numbered as it says."""
    cols = new_of_old[entries.cols]  # [nnz], -1 outside the kept columns
    inside = cols >= 0
    return replace(entries, rows=entries.rows[inside], cols=cols[inside], values=entries.values[inside],
                   n_cols=n_kept)


def restrict_columns(entries: Entries, kept: torch.Tensor) -> Entries:
    """Keep only the entries in columns `kept` (new -> old map) and renumber them 0..len(kept)-1."""
    return renumber_columns(entries, column_map(kept, entries.n_cols), len(kept))


def to_csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor with column indices sorted within each row; int32 indices where they fit."""
    order = torch.argsort(rows * shape[1] + cols)
    dtype = index_dtype(max(len(values), *shape))
    crow = torch.zeros(shape[0] + 1, dtype=dtype, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=shape[0]).cumsum(0)
    return csr_tensor(crow, cols[order].to(dtype), values[order], shape)


def csr_tensor(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """torch's CSR tensor over the given arrays (no copy, no invariant check)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


@dataclass(frozen=True)
class CscMatrix:
    """X [n_rows, n_cols] by columns, which is Xᵀ in CSR: column j holds rows[ptr[j]:ptr[j+1]] (ascending)."""

    ptr: torch.Tensor  # [n_cols + 1], index_dtype(max(nnz, n_rows, n_cols))
    rows: torch.Tensor  # [nnz], same dtype as ptr
    values: torch.Tensor  # [nnz] float
    n_rows: int

    @property
    def n_cols(self) -> int:
        return len(self.ptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.values)

    def to_dense(self) -> torch.Tensor:
        """X as a dense [n_rows, n_cols] tensor (small matrices only)."""
        return csr_tensor(self.ptr, self.rows, self.values, (self.n_cols, self.n_rows)).to_dense().T


def csc_from_blocks(counts: torch.Tensor, n_rows: int, blocks: Iterable[tuple[int, Entries]],
                    dtype: torch.dtype = torch.float32) -> CscMatrix:
    """X [n_rows, len(counts)] by columns on counts' device, filled from blocks (first_row, entries) in row order.

    counts [n_cols] is the number of entries each column receives over all blocks; each block's entries
    (rows numbered from first_row, columns already final) are placed after those of earlier blocks, so
    only one block's int64 temporaries exist at a time and rows stay ascending within every column.
    """
    nnz, n_cols, device = int(counts.sum()), len(counts), counts.device
    idx = index_dtype(max(nnz, n_rows, n_cols))
    ptr = torch.zeros(n_cols + 1, dtype=idx, device=device)
    ptr[1:] = counts.cumsum(0)
    free = ptr[:-1].clone()  # [n_cols] next free slot of each column
    rows, values = torch.empty(nnz, dtype=idx, device=device), torch.empty(nnz, dtype=dtype, device=device)
    for first_row, block in blocks:
        order = torch.argsort(block.cols, stable=True)  # [b] by column, then by row (block order)
        cols = block.cols[order]
        cols_here, per_col = torch.unique_consecutive(cols, return_counts=True)
        # slot of the t-th entry (sorted) = free[col] + (t − first position of col among the sorted entries)
        first = torch.repeat_interleave(per_col.cumsum(0) - per_col, per_col)  # [b]
        slots = free[cols].to(torch.int64) + torch.arange(len(cols), device=device) - first
        rows[slots] = (block.rows[order] + first_row).to(idx)
        values[slots] = block.values[order].to(dtype)
        free[cols_here] += per_col.to(idx)
    if not torch.equal(free, ptr[1:]):
        raise ValueError("csc_from_blocks: the blocks hold other column counts than `counts`; "
                         "count the entries with the same column map the blocks use")
    return CscMatrix(ptr=ptr, rows=rows, values=values, n_rows=n_rows)


def csc_matrix(entries: Entries) -> CscMatrix:
    """The CscMatrix of all entries at once (small matrices: tests, benchmarks)."""
    counts = torch.bincount(entries.cols, minlength=entries.n_cols)
    return csc_from_blocks(counts, entries.n_rows, [(0, entries)], entries.values.dtype)


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
