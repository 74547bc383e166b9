"""Sparse PEF matrices: X rows, normalization, column pruning and partitions (kernels.sparse)."""
import numpy as np
import pytest
import torch

from analysis.npeff import fit_d_npeff, fit_lrm_npeff
from analysis.pefs import DiagPefs, LrmPefs
from kernels import sparse as sp
from kernels.distributed import column_slice


def random_lrm(n=6, c=3, M=40, k=20, seed=0, unused=()):
    """Random LRM-PEFs sparsified to k entries; parameters in `unused` never occur."""
    A = np.random.default_rng(seed).normal(size=(n, c, M)).astype(np.float32)
    A[:, :, list(unused)] = 0
    return LrmPefs.from_dense(A, n_values_per_example=k)


def entries_of(pefs: LrmPefs) -> sp.Entries:
    return sp.lrm_entries(torch.as_tensor(pefs.values), torch.as_tensor(pefs.indices),
                          torch.as_tensor(pefs.class_offsets), pefs.n_parameters)


def dense(entries: sp.Entries) -> np.ndarray:
    X = np.zeros((entries.n_rows, entries.n_cols))
    np.add.at(X, (entries.rows.numpy(), entries.cols.numpy()), entries.values.numpy())
    return X


def test_rows_of_x_are_the_columns_of_a():
    pefs = random_lrm()
    e = entries_of(pefs)
    A = pefs.dense()  # [n, c, M]
    np.testing.assert_array_equal(dense(e), A.reshape(-1, pefs.n_parameters))
    assert e.rows.dtype == e.cols.dtype == torch.int64


def test_csc_matrix_matches_dense_with_int32_indices():
    e = entries_of(random_lrm())
    X = sp.csc_matrix(e)
    np.testing.assert_array_equal(X.to_dense().numpy(), dense(e))
    assert X.ptr.dtype == X.rows.dtype == torch.int32 and X.n_rows == e.n_rows and X.n_cols == e.n_cols


def test_lrm_normalization_gives_unit_frobenius_pefs():
    pefs = random_lrm(k=None)
    e = sp.normalize(entries_of(pefs), sp.lrm_scales(torch.as_tensor(pefs.norms)))
    A = dense(e).reshape(pefs.n_examples, pefs.n_classes, -1)
    F_norms = [np.linalg.norm(Ai.T @ Ai) for Ai in A]
    np.testing.assert_allclose(F_norms, 1, rtol=1e-5)


def test_diag_normalization_and_zero_norm_stay_finite():
    f = np.abs(np.random.default_rng(1).normal(size=(4, 30))).astype(np.float32)
    f[2] = 0
    pefs = DiagPefs.from_dense(f)
    e = sp.diag_entries(torch.as_tensor(pefs.values), torch.as_tensor(pefs.indices), pefs.n_parameters)
    A = dense(sp.normalize(e, sp.diag_scales(torch.as_tensor(pefs.norms))))
    np.testing.assert_allclose(np.linalg.norm(A, axis=1), [1, 1, 0, 1], rtol=1e-5)
    assert np.isfinite(sp.lrm_scales(torch.zeros(1)).numpy()).all() and sp.lrm_scales(torch.zeros(1)) > 0


def test_prune_columns_keeps_columns_with_enough_entries_in_order():
    pefs = random_lrm(unused=(0, 7, 39))
    e = entries_of(pefs)
    counts = (dense(e) != 0).sum(axis=0)
    for min_nnz in (1, 3):
        kept = sp.prune_columns(e, min_nnz)
        assert kept.dtype == torch.int64
        np.testing.assert_array_equal(kept.numpy(), np.flatnonzero(counts >= min_nnz))
    assert not {0, 7, 39} & set(sp.prune_columns(e, 1).tolist())


def test_restrict_columns_renumbers_and_drops_entries_outside_the_saved_set():
    e = entries_of(random_lrm())
    kept = torch.tensor([2, 5, 11, 30])
    np.testing.assert_array_equal(dense(sp.restrict_columns(e, kept)), dense(e)[:, kept.numpy()])


def test_column_slices_partition_the_columns():
    e = entries_of(random_lrm())
    for world_size in (1, 2, 3, 7):
        slices = [column_slice(e.n_cols, p, world_size) for p in range(world_size)]
        assert [s.start for s in slices[1:]] == [s.stop for s in slices[:-1]] and slices[-1].stop == e.n_cols
        assert slices[-1].size == e.n_cols // world_size + e.n_cols % world_size


def test_example_grams_and_their_sum_over_partitions():
    pefs = random_lrm()
    e = entries_of(pefs)
    A = pefs.dense()  # [n, c, M]
    expected = A @ A.transpose(0, 2, 1)  # [n, c, c] = A_iᵀA_i with A_i [M, c]
    np.testing.assert_allclose(sp.example_grams(e).numpy(), expected, rtol=1e-5, atol=1e-5)
    halves = [sp.example_grams(sp.restrict_columns(e, torch.arange(a, b))) for a, b in ((0, 17), (17, e.n_cols))]
    np.testing.assert_allclose((halves[0] + halves[1]).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_full_component_scatters_into_parameter_space():
    pefs = random_lrm(unused=(0, 7, 39))
    lrm = fit_lrm_npeff(pefs, 2, n_iters=3, n_iters_g_only=1, min_nnz_per_col=2)
    f = np.abs(np.random.default_rng(2).normal(size=(5, 40))).astype(np.float32)
    f[:, [3, 4]] = 0
    diag = fit_d_npeff(DiagPefs.from_dense(f), 2, n_iters=3)
    for decomposition, components in ((lrm, lrm.G), (diag, diag.H)):
        assert decomposition.kept.dtype == np.int64 and np.all(np.diff(decomposition.kept) > 0)
        outside = np.setdiff1d(np.arange(decomposition.n_parameters), decomposition.kept)
        for k in range(2):
            full = decomposition.full_component(k)
            assert full.shape == (decomposition.n_parameters,)
            np.testing.assert_array_equal(full[decomposition.kept], components[k])
            assert not full[outside].any()
    assert not {0, 7, 39} & set(lrm.kept.tolist()) and not {3, 4} & set(diag.kept.tolist())


def test_pruning_everything_is_an_error():
    with pytest.raises(ValueError, match=r"^no parameter has >= 1000 non-zero PEF entries; "
                                         r"lower min_nnz_per_col \(now 1000\)$"):
        fit_lrm_npeff(random_lrm(), 2, n_iters=1, min_nnz_per_col=1000)
