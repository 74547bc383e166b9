"""Containers for sparsified per-example Fishers (spec npeff.md §1.2-1.4) and the top-k sparsifiers.

LRM-PEF: F_i = A_i A_iᵀ with A_i [M, c]; D-PEF: the diagonal f_i [M]. Both are stored as the
k largest-magnitude entries per example plus the dense (pre-sparsification) norm.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from analysis.batch_gradients import BatchGradients, check_finite
from kernels.topk import TopK, top_abs


def lrm_norms(A: torch.Tensor) -> torch.Tensor:
    """‖A_i A_iᵀ‖_F for a batch A [b, c, M] through the c×c Gram matrix (never forms M×M)."""
    gram = A @ A.transpose(1, 2)  # [b, c, c]
    return gram.square().sum(dim=(1, 2)).sqrt()  # [b]


def lrm_from_top(top: TopK, c: int, M: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stored LRM layout of the kept entries: values [b, k], parameter indices [b, k] and class offsets [b, c+1].

    Entries are ordered by (class, parameter) like the reference's flat sort (spec §1.2).
    """
    flat, values = top.flat, top.values
    if not top.ascending:
        flat, order = flat.sort(dim=1)  # [b, k], ascending flat index = class * M + parameter
        values = values.gather(1, order)
    bounds = torch.arange(c + 1, device=flat.device, dtype=torch.int64) * M  # [c+1], class boundaries in flat
    offsets = torch.searchsorted(flat, bounds.expand(flat.shape[0], c + 1).contiguous())  # [b, c+1]
    return values, flat % M, offsets


def sparsify_lrm(A: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the k largest |A| entries of each example jointly over classes (spec §1.2).

    A: [b, c, M]. Returns values [b, k], parameter indices [b, k] (int64) and class offsets
    [b, c+1] (int64), ordered by (class, parameter).
    """
    b, c, M = A.shape
    if k is None or k >= c * M:
        return lrm_all(A)
    return lrm_from_top(top_abs([A], k), c, M)


@functools.lru_cache(maxsize=8)
def _kept_rows(c: int, M: int) -> tuple[np.ndarray, np.ndarray]:
    """Parameter indices [c·M] and class offsets [c+1] of a PEF that keeps every value (read-only, shared)."""
    rows = np.tile(np.arange(M, dtype=np.int64), c), np.arange(c + 1, dtype=np.int64) * M
    for row in rows:
        row.flags.writeable = False
    return rows


def lrm_all(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stored LRM layout keeping every entry of A [b, c, M]: values [b, c·M] (A itself, already in (class,
    parameter) order), and indices [b, c·M] and offsets [b, c+1] as one row broadcast over the examples."""
    b, c, M = A.shape
    indices = torch.arange(M, device=A.device).repeat(c).expand(b, c * M)  # stride 0 over examples
    offsets = (torch.arange(c + 1, device=A.device) * M).expand(b, c + 1)
    return A.reshape(b, c * M), indices, offsets


def diag_from_top(top: TopK) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored D layout: values [b, k] sorted descending and their parameter indices [b, k] (int64).

    The descending order makes a later re-truncation to k' ≤ k a prefix (spec §1.2).
    """
    values, order = top.values.sort(dim=1, descending=True)
    return values, top.flat.gather(1, order)


def sparsify_diag(f: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k largest entries of each non-negative diagonal f [b, M], sorted by value descending."""
    b, M = f.shape
    if k is None or k >= M:
        return diag_from_top(TopK(values=f, flat=torch.arange(M, device=f.device).expand(b, M)))
    return diag_from_top(top_abs([f[:, None, :]], k))


def _check_k(k: int | None) -> None:
    if k is not None and k < 1:
        raise ValueError(f"n_values_per_example must be >= 1 or None (keep all), got {k}")


@dataclass(frozen=True)
class LrmPefs:
    """Sparse low-rank per-example Fishers; row i of every array refers to example i."""

    values: np.ndarray  # [n, k] float32, entries of A_i ordered by (class, parameter)
    indices: np.ndarray  # [n, k] int64, parameter index in [0, n_parameters)
    class_offsets: np.ndarray  # [n, c+1] int64, entries of class column j are [off[j], off[j+1])
    class_ids: np.ndarray  # [n, c] int64, which output class each column of A_i is
    norms: np.ndarray  # [n] float32, dense ‖A_i A_iᵀ‖_F before sparsification
    logits: np.ndarray  # [n, C] float32, all classes
    labels: np.ndarray  # [n] int64, gold label or -1 when unknown
    n_parameters: int  # M, the flat parameter count in scope

    @property
    def n_examples(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_classes(self) -> int:
        """c, the number of class columns kept per example."""
        return int(self.class_offsets.shape[1] - 1)

    def dense(self) -> np.ndarray:
        """A as a dense [n, c, M] array (small problems only)."""
        n, c, M = self.n_examples, self.n_classes, self.n_parameters
        A = np.zeros((n, c, M), dtype=np.float32)
        counts = np.diff(self.class_offsets, axis=1)  # [n, c]
        for i in range(n):
            cls = np.repeat(np.arange(c), counts[i])
            A[i, cls, self.indices[i]] = self.values[i]
        return A

    @classmethod
    def from_dense(cls, A: np.ndarray, logits: np.ndarray | None = None, labels: np.ndarray | None = None,
                   n_values_per_example: int | None = None, class_ids: np.ndarray | None = None) -> "LrmPefs":
        """Sparsify a dense A [n, c, M] (planted data, tests); logits default to zeros, labels to -1."""
        _check_k(n_values_per_example)
        At = torch.as_tensor(np.asarray(A, dtype=np.float32))
        if At.ndim != 3:
            raise ValueError(f"A must have shape [n, c, M], got {tuple(At.shape)}")
        n, c, M = At.shape
        values, indices, offsets = sparsify_lrm(At, n_values_per_example)
        return cls(values=values.numpy(), indices=indices.numpy(), class_offsets=offsets.numpy(),
                   class_ids=np.tile(np.arange(c), (n, 1)) if class_ids is None else np.asarray(class_ids),
                   norms=lrm_norms(At).numpy(),
                   logits=np.zeros((n, c), np.float32) if logits is None else np.asarray(logits, np.float32),
                   labels=np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64),
                   n_parameters=M)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "LrmPefs":
        """The PEFs of the given examples, in the given order."""
        return _subset(self, indices)

    @staticmethod
    def n_columns(n_classes: int) -> int:
        """Columns of A_i per example when n_classes classes are kept: one per class."""
        return n_classes

    @staticmethod
    def kept_width(n_classes: int, n_parameters: int, k: int | None) -> int | None:
        """c·M when every value is kept (a caller may then give from_gradients the rows of the final values
        array to write into, saving a copy), else None."""
        width = n_classes * n_parameters
        return width if k is None or k >= width else None

    @classmethod
    def from_gradients(cls, grads: BatchGradients, labels: np.ndarray, k: int | None, start: int,
                       out: np.ndarray | None = None) -> "LrmPefs":
        """LrmPefs of a batch (top k of A jointly over classes); norms ‖A Aᵀ‖_F = ‖Aᵀ A‖_F from the dense A.

        out: [B, c·M] float32 rows the values are written into when every value is kept (see kept_width).
        """
        grams = grads.lrm_grams()  # [B, c, c]
        check_finite(grams, grads.logits, start)
        M, c = grads.n_parameters, grads.class_ids.shape[1]
        keep_all = cls.kept_width(c, M, k) is not None
        if keep_all:
            A = grads.dense_columns(None if out is None else torch.from_numpy(out).view(-1, c, M))  # [B, c, M]
            values, indices, offsets = lrm_all(A)
        else:
            values, indices, offsets = lrm_from_top(_lrm_top(grads, k), c, M)
        if keep_all:  # one row broadcast over the examples (the same for every batch: concat_pefs keeps it)
            indices, offsets = (np.broadcast_to(row, a.shape) for row, a in zip(_kept_rows(c, M), (indices, offsets)))
        else:
            indices, offsets = indices.cpu().numpy(), offsets.cpu().numpy()
        return cls(values=values.cpu().numpy(), indices=indices, class_offsets=offsets,
                   class_ids=grads.class_ids.cpu().numpy().astype(np.int64),
                   norms=grams.square().sum(dim=(1, 2)).sqrt().cpu().numpy(),
                   logits=grads.logits.cpu().numpy(), labels=labels, n_parameters=M)


@dataclass(frozen=True)
class DiagPefs:
    """Sparse diagonal per-example Fishers; row i of every array refers to example i."""

    values: np.ndarray  # [n, k] float32, non-negative, sorted descending per row
    indices: np.ndarray  # [n, k] int64, parameter index in [0, n_parameters)
    norms: np.ndarray  # [n] float32, dense ‖f_i‖₂ before sparsification
    logits: np.ndarray  # [n, C] float32
    labels: np.ndarray  # [n] int64, gold label or -1 when unknown
    n_parameters: int  # M

    @property
    def n_examples(self) -> int:
        return int(self.values.shape[0])

    def dense(self) -> np.ndarray:
        """f as a dense [n, M] array (small problems only)."""
        f = np.zeros((self.n_examples, self.n_parameters), dtype=np.float32)
        np.put_along_axis(f, self.indices, self.values, axis=1)
        return f

    @classmethod
    def from_dense(cls, f: np.ndarray, logits: np.ndarray | None = None, labels: np.ndarray | None = None,
                   n_values_per_example: int | None = None) -> "DiagPefs":
        """Sparsify a dense non-negative f [n, M] (planted data, tests)."""
        _check_k(n_values_per_example)
        ft = torch.as_tensor(np.asarray(f, dtype=np.float32))
        if ft.ndim != 2:
            raise ValueError(f"f must have shape [n, M], got {tuple(ft.shape)}")
        if (ft < 0).any():
            raise ValueError("f must be non-negative: a diagonal Fisher is a sum of squares")
        n, M = ft.shape
        values, indices = sparsify_diag(ft, n_values_per_example)
        return cls(values=values.numpy(), indices=indices.numpy(), norms=ft.norm(dim=1).numpy(),
                   logits=np.zeros((n, 1), np.float32) if logits is None else np.asarray(logits, np.float32),
                   labels=np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64),
                   n_parameters=M)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "DiagPefs":
        """The PEFs of the given examples, in the given order."""
        return _subset(self, indices)

    @staticmethod
    def n_columns(n_classes: int) -> int:
        """One diagonal per example, whatever the number of classes kept."""
        return 1

    @staticmethod
    def kept_width(n_classes: int, n_parameters: int, k: int | None) -> None:
        """None: kept-all values are sorted copies, never written in place (see LrmPefs.kept_width)."""
        return None

    @classmethod
    def from_gradients(cls, grads: BatchGradients, labels: np.ndarray, k: int | None, start: int,
                       out: None = None) -> "DiagPefs":
        """DiagPefs of a batch (top k of f = Σ_y A_y⊙²); norms ‖f‖₂ from the dense f."""
        f = grads.diagonals()  # [B, 1, n_p] each
        squares = sum(block.square().sum(dim=(1, 2)) for block in f)  # [B]
        check_finite(squares, grads.logits, start)
        M = grads.n_parameters
        if k is None or k >= M:
            values, indices = sparsify_diag(torch.cat(f, dim=2)[:, 0], None)
        else:
            values, indices = diag_from_top(top_abs(f, k))
        return cls(values=values.cpu().numpy(), indices=indices.cpu().numpy(), norms=squares.sqrt().cpu().numpy(),
                   logits=grads.logits.cpu().numpy(), labels=labels, n_parameters=M)


def concat_pefs(parts: Sequence[LrmPefs] | Sequence[DiagPefs], values: np.ndarray | None = None) -> LrmPefs | DiagPefs:
    """Stack PEFs of consecutive chunks of examples (same kind, k and parameter count) into one; `values`: the
    stacked values when the chunks wrote theirs into its rows (from_gradients' out), used without a copy."""
    if not parts:
        raise ValueError("concat_pefs needs at least one chunk")
    kinds = {type(p) for p in parts}
    sizes = {p.n_parameters for p in parts}
    if len(kinds) != 1 or len(sizes) != 1:
        raise ValueError(f"concat_pefs: chunks differ in kind {kinds} or parameter count {sizes}")
    first = parts[0]
    arrays = {f.name: values if f.name == "values" and values is not None else _stack([getattr(p, f.name) for p in parts])
              for f in fields(first) if f.name != "n_parameters"}
    return type(first)(**arrays, n_parameters=first.n_parameters)


def _is_one_row(array: np.ndarray) -> bool:
    """Whether every row of `array` is its first row broadcast (stride 0: no memory per example)."""
    return array.ndim > 1 and len(array) > 0 and array.strides[0] == 0


def _take(array: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows idx of `array`; one row broadcast over every example stays a broadcast."""
    return np.broadcast_to(array[0], (len(idx),) + array.shape[1:]) if _is_one_row(array) else array[idx]


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays stacked along examples; one row broadcast over every example stays a broadcast (kept-all
    indices: the same for every example)."""
    if all(_is_one_row(a) and (np.may_share_memory(a, arrays[0]) or np.array_equal(a[0], arrays[0][0]))
           for a in arrays):
        return np.broadcast_to(arrays[0][0], (sum(len(a) for a in arrays),) + arrays[0].shape[1:])
    return np.concatenate(arrays)


def _subset(pefs: LrmPefs | DiagPefs, indices: Sequence[int] | np.ndarray) -> LrmPefs | DiagPefs:
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= pefs.n_examples)):
        raise ValueError(f"indices must be a 1-D list of example indices in [0, {pefs.n_examples}), got {idx}")
    arrays = {f.name: _take(getattr(pefs, f.name), idx) for f in fields(pefs) if f.name != "n_parameters"}
    return type(pefs)(**arrays, n_parameters=pefs.n_parameters)


def _lrm_top(grads: BatchGradients, k: int) -> TopK:
    """The k largest |A| entries of each example jointly over classes (k < c·M)."""
    if grads.scale is None:
        return top_abs(grads.blocks, k)
    # rank one: A = scale ⊗ d, so the joint top k lie among the 2·k' entries over d's top k' = min(k, M)
    M, c = grads.n_parameters, grads.scale.shape[1]
    if k < M:
        d = top_abs(grads.blocks, k)
    else:  # every entry of d is a candidate
        d_all = torch.cat(grads.blocks, dim=2)[:, 0]  # [B, M]
        d = TopK(values=d_all, flat=torch.arange(M, device=d_all.device).expand_as(d_all))
    values = (grads.scale[:, :, None] * d.values[:, None, :]).flatten(1)  # [B, c·k'], class-major
    flat = (torch.arange(c, device=d.flat.device)[:, None] * M + d.flat[:, None, :]).flatten(1)  # [B, c·k']
    kept = top_abs([values[:, None, :]], k)
    return TopK(values=kept.values, flat=flat.gather(1, kept.flat))
