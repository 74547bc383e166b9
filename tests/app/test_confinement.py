"""The dashboard is a server: it binds localhost, and paths and workspace folders stay inside allowed roots."""
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import streamlit as st
from playwright.sync_api import sync_playwright
from streamlit.testing.v1 import AppTest

from analysis.store import Workspace
from tests.app.conftest import ARTIFACTS, CHROMIUM_ARGS, streamlit_app

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
SECRET = "hunter2-7f3c9e"  # text of the file a visitor must not be able to read


def _plain(markdown: str) -> str:
    """Markdown source as the reader sees it (backslash escapes removed)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _streamlit_args(*make_args: str, env: dict | None = None) -> dict[str, str]:
    """The options of the `streamlit run` line that `make run` would execute (make -n runs nothing)."""
    out = subprocess.run(["make", "-n", "run", *make_args], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout.replace("\\\n", " ")
    argv = shlex.split(next(line for line in out.splitlines() if "streamlit run" in line))
    return dict(zip(argv, argv[1:]))


def test_make_run_binds_localhost_unless_asked():
    assert _streamlit_args()["--server.address"] == "127.0.0.1"
    assert _streamlit_args(env={"HOST": "203.0.113.7"})["--server.address"] == "127.0.0.1"  # a shell's $HOST
    assert _streamlit_args("HOST=0.0.0.0")["--server.address"] == "0.0.0.0"
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"  # a plain `streamlit run app.py` too


@pytest.fixture
def roots(tmp_path, tiny_bert_dir, monkeypatch) -> Path:
    """Only tmp_path/allowed and the tiny BERT's folder (and the test workspace) may be opened."""
    (tmp_path / "allowed").mkdir()
    monkeypatch.setenv("NPEFF_ALLOWED_ROOTS", os.pathsep.join([str(tmp_path / "allowed"), str(tiny_bert_dir)]))
    return tmp_path / "allowed"


@pytest.fixture
def script_runs(monkeypatch) -> list[int]:
    """One entry per execution of app.py (st.set_page_config is its first call)."""
    runs: list[int] = []
    original = st.set_page_config

    def counting(*args, **kwargs):
        runs.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(st, "set_page_config", counting)
    return runs


def test_local_dataset_outside_the_roots_is_refused_and_nothing_is_copied(app_env, roots, tiny_bert_dir,
                                                                         tmp_path):
    secret = tmp_path / "private" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text(f"text,label\n{SECRET},pos\nfine film,neg\n")  # the tiny BERT's classes: it would load
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.radio(key="model_source").set_value("Local path").run()
    at.text_input(key="model_path").input("/etc").run()
    assert any(_plain(e.value).startswith("'/etc' is outside the folders this server may open")
               and "NPEFF_ALLOWED_ROOTS" in _plain(e.value) for e in at.error), [e.value for e in at.error]
    at.text_input(key="model_path").input(str(tiny_bert_dir)).run()
    assert not at.error, [e.value for e in at.error]
    at.radio(key="data_source").set_value("Local path").run()
    at.text_input(key="data_path").input(str(secret)).run()
    assert not at.exception, at.exception
    refusals = [_plain(e.value) for e in at.error if str(secret) in _plain(e.value)]
    assert refusals and "is outside the folders this server may open" in refusals[0]
    assert f"add a folder above it to NPEFF_ALLOWED_ROOTS (separated by '{os.pathsep}')" in refusals[0]
    assert not at.multiselect  # the file's columns were never read
    at.button(key="load_pair").click().run()
    assert not at.exception, at.exception
    assert at.subheader[-1].value == "Active model: text-demo"
    ws = Workspace(app_env)
    copied = ws.query("SELECT count(*) AS n FROM examples WHERE text LIKE ?", [f"%{SECRET}%"])["n"].iloc[0]
    registered = ws.query("SELECT count(*) AS n FROM datasets WHERE source LIKE '%secret%'")["n"].iloc[0]
    ws.close()
    assert copied == 0 and registered == 0
    assert not any(SECRET in p.read_text(errors="ignore") for p in (app_env / "uploads").rglob("*") if p.is_file())


def test_a_symlink_inside_a_root_cannot_read_outside(app_env, roots, tmp_path):
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret.csv").write_text(f"text,label\n{SECRET},pos\n")
    (roots / "innocent.csv").symlink_to(tmp_path / "private" / "secret.csv")
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.radio(key="model_source").set_value("Local path").run()
    at.radio(key="data_source").set_value("Local path").run()
    at.text_input(key="data_path").input(str(roots / "innocent.csv")).run()
    assert any("resolves to" in _plain(e.value) and "secret.csv" in _plain(e.value) for e in at.error)
    assert not at.multiselect


def test_refused_workspace_folder_keeps_the_workspace_and_runs_once(app_env, roots, tmp_path, script_runs):
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    assert at.text_input(key="workspace_folder").value == str(app_env)
    script_runs.clear()
    at.text_input(key="workspace_folder").input(str(tmp_path / "outside_ws")).run(timeout=60)
    assert not at.exception, at.exception
    assert len(script_runs) == 1  # no st.rerun, no loop
    assert any(str(tmp_path / "outside_ws") in _plain(e.value) and "NPEFF_ALLOWED_ROOTS" in _plain(e.value)
               for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    assert at.text_input(key="workspace_folder").value == str(app_env)
    assert at.session_state["workspace_root"] == str(app_env)
    assert not (tmp_path / "outside_ws").exists()  # no folder, no database created
    assert at.subheader[-1].value == "Active model: text-demo"
    script_runs.clear()
    at.run()
    assert len(script_runs) == 1 and not at.sidebar.error  # the message was shown once


def test_switching_the_workspace_to_an_allowed_folder_and_back(app_env, roots, script_runs):
    other = roots / "other_ws"
    other.mkdir()
    (other / "demos").symlink_to(Path(app_env) / "demos")
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    for target in (other, Path(app_env), other, Path(app_env)):
        script_runs.clear()
        at.text_input(key="workspace_folder").input(str(target)).run(timeout=120)
        assert not at.exception, at.exception
        assert len(script_runs) == 1, f"{len(script_runs)} script runs after switching to {target}"
        assert not at.error, [e.value for e in at.error]
        assert at.session_state["workspace_root"] == str(target.resolve())
        assert at.text_input(key="workspace_folder").value == str(target.resolve())
        assert at.subheader[-1].value == "Active model: text-demo"
    assert (other / "npeff.duckdb").exists()


@pytest.mark.browser
def test_refusals_in_the_browser_and_a_workspace_switch_settles(roots, app_env):
    """What a visitor sees: the refusal on the Load page; switching the workspace and back sends no endless reruns."""
    other = roots / "other_ws"
    other.mkdir()
    (other / "demos").symlink_to(Path(app_env) / "demos")
    frames: list[int] = []
    # a server of its own: it runs under the folder rules `roots` set
    with streamlit_app({"NPEFF_WORKSPACE": str(app_env)}) as app_url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(len(payload))))
        page.goto(app_url)
        page.get_by_text("Active model: text-demo").wait_for(timeout=120_000)
        page.get_by_text("Local path", exact=True).first.click()  # the model's source; the dataset's radio appears
        page.get_by_text("Local path", exact=True).nth(1).click()
        box = page.get_by_label("CSV, JSONL, Parquet, .npz of images, or a folder of images with one subfolder per class")
        box.fill("/etc/passwd")
        box.press("Enter")
        page.get_by_text("is outside the folders this server may open").first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "load_page_refused_path.png"))
        folder = page.get_by_label("Folder", exact=True)
        for target in (other, Path(app_env)):
            folder.fill(str(target))
            folder.press("Enter")
            page.wait_for_timeout(4000)
        assert (other / "npeff.duckdb").exists()  # the allowed folder was opened as a workspace
        frames.clear()
        page.wait_for_timeout(5000)
        quiet = len(frames)
        assert folder.input_value() == str(Path(app_env).resolve())
        browser.close()
    assert quiet <= 2, f"{quiet} websocket frames in 5 s after switching the workspace and back: a rerun loop"
