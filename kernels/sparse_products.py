"""The two products every NPEFF iteration needs, X @ D and Xᵀ @ W, from X held once by columns (CscMatrix).

One implementation per device type (PRODUCTS). On the CPU, X @ D [n_rows, r] runs column by column
(scipy's CSC kernel: it streams D once and accumulates into the small output, which stays in cache; a row
by row CSR product gathers scattered rows of the large D instead, 6x slower on the text demo), on
torch's threads' count of column blocks in parallel; Xᵀ @ W [n_cols, r] is torch's CSR product on the
same arrays (Xᵀ in CSR is X in CSC) as an in-place addmm: it writes straight into the output, which a fit
passes back every iteration (torch.mm, even with out=, went through a temporary the size of the output; and a
fresh output of the fit's largest size paid its page faults every time, 1.6 s for 2 GB).
On CUDA both are cuSPARSE CSR products, with X also stored by rows.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce
from typing import Protocol

import numpy as np
import scipy.sparse
import torch

from kernels.sparse import CscMatrix, csr_tensor

BLOCK_MIN_NNZ = 1 << 18  # X @ D splits the columns into one block per torch thread, of at least this many entries


class SparseProducts(Protocol):
    """X [n_rows, n_cols] as the two products an NPEFF iteration takes."""

    n_rows: int
    n_cols: int

    def x_times(self, D: torch.Tensor) -> torch.Tensor:
        """X @ D [n_rows, r] for D [n_cols, r]."""

    def xt_times(self, W: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Xᵀ @ W [n_cols, r] for W [n_rows, r], into `out` when given (a fit reuses one buffer: a fresh array
        of the fit's largest size costs its page faults on every iteration)."""


def column_blocks(X: CscMatrix, n_blocks: int) -> list[tuple[int, int]]:
    """Up to n_blocks contiguous column ranges [a, b) holding about equal numbers of entries."""
    targets = torch.linspace(0, X.nnz, n_blocks + 1)[1:-1].to(X.ptr.dtype)
    cuts = torch.searchsorted(X.ptr, targets).tolist()
    bounds = sorted({0, X.n_cols, *cuts})
    return list(zip(bounds[:-1], bounds[1:]))


def transposed(X: CscMatrix) -> torch.Tensor:
    """Xᵀ [n_cols, n_rows] as a CSR tensor over X's own arrays (no copy)."""
    return csr_tensor(X.ptr, X.rows, X.values, (X.n_cols, X.n_rows))


@dataclass(frozen=True)
class CpuProducts:
    """X @ D by scipy's CSC kernel over column blocks in threads; Xᵀ @ W by torch's CSR kernel.

    The blocks' partial sums are added in block order, so results are identical for a given torch thread
    count (and for any thread count when X has fewer than 2·BLOCK_MIN_NNZ entries: one block).
    """

    n_rows: int
    n_cols: int
    blocks: tuple[tuple[int, int, scipy.sparse.csc_matrix], ...]  # (first column, stop, X[:, first:stop])
    Xt: torch.Tensor  # [n_cols, n_rows] CSR over X's arrays

    @classmethod
    def of(cls, X: CscMatrix) -> "CpuProducts":
        ptr, rows, values = X.ptr.numpy(), X.rows.numpy(), X.values.numpy()  # views, no copies
        blocks = []
        n_blocks = max(1, min(torch.get_num_threads(), X.nnz // BLOCK_MIN_NNZ))
        for a, b in column_blocks(X, n_blocks):
            # set after construction: scipy's constructor would copy views of a much larger array ("prune")
            part = scipy.sparse.csc_matrix((X.n_rows, b - a), dtype=values.dtype)
            part.data, part.indices, part.indptr = values[ptr[a]:ptr[b]], rows[ptr[a]:ptr[b]], ptr[a:b + 1] - ptr[a]
            blocks.append((a, b, part))
        return cls(X.n_rows, X.n_cols, tuple(blocks), transposed(X))

    def x_times(self, D: torch.Tensor) -> torch.Tensor:
        Dn = D.detach().numpy()
        if len(self.blocks) == 1:
            a, b, part = self.blocks[0]
            return torch.from_numpy(part @ Dn[a:b])
        # AD = Σ_blocks X[:, a:b] @ D[a:b]  [n_rows, r]; scipy's kernels release the GIL
        with ThreadPoolExecutor(len(self.blocks)) as pool:
            partial = pool.map(lambda block: block[2] @ Dn[block[0]:block[1]], self.blocks)
            return torch.from_numpy(reduce(np.add, partial))

    def xt_times(self, W: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.empty(self.n_cols, W.shape[1], dtype=W.dtype) if out is None else out  # [n_cols, r]
        return out.addmm_(self.Xt, W, beta=0)  # beta=0: out's old values (NaN included) are not read


@dataclass(frozen=True)
class TorchCsrProducts:
    """X and Xᵀ both as torch CSR tensors on the device (X by rows too: twice the memory, no CPU kernels)."""

    n_rows: int
    n_cols: int
    X: torch.Tensor  # [n_rows, n_cols] CSR
    Xt: torch.Tensor  # [n_cols, n_rows] CSR

    @classmethod
    def of(cls, X: CscMatrix, device: torch.device) -> "TorchCsrProducts":
        Xt = csr_tensor(X.ptr.to(device), X.rows.to(device), X.values.to(device), (X.n_cols, X.n_rows))
        by_rows = Xt.t().to_sparse_csr()
        by_rows = csr_tensor(by_rows.crow_indices().to(X.ptr.dtype), by_rows.col_indices().to(X.ptr.dtype),
                             by_rows.values(), (X.n_rows, X.n_cols))
        return cls(X.n_rows, X.n_cols, by_rows, Xt)

    def x_times(self, D: torch.Tensor) -> torch.Tensor:
        return self.X @ D

    def xt_times(self, W: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.Xt @ W if out is None else out.copy_(self.Xt @ W)  # the caching allocator reuses the memory


PRODUCTS: dict[str, Callable[[CscMatrix, torch.device], SparseProducts]] = {
    "cpu": lambda X, device: CpuProducts.of(X),
    "cuda": TorchCsrProducts.of,
}


def sparse_products(X: CscMatrix, device: torch.device) -> SparseProducts:
    """The products of X (held on the CPU) on `device`, by the implementation registered for its type."""
    if device.type not in PRODUCTS:
        raise ValueError(f"no sparse products for device {device}; registered device types: {sorted(PRODUCTS)}")
    return PRODUCTS[device.type](X, device)
