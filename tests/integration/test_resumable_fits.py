"""Resumable NPEFF fits: a failed or killed fit_run resumes from its checkpoint to the uninterrupted result."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import analysis.runs as runs
from analysis.models import ParamScope, load_model
from analysis.store import Workspace
from analysis.variants import get_variant
from tests.integration.test_runs import _dataset

SETTINGS = {"lrm": dict(n_components=3, n_iters=100, n_iters_g_only=50, seed=1),
            "diag": dict(n_components=3, n_iters=150, seed=1)}


@pytest.fixture(scope="module")
def model(tiny_bert_dir):
    return load_model(tiny_bert_dir, scope=ParamScope("last_layers", n_layers=1))


def _pefs(ws: Workspace, model, kind: str):
    return runs.pefs_run(ws, model, _dataset(), kind=kind, n_values_per_example=60)


def _fit_key(pefs, kind: str) -> dict:
    variant = get_variant(kind)
    return {"pefs": pefs.key, **runs.fit_config(variant, SETTINGS[kind]).params()}


def _assert_same_factors(ws_a: Workspace, a, ws_b: Workspace, b) -> None:
    dec_a, dec_b = runs.load_decomposition(ws_a, a), runs.load_decomposition(ws_b, b)
    for name in ("W", "kept", "losses", dec_a.factor):
        np.testing.assert_array_equal(np.asarray(getattr(dec_a, name)), np.asarray(getattr(dec_b, name)),
                                      err_msg=name)


def _assert_no_checkpoint_left(ws: Workspace, run) -> None:
    assert not list(ws.run_dir(run.id).glob("checkpoint*"))
    assert not any(name.startswith("checkpoint") for name in run.files)


@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_failed_fit_resumes_from_its_checkpoint(tmp_path, model, kind):
    ws = Workspace(tmp_path / "ws")
    pefs = _pefs(ws, model, kind)

    def crash(done, total, loss):
        if done > 120:
            raise KeyboardInterrupt("injected crash")

    with pytest.raises(KeyboardInterrupt):
        runs.fit_run(ws, pefs, progress=crash, **SETTINGS[kind])
    failed = ws.find_run(get_variant(kind).run_kind, _fit_key(pefs, kind))
    assert failed.status == "failed" and "injected crash" in failed.error
    factor = get_variant(kind).decomposition.factor
    assert sorted(p.name for p in ws.run_dir(failed.id).glob("checkpoint*")) == sorted(
        [f"checkpoint000100_{part}.npy" for part in ("W", factor, "losses")] + ["checkpoint_state.npy"])

    seen = []
    resumed = runs.fit_run(ws, pefs, progress=lambda done, total, loss: seen.append(done), **SETTINGS[kind])
    assert resumed.id == failed.id and resumed.status == "complete"
    assert seen[0] >= 100 and seen[-1] == 150
    _assert_no_checkpoint_left(ws, resumed)
    ws_ref = Workspace(tmp_path / "ref")
    reference = runs.fit_run(ws_ref, _pefs(ws_ref, model, kind), **SETTINGS[kind])
    _assert_same_factors(ws, resumed, ws_ref, reference)


def test_checkpoint_of_another_world_size_is_refused(tmp_path, model):
    ws = Workspace(tmp_path / "ws")
    pefs = _pefs(ws, model, "diag")

    def crash(done, total, loss):
        if done > 60:
            raise KeyboardInterrupt("injected crash")

    with pytest.raises(KeyboardInterrupt):
        runs.fit_run(ws, pefs, progress=crash, **SETTINGS["diag"])
    failed = ws.find_run(get_variant("diag").run_kind, _fit_key(pefs, "diag"))
    ws.save_array(failed.id, runs.CHECKPOINT_STATE, np.array([50, 2]))
    with pytest.raises(ValueError, match=f"run {failed.id} has a checkpoint after 50 updates written by 2 "
                                         r"process\(es\); it resumes only with 2"):
        runs.fit_run(ws, pefs, **SETTINGS["diag"])


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from analysis.store import Workspace
    from analysis import runs
    ws = Workspace({ws!r})
    def slow(done, total, loss):
        time.sleep(0.05)
    runs.fit_run(ws, ws.get_run({pefs!r}), progress=slow, **{settings!r})
""")


def test_kill_9_mid_fit_resumes_from_the_last_checkpoint(tmp_path, model):
    kind = "lrm"  # killed in the warm-up (checkpoint 50) or the joint phase (checkpoint 100)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ws = Workspace(tmp_path / "ws")
    pefs = _pefs(ws, model, kind)
    ws.close()
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=root, ws=str(ws.root), pefs=pefs.id,
                                                                 settings=SETTINGS[kind])])
    deadline = time.monotonic() + 120
    while not list(ws.root.glob("arrays/*/checkpoint_state.npy")) and time.monotonic() < deadline:
        assert child.poll() is None, "child finished or died before the kill"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = ws.find_run(get_variant(kind).run_kind, _fit_key(pefs, kind))
    assert killed.status == "running"
    checkpointed = int(ws.load_array(killed.id, runs.CHECKPOINT_STATE)[0])
    assert checkpointed in (50, 100)

    seen = []
    resumed = runs.fit_run(ws, pefs, progress=lambda done, total, loss: seen.append(done), **SETTINGS[kind])
    assert resumed.id == killed.id and resumed.status == "complete" and seen[0] >= checkpointed
    _assert_no_checkpoint_left(ws, resumed)
    ws_ref = Workspace(tmp_path / "ref")
    reference = runs.fit_run(ws_ref, _pefs(ws_ref, model, kind), **SETTINGS[kind])
    _assert_same_factors(ws, resumed, ws_ref, reference)
