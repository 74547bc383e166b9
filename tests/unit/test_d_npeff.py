"""D-NPEFF: planted recovery, MU monotonicity, brute-force loss, coefficient fitting, guards."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from analysis.npeff import DiagDecomposition, fit_coefficients, fit_d_npeff
from analysis.pefs import DiagPefs, LrmPefs
from kernels import d_npeff as K
from kernels import sparse as sp
from kernels.sparse_products import CpuProducts


def planted(n=200, r=5, M=300, support=40, seed=0):
    """f_i = Σ_k W_ik h_k with sparse non-negative h_k and 2-3 active components per example."""
    rng = np.random.default_rng(seed)
    H = np.zeros((r, M), np.float32)
    for k in range(r):
        H[k, rng.choice(M, support, replace=False)] = rng.uniform(0.2, 1.0, size=support)
    W = np.zeros((n, r), np.float32)
    for i in range(n):
        on = rng.choice(r, rng.integers(2, 4), replace=False)
        W[i, on] = rng.uniform(0.5, 1.5, size=len(on))
    return DiagPefs.from_dense(W @ H), W, H


@pytest.fixture(scope="module")
def planted_fit():
    pefs, W, H = planted()
    return pefs, W, H, fit_d_npeff(pefs, 5, n_iters=250, seed=1)


def normalized_dense(pefs: DiagPefs, kept: np.ndarray) -> np.ndarray:
    """A [n, m]: each D-PEF divided by its dense norm + 1e-9, over the kept parameters."""
    return pefs.dense().astype(np.float64)[:, kept] / (pefs.norms.astype(np.float64)[:, None] + 1e-9)


def test_planted_components_are_recovered(planted_fit):
    pefs, W, H, d = planted_fit
    full = np.stack([d.full_component(k) for k in range(d.n_components)])
    unit = full / np.linalg.norm(full, axis=1, keepdims=True)
    assert (H / np.linalg.norm(H, axis=1, keepdims=True) @ unit.T).max(axis=1).min() >= 0.95
    assert d.relative_error < 1e-2
    assert (d.W >= 0).all() and (d.H >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(d.H, axis=1), 1, rtol=1e-5)


def test_loss_never_increases_and_matches_brute_force(planted_fit):
    pefs, _, _, d = planted_fit
    assert d.losses.shape == (251,)
    assert np.all(np.diff(d.losses) <= 1e-6 * d.losses[0])
    A = normalized_dense(pefs, d.kept)
    brute = np.square(A - d.W.astype(np.float64) @ d.H).sum()
    np.testing.assert_allclose(d.losses[-1], brute, rtol=1e-2, atol=1e-6 * np.square(A).sum())
    np.testing.assert_allclose(d.relative_error, d.losses[-1] / np.square(A).sum(), rtol=1e-6)


def test_loss_formula_and_monotone_steps_in_float64():
    rng = np.random.default_rng(3)
    A = np.abs(rng.normal(size=(9, 30))) * (rng.random((9, 30)) < 0.4)
    rows, cols = np.nonzero(A)
    entries = sp.Entries(torch.as_tensor(rows), torch.as_tensor(cols), torch.as_tensor(A[rows, cols]), 9, 1, 30)
    problem = K.DiagProblem(CpuProducts.of(sp.csc_matrix(entries)), float(np.square(A).sum()))
    W, Ht = K.init_factors(9, 30, 4, seed=0, rank=0, dtype=torch.float64)
    losses = []
    for _ in range(20):
        AHt, HHt = K.shared_products(problem, Ht)
        losses.append(K.nmf_loss(problem.sq_norm, W, W.T @ W, AHt, HHt))
        np.testing.assert_allclose(losses[-1], np.square(A - W.numpy() @ Ht.numpy().T).sum(), rtol=1e-10)
        W = K.w_step(W, AHt, HHt)
        losses.append(K.nmf_loss(problem.sq_norm, W, W.T @ W, AHt, HHt))
        Ht = K.h_step(Ht, problem.A.xt_times(W), W.T @ W)
    assert np.all(np.diff(losses) <= 1e-12 * losses[0])


def test_normalization_keeps_the_product():
    gen = torch.Generator().manual_seed(0)
    W, H = torch.rand(6, 3, generator=gen), torch.rand(3, 8, generator=gen)
    Wn, Hn = K.normalize_components(W, H)
    torch.testing.assert_close(Wn @ Hn, W @ H)
    torch.testing.assert_close(Hn.norm(dim=1), torch.ones(3))


def test_coefficients_of_the_training_examples_reproduce_the_rankings(planted_fit):
    pefs, _, _, d = planted_fit
    W = fit_coefficients(d, pefs, n_iters=300, chunk_size=64)
    assert W.shape == d.W.shape and (W >= 0).all()
    for k in range(d.n_components):
        assert len(set(np.argsort(-W[:, k])[:5]) & set(np.argsort(-d.W[:, k])[:5])) >= 4
        support = d.W[:, k] > 1e-2 * d.W[:, k].max()
        assert spearmanr(W[support, k], d.W[support, k]).statistic > 0.9


def test_coefficients_for_new_pefs(planted_fit):
    pefs, _, H, d = planted_fit
    W_new = np.array([[1.0, 0, 0, 0, 0], [0, 0.3, 0, 0.9, 0]], np.float32)
    coefficients = fit_coefficients(d, DiagPefs.from_dense(W_new @ H), n_iters=500)
    full = np.stack([d.full_component(k) for k in range(d.n_components)])
    k = [int(np.argmax(full @ H[j])) for j in range(5)]
    assert np.flatnonzero(coefficients[0] > 0.05 * coefficients[0].max()).tolist() == [k[0]]
    assert sorted(np.flatnonzero(coefficients[1] > 0.05 * coefficients[1].max())) == sorted([k[1], k[3]])


def test_progress_and_tol():
    pefs, _, _ = planted(n=50, M=80, support=20, seed=4)
    calls = []
    d = fit_d_npeff(pefs, 5, n_iters=2000, tol=1e-3, progress=lambda *a: calls.append(a))
    assert len(d.losses) < 2001
    assert calls[0] == (0, 2000, d.losses[0]) and calls[-1] == (len(d.losses) - 1, 2000, d.losses[-1])


def test_inf_in_the_pefs_raises_at_iteration_0():
    pefs, _, _ = planted(n=20, M=40, support=10, seed=5)
    values = pefs.values.copy()
    values[2, 0] = np.inf
    bad = DiagPefs(**{**pefs.__dict__, "values": values})
    with pytest.raises(FloatingPointError, match=r"^D-NPEFF: loss became nan at iteration 0; "
                                                 r"check the PEFs for Inf or NaN$"):
        fit_d_npeff(bad, 3, n_iters=5)
    d = fit_d_npeff(pefs, 3, n_iters=5)
    with pytest.raises(FloatingPointError, match=r"^coefficient fitting: W became non-finite for examples \[0, 20\)"):
        fit_coefficients(d, bad, n_iters=5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_components=0), r"^n_components must be >= 1, got 0$"),
    (dict(n_iters=-3), r"^n_iters must be >= 1, got -3$"),
    (dict(tol=-1.0), r"^tol must be > 0 or None, got -1.0$"),
    (dict(min_nnz_per_col=0), r"^min_nnz_per_col must be >= 1, got 0$"),
])
def test_bad_arguments(kwargs, message):
    pefs, _, _ = planted(n=20, M=40, support=10, seed=6)
    args = dict(n_components=3, n_iters=5) | kwargs
    with pytest.raises(ValueError, match=message):
        fit_d_npeff(pefs, args.pop("n_components"), **args)


def test_wrong_kinds(planted_fit):
    _, _, _, d = planted_fit
    lrm = LrmPefs.from_dense(np.ones((2, 1, 300), np.float32))
    with pytest.raises(TypeError, match=r"^pefs must be DiagPefs, got LrmPefs$"):
        fit_d_npeff(lrm, 2, n_iters=1)
    with pytest.raises(TypeError, match=r"^pefs must be DiagPefs to match a DiagDecomposition, got LrmPefs$"):
        fit_coefficients(d, lrm, n_iters=1)
    assert isinstance(d, DiagDecomposition)


@pytest.mark.parametrize("tol", [None, 1e-2])
def test_resume_from_a_checkpoint_is_bit_identical(tol):
    pefs, _, _ = planted(n=50, M=80, support=20, seed=4)
    settings = dict(n_iters=600, seed=2, tol=tol)
    reference = fit_d_npeff(pefs, 5, **settings)
    # with tol it stops early, where the sums' order puts it (408 losses on an AMD EPYC, 415 on an Intel Xeon): a
    # resumed fit must stop at the same iteration on its own
    assert len(reference.losses) == 601 if tol is None else 100 < len(reference.losses) < 601
    states = []
    checkpointed = fit_d_npeff(pefs, 5, checkpoint=states.append, checkpoint_every=50, **settings)
    np.testing.assert_array_equal(checkpointed.H, reference.H)
    assert [s.iteration for s in states] == list(range(50, len(reference.losses) - 1, 50))
    assert all(s.phase == "joint" and len(s.losses) == s.iteration for s in states)
    for state in states:
        resumed = fit_d_npeff(pefs, 5, resume=state, **settings)
        for name in ("W", "H", "losses", "kept"):
            np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name), err_msg=name)


def test_checkpoint_every_must_be_positive():
    pefs, _, _ = planted(n=20, M=40, support=10, seed=7)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive multiple of 1, got 0"):
        fit_d_npeff(pefs, 3, n_iters=5, checkpoint_every=0)
