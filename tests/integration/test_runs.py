"""PEF runs in the workspace: computed once, chunked, resumable after a crash or kill -9."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import numpy as np
import pytest

import analysis.runs as runs
from analysis.datasets import make_batches, text_dataset
from analysis.fisher import compute_pefs
from analysis.models import ParamScope, load_model
from analysis.store import Workspace
from analysis.variants import VARIANTS, get_variant
from tests.conftest import TINY_LABELS, TINY_VOCAB

WORDS = TINY_VOCAB[5:]


def _dataset(n: int = 20):
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"text": [" ".join(rng.choice(WORDS, size=rng.integers(2, 9))) for _ in range(n)],
                          "label": rng.integers(0, 3, size=n)})
    return text_dataset(frame, text_columns=["text"], label_column="label", label_names=TINY_LABELS,
                        name="toy", source="toy.csv")


@pytest.fixture
def model(tiny_bert_dir):
    return load_model(tiny_bert_dir, scope=ParamScope("last_layers", n_layers=1))


def _assert_same(a, b):
    for name in runs.array_fields(type(a)):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_run_equals_direct_computation_and_is_reused(tmp_path, model, monkeypatch, kind):
    ws, data = Workspace(tmp_path / "ws"), _dataset()
    run = runs.pefs_run(ws, model, data, kind=kind, n_values_per_example=50, chunk_size=6, batch_size=4)
    assert run.status == "complete" and ws.finished_chunks(run.id) == {0: 6, 1: 6, 2: 6, 3: 2}
    stored = runs.load_pefs(ws, run)
    direct = compute_pefs(model, make_batches(model, data, batch_size=5), kind=kind, n_values_per_example=50)
    for name in runs.array_fields(get_variant(kind).pefs):
        np.testing.assert_allclose(np.asarray(getattr(stored, name)), getattr(direct, name), rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    monkeypatch.setattr(runs, "compute_pefs", lambda *a, **k: pytest.fail("recomputed a finished run"))
    assert runs.pefs_run(ws, model, data, kind=kind, n_values_per_example=50, chunk_size=6).id == run.id


def test_injected_crash_resumes_to_identical_results(tmp_path, model):
    data = _dataset()
    reference = runs.load_pefs(ws_ref := Workspace(tmp_path / "ref"),
                               runs.pefs_run(ws_ref, model, data, n_values_per_example=40, chunk_size=5))
    ws = Workspace(tmp_path / "ws")

    def crash(done, total):
        if done > 12:
            raise KeyboardInterrupt("injected crash")

    with pytest.raises(KeyboardInterrupt):
        runs.pefs_run(ws, model, data, n_values_per_example=40, chunk_size=5, progress=crash)
    failed = ws.find_run("pefs", runs.pefs_settings(model, data, kind="lrm", n_values_per_example=40,
                                                    top_k_classes=None))
    assert failed.status == "failed" and "injected crash" in failed.error
    assert set(ws.finished_chunks(failed.id)) == {0, 1}
    resumed = runs.pefs_run(ws, model, data, n_values_per_example=40, chunk_size=5)
    assert resumed.id == failed.id and resumed.status == "complete"
    _assert_same(runs.load_pefs(ws, resumed), reference)


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from analysis.models import ParamScope, load_model
    from analysis.store import Workspace
    from analysis import runs
    from tests.integration.test_runs import _dataset
    model = load_model({ckpt!r}, scope=ParamScope("last_layers", n_layers=1))
    def slow(done, total):
        time.sleep(0.3)
    runs.pefs_run(Workspace({ws!r}), model, _dataset(), n_values_per_example=40, chunk_size=5, progress=slow)
""")


def test_kill_9_mid_run_resumes_from_the_last_chunk(tmp_path, model, tiny_bert_dir):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ws_dir = tmp_path / "ws"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=root, ckpt=str(tiny_bert_dir), ws=str(ws_dir))])
    deadline = time.monotonic() + 120
    while not list(ws_dir.glob("arrays/*/chunk000001_labels.npy")) and time.monotonic() < deadline:
        assert child.poll() is None, "child finished or died before the kill"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    ws = Workspace(ws_dir)
    data = _dataset()
    key = runs.pefs_settings(model, data, kind="lrm", n_values_per_example=40, top_k_classes=None)
    killed = ws.find_run("pefs", key)
    assert killed.status == "running" and 1 <= len(ws.finished_chunks(killed.id)) < 4
    resumed = runs.pefs_run(ws, model, data, n_values_per_example=40, chunk_size=5)
    assert resumed.status == "complete"
    reference = runs.pefs_run(Workspace(tmp_path / "ref"), model, data, n_values_per_example=40, chunk_size=5)
    _assert_same(runs.load_pefs(ws, resumed), runs.load_pefs(Workspace(tmp_path / "ref"), reference))


@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_fit_and_coefficient_runs_are_stored_and_reused(tmp_path, model, monkeypatch, kind):
    ws, data = Workspace(tmp_path / "ws"), _dataset(24)
    pefs = runs.pefs_run(ws, model, data, kind=kind, n_values_per_example=60)
    seen = []
    fit = runs.fit_run(ws, pefs, n_components=3, n_iters=30, progress=lambda d, t, loss: seen.append(loss))
    assert fit.status == "complete" and fit.summary["n_components"] == 3 and seen
    dec = runs.load_decomposition(ws, fit)
    assert dec.W.shape == (24, 3) and (np.asarray(dec.W) >= 0).all()
    assert dec.relative_error == pytest.approx(fit.summary["relative_error"])
    coeffs = runs.coefficients_run(ws, fit, pefs, n_iters=50)
    assert ws.load_array(coeffs.id, "W").shape == (24, 3)
    for name, variant in VARIANTS.items():
        monkeypatch.setitem(VARIANTS, name, replace(variant, fit=lambda *a, **k: pytest.fail("refit a finished decomposition")))
    assert runs.fit_run(ws, pefs, n_components=3, n_iters=30).id == fit.id


def test_a_failing_fit_is_marked_failed_not_complete(tmp_path, model):
    ws, data = Workspace(tmp_path / "ws"), _dataset(8)
    pefs = runs.pefs_run(ws, model, data, n_values_per_example=60)
    with pytest.raises(ValueError, match="n_components must be >= 1, got 0"):
        runs.fit_run(ws, pefs, n_components=0, n_iters=5)
    assert ws.runs(kind="npeff-lrm")["status"].tolist() == ["failed"]
