"""The jobs table: creation, progress, the cancel flag, dead workers, ETA (no model, no subprocess)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.jobs import (CANCELLED, DIED, JobCancelled, Reporter, compute_spec, dataset_spec_from, get_job,
                           list_jobs, model_spec_from, own_job, tracked)
from analysis.loading import DatasetSpec, ModelSpec
from analysis.models import ParamScope
from analysis.store import Workspace


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


def _dead_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_new_job_is_queued_with_its_spec(ws):
    spec = compute_spec(ModelSpec("demo:image"), DatasetSpec("demo:image"), pefs={"kind": "lrm"}, fit=None)
    ws.create_job("j1", "compute", spec)
    job = get_job(ws, "j1")
    assert (job.status, job.step, job.total, job.started, job.elapsed, job.eta) == ("queued", 0, None, None, None,
                                                                                    None)
    assert job.spec == spec and job.active
    with pytest.raises(KeyError, match="no job 'nope' in workspace"):
        get_job(ws, "nope")
    with pytest.raises(ValueError, match="a new job's status must be one of \\('queued', 'running'\\), got 'done'"):
        ws.create_job("j2", "compute", {}, status="done")


def test_specs_round_trip_through_json(ws):
    model = ModelSpec("/m", scope=ParamScope("last_layers", n_layers=2), label_names=("a", "b"),
                      options=(("layer", 3),))
    dataset = DatasetSpec("/d.csv", text_columns=("q", "a"), label_column="y", image_size=(8, 8))
    ws.create_job("j", "compute", compute_spec(model, dataset, pefs={}, fit=None))
    spec = get_job(ws, "j").spec
    assert model_spec_from(spec["model"]) == model and dataset_spec_from(spec["dataset"]) == dataset


def test_progress_is_throttled_and_gives_an_eta(ws):
    ws.create_job("j", "compute", {}, status="running", host=socket.gethostname(), pid=os.getpid())
    report = Reporter(ws, "j", every_s=60)
    report("Per-example Fishers", 10, 100)
    report("Per-example Fishers", 20, 100)  # within the minute: not written
    job = get_job(ws, "j")
    assert (job.step, job.total, job.message) == (10, 100, "Per-example Fishers: 10/100")
    assert job.eta == pytest.approx(job.stage_elapsed * 90 / 10)
    report("Per-example Fishers", 100, 100)  # the end of a stage is always written
    report("NPEFF", 5, 50, "loss 1.5")  # so is a new stage
    job = get_job(ws, "j")
    assert (job.stage, job.step, job.total, job.message) == ("NPEFF", 5, 50, "NPEFF: 5/50 · loss 1.5")


def test_cancel_flag_stops_the_work_and_the_job_ends_cancelled(ws):
    ws.create_job("j", "compute", {}, status="running", host=socket.gethostname(), pid=os.getpid())
    with pytest.raises(JobCancelled, match="job j: cancelled; start it again to resume"):
        with tracked(ws, "j") as report:
            report.every_s = 0  # every report is written, and reads the flag
            report("Per-example Fishers", 1, 10)
            ws.request_job_cancel("j")
            report("Per-example Fishers", 2, 10)
            pytest.fail("the report after the cancel request did not raise")
    job = get_job(ws, "j")
    assert (job.status, job.error, job.cancel_requested, job.step) == ("cancelled", CANCELLED, True, 2)


def test_errors_fail_the_job_with_one_line_and_success_records_the_run(ws):
    with pytest.raises(ValueError):
        with own_job(ws, "pefs", {}):
            raise ValueError("n_components must be >= 1, got 0")
    with own_job(ws, "fit", {}) as report:
        report.result = "run123"
    failed, done = sorted(list_jobs(ws), key=lambda j: j.kind, reverse=True)
    assert (failed.status, failed.error) == ("failed", "n_components must be >= 1, got 0")
    assert (done.status, done.result, done.error) == ("complete", "run123", None)
    assert done.elapsed is not None and done.elapsed >= 0


def test_a_job_whose_process_is_gone_is_listed_failed(ws):
    ws.create_job("gone", "compute", {}, status="running", host=socket.gethostname(), pid=_dead_pid())
    ws.create_job("alive", "compute", {}, status="running", host=socket.gethostname(), pid=os.getpid())
    jobs = {job.id: job for job in list_jobs(ws)}
    assert (jobs["gone"].status, jobs["gone"].error) == ("failed", DIED)
    assert jobs["alive"].status == "running"
    ws.finish_job("gone", "complete", only_if_active=True)  # a dead job never becomes complete later
    assert get_job(ws, "gone").status == "failed"


def test_a_job_with_an_old_heartbeat_is_listed_failed(ws):
    ws.create_job("stale", "compute", {}, status="running", host="another-host", pid=1)
    with ws.connect() as con:
        con.execute("UPDATE jobs SET heartbeat = current_timestamp - INTERVAL 10 MINUTE WHERE id = 'stale'")
    assert (get_job(ws, "stale").status, get_job(ws, "stale").error) == ("failed", DIED)


def test_reading_a_job_leaves_the_workspace_free_for_its_worker(ws, tmp_path):
    """A page polling a demo build every second held the database between its reads, so the build's progress writes
    waited for it (the image demo's job: 33 s instead of 14 s)."""
    ws.create_job("j1", "demo", {"demo": "image"})
    for read in (lambda: get_job(ws, "j1"), lambda: list_jobs(ws)):
        read()
        write = ("import sys; from analysis.store import Workspace\n"
                 "Workspace(sys.argv[1], lock_timeout_s=0).job_heartbeat('j1')")
        done = subprocess.run([sys.executable, "-c", write, str(tmp_path / "ws")], capture_output=True, text=True,
                              timeout=120, cwd=Path(__file__).resolve().parents[2])
        assert done.returncode == 0, done.stderr[-500:]
