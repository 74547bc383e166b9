"""AppTest: the sidebar's jobs panel lists the active jobs on every page, and nothing when none is active."""
import os
import shutil
import socket
from pathlib import Path

from streamlit.testing.v1 import AppTest

from analysis.jobs import demo_spec
from analysis.store import Workspace

APP = Path(__file__).resolve().parents[2] / "app.py"


def _sidebar_texts(at: AppTest) -> list[str]:
    return [getattr(e, "value", "") for e in at.sidebar.get("markdown")] + \
           [e.proto.text for e in at.sidebar.get("progress")]


def test_the_sidebar_lists_an_active_job(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("NPEFF_WORKSPACE", str(tmp_path / "ws"))
    shutil.copytree(app_env / "demos" / "text-demo", tmp_path / "ws" / "demos" / "text-demo")
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    assert not at.exception and not any("Jobs (" in t for t in _sidebar_texts(at))  # nothing active: nothing shown
    ws = Workspace(tmp_path / "ws")
    ws.create_job("side1", "demo", demo_spec("image"), status="running", host=socket.gethostname(), pid=os.getpid())
    ws.job_progress("side1", 40, 100, "Demo: 40/100", "Demo")
    ws.close()
    at.switch_page("pages/zonotope.py").run()
    assert not at.exception, at.exception
    texts = _sidebar_texts(at)
    assert "### Jobs (1 active)" in texts
    assert any(t.startswith("🔄 Demo build · image \\(job side1\\) · ETA") for t in texts), texts
    [bar] = at.sidebar.get("progress")
    assert bar.proto.value == 40
    ws.finish_job("side1", "complete")
    ws.close()
