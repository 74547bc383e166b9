"""LRM-NPEFF: planted recovery, update rules against autograd and brute force, coefficient fitting."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from analysis.npeff import LrmDecomposition, fit_coefficients, fit_lrm_npeff
from analysis.pefs import DiagPefs, LrmPefs
from kernels import lrm_npeff as K
from kernels import sparse as sp
from kernels.sparse_products import CpuProducts
from kernels.distributed import LossMonitor


def planted(n=200, r=5, M=300, support=40, seed=0, active=(2, 3)):
    """A_i = [√W_ik g_k]_k with sparse random g_k and active[0]..active[1] components per example.

    With one active component the normalized F_i is g_kg_kᵀ/‖g_k‖², so W_ik ties at 1 for all such i.
    """
    rng = np.random.default_rng(seed)
    G = np.zeros((r, M), np.float32)
    for k in range(r):
        G[k, rng.choice(M, support, replace=False)] = rng.normal(size=support)
    W = np.zeros((n, r), np.float32)
    for i in range(n):
        on = rng.choice(r, rng.integers(active[0], active[1] + 1), replace=False)
        W[i, on] = rng.uniform(0.5, 1.5, size=len(on))
    return LrmPefs.from_dense(np.sqrt(W)[:, :, None] * G[None]), W, G


@pytest.fixture(scope="module")
def planted_fit():
    pefs, W, G = planted()
    return pefs, W, G, fit_lrm_npeff(pefs, 5, n_iters=150, seed=1)


def best_abs_cos(fitted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """For each true row, the largest |cos| with any fitted row."""
    cos = true @ fitted.T / np.outer(np.linalg.norm(true, axis=1), np.linalg.norm(fitted, axis=1))
    return np.abs(cos).max(axis=1)


def normalized_dense(pefs: LrmPefs, kept: np.ndarray) -> np.ndarray:
    """A [n, c, m] over the kept parameters, each example scaled to ‖A_iA_iᵀ‖_F = 1 (dense norm)."""
    scale = np.maximum(np.sqrt(pefs.norms.astype(np.float64)), 1e-12)
    return pefs.dense().astype(np.float64)[:, :, kept] / scale[:, None, None]


def brute_force_loss(A: np.ndarray, W: np.ndarray, G: np.ndarray) -> float:
    """Σ_i ‖F_i − Σ_k W_ik g_k g_kᵀ‖²_F with F_i = A_iᵀA_i formed densely (A [n, c, m])."""
    F = np.einsum("icp,icq->ipq", A, A)
    recon = np.einsum("ik,kp,kq->ipq", W.astype(np.float64), G.astype(np.float64), G.astype(np.float64))
    return float(np.square(F - recon).sum())


def problem64(pefs: LrmPefs) -> K.LrmProblem:
    """The unnormalized, unpruned problem in float64 for exact checks."""
    e = sp.lrm_entries(torch.as_tensor(pefs.values, dtype=torch.float64), torch.as_tensor(pefs.indices),
                       torch.as_tensor(pefs.class_offsets), pefs.n_parameters)
    return K.LrmProblem(CpuProducts.of(sp.csc_matrix(e)), pefs.n_examples, K.tr_xx_from_grams(sp.example_grams(e)))


def autograd_loss(A: torch.Tensor, W: torch.Tensor, G: torch.Tensor, ortho_reg: float = 0.0) -> torch.Tensor:
    """The slow obvious L(W, G) (+ λ‖GGᵀ − (2/r)I‖²) with dense F_i, for autograd."""
    F = torch.einsum("icp,icq->ipq", A, A)
    recon = torch.einsum("ik,kp,kq->ipq", W, G, G)
    r = G.shape[0]
    return (F - recon).square().sum() + ortho_reg * (G @ G.T - 2 / r * torch.eye(r, dtype=G.dtype)).square().sum()


def small_random(seed=0, n=7, c=3, M=40, r=5):
    pefs = LrmPefs.from_dense(np.random.default_rng(seed).normal(size=(n, c, M)).astype(np.float32),
                              n_values_per_example=50)
    gen = torch.Generator().manual_seed(seed)
    W = torch.rand(n, r, generator=gen, dtype=torch.float64)
    Gt = torch.randn(M, r, generator=gen, dtype=torch.float64) * 0.3
    return pefs, problem64(pefs), W, Gt, torch.as_tensor(pefs.dense(), dtype=torch.float64)


# --------------------------------------------------------------------------------------------- planted recovery

def test_planted_components_are_recovered(planted_fit):
    pefs, W, G, d = planted_fit
    full = np.stack([d.full_component(k) for k in range(d.n_components)])
    assert best_abs_cos(full, G).min() >= 0.95
    assert d.relative_error < 1e-2
    assert (d.W >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(d.G, axis=1), 1, rtol=1e-5)


def test_logged_loss_equals_brute_force_on_the_normalized_pefs():
    pefs, _, _ = planted(n=30, r=3, M=25, support=8, seed=3)
    m = len(fit_lrm_npeff(pefs, 3, n_iters=1, n_iters_g_only=0).kept)
    W0, Gt0 = K.init_factors(30, m, m, 3, seed=5, rank=0)
    d = fit_lrm_npeff(pefs, 3, n_iters=5, n_iters_g_only=2, init=(W0.numpy(), Gt0.T.numpy()))
    A = normalized_dense(pefs, d.kept)
    assert d.losses.shape == (8,)
    np.testing.assert_allclose(d.losses[0], brute_force_loss(A, W0.numpy(), Gt0.T.numpy()), rtol=1e-5)
    np.testing.assert_allclose(d.losses[-1], brute_force_loss(A, d.W, d.G), rtol=1e-4)
    np.testing.assert_allclose(d.relative_error, d.losses[-1] / brute_force_loss(A, 0 * d.W, d.G), rtol=1e-4)


def test_tr_xx_is_the_sum_of_squared_pef_norms():
    pefs, problem, *_ = small_random()
    A = pefs.dense().astype(np.float64)
    F = np.einsum("icp,icq->ipq", A, A)
    np.testing.assert_allclose(problem.tr_xx, np.square(F).sum(), rtol=1e-10)


def test_loss_formula_matches_brute_force():
    pefs, problem, W, Gt, A = small_random()
    AG, GG = K.shared_products(problem, Gt)
    loss = K.true_loss(problem.tr_xx, W, K.numerator(AG, pefs.n_examples), GG.square())
    np.testing.assert_allclose(loss, brute_force_loss(A.numpy(), W.numpy(), Gt.T.numpy()), rtol=1e-10)


# ------------------------------------------------------------------------------------------------ update steps

def test_w_step_never_increases_the_loss():
    pefs, problem, W, Gt, _ = small_random(seed=4)
    AG, GG = K.shared_products(problem, Gt)
    N, HH = K.numerator(AG, pefs.n_examples), GG.square()
    losses = [K.true_loss(problem.tr_xx, W, N, HH)]
    for _ in range(30):
        W = K.w_step(W, N, HH)
        losses.append(K.true_loss(problem.tr_xx, W, N, HH))
    assert np.all(np.diff(losses) <= 1e-12 * losses[0]) and losses[-1] < losses[0]
    assert (W >= 0).all()


@pytest.mark.parametrize("ortho_reg", [0.0, 0.7])
def test_g_gradient_matches_autograd_and_finite_differences(ortho_reg):
    pefs, problem, W, Gt, A = small_random(seed=2)
    AG, GG = K.shared_products(problem, Gt)
    grad = K.g_gradient(problem, Gt, W, AG, GG, ortho_reg)  # [m, r]
    G = Gt.T.clone().requires_grad_()
    autograd_loss(A, W, G, ortho_reg).backward()
    np.testing.assert_allclose(grad.T.numpy(), G.grad.numpy(), rtol=1e-9, atol=1e-9 * G.grad.abs().max().item())
    V = torch.randn(Gt.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    h = 1e-5
    fd = (float(autograd_loss(A, W, (Gt + h * V).T, ortho_reg))
          - float(autograd_loss(A, W, (Gt - h * V).T, ortho_reg))) / (2 * h)
    np.testing.assert_allclose(float((grad * V).sum()), fd, rtol=1e-6)


def test_plain_step_is_g_minus_lr_times_the_true_gradient():
    """One G-only iteration with step="plain": fails if the sign or the factor 4 of ∇L were wrong."""
    pefs, problem, W, Gt, A = small_random(seed=5)
    lr = 1e-4
    G = Gt.T.clone().requires_grad_()
    autograd_loss(A, W, G).backward()
    schedule = K.LrmSchedule(n_iters_g_only=1, n_iters=0, lr=lr, step="plain", ortho_reg=0.0)
    monitor = LossMonitor("test", 1, None, None, "")
    W1, Gt1 = K.run_lrm_npeff(problem, W.clone(), Gt.clone(), schedule, monitor)
    torch.testing.assert_close(W1, W)
    torch.testing.assert_close(Gt1.T, (G - lr * G.grad).detach(), rtol=1e-10, atol=1e-12)
    assert monitor.losses[1] < monitor.losses[0]


@pytest.mark.parametrize("ortho_reg", [0.0, 0.7])
@pytest.mark.parametrize("block", [K.EXAMPLE_BLOCK, 3])  # 7 examples: one block, or blocks of 3, 3 and 1
def test_step_polynomial_is_the_loss_along_the_step(ortho_reg, block, monkeypatch):
    monkeypatch.setattr(K, "EXAMPLE_BLOCK", block)
    pefs, problem, W, Gt, A = small_random(seed=6)
    AG, GG = K.shared_products(problem, Gt)
    Dt = K.g_gradient(problem, Gt, W, AG, GG, ortho_reg)
    AD, GD, DD = K.direction_products(problem, Gt, Dt)
    c1, c2, c3, c4 = K.step_polynomial(W, AG, AD, GG, GD, DD, ortho_reg)

    def L(eta: float) -> float:
        return float(autograd_loss(A, W, (Gt - eta * Dt).T, ortho_reg))

    scale = 1 / float(Dt.norm()) * float(Gt.norm())
    for eta in (0.1 * scale, scale, 3 * scale):
        np.testing.assert_allclose(L(eta) - L(0), c1 * eta + c2 * eta**2 + c3 * eta**3 + c4 * eta**4, rtol=1e-8)
    np.testing.assert_allclose(c1, -float(Dt.square().sum()), rtol=1e-10)  # first-order: −‖∇L‖²
    eta = K.line_search(np.array([c1, c2, c3, c4]))
    assert eta > 0 and all(L(eta) <= L(eta * f) + 1e-12 for f in (0.9, 1.1))


def test_training_loss_never_increases_with_the_line_search(planted_fit):
    losses = planted_fit[3].losses
    assert np.all(np.diff(losses) <= 1e-5 * losses[0])


def test_incremental_products_stay_exact_over_many_steps():
    pefs, _, _ = planted(n=40, r=3, M=30, support=10, seed=7)
    d = fit_lrm_npeff(pefs, 3, n_iters=2 * K.REFRESH_EVERY + 7, n_iters_g_only=3)
    A = normalized_dense(pefs, d.kept)
    np.testing.assert_allclose(d.losses[-1], brute_force_loss(A, d.W, d.G), rtol=1e-3,
                               atol=1e-6 * brute_force_loss(A, 0 * d.W, d.G))


# --------------------------------------------------------------------------------------------------- driver

def test_orthogonal_regularization_makes_components_more_orthogonal():
    pefs, _, _ = planted(n=60, r=4, M=40, support=20, seed=8)
    cos = {}
    for lam in (0.0, 50.0):
        d = fit_lrm_npeff(pefs, 6, n_iters=60, ortho_reg=lam, seed=2)
        cos[lam] = np.abs(d.G @ d.G.T - np.eye(6)).max()
    assert cos[50.0] < cos[0.0]


def test_progress_tol_and_iteration_count():
    pefs, _, _ = planted(n=40, r=3, M=30, support=10, seed=9)
    calls = []
    d = fit_lrm_npeff(pefs, 3, n_iters=400, n_iters_g_only=10, tol=1e-3,
                      progress=lambda done, total, loss: calls.append((done, total, loss)))
    assert len(d.losses) < 411  # stopped early
    assert calls[0] == (0, 410, d.losses[0]) and calls[-1] == (len(d.losses) - 1, 410, d.losses[-1])
    assert all(isinstance(loss, float) for _, _, loss in calls)


def test_explicit_init_and_seed_are_reproducible():
    pefs, _, _ = planted(n=30, r=3, M=25, support=8, seed=10)
    a = fit_lrm_npeff(pefs, 3, n_iters=5, seed=4)
    b = fit_lrm_npeff(pefs, 3, n_iters=5, seed=4)
    np.testing.assert_array_equal(a.W, b.W)
    m = len(a.kept)
    W0, Gt0 = K.init_factors(30, m, m, 3, seed=4, rank=0)
    c = fit_lrm_npeff(pefs, 3, n_iters=5, seed=123, init=(W0.numpy(), Gt0.T.numpy()))
    np.testing.assert_array_equal(a.G, c.G)


# ------------------------------------------------------------------------------------------ coefficient fitting

def test_coefficients_of_the_training_examples_reproduce_the_rankings(planted_fit):
    pefs, _, _, d = planted_fit
    W = fit_coefficients(d, pefs, n_iters=300)
    assert W.shape == d.W.shape and (W >= 0).all()
    for k in range(d.n_components):
        top_fit, top_train = set(np.argsort(-W[:, k])[:5]), set(np.argsort(-d.W[:, k])[:5])
        assert len(top_fit & top_train) >= 4
        support = d.W[:, k] > 1e-3 * d.W[:, k].max()  # the exact zeros of W rank by noise
        assert spearmanr(W[support, k], d.W[support, k]).statistic > 0.9
    np.testing.assert_allclose(W, d.W, atol=1e-3 * d.W.max())


def test_coefficients_do_not_depend_on_the_chunk_size(planted_fit):
    pefs, _, _, d = planted_fit
    calls = []
    chunked = fit_coefficients(d, pefs, n_iters=20, chunk_size=37, progress=lambda *a: calls.append(a))
    np.testing.assert_allclose(chunked, fit_coefficients(d, pefs, n_iters=20), rtol=1e-5, atol=1e-7)
    assert [c[0] for c in calls] == [37, 74, 111, 148, 185, 200] and calls[-1] == (200, 200, None)


def test_coefficients_for_new_pefs_use_only_the_kept_parameters(planted_fit):
    pefs, W, G, d = planted_fit
    W_new = np.array([[1.0, 0, 0, 0, 0], [0, 0, 0.5, 0.8, 0]], np.float32)
    A_new = np.sqrt(W_new)[:, :, None] * G[None]
    A_new[:, :, np.setdiff1d(np.arange(300), d.kept)] = 5.0  # outside kept: dropped
    coefficients = fit_coefficients(d, LrmPefs.from_dense(A_new), n_iters=300)
    active = coefficients > 0.05 * coefficients.max(axis=1, keepdims=True)
    full = np.stack([d.full_component(k) for k in range(d.n_components)])  # [r, M]
    k = [int(np.argmax(np.abs(full @ G[j]))) for j in range(5)]
    assert active[0].sum() == 1 and active[0, k[0]]
    assert active[1].sum() == 2 and active[1, k[2]] and active[1, k[3]]


# ---------------------------------------------------------------------------------------- guards and arguments

def test_divergence_raises_naming_the_iteration():
    pefs, _, _ = planted(n=30, r=3, M=25, support=8, seed=11)
    with pytest.raises(FloatingPointError, match=r"^LRM-NPEFF: loss became (nan|inf) at iteration [1-9]\d*; "
                                                 r"lower lr \(now 1000000\.0\) or check the PEFs for Inf$"):
        fit_lrm_npeff(pefs, 3, n_iters=50, step="plain", lr=1e6)


def test_inf_in_the_pefs_raises_at_iteration_0():
    pefs, _, _ = planted(n=30, r=3, M=25, support=8, seed=11)
    values = pefs.values.copy()
    values[3, 0] = np.inf
    bad = LrmPefs(**{**pefs.__dict__, "values": values})
    with pytest.raises(FloatingPointError, match=r"^LRM-NPEFF: loss became (nan|inf) at iteration 0;"):
        fit_lrm_npeff(bad, 3, n_iters=5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_components=0), r"^n_components must be >= 1, got 0$"),
    (dict(n_iters=0), r"^n_iters must be >= 1, got 0$"),
    (dict(n_iters_g_only=-1), r"^n_iters_g_only must be >= 0, got -1$"),
    (dict(lr=0.0), r"^lr must be a finite number > 0, got 0.0$"),
    (dict(lr=math.inf), r"^lr must be a finite number > 0, got inf$"),
    (dict(step="adam"), r"^step must be 'line_search' or 'plain', got 'adam'$"),
    (dict(ortho_reg=-1.0), r"^ortho_reg must be >= 0, got -1.0$"),
    (dict(tol=0.0), r"^tol must be > 0 or None, got 0.0$"),
    (dict(min_nnz_per_col=0), r"^min_nnz_per_col must be >= 1, got 0$"),
    (dict(init=(np.ones((30, 2)), np.ones((2, 4)))),
     r"^init must be \(W \[30, 3\], G \[3, 25\]\) over the kept parameters, got shapes \(30, 2\) and \(2, 4\)$"),
])
def test_bad_arguments(kwargs, message):
    pefs, _, _ = planted(n=30, r=3, M=25, support=25, seed=12)
    args = dict(n_components=3, n_iters=5) | kwargs
    with pytest.raises(ValueError, match=message):
        fit_lrm_npeff(pefs, args.pop("n_components"), **args)


def test_wrong_pefs_kind():
    f = DiagPefs.from_dense(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match=r"^pefs must be LrmPefs, got DiagPefs$"):
        fit_lrm_npeff(f, 2, n_iters=1)
    with pytest.raises(ValueError, match=r"^pefs must hold at least one example, got 0$"):
        fit_lrm_npeff(planted(n=3)[0].subset([]), 2, n_iters=1)


def test_coefficient_fitting_arguments(planted_fit):
    pefs, _, _, d = planted_fit
    with pytest.raises(TypeError, match=r"^pefs must be LrmPefs to match a LrmDecomposition, got DiagPefs$"):
        fit_coefficients(d, DiagPefs.from_dense(np.ones((3, 300), np.float32)), n_iters=1)
    with pytest.raises(ValueError, match=r"^pefs.n_parameters must be 300 to match the decomposition, got 299$"):
        fit_coefficients(d, LrmPefs.from_dense(np.ones((2, 1, 299), np.float32)), n_iters=1)
    with pytest.raises(ValueError, match=r"^chunk_size must be >= 1, got 0$"):
        fit_coefficients(d, pefs, n_iters=1, chunk_size=0)
    with pytest.raises(ValueError, match=r"^n_iters must be >= 1, got 0$"):
        fit_coefficients(d, pefs, n_iters=0)
    with pytest.raises(TypeError, match=r"^decomposition must be LrmDecomposition or DiagDecomposition, got dict$"):
        fit_coefficients({}, pefs, n_iters=1)
    assert isinstance(d, LrmDecomposition)


# ------------------------------------------------------------------------------------------ checkpoints and resume

@pytest.mark.parametrize("tol", [None, 1e-6])
def test_resume_from_a_checkpoint_is_bit_identical_in_both_phases(tol):
    pefs, _, _ = planted(n=60, r=4, M=120, support=30, seed=11)
    settings = dict(n_iters=140, n_iters_g_only=60, seed=6, tol=tol)
    reference = fit_lrm_npeff(pefs, 4, **settings)
    stop = len(reference.losses) - 1
    assert 100 < stop < 200 if tol else stop == 200  # with tol: stopped early, after the checkpoint at 100
    states = []
    checkpointed = fit_lrm_npeff(pefs, 4, checkpoint=states.append, **settings)
    np.testing.assert_array_equal(checkpointed.G, reference.G)
    assert [(s.iteration, s.phase) for s in states][:2] == [(50, "warm-up"), (100, "joint")]
    for state in states:
        assert len(state.losses) == state.iteration and state.W.shape == (60, 4)
        np.testing.assert_array_equal(state.losses, reference.losses[:state.iteration])
        calls = []
        resumed = fit_lrm_npeff(pefs, 4, resume=state, progress=lambda done, *_: calls.append(done), **settings)
        assert calls[0] >= state.iteration
        for name in ("W", "G", "losses", "kept"):
            np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name), err_msg=name)


def test_resume_at_the_end_only_finishes():
    pefs, _, _ = planted(n=30, r=3, M=40, support=10, seed=12)
    states = []
    reference = fit_lrm_npeff(pefs, 3, n_iters=50, n_iters_g_only=50, seed=1, checkpoint=states.append)
    assert [s.iteration for s in states] == [50]  # none at the end (iteration 100)
    resumed = fit_lrm_npeff(pefs, 3, n_iters=50, n_iters_g_only=50, seed=1, resume=states[0])
    np.testing.assert_array_equal(resumed.losses, reference.losses)


@pytest.mark.parametrize("kwargs, message", [
    (dict(checkpoint_every=30), "checkpoint_every must be a positive multiple of 50, got 30"),
    (dict(checkpoint_every=0), "checkpoint_every must be a positive multiple of 50, got 0"),
])
def test_checkpoint_arguments(kwargs, message):
    pefs, _, _ = planted(n=20, r=3, M=20, support=5, seed=13)
    with pytest.raises(ValueError, match=message):
        fit_lrm_npeff(pefs, 3, n_iters=5, **kwargs)


def test_resume_arguments():
    pefs, _, _ = planted(n=20, r=3, M=20, support=5, seed=13)
    states = []
    d = fit_lrm_npeff(pefs, 3, n_iters=60, n_iters_g_only=0, checkpoint=states.append)
    state = states[0]
    with pytest.raises(ValueError, match="init and resume are exclusive"):
        fit_lrm_npeff(pefs, 3, n_iters=60, n_iters_g_only=0, resume=state, init=(state.W, state.components))
    with pytest.raises(ValueError, match=r"resume.iteration must be in \[0, 10\], got 50"):
        fit_lrm_npeff(pefs, 3, n_iters=10, n_iters_g_only=0, resume=state)
    with pytest.raises(ValueError, match=r"resume must be \(W \[20, 2\], G \[2, \d+\]\)"):
        fit_lrm_npeff(pefs, 2, n_iters=60, n_iters_g_only=0, resume=state)
    assert d.loss_iterations.tolist() == list(range(61))


def test_resumed_monitor_takes_the_same_convergence_decisions():
    losses = [1.0 / (t + 1) for t in range(30)]
    whole, resumed = (LossMonitor("test", 100, 0.5, None, "", losses=losses[:k]) for k in (0, 20))
    decisions = [whole.record(t, loss, can_stop=True) for t, loss in enumerate(losses)]
    assert decisions[20:] == [resumed.record(t, loss, can_stop=True) for t, loss in enumerate(losses) if t >= 20]
    with pytest.raises(ValueError, match="test: iteration 3 logged after 20 losses"):
        LossMonitor("test", 100, None, None, "", losses=losses[:20]).record(3, 1.0, can_stop=True)


def test_the_setup_holds_about_x_and_the_draw_one_component_array():
    """Fit memory (#16): the blocks' freed temporaries are handed back once X is built (they stayed resident,
    ~4.7x X here), and the initial G is drawn into one [m, r] array (the draw, its scaling and a copy held two)."""
    from analysis.npeff.common import fit_setup, initial_factors
    from analysis.npeff.lrm import LrmFitConfig, lrm_entries
    from analysis.peak_memory import measured, reset_peak, _status_bytes
    from benchmarks.bench_npeff import lrm_pefs  # here: it imports scikit-learn, which collection need not pay for

    pefs = lrm_pefs(400, 2, 400_000, 5000)
    start = reset_peak()
    setup = fit_setup(pefs, LrmPefs, LrmFitConfig(n_components=4, n_iters=1), lrm_entries, "cpu", None, "G", None,
                      rows_per_example=lambda p: p.n_classes, example_stat=sp.example_grams)
    x_bytes = setup.X.nnz * 8  # int32 rows and float32 values
    assert _status_bytes("VmRSS") - start < 2 * x_bytes
    m, r = 500_000, 16
    draw = measured(lambda: initial_factors(None, lambda: K.init_factors(100, m, m, r, 0, 0), setup.cols, "cpu"))
    assert draw.peak_growth_bytes < 1.5 * m * r * 4  # 2.15 [m, r] arrays before
