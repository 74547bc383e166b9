"""The stored-run lifecycle under stress: concurrent computes, leases, resumes with other settings, missing
files, full disks and non-finite Fishers never leave a wrong run marked complete."""
import errno
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import analysis.runs as runs
from analysis.datasets import dataset_slice, predict
from analysis.demos import load_demo
from analysis.models import ParamScope, load_model
from analysis.store import Workspace
from tests.conftest import ROOT
from tests.integration.test_runs import _assert_same, _dataset


@pytest.fixture
def model(tiny_bert_dir):
    return load_model(tiny_bert_dir, scope=ParamScope("last_layers", n_layers=1))


def _counting(monkeypatch) -> list[int]:
    """Count the chunks runs.pefs_run computes (each chunk is one compute_pefs call)."""
    calls, real = [], runs.compute_pefs

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "compute_pefs", counted)
    return calls


def test_eight_threads_computing_different_settings_match_their_sequential_results(image_workspace, tmp_path):
    """One shared model, eight settings at once (as eight browser sessions would): every stored run equals the
    same settings computed alone."""
    model, dataset, _ = load_demo("image", image_workspace)
    data = dataset_slice(dataset, 0, 160)
    settings = [dict(kind=kind, n_values_per_example=k, top_k_classes=c)
                for kind in ("lrm", "diag") for k in (64, 300) for c in (None, 3)]
    alone = []
    for s in settings:
        ws = Workspace(tmp_path / f"alone{len(alone)}")
        alone.append(runs.load_pefs(ws, runs.pefs_run(ws, model, data, chunk_size=64, batch_size=16, **s)))
    shared = Workspace(tmp_path / "shared")
    with ThreadPoolExecutor(max_workers=8) as pool:
        stored = list(pool.map(lambda s: runs.pefs_run(shared, model, data, chunk_size=64, batch_size=16, **s),
                               settings))
    assert len({run.id for run in stored}) == 8
    for s, run, reference in zip(settings, stored, alone):
        assert run.status == "complete", s
        _assert_same(runs.load_pefs(shared, run), reference)


def test_the_same_settings_started_twice_are_computed_once(tmp_path, model, monkeypatch):
    """The second caller waits for the first one's lease and reuses its run: no chunk is computed twice."""
    ws, data = Workspace(tmp_path / "ws"), _dataset()
    calls = _counting(monkeypatch)
    waits = []
    started = threading.Event()

    def slow(done, total):
        started.set()
        threading.Event().wait(0.05)

    first = ThreadPoolExecutor(1).submit(runs.pefs_run, ws, model, data, n_values_per_example=40, chunk_size=5,
                                         progress=slow)
    started.wait(60)
    second = runs.pefs_run(ws, model, data, n_values_per_example=40, chunk_size=5, on_wait=waits.append)
    assert first.result().id == second.id and second.status == "complete"
    assert waits and waits[0].status == "running"
    assert len(calls) == 4  # 20 examples in chunks of 5, each computed once
    reference = runs.pefs_run(Workspace(tmp_path / "ref"), model, data, n_values_per_example=40, chunk_size=5)
    _assert_same(runs.load_pefs(ws, second), runs.load_pefs(Workspace(tmp_path / "ref"), reference))


def test_a_stale_lease_of_a_live_looking_owner_expires(tmp_path, model):
    """A lease held by a process on another host that stopped renewing it is taken over and the run resumes."""
    ws, data = Workspace(tmp_path / "ws"), _dataset(8)
    settings = runs.pefs_settings(model, data, kind="lrm", n_values_per_example=40, top_k_classes=None)
    run = ws.start_run("pefs", settings, owner="elsewhere:4242:abcd1234")
    with ws.transaction() as con:
        con.execute("UPDATE runs SET heartbeat = current_timestamp::TIMESTAMP - INTERVAL 10 MINUTE WHERE id = ?",
                    [run.id])
    resumed = runs.pefs_run(ws, model, data, n_values_per_example=40)
    assert resumed.id == run.id and resumed.status == "complete"


def test_resuming_with_another_chunk_size_discards_the_mismatched_chunks(tmp_path, model):
    """Killed after two chunks of 5, resumed with chunks of 3: the stored rows are the dataset's, once each."""
    data = _dataset()
    ws = Workspace(tmp_path / "ws")

    def crash(done, total):
        if done > 12:
            raise KeyboardInterrupt("injected crash")

    with pytest.raises(KeyboardInterrupt):
        runs.pefs_run(ws, model, data, n_values_per_example=40, chunk_size=5, progress=crash)
    resumed = runs.pefs_run(ws, model, data, n_values_per_example=40, chunk_size=3)
    assert resumed.status == "complete" and resumed.summary["n_examples"] == len(data)
    assert ws.chunk_ranges(resumed.id) == {c: (3 * c, min(3, len(data) - 3 * c)) for c in range(7)}
    reference = runs.pefs_run(ws_ref := Workspace(tmp_path / "ref"), model, data, n_values_per_example=40,
                              chunk_size=3)  # batches follow the chunks: same chunks, bit-identical PEFs
    _assert_same(runs.load_pefs(ws, resumed), runs.load_pefs(ws_ref, reference))


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_complete_run_with_a_damaged_array_is_demoted_and_recomputed(tmp_path, model, monkeypatch, damage):
    ws, data = Workspace(tmp_path / "ws"), _dataset(10)
    run = runs.pefs_run(ws, model, data, n_values_per_example=40)
    reference = {name: np.array(ws.load_array(run.id, name)) for name in runs.array_fields(type(runs.load_pefs(ws, run)))}
    path = ws.array_path(run.id, "values")
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-7])
        with pytest.raises(ValueError, match=rf"^{path}: array 'values' of run {run.id} is truncated or unreadable"):
            ws.load_array(run.id, "values")
    assert str(path) in ws.file_problem(ws.get_run(run.id))
    calls = _counting(monkeypatch)
    again = runs.pefs_run(ws, model, data, n_values_per_example=40)
    assert again.id == run.id and again.status == "complete" and calls
    for name, array in reference.items():
        np.testing.assert_array_equal(ws.load_array(run.id, name), array, err_msg=name)


def test_a_full_disk_leaves_no_partial_files_and_the_retry_completes(tmp_path, model, monkeypatch):
    ws, data = Workspace(tmp_path / "ws"), _dataset()
    real_save, saves = np.save, []

    def disk_full(file, array, *args, **kwargs):
        saves.append(1)
        if len(saves) == 10:  # inside the second chunk's arrays
            file.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        runs.pefs_run(ws, model, data, n_values_per_example=40, chunk_size=5)
    monkeypatch.setattr(np, "save", real_save)
    failed = ws.runs(kind="pefs")
    assert failed["status"].tolist() == ["failed"] and "No space left on device" in failed["error"][0]
    folder = ws.root / "arrays" / failed["id"][0]
    assert not list(folder.glob("*.tmp-*")) and not list(folder.glob("chunk000001_*"))
    assert sorted(ws.finished_chunks(failed["id"][0])) == [0]
    done = runs.pefs_run(ws, model, data, n_values_per_example=40, chunk_size=5)
    assert done.status == "complete"
    reference = runs.pefs_run(ws_ref := Workspace(tmp_path / "ref"), model, data, n_values_per_example=40,
                              chunk_size=5)
    _assert_same(runs.load_pefs(ws, done), runs.load_pefs(ws_ref, reference))


def test_a_non_finite_fisher_names_the_dataset_row(tmp_path, model):
    """A NaN position embedding poisons exactly the examples that are that long
    (one per batch: padding would carry it into a batch's shorter examples); the error names such a row of the
    dataset (not a position in the length-sorted chunk, which is a clean example here)."""
    data = _dataset(30)
    with torch.no_grad():
        model.net.bert.embeddings.position_embeddings.weight[9] = float("nan")
    poisoned = np.flatnonzero(~np.isfinite(predict(model, data, batch_size=1)).all(1))
    assert 0 < len(poisoned) < len(data)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(FloatingPointError, match=r"^toy.csv: the per-example Fisher of row (\d+) has non-finite "
                                                 r"values \(logits or gradients\); check that example's input and "
                                                 r"the model weights$") as failure:
        runs.pefs_run(ws, model, data, n_values_per_example=40, chunk_size=8, batch_size=1)  # no padding
    assert int(str(failure.value).split("row ")[1].split(" ")[0]) in poisoned
    assert ws.runs(kind="pefs")["status"].tolist() == ["failed"]


@pytest.mark.parametrize("content", [b"garbage" * 1000, "truncated"])
def test_a_corrupt_database_is_reported_as_corrupt_not_locked(tmp_path, content):
    root = tmp_path / "ws"
    if content == "truncated":
        Workspace(root).close()
        data = (root / "npeff.duckdb").read_bytes()
        (root / "npeff.duckdb").write_bytes(data[:5000])
    else:
        root.mkdir()
        (root / "npeff.duckdb").write_bytes(content)
    with pytest.raises(RuntimeError, match=rf"^{root / 'npeff.duckdb'}: not a readable workspace database \(.*\); "
                                           "move the file away to start an empty workspace here, or choose another "
                                           "workspace folder$"):
        Workspace(root, lock_timeout_s=60)


def test_stale_demo_builds_are_cleared(tmp_path):
    from analysis.demos import BUILDING, _clear_stale_builds, demo_folder

    folder = demo_folder("image", tmp_path)
    dead = folder.with_name(f"{folder.name}{BUILDING}999999999")
    live = folder.with_name(f"{folder.name}{BUILDING}{__import__('os').getpid()}")
    for stale in (dead, live):
        stale.mkdir(parents=True)
        (stale / "model.safetensors").write_bytes(b"x" * 1000)
    _clear_stale_builds(folder)
    assert not dead.exists() and live.exists()


def test_the_runs_table_reads_runs_still_computing(tmp_path):
    """A decomposition being computed (no summary yet, NULL in the database) is listed, not a TypeError."""
    ws = Workspace(tmp_path / "ws")
    ws.start_run("npeff-lrm", {"pefs": "p", "n_components": 3, "n_iters": 5}, model_id="m", dataset_id="d")
    failed = ws.start_run("npeff-diag", {"pefs": "p", "n_components": 2, "n_iters": 5}, model_id="m", dataset_id="d")
    ws.fail_run(failed.id, "ValueError: n_components must be >= 1, got 0")
    table = runs.decomposition_table(ws.decomposition_runs("m", "d", complete_only=False))
    assert sorted(table["status"]) == ["failed", "running"]
    assert table["relative error"].isna().all()
    assert set(table["error"]) == {"", "ValueError: n_components must be >= 1, got 0"}


def test_a_new_workspace_database_is_only_opened_whole(tmp_path, monkeypatch):
    """DuckDB creating the file in place left it empty for a moment, which a second process read as corrupt (a
    torchrun rank in CI): the workspace's file is only ever opened once it exists with DuckDB's header."""
    import duckdb

    root, real, opened = tmp_path / "ws", duckdb.connect, []

    def connect(path=":memory:", *args, **kwargs):
        if Path(path) == root / "npeff.duckdb":
            opened.append(Path(path).read_bytes()[8:12] if Path(path).exists() else b"missing")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", connect)
    Workspace(root).close()
    assert opened and set(opened) == {b"DUCK"}
    assert [p.name for p in root.iterdir()] == ["npeff.duckdb"]  # the private file it was made under is gone


OPEN_AT = """
import sys, time
from analysis.store import MIGRATIONS, Workspace
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time() - 0.02))  # asleep until just before the start, not spinning 12 processes
while time.time() < start:  # then every process opens the new workspace at the same moment
    pass
ws = Workspace(sys.argv[1])
print(ws.schema_version() == len(MIGRATIONS))
"""


def test_processes_opening_a_new_workspace_at_once_all_open_it(tmp_path):
    """Ranks of one torchrun job create the shared workspace together: every one opens it, migrated."""
    roots = [tmp_path / f"ws{i}" for i in range(4)]
    start = time.time() + 4.0  # past every process's imports
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(root), str(start)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for root in roots for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "True", err[-1500:]
