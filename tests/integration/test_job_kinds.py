"""Each job kind beyond compute, run in-process through run_job on a copy of the image demo (seconds each)."""
import shutil

import numpy as np
import pytest

import analysis.embedding
from analysis.demos import demo_folder, load_demo
from analysis.embedding import stored_umap
from analysis.jobs import (CANCELLED, KINDS, JobCancelled, Reporter, coefficients_spec, demo_spec, find_job,
                           get_job, perturb_spec, run_job, start_or_reuse_job, umap_spec, zonotope_spec)
from analysis.loading import demo_specs
from analysis.perturb.runs import load_perturb_all, load_sweep
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace
from analysis.zonotope.data import figure1
from analysis.zonotope.experiments import width_study

PERTURB = {"top_n": 10, "baseline_n": 10, "seed": 0, "max_sim": None}


@pytest.fixture(scope="module")
def image(image_workspace, tmp_path_factory):
    """A workspace holding a copy of the image demo, its PEFs and a small LRM fit: (workspace, pefs, fit)."""
    root = tmp_path_factory.mktemp("kinds") / "ws"
    shutil.copytree(demo_folder("image", image_workspace), demo_folder("image", root))
    model, dataset, _ = load_demo("image", root)
    ws = Workspace(root)
    pefs = pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=200)
    fit = fit_run(ws, pefs, n_components=4, n_iters=20)
    ws.close()
    return ws, pefs, fit


def _run(ws: Workspace, kind: str, spec: dict):
    """Queue a job and run it in this process, as its worker would."""
    job_id = f"{kind}-{len(ws.job_rows())}"
    ws.create_job(job_id, kind, spec)
    return run_job(ws, job_id)


def test_a_demo_job_of_a_built_demo_completes_and_an_active_one_is_reused(image):
    ws, _, _ = image
    job = _run(ws, "demo", demo_spec("image"))
    assert (job.status, job.result, job.error) == ("complete", None, None)
    ws.create_job("waiting", "demo", demo_spec("planted"))
    assert start_or_reuse_job(ws, "demo", demo_spec("planted")).id == "waiting"  # not a second build
    assert find_job(ws, "demo", demo_spec("text")) is None
    ws.finish_job("waiting", "cancelled", error=CANCELLED)


def test_a_demo_build_is_cancelled_at_its_first_progress_report(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.create_job("c", "demo", demo_spec("image"), status="running")
    reporter = Reporter(ws, "c")
    reporter.cancelled.set()  # what a heartbeat does when the Jobs page pressed Cancel
    with pytest.raises(JobCancelled, match="job c: cancelled; start it again to resume"):
        KINDS["demo"].run(ws, demo_spec("image"), reporter)
    assert list((tmp_path / "ws" / "demos").iterdir()) == []  # the half-built folder is removed


def test_sweep_and_perturb_all_jobs_store_their_tables(image):
    ws, _, fit = image
    model_spec, dataset_spec = demo_specs("image")
    sweep = _run(ws, "sweep", perturb_spec(model_spec, dataset_spec, fit.id,
                                           {"k": 1, "magnitudes": [0.5, 2.0], "sign": 1, **PERTURB}))
    assert sweep.status == "complete" and sweep.stage == "Sweep"
    assert [r.magnitude for r in load_sweep(ws, ws.get_run(sweep.result))] == [0.5, 2.0]
    everything = _run(ws, "perturb_all", perturb_spec(model_spec, dataset_spec, fit.id, {"magnitude": 1.0, **PERTURB}))
    assert everything.status == "complete" and everything.message == "Perturb all: 4/4 · components"
    assert len(load_perturb_all(ws, ws.get_run(everything.result))) == 4


def test_a_perturb_job_with_a_bad_setting_fails_with_one_line(image):
    ws, _, fit = image
    model_spec, dataset_spec = demo_specs("image")
    with pytest.raises(TypeError):
        _run(ws, "perturb_all", perturb_spec(model_spec, dataset_spec, fit.id, {"magnitude": 1.0, "nope": 1}))
    failed = next(job for job in (get_job(ws, row[0]) for row in ws.job_rows()) if job.status == "failed")
    assert "nope" in failed.error and "\n" not in failed.error


def test_a_umap_job_stores_the_map(image, monkeypatch):
    ws, _, fit = image
    # the plumbing, not UMAP itself (its first fit in a process takes ~30 s): the first two coefficients
    monkeypatch.setattr(analysis.embedding, "fit_umap", lambda W, **settings: np.asarray(W[:, :2], np.float32))
    settings = {"n_neighbors": 5, "min_dist": 0.1}
    assert stored_umap(ws, fit, **settings) is None
    job = _run(ws, "umap", umap_spec(fit.id, settings))
    assert job.status == "complete" and job.message == "UMAP: 1/1"
    assert stored_umap(ws, fit, **settings).shape == (500, 2)


def test_zonotope_jobs_store_the_experiments(tmp_path):
    ws = Workspace(tmp_path / "ws")
    X, y = figure1()
    params = {"data": "figure1", "widths": [1, 2], "samples": 10}
    job = _run(ws, "zonotope", zonotope_spec("zonotope-width-study", X, y, params))
    assert job.status == "complete" and job.stage == "Zonotope"
    stored = ws.load_array(job.result, "2", mmap=False)
    np.testing.assert_allclose(stored, width_study(X, y, [1, 2], 10)[2])  # seeded: the same samples
    job = _run(ws, "zonotope", zonotope_spec("zonotope-greedy-vs-gd", X, y, {"data": "figure1", "m": 2, "seeds": 2}))
    assert job.status == "complete"
    assert ws.load_array(job.result, "seed", mmap=False).tolist() == [0, 1]
    with pytest.raises(ValueError, match="zonotope experiment must be one of \\['zonotope-greedy-vs-gd', "
                                         "'zonotope-width-study'\\], got 'nope'"):
        _run(ws, "zonotope", zonotope_spec("nope", X, y, {}))


def test_a_coefficients_job_fits_a_pef_run_against_a_decomposition(image):
    ws, pefs, fit = image
    job = _run(ws, "coefficients", coefficients_spec(fit.id, pefs.id, {"n_iters": 5, "seed": 0}))
    assert job.status == "complete" and job.stage == "Coefficients"
    W = ws.load_array(job.result, "W", mmap=False)
    assert W.shape == (500, 4) and (W >= 0).all()
