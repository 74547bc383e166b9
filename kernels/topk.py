"""Exact top-k by magnitude per example over values held in column blocks (spec npeff.md §1.2).

Row b of X [B, R, N] is one example's R·N values, flat index y·N + column; it arrives as blocks
[B, R, n_p] (one per parameter tensor, Σ n_p = N), so long rows are never concatenated on the CPU. A random
sample of the row's values sets a threshold just below its k-th largest |x|; one pass keeps the
candidates at or above it, and an exact top-k among them is the top-k of the whole row. A row whose
threshold came out too high (fewer than k candidates) is redone exactly, so the result never depends
on the sample. Long rows are selected row by row with numpy (from cache), short ones for the whole batch at
once with a few vectorized torch passes (per-row calls would cost more than the work).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

SAMPLE_HITS = 64  # expected number of a row's top k among the sampled values: sets the sample size
SAMPLE_MAX_FRACTION = 0.25  # above this share of the values a sample saves nothing: select exactly
# k at or above this share of a row's values: most of the row passes the threshold, and one exact selection is faster
# (measured per batch of 16: rows of 32,768 with k = n/2 4.5 ms exact vs 15.7 sampled, the digits CNN's 38,180 with
# k = 1024 1.8 vs 2.7, rows of 100,000 with k = n/64 5.2 vs 4.5; long rows of 400,000 with k = n/4 equal)
EXACT_SHARE_SHORT, EXACT_SHARE_LONG = 1 / 64, 1 / 4
SAMPLED_ROW_VALUES = 1 << 17  # shorter rows are selected for the whole batch at once: per-row numpy calls cost more
THREADED_ROW_VALUES = 1 << 18  # rows at least this long are split over torch's thread count
EXACT_CHUNK_VALUES = 1 << 20  # values per exact selection call on the CPU (4 MiB of float32)


@dataclass(frozen=True)
class TopK:
    """The k largest |x| of each row, in no particular order unless `ascending`."""

    values: torch.Tensor  # [B, k] the signed entries
    flat: torch.Tensor  # [B, k] int64, flat index y·N + column
    ascending: bool = False  # flat increases along each row (no sort needed to order by index)


def _largest_abs(x: np.ndarray, k: int) -> np.ndarray:
    """Positions [..., k] (unordered) of the k largest |x| along the last axis of x [..., n].

    numpy's introselect (argpartition) is about 2.5× faster than torch.topk on the CPU for k ≪ n.
    """
    n = x.shape[-1]
    return np.argpartition(np.abs(x), n - k, axis=-1)[..., n - k:]


def top_abs_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [b, k] (unordered) of the k largest |x| per row of x [b, n]."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.ascontiguousarray(_largest_abs(x.detach().numpy(), k)))
    return x.abs().topk(k, dim=1, sorted=False).indices


def _exact(X: Sequence[torch.Tensor], k: int) -> TopK:
    """Top-k of the concatenated rows: one selection over all R·N values of each row, a few rows at a time
    on the CPU so that each selection's temporaries stay in cache."""
    n_values = X[0].shape[1] * sum(x.shape[2] for x in X)
    step = len(X[0]) if X[0].device.type != "cpu" else max(1, EXACT_CHUNK_VALUES // n_values)
    parts = []
    for start in range(0, len(X[0]), step):
        flat_x = torch.cat([x[start:start + step] for x in X], dim=2).flatten(1)  # [b, R·N], index y·N + column
        flat = top_abs_indices(flat_x, k).to(flat_x.device)  # [b, k]
        parts.append(TopK(values=flat_x.gather(1, flat), flat=flat))
    return TopK(values=torch.cat([p.values for p in parts]), flat=torch.cat([p.flat for p in parts]))


def _sampled_batch(X: Sequence[torch.Tensor], k: int, n_sampled: int, seed: int) -> TopK:
    """Exact top-k of short rows, the whole batch at once (a few vectorized passes instead of a selection per
    row): a threshold per row from sampled values, the candidates at or above it in index order, and among
    them the k largest (ties at the k-th value: the first ones). Returns them in ascending index order; a row
    with fewer than k candidates (threshold too high, or fewer non-zeros than k) makes it select exactly."""
    x = torch.cat(list(X), dim=2).flatten(1)  # [b, n], flat index y·N + column
    b, n = x.shape
    a = x.abs()
    positions = torch.from_numpy(np.random.default_rng(seed).integers(0, n, n_sampled))  # [S]
    hits = k * n_sampled / n  # expected number of a row's top k among the sampled values
    rank = min(math.ceil(hits + 4 * math.sqrt(hits) + 4), n_sampled)
    t = a[:, positions].topk(rank, dim=1, sorted=False).values.amin(1).clamp_min(torch.finfo(a.dtype).tiny)  # [b]
    rows, cols = (a >= t[:, None]).nonzero(as_tuple=True)  # the candidates, row-major: cols ascending per row
    counts = torch.bincount(rows, minlength=b)  # [b]
    if bool((counts < k).any()):
        return _exact(X, k)
    width = int(counts.max())
    at = rows * width + torch.arange(len(rows)) - (counts.cumsum(0) - counts)[rows]  # row·width + rank in row
    padded = torch.full((b * width,), -1.0, dtype=a.dtype).scatter_(0, at, a[rows, cols]).view(b, width)  # −1: none
    kth = padded.topk(k, dim=1, sorted=False).values.amin(1, keepdim=True)  # [b, 1], the k-th largest |x|
    above, tied = padded > kth, padded == kth  # [b, width]
    keep = above | (tied & (tied.cumsum(1) <= k - above.sum(1, keepdim=True)))  # exactly k per row, in order
    index = torch.zeros(b * width, dtype=torch.int64).scatter_(0, at, cols).view(b, width)
    flat = index[keep].view(b, k)  # [b, k] ascending
    return TopK(values=x.gather(1, flat), flat=flat, ascending=True)


def _row_exact(rows: list[np.ndarray], widths: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one example's values given per block as [R·n_p] (entry y·n_p + j): values [k], flat [k]."""
    whole = np.concatenate([row.reshape(-1, width) for row, width in zip(rows, widths)], axis=1).ravel()  # [R·N]
    picked = _largest_abs(whole, k)
    return whole[picked], picked


def _row_sampled(rows: list[np.ndarray], widths: list[int], starts: list[int], positions: list[np.ndarray],
                 rank: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one example: threshold from the sampled positions, scan the blocks, select among candidates."""
    sample = np.abs(np.concatenate([row[at] for row, at in zip(rows, positions)]))  # [S]
    # the rank-th largest sampled |x|; zeros are never candidates (a row of < k non-zeros is redone exactly)
    t = max(np.partition(sample, sample.size - rank)[sample.size - rank], np.finfo(sample.dtype).tiny)
    n_cols = starts[-1]
    values, flat = [], []
    for row, width, start in zip(rows, widths, starts):
        picked = np.flatnonzero(np.abs(row) >= t)  # entry y·n_p + j of the block
        values.append(row[picked])
        flat.append(picked // width * n_cols + start + picked % width)
    values, flat = np.concatenate(values), np.concatenate(flat)
    if values.size < k:  # the threshold came out above the k-th largest: select exactly
        return _row_exact(rows, widths, k)
    picked = _largest_abs(values, k)
    return values[picked], flat[picked]


def _sampled_cpu(X: list[torch.Tensor], k: int, n_sampled: int, seed: int) -> TopK:
    """Exact top-k per row on the CPU with numpy, row after row (long rows: split over torch's thread count).

    A row's blocks are read once and no batch-size temporaries are made, so the work runs from cache.
    """
    arrays = [x.reshape(x.shape[0], -1).numpy() for x in X]  # [B, R·n_p], entry y·n_p + j
    widths = [x.shape[2] for x in X]
    starts = np.cumsum([0] + widths).tolist()
    sizes = [array.shape[1] for array in arrays]
    # uniform positions over the example's R·N values, split by block
    firsts = np.cumsum([0] + sizes)  # [p+1], where each block's values start in the example's R·N values
    n_values = int(firsts[-1])
    positions = np.sort(np.random.default_rng(seed).integers(0, n_values, n_sampled))
    bounds = np.searchsorted(positions, firsts)
    per_block = [positions[lo:hi] - first for lo, hi, first in zip(bounds[:-1], bounds[1:], firsts)]
    hits = k * n_sampled / n_values  # expected number of the example's top k among the sampled values
    rank = min(math.ceil(hits + 4 * math.sqrt(hits) + 4), n_sampled)

    def job(rows: range) -> list[tuple[np.ndarray, np.ndarray]]:
        return [_row_sampled([array[b] for array in arrays], widths, starts, per_block, rank, k) for b in rows]

    size = arrays[0].shape[0]
    # numpy releases the GIL inside its loops, which pays off only for long rows (text: yes; small CNNs: no)
    n_jobs = min(torch.get_num_threads(), size) if n_values >= THREADED_ROW_VALUES else 1
    chunks = [range(size * j // n_jobs, size * (j + 1) // n_jobs) for j in range(n_jobs)]  # contiguous rows
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        found = [row for rows in pool.map(job, chunks) for row in rows]
    return TopK(values=torch.from_numpy(np.stack([values for values, _ in found])),
                flat=torch.from_numpy(np.stack([flat for _, flat in found]).astype(np.int64)))


def top_abs(X: Sequence[torch.Tensor], k: int, *, seed: int = 0) -> TopK:
    """The k largest |X| of each row of X, the blocks [B, R, n_p] (on one device) concatenated along columns.

    Needs k < R·N. The result is exact; the seed only picks the sampled values that set the threshold.
    The rows are concatenated and selected exactly on CUDA (where topk is fast), where the sample would be a
    large share of the row (SAMPLE_MAX_FRACTION) and where k is (EXACT_SHARE_SHORT, EXACT_SHARE_LONG).
    """
    n_values = X[0].shape[1] * sum(x.shape[2] for x in X)  # R·N per row
    n_sampled = math.ceil(SAMPLE_HITS * n_values / k)
    short = n_values < SAMPLED_ROW_VALUES
    if (X[0].device.type != "cpu" or n_sampled > SAMPLE_MAX_FRACTION * n_values
            or k >= n_values * (EXACT_SHARE_SHORT if short else EXACT_SHARE_LONG)):
        return _exact(X, k)
    if short:
        return _sampled_batch(X, k, n_sampled, seed)
    return _sampled_cpu(X, k, n_sampled, seed)
