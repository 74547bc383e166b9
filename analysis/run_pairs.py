"""Which model and dataset a stored decomposition belongs to, by name and, where the workspace records them, as
the specs that load the pair again (a link to a run of another pair offers to open that pair)."""
from __future__ import annotations

from dataclasses import dataclass

from analysis.jobs import list_jobs, model_spec_from, dataset_spec_from
from analysis.loading import DatasetSpec, ModelSpec
from analysis.store import Run, Workspace


@dataclass(frozen=True)
class RunPair:
    """A run's model and dataset as the workspace names them, and their specs when a job recorded them."""

    model_name: str  # the registered model's name, else the start of its content hash
    dataset_name: str  # the registered dataset's name, else the start of its content hash
    model_source: str | None  # where the model was loaded from (a path or demo:<kind>); None when unregistered
    dataset_source: str | None
    specs: tuple[ModelSpec, DatasetSpec] | None  # what loads the pair; None when no job recorded it


def _job_specs(ws: Workspace, run: Run) -> tuple[ModelSpec, DatasetSpec] | None:
    """The specs of the newest complete job that computed the run or its PEF run (compute, pefs) or worked on
    it (sweep, perturb_all): each such job holds the pair it loaded."""
    produced = {run.id, run.summary.get("pefs_run")}
    for job in list_jobs(ws):  # newest first
        spec = job.spec
        if job.status == "complete" and {"model", "dataset"} <= set(spec) and (
                job.result in produced or spec.get("decomposition") == run.id):
            return model_spec_from(spec["model"]), dataset_spec_from(spec["dataset"])
    return None


def run_pair(ws: Workspace, run: Run) -> RunPair:
    """The names, sources and (when recorded) specs of the model and dataset a run was computed from."""
    model, dataset = ws.model_record(run.model_id), ws.dataset_record(run.dataset_id)
    return RunPair(model_name=model["name"] if model else run.model_id[:12],
                   dataset_name=dataset["name"] if dataset else run.dataset_id[:12],
                   model_source=model["source"] if model else None,
                   dataset_source=dataset["source"] if dataset else None,
                   specs=_job_specs(ws, run))
