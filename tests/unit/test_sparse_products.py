"""X held once by columns (kernels.sparse.CscMatrix), its products per device, and the fit's blocked build of it."""
import numpy as np
import pytest
import torch

from analysis.npeff.common import fit_setup
from analysis.npeff.lrm import LrmFitConfig, lrm_entries
from analysis.npeff.pef_matrix import example_blocks, local_matrix, parameter_counts, read_rows
from analysis.pefs import LrmPefs
from benchmarks.baseline_lrm import csr_pair
from kernels import sparse as sp
from kernels import sparse_products
from kernels.sparse_products import CpuProducts, TorchCsrProducts, sparse_products as products_for


def random_entries(n=9, c=3, M=60, k=25, seed=0, dtype=torch.float32) -> sp.Entries:
    A = np.random.default_rng(seed).normal(size=(n, c, M)).astype(np.float32)
    pefs = LrmPefs.from_dense(A, n_values_per_example=k)
    return sp.lrm_entries(torch.as_tensor(pefs.values, dtype=dtype), torch.as_tensor(pefs.indices),
                          torch.as_tensor(pefs.class_offsets), M)


def dense(entries: sp.Entries) -> np.ndarray:
    X = np.zeros((entries.n_rows, entries.n_cols))
    np.add.at(X, (entries.rows.numpy(), entries.cols.numpy()), entries.values.numpy())
    return X


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", ["cpu one block", "cpu three blocks", "torch csr"])
def test_products_equal_the_previous_int64_csr_products(monkeypatch, dtype, make):
    e = random_entries(dtype=dtype)
    X = sp.csc_matrix(e)
    if make == "torch csr":
        products = TorchCsrProducts.of(X, torch.device("cpu"))
    else:
        monkeypatch.setattr(sparse_products, "BLOCK_MIN_NNZ", 1 if make == "cpu three blocks" else 1 << 30)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
        products = CpuProducts.of(X)
        assert len(products.blocks) == (3 if make == "cpu three blocks" else 1)
    old_X, old_Xt = csr_pair(e)  # the pre-#16 products: torch CSR, int64 indices
    gen = torch.Generator().manual_seed(1)
    D, W = torch.randn(e.n_cols, 7, generator=gen, dtype=dtype), torch.randn(e.n_rows, 7, generator=gen, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(products.x_times(D), old_X @ D, **tol)
    torch.testing.assert_close(products.xt_times(W), old_Xt @ W, **tol)
    np.testing.assert_allclose(products.x_times(D).numpy(), dense(e) @ D.numpy(), **tol)


def test_xt_times_writes_into_the_given_output_whatever_it_held():
    """A fit passes one buffer back every iteration: its old values (NaN here) must not leak into Xᵀ @ W."""
    e = random_entries(M=60)
    products = CpuProducts.of(sp.csc_matrix(e))
    W = torch.randn(e.n_rows, 5, generator=torch.Generator().manual_seed(2))
    out = torch.full((60, 5), float("nan"))
    assert products.xt_times(W, out=out) is out
    assert torch.equal(out, products.xt_times(W))
    np.testing.assert_allclose(out.numpy(), dense(e).T @ W.numpy(), rtol=1e-5, atol=1e-5)


def test_int32_indices_only_where_they_fit(monkeypatch):
    e = random_entries()
    X = sp.csc_matrix(e)
    assert X.ptr.dtype == X.rows.dtype == torch.int32
    assert sp.to_csr(e.rows, e.cols, e.values, (27, 60)).col_indices().dtype == torch.int32
    assert sp.index_dtype(2**31 - 1) == torch.int32 and sp.index_dtype(2**31) == torch.int64
    # an index or offset above the limit: int64 everywhere, same products
    monkeypatch.setattr(sp, "INT32_LIMIT", X.nnz - 1)
    wide = sp.csc_matrix(e)
    assert wide.ptr.dtype == wide.rows.dtype == torch.int64
    D = torch.randn(e.n_cols, 4)
    torch.testing.assert_close(CpuProducts.of(wide).x_times(D), CpuProducts.of(X).x_times(D))
    torch.testing.assert_close(TorchCsrProducts.of(wide, torch.device("cpu")).x_times(D), CpuProducts.of(X).x_times(D))


def test_csc_from_blocks_equals_one_build_with_rows_ascending_in_each_column():
    e = random_entries(n=12)
    whole = sp.csc_matrix(e)
    np.testing.assert_array_equal(whole.to_dense().numpy(), dense(e))
    per_example = e.rows_per_example
    blocks = []
    for start, stop in ((0, 5), (5, 6), (6, 12)):
        inside = (e.examples >= start) & (e.examples < stop)
        blocks.append((start * per_example, sp.Entries(e.rows[inside] - start * per_example, e.cols[inside],
                                                       e.values[inside], stop - start, per_example, e.n_cols)))
    built = sp.csc_from_blocks(torch.bincount(e.cols, minlength=e.n_cols), e.n_rows, blocks)
    for name in ("ptr", "rows", "values"):
        torch.testing.assert_close(getattr(built, name), getattr(whole, name), rtol=0, atol=0)
    ptr, rows = built.ptr.numpy(), built.rows.numpy()
    assert all(np.all(np.diff(rows[a:b]) > 0) for a, b in zip(ptr[:-1], ptr[1:]))
    with pytest.raises(ValueError, match=r"^csc_from_blocks: the blocks hold other column counts than `counts`"):
        sp.csc_from_blocks(torch.bincount(e.cols, minlength=e.n_cols) + 1, e.n_rows, blocks)


def test_unknown_device_type_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"^no sparse products for device meta; registered device types: "
                                         r"\['cpu', 'cuda'\]$"):
        products_for(sp.csc_matrix(random_entries()), torch.device("meta"))


def test_read_rows_reads_memory_maps_from_the_file(tmp_path):
    array = np.arange(60, dtype=np.int64).reshape(10, 6)
    np.save(tmp_path / "a.npy", array)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    for rows in (slice(0, 10), slice(3, 7), slice(9, 20), slice(None)):
        np.testing.assert_array_equal(read_rows(mapped, rows), array[rows])
        np.testing.assert_array_equal(read_rows(mapped[2:], rows), array[2:][rows])  # a view: sliced instead
        np.testing.assert_array_equal(read_rows(array, rows), array[rows])
    assert example_blocks(10, 3) == [slice(0, 10)] and len(example_blocks(10, 1 << 16)) == 5


def lrm_pefs_on_disk(tmp_path, n=40, c=2, M=80, k=30) -> LrmPefs:
    """Random LRM-PEFs saved and memory-mapped back, as load_pefs gives them."""
    A = np.random.default_rng(4).normal(size=(n, c, M)).astype(np.float32)
    A[:, :, :5] = 0
    pefs = LrmPefs.from_dense(A, n_values_per_example=k)
    arrays = {}
    for name in ("values", "indices", "class_offsets", "class_ids", "norms", "logits", "labels"):
        np.save(tmp_path / f"{name}.npy", getattr(pefs, name))
        arrays[name] = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
    return LrmPefs(**arrays, n_parameters=M)


def test_each_rank_builds_only_its_columns_block_by_block(tmp_path, monkeypatch):
    pefs = lrm_pefs_on_disk(tmp_path)
    monkeypatch.setattr("analysis.npeff.pef_matrix.BLOCK_VALUES", 70)  # blocks of 2 examples
    full = lrm_entries(pefs, torch.device("cpu"))  # normalized, all examples at once
    kept = sp.prune_columns(full, 2)
    expected = dense(sp.restrict_columns(full, kept))  # [n*c, m]
    for world_size in (1, 3):
        parts = []
        for rank in range(world_size):
            monkeypatch.setattr("analysis.npeff.common.rank_and_world", lambda: (rank, world_size))
            setup = fit_setup(pefs, LrmPefs, LrmFitConfig(n_components=2, n_iters=1, min_nnz_per_col=2),
                              lrm_entries, "cpu", None, "G", None, rows_per_example=lambda p: p.n_classes,
                              example_stat=sp.example_grams)
            np.testing.assert_array_equal(setup.kept.numpy(), kept.numpy())
            mine = expected[:, setup.cols.start:setup.cols.stop]
            assert setup.X.n_cols == mine.shape[1] and setup.X.nnz == np.count_nonzero(mine)
            parts.append(setup.X.to_dense().numpy())
        np.testing.assert_allclose(np.concatenate(parts, axis=1), expected, rtol=1e-6)
    counts = parameter_counts(pefs, example_blocks(pefs.n_examples, 30))
    # every parameter's count of non-zero stored values, against the dense PEFs (an index repeats within a block)
    np.testing.assert_array_equal(counts.numpy(), np.count_nonzero(dense(full), axis=0))
    X, grams = local_matrix(pefs, lrm_entries, example_blocks(pefs.n_examples, 30), counts, kept, 2, sp.example_grams)
    np.testing.assert_allclose(grams.numpy(), sp.example_grams(sp.restrict_columns(full, kept)).numpy(), rtol=1e-5)
