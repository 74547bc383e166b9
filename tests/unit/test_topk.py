"""kernels.topk: the sampled top-k over column blocks equals a brute-force sort of the concatenated rows."""
import numpy as np
import pytest
import torch

from kernels import topk
from kernels.topk import top_abs


def brute_force(blocks: list[torch.Tensor], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the k largest |x| sorted descending [B, k], their flat indices [B, k] and whether that
    set is unique [B] (no tie across the k-th place)."""
    X = torch.cat(blocks, dim=2).reshape(blocks[0].shape[0], -1).numpy()  # [B, R·N], flat y·N + column
    order = np.argsort(-np.abs(X), axis=1, kind="stable")
    ranked = np.abs(np.take_along_axis(X, order, axis=1))  # [B, R·N] descending
    unique = ranked[:, k - 1] > ranked[:, k] if k < X.shape[1] else np.ones(len(X), bool)
    return ranked[:, :k], order[:, :k], unique


def assert_top_k(blocks: list[torch.Tensor], k: int, **kwargs) -> None:
    top = top_abs(blocks, k, **kwargs)
    X = torch.cat(blocks, dim=2).reshape(blocks[0].shape[0], -1)
    expected_abs, expected_flat, unique = brute_force(blocks, k)
    assert top.values.shape == top.flat.shape == (X.shape[0], k) and top.flat.dtype == torch.int64
    np.testing.assert_array_equal(top.values.numpy(), X.gather(1, top.flat).numpy())  # indices round-trip
    np.testing.assert_array_equal(-np.sort(-np.abs(top.values.numpy()), axis=1), expected_abs)
    for row in np.flatnonzero(unique):
        np.testing.assert_array_equal(np.sort(top.flat[row].numpy()), np.sort(expected_flat[row]))


@pytest.fixture
def sampled(monkeypatch):
    """The test's rows must take the sampled path: the batched exact selection is off limits."""
    def refuse(*args):
        raise AssertionError("took the exact path")
    monkeypatch.setattr(topk, "_exact", refuse)


def blocks_of(widths: list[int], rows: int = 2, batch: int = 5, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, rows, w, generator=g) * torch.rand(1, generator=g) * 10 for w in widths]


def test_sampled_path_is_exact_on_blocks_of_mixed_sizes(sampled):
    assert_top_k(blocks_of([3, 10_000, 50_000, 7, 24_000]), 2000)  # R·N = 168,020 values per row


@pytest.mark.parametrize("seed", range(5))
def test_heavy_tails_and_a_block_of_outliers_stay_exact(sampled, seed):
    g = torch.Generator().manual_seed(seed)
    heavy = torch.distributions.StudentT(1.0).sample((4, 1, 200_000))  # Cauchy: a few huge entries
    outliers = torch.randn(4, 1, 300, generator=g) * 1e4  # every top entry in one small block
    assert_top_k([heavy, outliers, torch.randn(4, 1, 5000, generator=g)], 400, seed=seed)


def test_long_rows_use_threads_and_stay_exact(sampled):
    blocks = blocks_of([300_000], rows=1, batch=3)
    assert 300_000 >= topk.THREADED_ROW_VALUES
    assert_top_k(blocks, 2000)


def test_a_threshold_above_the_kth_value_falls_back_to_an_exact_selection():
    blocks = blocks_of([4000, 1000], rows=2, batch=1)
    rows = [b[0].reshape(-1).numpy() for b in blocks]
    positions = [np.arange(0, 8000, 7), np.arange(0, 2000, 7)]
    # rank 1: the threshold is the largest sampled |x|, far above the 300th largest of the row
    values, flat = topk._row_sampled(rows, [4000, 1000], [0, 4000, 5000], positions, rank=1, k=300)
    expected_abs, expected_flat, _ = brute_force(blocks, 300)
    np.testing.assert_array_equal(np.sort(flat), np.sort(expected_flat[0]))
    np.testing.assert_array_equal(-np.sort(-np.abs(values)), expected_abs[0])


def test_rows_with_fewer_non_zeros_than_k_keep_zeros(sampled):
    sparse = torch.zeros(3, 1, 150_000)
    sparse[0, 0, :100] = torch.arange(1.0, 101.0)  # 100 non-zeros < k
    sparse[1, 0, ::10] = 1.0  # 5000 tied non-zeros > k
    sparse[2] = torch.randn(1, 150_000, generator=torch.Generator().manual_seed(3))
    assert_top_k([sparse], 1000)


def test_a_block_broadcast_over_the_batch_is_read_in_place(sampled):
    shared = torch.randn(1, 2, 30_000).expand(4, 2, 30_000)  # stride 0 over examples, like a bias gradient
    assert_top_k([shared, torch.randn(4, 2, 60_000)], 600)


@pytest.mark.parametrize("widths, k", [([10, 20], 80), ([3000, 500], 300), ([100_000, 20_000], 60_000)])
def test_short_rows_and_large_k_select_exactly(widths, k):
    """Exact selection, a few rows at a time: short rows (any k), or k close to the row length."""
    assert_top_k(blocks_of(widths, rows=3, batch=40), k)


@pytest.mark.parametrize("seed", range(3))
def test_short_rows_are_selected_for_the_whole_batch_in_index_order(sampled, seed):
    """Rows under SAMPLED_ROW_VALUES (here the digits CNN's 10 classes × 3,818 parameters) are thresholded
    for the whole batch at once; the k kept come in ascending index order."""
    g = torch.Generator().manual_seed(seed)
    blocks = [torch.randn(6, 10, w, generator=g) * s for w, s in ((72, 1.0), (2560, 0.1), (1152, 3.0), (34, 30.0))]
    top = top_abs(blocks, 256, seed=seed)
    assert top.ascending and bool((top.flat.diff(dim=1) > 0).all())
    assert_top_k(blocks, 256, seed=seed)


def test_short_rows_keep_the_first_of_tied_values_and_fall_back_for_few_non_zeros(monkeypatch):
    tied = torch.zeros(2, 1, 20_000)
    tied[0, 0, ::10] = 1.0  # 2,000 tied non-zeros > k: the first k in index order are kept
    tied[1] = torch.randn(1, 20_000, generator=torch.Generator().manual_seed(4))
    top = top_abs([tied], 256)
    assert top.ascending
    np.testing.assert_array_equal(top.flat[0].numpy(), np.arange(0, 2560, 10))
    assert_top_k([tied], 256)
    few = tied.clone()
    few[0] = 0.0
    few[0, 0, :100] = torch.arange(1.0, 101.0)  # 100 non-zeros < k: the batch is selected exactly
    assert not top_abs([few], 256).ascending
    assert_top_k([few], 256)


@pytest.mark.parametrize("widths, rows, k", [([32_768], 1, 16_384), ([72, 2560, 1152, 34], 10, 1024),
                                             ([300_000, 100_000], 1, 100_000)])
def test_k_a_large_share_of_the_row_selects_exactly(widths, rows, k, monkeypatch):
    """Most of such a row passes any sampled threshold: one exact selection is faster (a binary classifier's
    joint top k over its 2·k candidates, the digits CNN with k = 1024, a long row with k = n/4)."""
    def refuse(*args):
        raise AssertionError("took a sampled path")
    monkeypatch.setattr(topk, "_sampled_batch", refuse)
    monkeypatch.setattr(topk, "_sampled_cpu", refuse)
    assert_top_k(blocks_of(widths, rows=rows, batch=4), k)
