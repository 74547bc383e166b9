"""Background jobs: heavy work in its own process, its progress in the workspace.

A job is one row of the workspace's `jobs` table (what to run as a JSON spec, status, progress, heartbeat,
process id, error, result) and one detached process, `python -m analysis.cli --workspace W job run ID`, with
its output in `<workspace>/jobs/<id>.log`. The dashboard starts jobs and watches the table, so a reload, a
second tab, a restarted server and the CLI all see the same list; the CLI's own `pefs` and `fit` add rows
for themselves. Cancel sets a flag that the worker's progress reports and heartbeats read (it then raises
`JobCancelled`: the job is cancelled, its run stays failed and resumable, never complete). A job whose
process is gone, or whose heartbeat is older than STALE_S, is marked failed when listed.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from analysis.errors import about, describe_error
from analysis.loading import DatasetSpec, ModelSpec
from analysis.models import ParamScope
from analysis.store import JOB_ACTIVE, Workspace, pid_alive, repeating

REPO = Path(__file__).resolve().parent.parent
PROGRESS_EVERY_S = 1.0  # progress is written at most this often (and at the end of each stage)
HEARTBEAT_S = 5.0  # a worker renews its heartbeat (and reads the cancel flag) this often
STALE_S = 120.0  # a running job without a heartbeat for this long is presumed dead
DIED = "worker process died (killed or crashed); start it again to resume"
CANCELLED = "cancelled; start it again to resume"


class JobCancelled(Exception):
    """Raised inside a job's work when its cancel flag is set."""


@dataclass(frozen=True)
class Job:
    """One background computation as the jobs table holds it (times in epoch seconds)."""

    id: str
    kind: str  # "compute" (PEFs then a fit), "pefs" or "fit" (the CLI's own commands)
    spec: dict
    status: str  # queued, running, complete, failed, cancelled
    step: int
    total: int | None
    message: str | None
    stage: str | None  # the current stage ("Per-example Fishers", "NPEFF"); step and total count within it
    created: float
    started: float | None
    heartbeat_age: float | None  # seconds since the last heartbeat
    finished: float | None
    stage_elapsed: float | None  # seconds since the stage began
    host: str | None
    pid: int | None
    cancel_requested: bool
    error: str | None
    result: str | None  # the id of the run the job produced
    now: float  # the database's clock when the row was read

    @classmethod
    def from_row(cls, row: tuple) -> Job:
        values = dict(zip([f.name for f in fields(cls)], row))
        values["spec"] = json.loads(values["spec"] or "{}")
        values["cancel_requested"] = bool(values["cancel_requested"])
        return cls(**values)

    @property
    def active(self) -> bool:
        return self.status in JOB_ACTIVE

    @property
    def elapsed(self) -> float | None:
        """Seconds since the job started (until it finished)."""
        if self.started is None:
            return None
        return (self.finished if self.finished is not None else self.now) - self.started

    @property
    def fraction(self) -> float:
        """Progress of the current stage, 0..1."""
        return min(self.step / self.total, 1.0) if self.total else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left in the current stage: elapsed × (total − step) / step; None before the first step."""
        if self.status != "running" or not self.total or self.step <= 0 or self.stage_elapsed is None:
            return None
        return self.stage_elapsed * (self.total - self.step) / self.step


# ------------------------------------------------------------------------------------------------ specs

def spec_dict(spec: ModelSpec | DatasetSpec) -> dict:
    """A model or dataset spec as JSON data (tuples as lists), as the jobs table holds it."""
    return json.loads(json.dumps(asdict(spec)))


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def model_spec_from(data: dict) -> ModelSpec:
    """The ModelSpec `spec_dict` wrote (lists back to tuples, the scope back to a ParamScope)."""
    names = {f.name for f in fields(ModelSpec)}
    values = {k: _tuples(v) for k, v in data.items() if k in names}
    values["scope"] = ParamScope(**data.get("scope", {}))
    return ModelSpec(**values)


def dataset_spec_from(data: dict) -> DatasetSpec:
    """The DatasetSpec `spec_dict` wrote."""
    names = {f.name for f in fields(DatasetSpec)}
    return DatasetSpec(**{k: _tuples(v) for k, v in data.items() if k in names})


def compute_spec(model: ModelSpec, dataset: DatasetSpec, *, pefs: dict, fit: dict | None) -> dict:
    """A "compute" job: PEFs of the pair with `pefs` (pefs_run's settings: kind, n_values_per_example,
    top_k_classes, batch_size), then, unless fit is None, an NPEFF fit with `fit` (fit_run's settings)."""
    return {"model": spec_dict(model), "dataset": spec_dict(dataset), "pefs": pefs, "fit": fit}


# ------------------------------------------------------------------------------------------- the table

def get_job(ws: Workspace, job_id: str) -> Job:
    """The job, marked failed first when its process died."""
    job = Job.from_row(ws.job_row(job_id))
    if _is_dead(job):
        ws.finish_job(job.id, "failed", error=DIED, only_if_active=True)
        job = Job.from_row(ws.job_row(job_id))
    return job


def list_jobs(ws: Workspace) -> list[Job]:
    """Every job, newest first; active jobs whose process died are marked failed on the way."""
    jobs = [Job.from_row(row) for row in ws.job_rows()]
    dead = [job.id for job in jobs if _is_dead(job)]
    for job_id in dead:
        ws.finish_job(job_id, "failed", error=DIED, only_if_active=True)
    if dead:
        jobs = [Job.from_row(row) for row in ws.job_rows()]
    ws.close()  # let the workers write meanwhile
    return jobs


def _process_gone(pid: int) -> bool:
    """No process with this id, or only its zombie (killed, not yet reaped by its parent)."""
    if not pid_alive(pid):
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _is_dead(job: Job) -> bool:
    """An active job whose process of this host is gone, or whose heartbeat is older than STALE_S."""
    if not job.active:
        return False
    if job.pid is not None and job.host == socket.gethostname() and _process_gone(job.pid):
        return True
    return job.heartbeat_age is not None and job.heartbeat_age > STALE_S


def cancel_job(ws: Workspace, job_id: str) -> None:
    """Ask the job to stop (it ends `cancelled` at its next progress report or heartbeat)."""
    ws.request_job_cancel(job_id)


def log_path(root: Path | str, job_id: str) -> Path:
    return Path(root) / "jobs" / f"{job_id}.log"


def start_job(ws: Workspace, kind: str, spec: dict) -> Job:
    """Queue a job and start its worker process, detached (its own session), output in jobs/<id>.log."""
    job_id = uuid.uuid4().hex[:12]
    ws.create_job(job_id, kind, spec)
    _spawn(ws, job_id)
    return get_job(ws, job_id)


def restart_job(ws: Workspace, job_id: str) -> Job:
    """Run a failed or cancelled job again (same id and spec); its runs resume where they stopped."""
    job = get_job(ws, job_id)
    if job.active or job.status == "complete":
        raise ValueError(f"job {job_id} is {job.status}; only failed or cancelled jobs start again")
    ws.requeue_job(job_id)
    _spawn(ws, job_id)
    return get_job(ws, job_id)


def _spawn(ws: Workspace, job_id: str) -> None:
    log = log_path(ws.root, job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    ws.close()  # the worker opens the database next
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "analysis.cli", "--workspace", str(ws.root), "job", "run",
                                 job_id], cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    ws.set_job_pid(job_id, socket.gethostname(), proc.pid)
    # reap it when it ends, so a killed worker does not linger as a zombie that looks alive
    threading.Thread(target=proc.wait, name=f"reap-{job_id}", daemon=True).start()


# ------------------------------------------------------------------------------------------ the worker

class Reporter:
    """What a job's work reports progress through: throttled writes to the job row, and the cancel check."""

    def __init__(self, ws: Workspace, job_id: str, *, every_s: float = PROGRESS_EVERY_S):
        self.ws, self.job_id, self.every_s = ws, job_id, every_s
        self.cancelled = threading.Event()
        self.result: str | None = None  # the run id the work produced, set by the block `tracked` wraps
        self._last = 0.0
        self._stage: str | None = None

    def check(self) -> None:
        """Raise JobCancelled when cancel was requested."""
        if self.cancelled.is_set():
            raise JobCancelled(f"job {self.job_id}: {CANCELLED}")

    def __call__(self, stage: str, step: int, total: int | None, detail: str = "") -> None:
        """Progress of a stage; written when a second has passed, the stage changed or it is at its end."""
        self.check()
        now = time.monotonic()
        if now - self._last < self.every_s and stage == self._stage and step != total:
            return
        self._last, self._stage = now, stage
        counted = f"{step:,}/{total:,}" if total else f"{step:,}"
        message = f"{stage}: {counted}{f' · {detail}' if detail else ''}"
        try:
            if self.ws.job_progress(self.job_id, step, total, message, stage):
                self.cancelled.set()
        except RuntimeError:  # the workspace is briefly locked by another process: report at the next step
            return
        finally:
            self.ws.close()  # let the dashboard read meanwhile
        self.check()

    def heartbeats(self):
        """Renew the heartbeat and read the cancel flag every HEARTBEAT_S seconds while the block runs."""
        def beat() -> None:
            if self.ws.job_heartbeat(self.job_id):
                self.cancelled.set()

        return repeating(HEARTBEAT_S, beat, f"job-{self.job_id}")


@contextmanager
def tracked(ws: Workspace, job_id: str) -> Iterator[Reporter]:
    """The lifecycle of a running job's work: heartbeats while the block runs, then complete (the block sets
    `reporter.result`), cancelled (JobCancelled) or failed with the one-line error; errors are re-raised."""
    reporter = Reporter(ws, job_id)
    try:
        with reporter.heartbeats():
            yield reporter
    except JobCancelled:
        ws.finish_job(job_id, "cancelled", error=CANCELLED)
        raise
    except BaseException as e:
        ws.finish_job(job_id, "failed", error=describe_error(e))
        raise
    ws.finish_job(job_id, "complete", result=reporter.result)


@contextmanager
def own_job(ws: Workspace, kind: str, spec: dict) -> Iterator[Reporter]:
    """A job row for work this process does itself (the CLI's pefs and fit), tracked like a worker's."""
    job_id = uuid.uuid4().hex[:12]
    ws.create_job(job_id, kind, spec, status="running", host=socket.gethostname(), pid=os.getpid())
    with tracked(ws, job_id) as reporter:
        yield reporter


def run_job(ws: Workspace, job_id: str) -> Job:
    """The worker: claim the queued job and run its spec. A job cancelled before it started ends cancelled."""
    job = get_job(ws, job_id)
    if not ws.claim_job(job_id, socket.gethostname(), os.getpid()):
        job = get_job(ws, job_id)
        if job.active:  # cancel requested while queued
            ws.finish_job(job_id, "cancelled", error=CANCELLED)
            raise JobCancelled(f"job {job_id}: {CANCELLED}")
        raise ValueError(f"job {job_id} is {job.status}, not queued; start it again from the Jobs page")
    if job.kind not in KINDS:
        ws.finish_job(job_id, "failed", error=f"unknown job kind '{job.kind}'; known: {sorted(KINDS)}")
        raise ValueError(f"job {job_id}: kind must be one of {sorted(KINDS)}, got '{job.kind}'")
    with tracked(ws, job_id) as reporter:
        reporter.result = KINDS[job.kind](ws, job.spec, reporter)
    return get_job(ws, job_id)


def load_pair(ws: Workspace, model_spec: ModelSpec, dataset_spec: DatasetSpec, reporter: Reporter):
    """Build a demo if needed, then load, check and register the pair as the dashboard does."""
    from analysis.demos import build_demo, demo_folder
    from analysis.loading import check_pair, load_dataset_spec, load_model_spec, pair_dataset, register_pair

    if model_spec.demo:
        build_demo(model_spec.demo, ws.root, lambda frac, msg: reporter("Demo", int(100 * frac), 100, msg[:60]))
    with about(demo_folder(model_spec.demo, ws.root) if model_spec.demo else model_spec.source):
        model = load_model_spec(model_spec, ws.root)
    with about(dataset_spec.source):
        dataset = pair_dataset(model, load_dataset_spec(dataset_spec))
        check_pair(model, dataset)
    register_pair(ws, model, dataset, model_spec.source)
    return model, dataset


def _run_compute(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """PEFs of the spec's pair, then its fit when it has one; the id of the last run."""
    from analysis.runs import fit_run, pefs_run

    reporter("Loading model and dataset", 0, None)
    model_spec = model_spec_from(spec["model"])
    model, dataset = load_pair(ws, model_spec, dataset_spec_from(spec["dataset"]), reporter)
    with about(model.name):
        pefs = pefs_run(ws, model, dataset, **spec["pefs"],
                        progress=lambda done, total: reporter("Per-example Fishers", done, total))
    if spec.get("fit") is None:
        return pefs.id

    def on_fit(done: int, total: int, loss: float | None) -> None:
        reporter("NPEFF", done, total, "" if loss is None else f"loss {loss:.4g}")

    with about(f"PEF run {pefs.id}"):
        return fit_run(ws, pefs, progress=on_fit, **spec["fit"]).id


def _run_fit(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """The CLI's `fit`: an NPEFF fit of a stored PEF run."""
    from analysis.runs import fit_run

    pefs = ws.get_run(spec["pefs_run"])
    with about(f"PEF run {pefs.id}"):
        return fit_run(ws, pefs, device=spec.get("device"), **spec["fit"],
                       progress=lambda done, total, loss: reporter("NPEFF", done, total,
                                                                   "" if loss is None else f"loss {loss:.4g}")).id


# what each job kind runs: (workspace, spec, reporter) -> the id of the run it produced
KINDS: dict[str, Callable[[Workspace, dict, Reporter], str | None]] = {
    "compute": _run_compute, "pefs": _run_compute, "fit": _run_fit}
