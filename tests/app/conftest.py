"""Fixtures of the app tests beyond tests/conftest.py, and the one way browser tests start the app."""
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import sync_playwright

from analysis.demos import load_demo
from analysis.jobs import list_jobs
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"  # screenshots the browser tests leave
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def diag_run(demo_workspace) -> str:
    """A real D-NPEFF run of the image demo (seconds): the pages must follow its variant, not LRM's."""
    model, dataset, _ = load_demo("image", demo_workspace)
    ws = Workspace(demo_workspace)
    run = fit_run(ws, pefs_run(ws, model, dataset, kind="diag", n_values_per_example=200), n_components=4, n_iters=30)
    ws.close()
    return run.id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_app(env: dict[str, str]) -> Iterator[str]:
    """`streamlit run app.py` on a free localhost port with these extra environment variables; yields its URL
    once /_stcore/health answers, and stops it afterwards. Its log is kept in a temporary file."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="streamlit-", suffix=".log", delete=False)
    print(f"streamlit log: {log.name}")  # pytest shows it with a failure's captured setup output
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not answer on /_stcore/health within 60 s")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="session")
def app_url(demo_workspace) -> Iterator[str]:
    """One `streamlit run app.py` on the demo workspace per test process, shared by the browser tests that only
    read and compute there, as several visitors share a server (a server's first page costs ~9 CPU-s more than a
    later visitor's: imports, the text demo's model). Default folder rules, whatever a test's environment says."""
    with streamlit_app({"NPEFF_WORKSPACE": str(demo_workspace), "NPEFF_ALLOWED_ROOTS": ""}) as url:
        yield url


@pytest.fixture
def page():
    """A fresh headless Chromium page (a new visitor); the test opens the URL it needs (app_url: the shared app)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1400, "height": 1900})
        browser.close()


def page_state(at) -> str:
    """What a timed-out page showed and the workspace's jobs, to tell a slow job from a page that lost it."""
    root = os.environ.get("NPEFF_WORKSPACE")
    jobs = [(j.id, j.kind, j.status, j.message, j.error, j.result, j.spec.get("decomposition"), j.spec.get("settings"))
            for j in list_jobs(Workspace(root))] if root else []
    widgets = {w.key: w.value for kind in (at.number_input, at.selectbox, at.radio, at.select_slider) for w in kind}
    return (f"query {dict(at.query_params)}; captions {[c.value for c in at.main.caption]}; "
            f"markdown {[m.value for m in at.main.markdown]}; widgets {widgets}; jobs {jobs}")


def rerun_until(at, done, timeout_s: float = 300) -> None:
    """Rerun an AppTest page until done(at): work that runs as a background job is shown once it completes."""
    deadline = time.monotonic() + timeout_s
    while not done(at):
        assert not at.exception and not at.error, [e.value for e in at.error] or at.exception
        assert time.monotonic() < deadline, page_state(at)
        time.sleep(1)
        at.run()
