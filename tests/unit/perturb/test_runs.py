"""Perturbation runs stored in the workspace (analysis.perturb.runs): computed once, loaded as computed."""
import numpy as np
import pandas as pd
import pytest

import analysis.perturb.runs as perturb_runs
from analysis.datasets import ImageDataset
from analysis.perturb.api import sweep_component
from analysis.perturb.evaluation import PerturbationResult
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace
from tests.unit.perturb.planted import BASELINE_N, LABELS, SETS, TOP_N


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


def test_latest_selectivity_is_the_kl_ratio_of_the_newest_perturb_all_run(tmp_path, model, examples):
    ws = Workspace(tmp_path / "ws")
    pefs = pefs_run(ws, model, examples, kind="lrm", batch_size=50, chunk_size=200, device="cpu")
    dec = fit_run(ws, pefs, n_components=2, n_iters=5, n_iters_g_only=2, device="cpu")
    other = fit_run(ws, pefs, n_components=2, n_iters=5, n_iters_g_only=2, seed=1, device="cpu")
    assert perturb_runs.latest_selectivity(ws, dec) is None
    perturb_runs.perturb_all_run(ws, model, examples, dec, 1.0, top_n=TOP_N, baseline_n=BASELINE_N, device="cpu")
    newest = perturb_runs.perturb_all_run(ws, model, examples, dec, 2.0, signs=1, top_n=TOP_N, baseline_n=BASELINE_N,
                                          device="cpu")
    assert newest.params["signs"] == [1]
    selectivity = perturb_runs.latest_selectivity(ws, dec)
    table = perturb_runs.load_perturb_all(ws, newest)
    assert list(selectivity.index) == [0, 1]
    np.testing.assert_array_equal(selectivity.to_numpy(), table["kl_ratio"].to_numpy())
    assert perturb_runs.latest_selectivity(ws, other) is None  # another decomposition's runs do not count


def _point(magnitude: float, kl_top: float, kl_baseline: float) -> PerturbationResult:
    nan = float("nan")
    ratio = kl_top / kl_baseline if kl_baseline else (float("inf") if kl_top else nan)
    return PerturbationResult(component=0, magnitude=magnitude, sign=1, kl_top=kl_top, kl_baseline=kl_baseline,
                              kl_ratio=ratio, acc_top_before=nan, acc_top_after=nan, acc_baseline_before=nan,
                              acc_baseline_after=nan, n_flipped_top=0, n_flipped_baseline=0, change_norm=magnitude,
                              examples=pd.DataFrame())


def test_most_selective_is_the_largest_finite_kl_ratio_not_the_last_magnitude():
    sweep = [_point(1e-4, 1e-9, 0.0), _point(0.01, 2e-3, 5e-4), _point(0.1, 0.5, 0.05), _point(1.0, 2.0, 1.0),
             _point(10.0, 3.0, 3.0)]  # ratios inf, 4, 10, 2, 1: saturation at the end
    assert perturb_runs.most_selective(sweep).magnitude == 0.1
    assert perturb_runs.most_selective([_point(0.5, 1.0, 0.5), _point(0.2, 2.0, 1.0)]).magnitude == 0.2  # tie
    assert perturb_runs.most_selective([_point(0.1, 0.0, 0.0), _point(1.0, 1e-9, 0.0)]).magnitude == 1.0
    with pytest.raises(ValueError, match="results must hold at least one PerturbationResult, got none"):
        perturb_runs.most_selective([])


def test_readable_names_the_columns_and_drops_the_other_variants():
    table = pd.DataFrame([_point(0.1, 0.5, 0.05).scalars()]).assign(extra=1)
    shown = perturb_runs.readable(table)
    assert list(shown.columns) == [
        "Component", "Magnitude", "Sign", "KL, top examples", "KL, baseline", "KL ratio (top / baseline)",
        "Flipped, top", "Flipped, baseline", "‖θ' − θ₀‖₂", "extra"]  # NaN accuracies, δ, λ: not this run's
    assert shown["KL ratio (top / baseline)"].iloc[0] == pytest.approx(10.0)
