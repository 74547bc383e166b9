"""This rank's columns of the normalized, pruned PEF matrix, built from the PEF arrays a block of examples at a time.

Two passes over the arrays: the entry count of every parameter (pruning and the column split need all of
them), then the entries of this rank's kept columns, placed straight into the final int32 (where they fit)
arrays (kernels.sparse.csc_from_blocks). The arrays of a stored run are memory maps; they are read with
plain file reads, so the pages read do not stay in the process: a fit holds its columns of X, one block and
a few arrays over the parameters, never the PEFs themselves.
"""
from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator

import numpy as np
import torch

from kernels import sparse as sp

BLOCK_VALUES = 1 << 17  # stored PEF values per block of examples (its temporaries: ~100 bytes per value)
BlockEntries = Callable[[object, torch.device, slice], sp.Entries]  # (pefs, device, examples) -> normalized entries


def read_rows(array: np.ndarray, examples: slice) -> np.ndarray:
    """Rows `examples` (a slice of step 1) of a PEF array as an array of their own.

    A whole .npy memory map (np.load(mmap_mode="r")) is read from its file, so that its pages do not count
    towards this process's memory; any other array is sliced and copied.
    """
    start, stop, _ = examples.indices(len(array))
    stop = max(start, stop)
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.flags.c_contiguous:
        row = int(np.prod(array.shape[1:], dtype=np.int64))  # items per row
        flat = np.fromfile(array.filename, dtype=array.dtype, count=(stop - start) * row,
                           offset=array.offset + start * row * array.itemsize)
        return flat.reshape(stop - start, *array.shape[1:])
    return np.array(array[start:stop])


def example_blocks(n_examples: int, values_per_example: int) -> list[slice]:
    """Consecutive slices of examples holding about BLOCK_VALUES stored values each."""
    size = max(1, BLOCK_VALUES // max(values_per_example, 1))
    return [slice(start, min(start + size, n_examples)) for start in range(0, n_examples, size)]


def parameter_counts(pefs, blocks: list[slice]) -> torch.Tensor:
    """[M] int64: the non-zero stored values of every parameter over all examples."""
    counts = np.zeros(pefs.n_parameters, dtype=np.int64)
    for block in blocks:
        indices = read_rows(pefs.indices, block)
        # in place: a bincount of minlength M per block made and added an [M] array every block (0.06-0.17 s at
        # M = 22.7M, 1,600 blocks for the whole corpus), against ~2 ms here
        np.add.at(counts, indices[read_rows(pefs.values, block) != 0], 1)
    return torch.from_numpy(counts)


def local_matrix(pefs, entries: BlockEntries, blocks: list[slice], counts: torch.Tensor, columns: torch.Tensor,
                 rows_per_example: int, example_stat: Callable[[sp.Entries], torch.Tensor]
                 ) -> tuple[sp.CscMatrix, torch.Tensor]:
    """(X over the parameters `columns` [m_p] (this rank's kept ones) as a CscMatrix on the CPU, the per-example
    statistic of those columns concatenated over blocks [n, ...]) from counts [M] (parameter_counts)."""
    new_of_old = sp.column_map(columns, pefs.n_parameters)  # [M]
    stats = []

    def placed() -> Iterator[tuple[int, sp.Entries]]:
        for block in blocks:
            local = sp.renumber_columns(entries(pefs, torch.device("cpu"), block), new_of_old, len(columns))
            stats.append(example_stat(local))
            yield block.start * rows_per_example, local

    X = sp.csc_from_blocks(counts[columns], pefs.n_examples * rows_per_example, placed())
    return X, torch.cat(stats)
