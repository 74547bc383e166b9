"""Perturbations end to end on a tiny random BERT: PEFs -> NPEFF fit -> perturb and sweep, weights restored."""
import numpy as np
import pandas as pd
import pytest
import torch

from analysis.datasets import make_batches, text_dataset
from analysis.fisher import compute_pefs
from analysis.models import ParamScope, load_model
from analysis.npeff import fit_d_npeff, fit_lrm_npeff
from analysis.perturb.api import perturb_component, sweep_component
from tests.conftest import TINY_LABELS, TINY_VOCAB

WORDS = TINY_VOCAB[5:]
TOP_N, BASELINE_N = 4, 12


@pytest.fixture(scope="module")
def model(tiny_bert_dir):
    return load_model(tiny_bert_dir, scope=ParamScope("last_layers", n_layers=1))


@pytest.fixture(scope="module")
def sentences():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"text": [" ".join(rng.choice(WORDS, size=rng.integers(2, 9))) for _ in range(24)],
                          "label": rng.integers(0, 3, size=24)})
    return text_dataset(frame, text_columns=["text"], label_column="label", label_names=TINY_LABELS,
                        name="toy", source="toy.csv")


def snapshot(model):
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def assert_identical(model, before):
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_lrm_perturbation_and_sweep_on_tiny_bert(model, sentences):
    pefs = compute_pefs(model, make_batches(model, sentences, batch_size=8), kind="lrm", n_values_per_example=300,
                        device="cpu")
    decomposition = fit_lrm_npeff(pefs, 3, n_iters=5, n_iters_g_only=2, device="cpu")
    before = snapshot(model)
    result = perturb_component(model, sentences, decomposition, 0, magnitude=1.0, max_sim=0.5, top_n=TOP_N,
                               baseline_n=BASELINE_N, batch_size=5, device="cpu")
    assert_identical(model, before)
    assert len(result.examples) == TOP_N + BASELINE_N and result.kl_top > 0 and result.kl_baseline > 0
    assert np.isfinite(result.kl_ratio) and result.change_norm == pytest.approx(1.0, rel=1e-4)
    top = np.argsort(-decomposition.W[:, 0], kind="stable")[:TOP_N]
    np.testing.assert_array_equal(result.examples["index"][:TOP_N], top)

    sweep = sweep_component(model, sentences, decomposition, 1, [0.01, 0.1, 1.0], sign=-1, top_n=TOP_N,
                            baseline_n=BASELINE_N, batch_size=5, device="cpu")
    assert_identical(model, before)
    assert [r.magnitude for r in sweep] == [0.01, 0.1, 1.0] and all(r.sign == -1 for r in sweep)
    assert sweep[0].kl_top < sweep[-1].kl_top


def test_d_npeff_perturbation_with_kl_targeting_on_tiny_bert(model, sentences):
    pefs = compute_pefs(model, make_batches(model, sentences, batch_size=8), kind="diag", n_values_per_example=300,
                        device="cpu")
    decomposition = fit_d_npeff(pefs, 2, n_iters=10, device="cpu")
    before = snapshot(model)
    result = perturb_component(model, sentences, decomposition, 0, magnitude=0.05, kl_range=(1e-3, 2e-3),
                               top_n=TOP_N, baseline_n=BASELINE_N, batch_size=8, device="cpu")
    assert_identical(model, before)
    assert result.targeting_converged is True and 1e-3 <= result.kl_top <= 2e-3
    assert 0 < result.lam < 1 and result.delta == result.magnitude


def slow_perturb_all(model, examples, decomposition, magnitude, signs, **sets):
    """The obvious loop: perturb_component per component and sign, every forward pass through the whole network."""
    rows = []
    for k in range(decomposition.n_components):
        results = {s: perturb_component(model, examples, decomposition, k, magnitude=magnitude, sign=s, **sets)
                   for s in signs}
        rows.append({"component": k, **{f"kl_{part}_{s}": getattr(res, f"kl_{part}")
                                        for s, res in results.items() for part in ("top", "baseline")}})
    return pd.DataFrame(rows)


def test_perturb_all_replays_the_frozen_layers_and_matches_the_slow_loop(model, sentences):
    from analysis.perturb.api import perturb_all
    from analysis.fisher import dataset_fisher
    from analysis.perturb.evaluation import Setup, reference_for
    from analysis.perturb.prefix import frozen_modules
    from analysis.perturb.weights import FunctionalModel

    fmodel = FunctionalModel(model, torch.device("cpu"))
    batch = next(iter(make_batches(model, sentences, batch_size=4)))
    frozen = frozen_modules(fmodel, {k: v for k, v in batch.items() if k != "labels"})
    assert frozen and all("classifier" not in name and "layer.1" not in name for name in frozen)  # scope: layer 1
    setup = Setup.on(model, sentences, torch.device("cpu"), 5, dataset_fisher).pooled(np.arange(len(sentences)))
    assert setup.pool is not None  # the replayed pass agreed with the full one
    pefs = compute_pefs(model, make_batches(model, sentences, batch_size=8), kind="lrm", n_values_per_example=300,
                        device="cpu")
    decomposition = fit_lrm_npeff(pefs, 3, n_iters=5, n_iters_g_only=2, device="cpu")
    sets = dict(top_n=TOP_N, baseline_n=BASELINE_N, batch_size=5, device="cpu")
    before = snapshot(model)
    fast = perturb_all(model, sentences, decomposition, 1.0, signs=(1, -1), **sets)
    assert_identical(model, before)
    reference_for(model, sentences, torch.device("cpu")).known[:] = False  # the slow loop computes its own
    slow = slow_perturb_all(model, sentences, decomposition, 1.0, (1, -1), **sets)
    for s, name in ((1, "pos"), (-1, "neg")):
        ratio = slow[f"kl_top_{s}"] / slow[f"kl_baseline_{s}"]
        np.testing.assert_allclose(fast[f"kl_ratio_{name}"], ratio, rtol=1e-5)
    best = fast["sign"].to_numpy()
    np.testing.assert_allclose(fast["kl_top"], [slow.loc[k, f"kl_top_{s}"] for k, s in enumerate(best)], rtol=1e-5)
    one = perturb_all(model, sentences, decomposition, 1.0, signs=-1, **sets)
    assert (one["sign"] == -1).all() and "kl_ratio_pos" not in one.columns
    np.testing.assert_allclose(one["kl_ratio"], fast["kl_ratio_neg"], rtol=1e-5)
