"""AppTest of the Compute page while a fit job runs: the live loss curve counts iterations, as the bar does."""
import base64
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import plotly.io
from streamlit.testing.v1 import AppTest

from analysis.estimates import CALIBRATED

from analysis.job_points import LOSS
from analysis.jobs import compute_spec
from analysis.loading import demo_specs
from analysis.store import Workspace

APP = Path(__file__).resolve().parents[2] / "app.py"


def running_fit_job(root: Path, job_id: str) -> None:
    """A compute job of the image demo in its NPEFF stage, iteration 120 of 50 + 300, losses every 4 iterations
    (its process: this one, so that it is not taken for dead)."""
    ws = Workspace(root)
    model, dataset = demo_specs("image")
    spec = compute_spec(model, dataset, pefs={"kind": "lrm", "n_values_per_example": 200, "top_k_classes": None,
                                              "batch_size": 16},
                        fit={"n_components": 4, "n_iters": 300, "n_iters_g_only": 50, "seed": 0})
    ws.create_job(job_id, "compute", spec, status="running", host=socket.gethostname(), pid=os.getpid())
    ws.job_progress(job_id, 120, 350, "NPEFF: 120/350 · loss 0.5", "NPEFF")
    steps = np.arange(0, 124, 4)  # the worker has flushed a point past the bar's last write
    ws.append_job_points(job_id, LOSS, list(zip(steps.tolist(), np.linspace(2, 0.5, len(steps)).tolist())))
    ws.close()


def test_a_running_fit_shows_its_loss_against_iterations(demo_workspace, tmp_path, monkeypatch):
    root = tmp_path / "ws"  # a workspace of its own: the job row stays out of the shared demo workspace
    shutil.copytree(demo_workspace / "demos", root / "demos")  # both: the app builds a missing demo
    monkeypatch.setenv("NPEFF_WORKSPACE", str(root))
    running_fit_job(root, "livejob00001")
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.radio(key="model_source").set_value("Image demo").run()
    at.button(key="load_pair").click().run()
    at.session_state["cp_job"] = "livejob00001"
    at.switch_page("pages/compute.py").run()
    assert not at.exception, at.exception
    assert ("iteration 120/350 (joint updates) · G-only warm-up: iterations 0–50 (W frozen), then joint updates"
            in [c.value for c in at.caption])
    [chart] = at.get("plotly_chart")  # the live curve, against iterations (no decomposition is stored yet)
    fig = plotly.io.from_json(chart.proto.spec)
    x = fig.data[0].x  # plotly sends arrays as {"dtype", "bdata": base64}
    iterations = np.frombuffer(base64.b64decode(x["bdata"]), x["dtype"]).tolist()
    assert iterations == list(range(0, 121, 4))  # none past the bar
    assert tuple(fig.layout.xaxis.range) == (0, 350)  # the axis spans the whole run
    assert fig.layout.xaxis.title.text == "iteration"
    assert [a.text for a in fig.layout.annotations] == ["G-only warm-up", "joint updates start"]
    assert (fig.layout.shapes[0].x0, fig.layout.shapes[0].x1) == (0, 50)


def test_estimate_time_calibrates_on_batches_and_says_so(demo_workspace, tmp_path, monkeypatch):
    root = tmp_path / "ws"
    shutil.copytree(demo_workspace / "demos", root / "demos")
    monkeypatch.setenv("NPEFF_WORKSPACE", str(root))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.radio(key="model_source").set_value("Image demo").run()
    at.button(key="load_pair").click().run()
    at.switch_page("pages/compute.py").run()
    at.number_input(key="cp_values").set_value(200).run()
    assert at.caption[1].value.startswith("PEFs: not measured (press Estimate time); memory ")
    assert "· NPEFF fit: not measured (press Estimate time); memory " in at.caption[1].value
    at.button(key="cp_estimate").click().run()
    assert not at.exception and not at.error, at.exception or at.error
    assert at.metric[2].value != "not measured"
    assert at.caption[1].value.startswith(f"PEFs: {at.metric[2].value}, memory ")
    assert f", {CALIBRATED} · NPEFF fit" in at.caption[1].value
