"""Workspace storage: migrations, run lifecycle, durable arrays, concurrent writers."""
import subprocess
import sys
import threading

import numpy as np
import pytest

from analysis.store import MIGRATIONS, Workspace


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


def test_fresh_workspace_is_at_the_latest_schema_and_reopens(ws):
    assert ws.schema_version() == len(MIGRATIONS)
    again = Workspace(ws.root)
    assert again.schema_version() == len(MIGRATIONS)
    assert ws.query("SELECT count(*) AS n FROM schema_version")["n"][0] == len(MIGRATIONS)


def test_new_migrations_apply_once_in_order(ws):
    extra = [*MIGRATIONS, "CREATE TABLE notes (run_id VARCHAR, note VARCHAR);"]
    assert ws.migrate(extra) == len(extra)
    assert ws.migrate(extra) == len(extra)  # idempotent
    assert ws.schema_version() == len(extra)
    with pytest.raises(RuntimeError, match="is newer than this code"):
        ws.migrate(MIGRATIONS)


def test_a_failing_migration_changes_nothing(ws):
    broken = [*MIGRATIONS, "CREATE TABLE half (x INT); SELECT * FROM no_such_table;"]
    with pytest.raises(Exception):
        ws.migrate(broken)
    assert ws.schema_version() == len(MIGRATIONS)
    assert "half" not in ws.query("SELECT table_name FROM information_schema.tables")["table_name"].tolist()


def test_run_is_reused_by_key_and_completes_only_with_its_arrays(ws):
    run = ws.start_run("pefs", {"k": 10, "model": "m"}, model_id="m", dataset_id="d")
    assert run.status == "running"
    assert ws.start_run("pefs", {"model": "m", "k": 10}).id == run.id  # key ignores dict order
    with pytest.raises(RuntimeError, match=f"run {run.id}: arrays \\['values'\\] are missing"):
        ws.complete_run(run.id, {}, expected_arrays=["values"])
    assert ws.get_run(run.id).status == "running"
    ws.save_array(run.id, "values", np.arange(6.0).reshape(2, 3))
    ws.complete_run(run.id, {"n": 2}, expected_arrays=["values"])
    done = ws.find_run("pefs", {"k": 10, "model": "m"})
    assert done.status == "complete" and done.summary == {"n": 2}
    np.testing.assert_array_equal(ws.load_array(run.id, "values"), np.arange(6.0).reshape(2, 3))
    assert ws.start_run("pefs", {"k": 10, "model": "m"}).status == "complete"


def test_failed_run_keeps_error_and_can_restart(ws):
    run = ws.start_run("fit", {"r": 4})
    ws.fail_run(run.id, "NaN at iteration 3")
    assert ws.get_run(run.id).error == "NaN at iteration 3"
    assert ws.start_run("fit", {"r": 4}).status == "running"


def test_chunks_record_progress(ws):
    run = ws.start_run("pefs", {"x": 1})
    ws.record_chunk(run.id, 0, 32)
    ws.record_chunk(run.id, 1, 16)
    assert ws.finished_chunks(run.id) == {0: 32, 1: 16}


def test_examples_are_stored_and_queried(ws):
    ws.register_dataset(id="d1", name="toy", source="toy.csv", input_kind="text", label_names=["a", "b"],
                        texts=["x", "y", "z"], labels=np.array([0, 1, 0]))
    assert ws.examples("d1")["text"].tolist() == ["x", "y", "z"]
    assert ws.examples("d1", [2, 0])["idx"].tolist() == [0, 2]
    ws.register_dataset(id="d1", name="toy", source="toy.csv", input_kind="text", label_names=["a", "b"],
                        texts=["x"], labels=np.array([1]))
    assert len(ws.examples("d1")) == 1


def test_two_threads_writing_at_once_lose_nothing(ws):
    def writer(tag):
        for i in range(25):
            run = ws.start_run("t", {"tag": tag, "i": i})
            ws.record_chunk(run.id, 0, i)
            ws.complete_run(run.id, {"i": i})

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = ws.runs(kind="t", status="complete")
    assert len(runs) == 50 and runs["key"].is_unique


WRITER = """
import sys
from analysis.store import Workspace
ws = Workspace(sys.argv[1])
for i in range(10):
    ws.complete_run(ws.start_run("p", {"tag": sys.argv[2], "i": i}).id, {})
"""


def test_two_processes_share_a_workspace(ws):
    """Fresh interpreters (not multiprocessing: an AppTest earlier in the session leaves app.py as __main__,
    which spawn would re-run in the children)."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(ws.root), tag]) for tag in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(ws.runs(kind="p", status="complete")) == 20


def test_job_points_are_appended_in_batches_and_read_by_step(ws):
    ws.create_job("j1", "compute", {})
    assert [a.tolist() for a in ws.job_points("j1", "loss")] == [[], []]
    ws.append_job_points("j1", "loss", [(0, 3.0), (4, 2.0)])
    ws.append_job_points("j1", "loss", [(8, 1.5)])
    ws.append_job_points("j1", "other", [(0, 9.0)])
    ws.append_job_points("j1", "loss", [])
    steps, values = ws.job_points("j1", "loss")
    assert steps.tolist() == [0, 4, 8] and values.tolist() == [3.0, 2.0, 1.5]
    assert ws.job_points("j2", "loss")[0].tolist() == []


def test_a_step_recorded_again_keeps_its_newest_value(ws):
    """A resumed fit repeats the iterations after its checkpoint."""
    ws.append_job_points("j1", "loss", [(0, 3.0), (4, 2.0), (8, 1.5)])
    ws.append_job_points("j1", "loss", [(4, 2.5), (8, 1.0), (8, 0.5)])
    assert ws.job_points("j1", "loss")[1].tolist() == [3.0, 2.5, 0.5]


def test_component_notes_arrive_with_a_migration_that_keeps_older_data(tmp_path):
    """A workspace made before notes existed (schema v4) gains the notes table and keeps its runs."""
    import duckdb

    root = tmp_path / "old"
    root.mkdir()
    con = duckdb.connect(str(root / "npeff.duckdb"))
    con.execute("CREATE TABLE schema_version (version INTEGER)")
    for version, sql in enumerate(MIGRATIONS[:4], start=1):
        con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (?)", [version])
    con.execute("INSERT INTO runs (id, kind, key, params, status) VALUES ('r1', 'npeff-lrm', 'k', '{}', 'complete')")
    con.close()
    ws = Workspace(root)
    assert ws.schema_version() == len(MIGRATIONS) >= 5
    assert ws.get_run("r1").status == "complete"
    assert ws.component_notes("r1") == []


def test_component_notes_round_trip_one_row_per_component(ws):
    from datetime import datetime

    t0, t1 = datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 3, 5, 0)
    ws.set_component_note("r1", 3, name="low-key", tags=["tone", "fresh"], note="reviews that say low-key", updated=t0)
    ws.set_component_note("r1", 0, name="", tags=["dup"], note="", updated=t0)
    ws.set_component_note("r2", 3, name="other run", tags=[], note="", updated=t0)
    ws.set_component_note("r1", 3, name="low-key praise", tags=["tone"], note="", updated=t1)  # replaces
    assert ws.component_notes("r1") == [(0, "", ["dup"], "", t0), (3, "low-key praise", ["tone"], "", t1)]
    ws.set_component_note("r1", 3, name="", tags=[], note="", updated=t1)  # all empty: deleted
    assert ws.component_notes("r1") == [(0, "", ["dup"], "", t0)]
    assert ws.query("SELECT count(*) AS n FROM component_notes")["n"][0] == 2
    assert Workspace(ws.root).component_notes("r2") == [(3, "other run", [], "", t0)]  # survives a reopen
