"""A real fit job records its losses by iteration while it runs; the live view reads them back."""
import shutil

import numpy as np
import pytest

from analysis.demos import load_demo
from analysis.job_points import LOSS, live_fit
from analysis.jobs import get_job, run_job
from analysis.runs import load_decomposition, pefs_run
from analysis.store import Workspace


@pytest.fixture
def image_ws(image_workspace, tmp_path):
    """A fresh workspace holding only a copy of the image demo."""
    root = tmp_path / "ws"
    shutil.copytree(image_workspace / "demos" / "image-demo", root / "demos" / "image-demo")
    return root


def test_a_fit_job_records_its_losses_at_their_iterations(image_ws):
    ws = Workspace(image_ws)
    model, dataset, _ = load_demo("image", image_ws)
    pefs = pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=100)
    fit = {"n_components": 3, "n_iters": 30, "n_iters_g_only": 10, "seed": 0}
    ws.create_job("fitjob", "fit", {"pefs_run": pefs.id, "fit": fit})
    job = run_job(ws, "fitjob")
    assert job.status == "complete"
    steps, losses = ws.job_points("fitjob", LOSS)
    dec = load_decomposition(ws, ws.get_run(job.result))
    assert steps[0] == 0 and steps[-1] == 40 and len(steps) == 41  # warm-up + joint, every iteration reported
    np.testing.assert_allclose(losses, dec.losses[steps])

    # a running job in its NPEFF stage, 25 updates done: the live view stops where the bar is
    ws.create_job("live", "fit", {"pefs_run": pefs.id, "fit": fit}, status="running")
    ws.job_progress("live", 25, 40, "NPEFF: 25/40", "NPEFF")
    ws.append_job_points("live", LOSS, list(zip(steps.tolist(), losses.tolist())))
    live = live_fit(ws, get_job(ws, "live"))
    assert live.iterations.tolist() == list(range(26)) and (live.total, live.n_warm_up) == (40, 10)
    assert live.step == 25 and live.phase == "joint"
    ws.job_progress("live", 0, 1000, "loading", "Per-example Fishers")
    assert live_fit(ws, get_job(ws, "live")) is None
