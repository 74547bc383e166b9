"""A stored run's model and dataset: names from the workspace, specs from the job that computed or used it."""
import numpy as np

from analysis.jobs import compute_spec, perturb_spec
from analysis.loading import DatasetSpec, ModelSpec
from analysis.models import ParamScope
from analysis.run_pairs import run_pair
from analysis.store import Workspace

MODEL = ModelSpec(source="/data/ckpt.zip", scope=ParamScope("last_layers", n_layers=1), adapter="image-classification")
DATASET = DatasetSpec(source="/data/shapes", label_names=("cat", "dog"))


def _runs(ws: Workspace, tag: str):
    """A PEF run and a decomposition of it, of model m-<tag> on dataset d-<tag>."""
    ids = {"model_id": f"m-{tag}", "dataset_id": f"d-{tag}"}
    pefs = ws.start_run("pefs", {"tag": tag}, **ids)
    ws.complete_run(pefs.id, {"n_examples": 2})
    fit = ws.start_run("npeff-lrm", {"tag": tag}, **ids)
    ws.complete_run(fit.id, {"pefs_run": pefs.id, "n_components": 2})
    return pefs, ws.get_run(fit.id)


def _job(ws: Workspace, job_id: str, kind: str, spec: dict, result: str | None, status: str = "complete") -> None:
    ws.create_job(job_id, kind, spec, status="running", host="here", pid=1)
    ws.finish_job(job_id, status, result=result)


def test_names_and_specs_come_from_the_registry_and_the_job_that_computed_the_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.register_model(id="m-a", name="tiny-vit", source=MODEL.source, input_kind="image", label_names=["cat", "dog"],
                      n_parameters=10)
    ws.register_dataset(id="d-a", name="shapes", source="shapes", input_kind="image", label_names=["cat", "dog"],
                        texts=None, labels=np.array([0, 1]))
    pefs, fit = _runs(ws, "a")
    pair = run_pair(ws, fit)
    assert (pair.model_name, pair.dataset_name, pair.model_source, pair.dataset_source) == (
        "tiny-vit", "shapes", MODEL.source, "shapes")
    assert pair.specs is None  # computed from the command line: nothing says how to load it
    other = ModelSpec(source="/data/other.zip")
    _job(ws, "j-other", "compute", compute_spec(other, DATASET, pefs={"kind": "lrm"}, fit=None), "unrelated")
    _job(ws, "j-failed", "compute", compute_spec(other, DATASET, pefs={"kind": "lrm"}, fit=None), fit.id, "failed")
    assert run_pair(ws, fit).specs is None
    _job(ws, "j-pefs", "pefs", compute_spec(MODEL, DATASET, pefs={"kind": "lrm"}, fit=None), pefs.id)
    assert run_pair(ws, fit).specs == (MODEL, DATASET)  # the specs read back equal, tuples and scope included


def test_a_perturbation_job_on_the_run_also_records_its_pair_and_unregistered_pairs_are_named_by_hash(tmp_path):
    ws = Workspace(tmp_path / "ws")
    _, fit = _runs(ws, "b")
    _job(ws, "j-sweep", "sweep", perturb_spec(MODEL, DATASET, fit.id, {"k": 0}), "sweep-run")
    pair = run_pair(ws, fit)
    assert (pair.model_name, pair.dataset_name, pair.model_source) == ("m-b", "d-b", None)
    assert pair.specs == (MODEL, DATASET)
