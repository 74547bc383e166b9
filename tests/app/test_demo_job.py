"""AppTest: the Load page builds a missing demo as a background job and goes on once it is complete."""
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.jobs import list_jobs
from analysis.store import Workspace

APP = Path(__file__).resolve().parents[2] / "app.py"
pytestmark = pytest.mark.long


@pytest.mark.slow  # builds the image demo (10-60 s on 2 shared cores)
def test_loading_an_unbuilt_demo_runs_a_demo_job(app_env, tmp_path, monkeypatch):
    root = tmp_path / "ws"
    monkeypatch.setenv("NPEFF_WORKSPACE", str(root))
    shutil.copytree(app_env / "demos" / "text-demo", root / "demos" / "text-demo")  # the image demo is not built
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.radio(key="model_source").set_value("Image demo").run()
    at.button(key="load_pair").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.subheader[-1].value == "Active model: image-demo"
    [job] = list_jobs(Workspace(root))
    assert (job.kind, job.spec, job.status, job.stage) == ("demo", {"demo": "image"}, "complete", "Demo")
    assert (root / "demos" / "image-demo" / "demo_metrics.json").exists()
