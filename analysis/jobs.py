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


def demo_spec(demo: str) -> dict:
    """A "demo" job: build the demo checkpoint `demo` (text, image, planted) under the workspace."""
    return {"demo": demo}


def perturb_spec(model: ModelSpec, dataset: DatasetSpec, decomposition: str, settings: dict) -> dict:
    """A "sweep" or "perturb_all" job: the pair, the decomposition run id and the keyword arguments of
    sweep_run (k, magnitudes, sign, ...) or perturb_all_run (magnitude, ...), passed through unchanged."""
    return json.loads(json.dumps({"model": spec_dict(model), "dataset": spec_dict(dataset),
                                  "decomposition": decomposition, "settings": settings}))


def umap_spec(decomposition: str, settings: dict) -> dict:
    """A "umap" job: the example map of a decomposition run with umap_coordinates' settings."""
    return {"decomposition": decomposition, "settings": settings}


def zonotope_spec(experiment: str, X, y, params: dict) -> dict:
    """A "zonotope" job: an experiment of ZONOTOPE_EXPERIMENTS on points X [n, d], targets y [n], stored under
    (experiment, params)."""
    return json.loads(json.dumps({"experiment": experiment, "X": [[float(v) for v in row] for row in X],
                                  "y": [float(v) for v in y], "params": params}))


def seeds_spec(decomposition: str, seeds: list[int]) -> dict:
    """A "seeds" job: refit decomposition run `decomposition`'s PEFs with its settings once per seed."""
    return {"decomposition": decomposition, "seeds": [int(s) for s in seeds]}


def highlights_spec(model: ModelSpec, dataset: DatasetSpec, decomposition: str, component: int, n: int) -> dict:
    """A "highlights" job: token (pixel) highlights of the top n examples of a component of the decomposition run
    (analysis.highlights.highlights_run)."""
    return perturb_spec(model, dataset, decomposition, {"component": int(component), "n": int(n)})


def coefficients_spec(decomposition: str, pefs: str, settings: dict) -> dict:
    """A "coefficients" job: coefficients_run of PEF run `pefs` against decomposition run `decomposition`."""
    return {"decomposition": decomposition, "pefs": pefs, "settings": settings}


# ------------------------------------------------------------------------------------------- the table

def get_job(ws: Workspace, job_id: str) -> Job:
    """The job, marked failed first when its process died."""
    job = Job.from_row(ws.job_row(job_id))
    if _is_dead(job):
        ws.finish_job(job.id, "failed", error=DIED, only_if_active=True)
        job = Job.from_row(ws.job_row(job_id))
    ws.close()  # a page polling a job every second held the file between its reads: the job's writes waited
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


def active_jobs(ws: Workspace) -> list[Job]:
    """The queued and running jobs, newest first (one query; those whose process died are marked failed)."""
    alive = []
    for job in (Job.from_row(row) for row in ws.job_rows(JOB_ACTIVE)):
        if _is_dead(job):
            ws.finish_job(job.id, "failed", error=DIED, only_if_active=True)
        else:
            alive.append(job)
    ws.close()
    return alive


def find_job(ws: Workspace, kind: str, spec: dict, *, active_only: bool = False) -> Job | None:
    """The newest job of this kind and spec (only a queued or running one with active_only), or None: a page
    reuses it instead of starting the same work twice, and shows a complete one's result without a job."""
    wanted = json.loads(json.dumps(spec))
    for job in list_jobs(ws):
        if job.kind == kind and job.spec == wanted and (job.active or not active_only):
            return job
    return None


def start_or_reuse_job(ws: Workspace, kind: str, spec: dict) -> Job:
    """The active job of this kind and spec when there is one (another tab started it), else a new one."""
    return find_job(ws, kind, spec, active_only=True) or start_job(ws, kind, spec)


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
        reporter.result = KINDS[job.kind].run(ws, job.spec, reporter)
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

    from analysis.job_points import FitRecorder

    on_fit = FitRecorder(ws, reporter)  # reports progress and records the losses for the live curve

    with about(f"PEF run {pefs.id}"):
        return fit_run(ws, pefs, progress=on_fit, **spec["fit"]).id


def _run_fit(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """The CLI's `fit`: an NPEFF fit of a stored PEF run."""
    from analysis.job_points import FitRecorder
    from analysis.runs import fit_run

    pefs = ws.get_run(spec["pefs_run"])
    with about(f"PEF run {pefs.id}"):
        return fit_run(ws, pefs, device=spec.get("device"), **spec["fit"], progress=FitRecorder(ws, reporter)).id


def _pair(ws: Workspace, spec: dict, reporter: Reporter):
    """The spec's model and dataset, loaded and checked (a demo built first when needed)."""
    reporter("Loading model and dataset", 0, None)
    return load_pair(ws, model_spec_from(spec["model"]), dataset_spec_from(spec["dataset"]), reporter)


def _run_demo(ws: Workspace, spec: dict, reporter: Reporter) -> None:
    """Build a demo checkpoint under the workspace once (analysis.demos.build_demo guards its folder)."""
    from analysis.demos import build_demo

    build_demo(spec["demo"], ws.root, lambda frac, msg: reporter("Demo", int(100 * min(frac, 1.0)), 100, msg[:60]))


def _run_sweep(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """A magnitude sweep of one component (analysis.perturb.runs.sweep_run with the spec's settings)."""
    from analysis.perturb.runs import sweep_run

    model, dataset = _pair(ws, spec, reporter)
    return sweep_run(ws, model, dataset, ws.get_run(spec["decomposition"]), **spec["settings"],
                     progress=lambda done, total: reporter("Sweep", done, total, "magnitudes")).id


def _run_perturb_all(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """Every component at one magnitude (analysis.perturb.runs.perturb_all_run with the spec's settings)."""
    from analysis.perturb.runs import perturb_all_run

    model, dataset = _pair(ws, spec, reporter)
    return perturb_all_run(ws, model, dataset, ws.get_run(spec["decomposition"]), **spec["settings"],
                           progress=lambda done, total: reporter("Perturb all", done, total, "components")).id


def _run_umap(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """The example map of a decomposition (analysis.embedding.umap_coordinates), stored once per settings."""
    from analysis.embedding import UMAP_KIND, umap_coordinates, umap_params
    from analysis.runs import load_decomposition

    run = ws.get_run(spec["decomposition"])
    reporter("UMAP", 0, 1, "fitting")
    umap_coordinates(ws, run, load_decomposition(ws, run).W, **spec["settings"])
    reporter("UMAP", 1, 1)
    return ws.find_run(UMAP_KIND, umap_params(run, **spec["settings"])).id


def _greedy_vs_gd(X, y, params: dict, progress) -> dict:
    from analysis.zonotope.experiments import greedy_vs_gd

    table = greedy_vs_gd(X, y, params["m"], range(params["seeds"]), progress=progress)
    return {column: values.to_numpy() for column, values in table.items()}


def _width_study(X, y, params: dict, progress) -> dict:
    from analysis.zonotope.experiments import width_study

    return {str(w): v for w, v in width_study(X, y, params["widths"], params["samples"], progress=progress).items()}


# the Zonotope page's experiments: stored-arrays kind -> (X [n, d], y [n], params, progress) -> arrays
ZONOTOPE_EXPERIMENTS: dict[str, Callable[..., dict]] = {
    "zonotope-greedy-vs-gd": _greedy_vs_gd, "zonotope-width-study": _width_study}


def _run_zonotope(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """A Zonotope-page experiment on the spec's points, stored with analysis.runs.cached_arrays."""
    import numpy as np

    from analysis.runs import cached_arrays

    experiment, params = spec["experiment"], spec["params"]
    if experiment not in ZONOTOPE_EXPERIMENTS:
        raise ValueError(f"zonotope experiment must be one of {sorted(ZONOTOPE_EXPERIMENTS)}, got '{experiment}'")
    X, y = np.asarray(spec["X"], dtype=float), np.asarray(spec["y"], dtype=float)
    cached_arrays(ws, experiment, params, lambda: ZONOTOPE_EXPERIMENTS[experiment](
        X, y, params, lambda done, total: reporter("Zonotope", done, total)))
    return ws.find_run(experiment, params).id


def _run_coefficients(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """The CLI's fit-coeffs: coefficients of a PEF run's examples against a fixed decomposition."""
    from analysis.runs import coefficients_run

    return coefficients_run(ws, ws.get_run(spec["decomposition"]), ws.get_run(spec["pefs"]), **spec["settings"],
                            progress=lambda done, total, loss: reporter("Coefficients", done, total)).id


def _run_seeds(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """The same fit with other seeds (each a normal stored decomposition run); the id of the last one."""
    from analysis.compare import fit_settings
    from analysis.runs import fit_run

    reference = ws.get_run(spec["decomposition"])
    pefs = ws.get_run(reference.summary["pefs_run"])
    settings, seeds = fit_settings(reference), spec["seeds"]
    if not seeds:
        raise ValueError(f"seeds must list at least one seed to fit run {reference.id} with, got none")
    run_id = reference.id
    for i, seed in enumerate(seeds, start=1):
        stage = f"Seed {seed} ({i}/{len(seeds)})"
        with about(f"PEF run {pefs.id}"):
            run_id = fit_run(ws, pefs, **{**settings, "seed": seed},
                             progress=lambda done, total, _loss, stage=stage: reporter(stage, done, total)).id
    return run_id


def _run_highlights(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """Highlights of a component's top examples, stored once per decomposition, component and n."""
    from analysis.highlights import KIND, highlight_params, highlights_run

    model, dataset = _pair(ws, spec, reporter)
    run, settings = ws.get_run(spec["decomposition"]), spec["settings"]
    highlights_run(ws, model, dataset, run, settings["component"], settings["n"],
                   progress=lambda done, total: reporter("Highlights", done, total, "examples"))
    return ws.find_run(KIND, highlight_params(run, settings["component"], settings["n"])).id


def _run_merge(ws: Workspace, spec: dict, reporter: Reporter) -> str:
    """A merge sweep (analysis.merge.runs.merge_run) of the spec's parents; its demo is built first."""
    from analysis.demos import build_demo
    from analysis.merge.runs import merge_run
    from analysis.merge.specs import load_parent, parents_from, settings_from

    if spec.get("demo"):
        build_demo(spec["demo"], ws.root, lambda frac, msg: reporter("Demo", int(100 * min(frac, 1.0)), 100, msg[:60]))
    reporter("Loading models and datasets", 0, None)
    parents = [load_parent(ws, parent) for parent in parents_from(spec)]
    return merge_run(ws, parents, settings_from(spec["settings"]), progress=reporter).id


@dataclass(frozen=True)
class JobKind:
    """A kind of job: what it runs ((workspace, spec, reporter) -> the id of the run it produced, or None)
    and its title on job cards."""

    run: Callable[[Workspace, dict, Reporter], str | None]
    title: str


KINDS: dict[str, JobKind] = {
    "compute": JobKind(_run_compute, "PEFs + NPEFF fit"),
    "pefs": JobKind(_run_compute, "PEFs (command line)"),
    "fit": JobKind(_run_fit, "NPEFF fit (command line)"),
    "demo": JobKind(_run_demo, "Demo build"),
    "sweep": JobKind(_run_sweep, "Perturbation sweep"),
    "perturb_all": JobKind(_run_perturb_all, "Perturb all components"),
    "umap": JobKind(_run_umap, "Example map (UMAP)"),
    "zonotope": JobKind(_run_zonotope, "Zonotope experiment"),
    "coefficients": JobKind(_run_coefficients, "Coefficient fit"),
    "seeds": JobKind(_run_seeds, "Fit more seeds"),
    "highlights": JobKind(_run_highlights, "Token highlights"),
    "merge": JobKind(_run_merge, "Model merging sweep"),
}
