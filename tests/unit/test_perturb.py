"""Component perturbations on a planted linear classifier: weights restored bitwise, planted direction found,
semi-orthogonalization, disjoint seeded baselines, the D-NPEFF merge and KL targeting, cached runs, figures."""
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from torch import nn

import analysis.perturb_runs as perturb_runs
from analysis.datasets import ImageDataset
from analysis.figures.perturb import flipped_probability_figure, kl_ratio_histogram, kl_sweep_figure
from analysis.fisher import compute_pefs
from analysis.models import ClassifierModel
from analysis.npeff import DiagDecomposition, LrmDecomposition
from analysis.perturb import (KlTargeter, dataset_fisher, example_sets, fisher_merge_delta, kl_divergence,
                              perturb_all, perturb_component, perturbation_direction,
                              perturbed_parameters, sign_pattern, sweep_component, target_kl)
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace

LABELS = ["a", "b", "c"]
D, C = 6, 3
N, N_DEPENDENT = 200, 20  # examples 0..19 use features 0-2; the others use features 3-5
TOP_N, BASELINE_N = N_DEPENDENT, 60
M = C * D + C  # weight [3, 6] row-major, then bias [3]


class Planted(nn.Module):
    """logits = (x W^T + b) * scale for pixels [B, 1, 6]; `scale` is a buffer."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(D, C)
        self.register_buffer("scale", torch.ones(1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.linear(pixels.flatten(1)) * self.scale


@pytest.fixture
def model() -> ClassifierModel:
    torch.manual_seed(0)
    net = Planted()
    with torch.no_grad():
        net.linear.weight.mul_(0.3)
    return ClassifierModel(net, input_kind="image", label_names=LABELS, name="planted", content_hash="planted-model")


@pytest.fixture(scope="module")
def examples() -> ImageDataset:
    """Dependent examples are large on features 0-2 and tiny (< 0.01) on 3-5; the others the reverse."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 0.01, (N, 1, D)).astype(np.float32)
    X[:N_DEPENDENT, 0, :3] = rng.uniform(0.5, 1.0, (N_DEPENDENT, 3))
    X[N_DEPENDENT:, 0, 3:] = rng.uniform(0.5, 1.0, (N - N_DEPENDENT, 3))
    return ImageDataset(images=X, labels=rng.integers(0, C, N), label_names=LABELS, name="planted", source="test",
                        content_hash="planted-data")


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture(scope="module")
def decomposition() -> LrmDecomposition:
    """Component 0: a direction in the weights of features 0-2; component 1: a random direction."""
    rng = np.random.default_rng(1)
    planted = np.zeros(M)
    planted[[c * D + j for c in range(C) for j in range(3)]] = rng.normal(size=C * 3)
    W = rng.uniform(0.0, 0.1, (N, 2)).astype(np.float32)
    W[:N_DEPENDENT, 0] = rng.uniform(5.0, 10.0, N_DEPENDENT)
    W[:, 1] = rng.uniform(0.0, 1.0, N)
    return LrmDecomposition(W=W, G=np.stack([unit(planted), unit(rng.normal(size=M))]), kept=np.arange(M),
                            n_parameters=M, losses=np.zeros(1), relative_error=0.0)


@pytest.fixture(scope="module")
def diag_decomposition(decomposition) -> DiagDecomposition:
    H = np.abs(decomposition.G)
    return DiagDecomposition(W=decomposition.W, H=H / np.linalg.norm(H, axis=1, keepdims=True), kept=np.arange(M),
                             n_parameters=M, losses=np.zeros(1), relative_error=0.0)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def assert_identical(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name


SETS = dict(top_n=TOP_N, baseline_n=BASELINE_N, device="cpu")


# ------------------------------------------------------------------------------------------- restoring weights

def test_weights_bitwise_identical_after_perturbation_and_sweep(model, examples, decomposition, diag_decomposition):
    before = snapshot(model)
    perturb_component(model, examples, decomposition, 0, magnitude=3.0, sign=-1, **SETS)
    assert_identical(model, before)
    sweep_component(model, examples, decomposition, 1, [0.1, 1.0, 10.0], max_sim=0.5, **SETS)
    assert_identical(model, before)
    perturb_component(model, examples, diag_decomposition, 0, magnitude=0.3, kl_range=(1e-3, 2e-3), **SETS)
    assert_identical(model, before)


def test_weights_restored_after_an_exception_inside_the_context(model):
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="^boom$"):
        with perturbed_parameters(model, torch.full((M,), 0.37)):
            assert not torch.equal(model.net.linear.weight, before["net.linear.weight"])
            raise RuntimeError("boom")
    assert_identical(model, before)


def test_delta_of_the_wrong_length_is_refused(model):
    with pytest.raises(ValueError, match=r"^delta must have shape \[21\] \(the in-scope parameters of 'planted'\), "
                                         r"got \[5\]$"):
        with perturbed_parameters(model, torch.zeros(5)):
            pass


# ------------------------------------------------------------------------------------------- planted direction

def test_planted_direction_moves_top_examples_far_more_than_a_random_one(model, examples, decomposition):
    assert model.summary().n_parameters_in_scope == M
    planted = perturb_component(model, examples, decomposition, 0, magnitude=2.0, **SETS)
    assert set(planted.examples.loc[planted.examples["set"] == "top", "index"]) == set(range(N_DEPENDENT))
    assert planted.kl_ratio > 10
    assert planted.change_norm == pytest.approx(2.0, rel=1e-5)
    random_direction = perturb_component(model, examples, decomposition, 1, magnitude=2.0, **SETS)
    assert random_direction.kl_ratio < 3
    table = perturb_all(model, examples, decomposition, 2.0, **SETS)
    assert list(table["component"]) == [0, 1] and table.loc[0, "kl_ratio"] > 10 > table.loc[1, "kl_ratio"]
    assert {"kl_ratio_pos", "kl_ratio_neg"} <= set(table.columns)
    assert table.loc[0, "kl_ratio"] == max(table.loc[0, "kl_ratio_pos"], table.loc[0, "kl_ratio_neg"])


def test_result_table_is_consistent_with_the_summary(model, examples, decomposition):
    result = perturb_component(model, examples, decomposition, 0, magnitude=5.0, **SETS)
    table = result.examples
    assert len(table) == TOP_N + BASELINE_N and list(table["set"][:TOP_N]) == ["top"] * TOP_N
    assert result.kl_top == pytest.approx(table.loc[table["set"] == "top", "kl"].mean())
    assert result.n_flipped_top == int(table.loc[table["set"] == "top", "flipped"].sum())
    assert (table["flipped"] == (table["original_prediction"] != table["new_prediction"])).all()
    top = table[table["set"] == "top"]
    assert result.acc_top_after == pytest.approx((top["new_prediction"] == top["label"]).mean())


def test_zero_magnitude_changes_nothing(model, examples, decomposition):
    result = perturb_component(model, examples, decomposition, 0, magnitude=0.0, **SETS)
    assert result.kl_top == result.kl_baseline == 0.0 and math.isnan(result.kl_ratio)
    assert result.n_flipped_top == result.n_flipped_baseline == 0


# ---------------------------------------------------------------------------------------- semi-orthogonalization

def projection_slow(G: np.ndarray, k: int, rejected: list[int]) -> np.ndarray:
    """g_k minus its projection on span(G[rejected]) through an orthonormal basis (QR, float64)."""
    Q, _ = np.linalg.qr(G[rejected].astype(np.float64).T)  # [m, |rejected|]
    g = G[k].astype(np.float64)
    g = g - Q @ (Q.T @ g)
    return g / np.linalg.norm(g)


def test_semi_orthogonalization_rejects_only_the_components_at_most_max_sim():
    rng = np.random.default_rng(3)
    m = 40
    g0, e1, e2, e3 = (unit(rng.normal(size=m)) for _ in range(4))
    G = np.stack([g0, unit(0.9 * g0 + 0.3 * e1), unit(0.3 * g0 + e2), unit(0.1 * g0 + e3 + 0.5 * e2)])
    cos = np.abs(G @ G[0])
    assert cos[1] > 0.5 > cos[2] > cos[3]  # component 1 is similar to 0; 2 and 3 are not
    dec = LrmDecomposition(W=np.ones((3, 4), np.float32), G=G, kept=np.arange(m), n_parameters=m,
                           losses=np.zeros(1), relative_error=0.0)
    g = perturbation_direction(dec, 0, max_sim=0.5)
    assert np.linalg.norm(g) == pytest.approx(1.0, abs=1e-6)
    assert abs(g @ G[2]) < 1e-6 and abs(g @ G[3]) < 1e-6  # projections removed
    assert abs(g @ G[1]) > 0.5  # the similar component is kept
    np.testing.assert_allclose(g, projection_slow(G, 0, [2, 3]), atol=1e-6)
    np.testing.assert_array_equal(perturbation_direction(dec, 0), G[0])


def test_max_sim_out_of_range_is_refused(decomposition):
    with pytest.raises(ValueError, match=r"^max_sim must be in \(0, 1\) or None, got 1.5$"):
        perturbation_direction(decomposition, 0, max_sim=1.5)


# ------------------------------------------------------------------------------------------- example sets

def test_baseline_is_a_seeded_sample_disjoint_from_the_top_examples(decomposition):
    top, baseline = example_sets(decomposition.W, 0, top_n=TOP_N, baseline_n=BASELINE_N, seed=7)
    np.testing.assert_array_equal(top, np.argsort(-decomposition.W[:, 0], kind="stable")[:TOP_N])
    assert len(set(baseline)) == BASELINE_N and not set(top) & set(baseline)
    again = example_sets(decomposition.W, 0, top_n=TOP_N, baseline_n=BASELINE_N, seed=7)[1]
    other = example_sets(decomposition.W, 0, top_n=TOP_N, baseline_n=BASELINE_N, seed=8)[1]
    np.testing.assert_array_equal(baseline, again)
    assert not np.array_equal(baseline, other)
    with pytest.raises(ValueError, match=r"^baseline_n must be in \[1, 180\] \(examples outside the top 20\), "
                                         r"got 181$"):
        example_sets(decomposition.W, 0, top_n=TOP_N, baseline_n=181, seed=0)


def test_same_seed_same_result(model, examples, decomposition):
    a = perturb_component(model, examples, decomposition, 1, magnitude=1.0, seed=4, **SETS)
    b = perturb_component(model, examples, decomposition, 1, magnitude=1.0, seed=4, **SETS)
    assert a.scalars() == b.scalars()
    assert a.examples.equals(b.examples)


def test_kl_divergence_is_kl_of_perturbed_from_original_with_clipping():
    p = np.array([[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]])
    q = np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]])
    expected_0 = sum(a * math.log(a / b) for a, b in zip(p[0], q[0]))
    expected_1 = math.log(1 / 0.5) + 1e-7 * math.log(1e-7 / 0.5)  # zeros clipped to 1e-7
    np.testing.assert_allclose(kl_divergence(p, q), [expected_0, expected_1], rtol=1e-6)
    assert kl_divergence(p, p) == pytest.approx([0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=2), r"^component k must be in \[0, 2\), got 2$"),
    (dict(sign=0), r"^sign must be \+1 or -1, got 0$"),
    (dict(kl_range=(0.1, 0.2)), r"^kl_range applies to D-NPEFF decompositions only; "),
    (dict(magnitude=-1.0), r"^magnitude must be a finite number >= 0, got -1.0$"),
])
def test_bad_arguments_are_refused_with_clear_messages(model, examples, decomposition, kwargs, message):
    arguments = dict(k=0, magnitude=1.0, **SETS) | kwargs
    with pytest.raises(ValueError, match=message):
        perturb_component(model, examples, decomposition, **arguments)


def test_decomposition_over_another_scope_is_refused(model, examples, decomposition):
    smaller = LrmDecomposition(W=decomposition.W, G=decomposition.G[:, :10], kept=np.arange(10), n_parameters=10,
                               losses=np.zeros(1), relative_error=0.0)
    with pytest.raises(ValueError, match=r"^the decomposition covers 10 parameters but model 'planted' has 21 in "
                                         r"scope \(all parameters\); use the scope it was fit with$"):
        perturb_component(model, examples, smaller, 0, magnitude=1.0, **SETS)


# ----------------------------------------------------------------------------------------------------- D-NPEFF

def test_fisher_merge_uses_max_floor_and_moves_only_where_the_component_dominates():
    theta0 = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64)
    f_D = torch.tensor([0.0, 1e-3, 1e-8, 0.9], dtype=torch.float64)
    f_C = torch.tensor([0.0, 1e-3, 0.9, 0.0], dtype=torch.float64)
    s = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    delta, lam, floor = 0.2, 0.4, 1e-6
    change = fisher_merge_delta(f_D, f_C, s, delta=delta, lam=lam, floor=floor)
    assert torch.isfinite(change).all()  # f_D = f_C = 0 at parameter 0: min(f_D, floor) would give 0/0
    w1, w2 = (1 - lam) * torch.maximum(f_D, torch.tensor(floor, dtype=torch.float64)), lam * f_C
    merged = (w1 * theta0 + w2 * (theta0 - delta * s)) / (w1 + w2)
    torch.testing.assert_close(theta0 + change, merged, rtol=0, atol=1e-12)
    assert change[0] == 0 and change[3] == 0  # f_C = 0: stays at θ₀
    assert change[2] == pytest.approx(-delta, rel=1e-5)  # f_C ≫ f_D: moves (almost) all the way to θ_p
    assert 0 < change[1] / (-delta * s[1]) < 1  # comparable Fishers: part of the way to θ_p
    with pytest.raises(ValueError, match=r"^lam must be in \(0, 1\), got 1.0$"):
        fisher_merge_delta(f_D, f_C, s, delta=delta, lam=1.0)


def test_target_kl_finds_the_range_of_a_monotone_function_and_reports_a_miss():
    def kl(delta, lam):
        return delta * lam  # monotone in both

    t = KlTargeter(delta_range=(1e-3, 10.0))
    found = target_kl(kl, (0.05, 0.06), start=(1e-3, 0.5), targeter=t)
    assert found.converged and 0.05 <= found.kl <= 0.06
    assert found.kl == pytest.approx(kl(found.delta, found.lam))
    missed = target_kl(kl, (50.0, 60.0), start=(1e-3, 0.5), targeter=t)
    assert not missed.converged
    assert missed.delta == pytest.approx(10.0, rel=1e-2) and missed.lam == pytest.approx(0.965, rel=1e-2)
    assert missed.n_evaluations <= 2 * t.max_iters + 1
    with pytest.raises(ValueError, match=r"^kl_range must be \(lo, hi\) with 0 < lo < hi, got \(0.2, 0.1\)$"):
        target_kl(kl, (0.2, 0.1), start=(1.0, 0.5))


def test_d_perturbation_hits_a_reachable_kl_range_and_reports_an_unreachable_one(model, examples, diag_decomposition):
    hit = perturb_component(model, examples, diag_decomposition, 0, magnitude=0.5, kl_range=(0.01, 0.02), **SETS)
    assert hit.targeting_converged is True and 0.01 <= hit.kl_top <= 0.02
    assert hit.delta == hit.magnitude and 0 < hit.lam < 1
    fixed = perturb_component(model, examples, diag_decomposition, 0, magnitude=0.5, lam=0.3, **SETS)
    assert fixed.targeting_converged is None and (fixed.delta, fixed.lam) == (0.5, 0.3)
    miss = perturb_component(model, examples, diag_decomposition, 0, magnitude=0.5, kl_range=(50.0, 60.0),
                             targeter=KlTargeter(max_iters=4), **SETS)
    assert miss.targeting_converged is False and miss.kl_top < 50
    with pytest.raises(ValueError, match="^max_sim applies to LRM-NPEFF decompositions only; "):
        perturb_component(model, examples, diag_decomposition, 0, magnitude=0.5, max_sim=0.5, **SETS)


def test_dataset_fisher_is_the_normalized_mean_of_the_diagonal_pefs(model, examples):
    subset = ImageDataset(images=examples.images[:30], labels=examples.labels[:30], label_names=LABELS,
                          name="subset", source="test")
    f_D = dataset_fisher(model, subset, batch_size=7, device="cpu").numpy()
    dense = compute_pefs(model, [{"pixels": torch.as_tensor(subset.images)}], kind="diag").dense().mean(axis=0)
    np.testing.assert_allclose(f_D, dense / np.linalg.norm(dense), rtol=1e-4, atol=1e-7)


def test_sign_pattern_is_the_sign_of_the_summed_loss_gradient(model, examples):
    indices = np.arange(5, 17)
    s = sign_pattern(model, examples, indices, batch_size=5, device="cpu")
    model.zero_grad()
    logits = model({"pixels": torch.as_tensor(examples.images[indices])})
    torch.nn.functional.cross_entropy(logits, torch.as_tensor(examples.labels[indices]), reduction="sum").backward()
    expected = torch.cat([model.net.linear.weight.grad.flatten(), model.net.linear.bias.grad]).sign()
    torch.testing.assert_close(s, expected)


# --------------------------------------------------------------------------------------------------- cached runs

def test_runs_are_computed_once_and_load_as_computed(tmp_path, model, examples, monkeypatch):
    ws = Workspace(tmp_path / "ws")
    pefs = pefs_run(ws, model, examples, kind="lrm", batch_size=50, chunk_size=200, device="cpu")
    dec = fit_run(ws, pefs, n_components=2, n_iters=5, n_iters_g_only=2, device="cpu")
    magnitudes = [0.5, 2.0]
    run = perturb_runs.sweep_run(ws, model, examples, dec, 0, magnitudes, top_n=TOP_N, baseline_n=BASELINE_N,
                                 device="cpu")
    assert run.status == "complete" and run.summary["n_magnitudes"] == 2
    loaded = perturb_runs.load_sweep(ws, run)
    direct = sweep_component(model, examples, perturb_runs.load_decomposition(ws, dec), 0, magnitudes,
                             **SETS)
    for a, b in zip(loaded, direct):
        assert a.scalars() == pytest.approx(b.scalars(), nan_ok=True)
        assert a.examples.equals(b.examples)
    all_run = perturb_runs.perturb_all_run(ws, model, examples, dec, 1.0, top_n=TOP_N, baseline_n=BASELINE_N,
                                           device="cpu")
    table = perturb_runs.load_perturb_all(ws, all_run)
    assert list(table["component"]) == [0, 1]

    monkeypatch.setattr(perturb_runs, "sweep_component", lambda *a, **k: pytest.fail("recomputed a sweep"))
    monkeypatch.setattr(perturb_runs, "perturb_all", lambda *a, **k: pytest.fail("recomputed perturb_all"))
    assert perturb_runs.sweep_run(ws, model, examples, dec, 0, magnitudes, top_n=TOP_N, baseline_n=BASELINE_N).id \
        == run.id
    assert perturb_runs.perturb_all_run(ws, model, examples, dec, 1.0, top_n=TOP_N, baseline_n=BASELINE_N).id \
        == all_run.id


def test_runs_refuse_a_dataset_the_decomposition_was_not_fit_on(tmp_path, model, examples):
    ws = Workspace(tmp_path / "ws")
    dec = fit_run(ws, pefs_run(ws, model, examples, kind="lrm", device="cpu"), n_components=2, n_iters=2,
                  n_iters_g_only=0, device="cpu")
    other = ImageDataset(images=examples.images, labels=examples.labels, label_names=LABELS, name="other",
                         source="test", content_hash="other-data")
    with pytest.raises(ValueError, match=f"^dataset 'other' is not the dataset of decomposition run {dec.id}; "):
        perturb_runs.sweep_run(ws, model, other, dec, 0, [1.0])


# ------------------------------------------------------------------------------------------------------- figures

def test_figures_are_built_from_results(model, examples, decomposition):
    results = sweep_component(model, examples, decomposition, 0, [4.0, 0.5, 1.0], **SETS)
    fig = kl_sweep_figure(results)
    assert isinstance(fig, go.Figure) and len(fig.data) == 3
    assert list(fig.data[0].x) == [0.5, 1.0, 4.0] and fig.layout.xaxis.type == "log"
    hist = kl_ratio_histogram(perturb_all(model, examples, decomposition, 2.0, **SETS))
    assert isinstance(hist, go.Figure) and len(hist.data[0].x) == 2
    flipped = flipped_probability_figure(results[0], label_names=LABELS)
    assert len(flipped.data) == (2 if results[0].examples["flipped"].any() else 0)
    quiet = perturb_component(model, examples, decomposition, 0, magnitude=0.0, **SETS)
    assert flipped_probability_figure(quiet).layout.annotations[0].text == "no prediction flipped"


def test_original_probabilities_are_computed_once_per_model_and_examples(model, examples, decomposition, monkeypatch):
    import analysis.perturb as perturb

    calls = []
    original = perturb._probs
    monkeypatch.setattr(perturb, "_probs", lambda m, batches: calls.append(len(batches)) or original(m, batches))
    perturb_component(model, examples, decomposition, 0, magnitude=1.0, **SETS)
    assert len(calls) == 4  # top and baseline, unperturbed then perturbed
    calls.clear()
    perturb_component(model, examples, decomposition, 0, magnitude=2.0, sign=-1, **SETS)
    assert len(calls) == 2  # only the perturbed forward passes
