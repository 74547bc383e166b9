"""Background jobs as real worker processes on copies of the demos: kill -9 mid-way, resume, the CLI's list."""
import os
import shutil
import signal
import time

import pytest

from analysis.cli import main
from analysis.demos import RT_LABELS
from analysis.jobs import DIED, compute_spec, get_job, list_jobs, restart_job, start_job
from analysis.loading import DatasetSpec, demo_specs, load_dataset_spec, load_model_spec
from analysis.runs import pefs_settings
from analysis.store import Workspace
from benchmarks.bench_pefs_torchrun import slice_csv

# the text model's PEFs take ~0.05 s per review on 2 cores: a kill lands mid-way through 320 reviews (the image
# demo's 500 digits can finish between two progress reports)
PEFS = {"kind": "lrm", "n_values_per_example": 2048, "top_k_classes": None, "batch_size": 16, "chunk_size": 64}
N_REVIEWS = 320


@pytest.fixture
def image_ws(demo_workspace, tmp_path):
    """A fresh workspace holding only a copy of the image demo."""
    root = tmp_path / "ws"
    shutil.copytree(demo_workspace / "demos" / "image-demo", root / "demos" / "image-demo")
    return root


@pytest.fixture
def text_ws(demo_workspace, tmp_path):
    """A fresh workspace holding only a copy of the text demo."""
    root = tmp_path / "ws"
    shutil.copytree(demo_workspace / "demos" / "text-demo", root / "demos" / "text-demo")
    return root


def _wait(ws: Workspace, job_id: str, done, timeout_s: float = 180):
    deadline = time.monotonic() + timeout_s
    while not done(job := get_job(ws, job_id)):
        assert time.monotonic() < deadline, f"job {job_id} is still {job.status}: {job.message}"
        ws.close()  # let the worker write
        time.sleep(0.3)
    return job


def test_a_killed_worker_leaves_the_job_failed_and_it_resumes_when_started_again(text_ws):
    ws = Workspace(text_ws)
    reviews = slice_csv(N_REVIEWS, text_ws / "reviews.csv")  # the text demo's first reviews, as a user's CSV
    data_spec = DatasetSpec(str(reviews), text_columns=("text",), label_column="label", label_names=tuple(RT_LABELS))
    job = start_job(ws, "compute", compute_spec(demo_specs("text")[0], data_spec, pefs=PEFS, fit=None))
    running = _wait(ws, job.id, lambda j: j.stage == "Per-example Fishers" and j.step >= 192 or not j.active)
    assert running.status == "running" and running.step < running.total, running
    os.kill(running.pid, signal.SIGKILL)

    dead = _wait(ws, job.id, lambda j: not j.active, timeout_s=10)
    assert (dead.status, dead.error, dead.result) == ("failed", DIED, None)
    assert [j.status for j in list_jobs(ws)] == ["failed"]
    model, dataset = load_model_spec(demo_specs("text")[0], text_ws), load_dataset_spec(data_spec)
    run = ws.find_run("pefs", pefs_settings(model, dataset, kind="lrm", n_values_per_example=2048,
                                            top_k_classes=None))
    assert run is not None and run.status != "complete"
    chunks_before = ws.finished_chunks(run.id)
    assert chunks_before, "at least one chunk was durable before the kill"

    restart_job(ws, job.id)
    done = _wait(ws, job.id, lambda j: not j.active)
    assert (done.status, done.error, done.result) == ("complete", None, run.id), (text_ws / "jobs").glob("*.log")
    assert ws.get_run(run.id).status == "complete"
    log = (text_ws / "jobs" / f"{job.id}.log").read_text()
    assert "job " + job.id + ": complete" in log


def test_cli_pefs_appears_in_the_jobs_list(image_ws, capsys):
    command = ["--workspace", str(image_ws), "pefs", "--demo", "image", "--kind", "diag",
               "--values-per-example", "100", "--yes"]
    assert main(command) == 0
    run_id = capsys.readouterr().out.split("PEF run ")[1].split(":")[0]
    assert main(["--workspace", str(image_ws), "jobs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 1 and " pefs " in listed[0] and " complete " in listed[0], listed
    assert listed[0].endswith(f"-> run {run_id}")
    (job,) = list_jobs(Workspace(image_ws))
    assert (job.kind, job.status, job.result, job.pid) == ("pefs", "complete", run_id, os.getpid())
    assert job.spec["pefs"]["kind"] == "diag" and job.spec["model"]["source"] == "demo:image"
