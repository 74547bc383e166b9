"""AppTest of the Compute and Zonotope pages (the Load page has its own file)."""
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from streamlit.testing.v1 import AppTest

from analysis.estimates import LAST_RUN

APP = Path(__file__).resolve().parents[2] / "app.py"


def _on_image_demo() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.radio(key="model_source").set_value("Image demo").run()
    at.button(key="load_pair").click().run()
    assert at.subheader[-1].value == "Active model: image-demo"
    return at


def test_compute_page_fits_and_then_reuses_the_result(app_env):
    at = _on_image_demo()
    at.switch_page("pages/compute.py").run()
    assert not at.exception, at.exception
    assert [m.label for m in at.metric] == ["PEFs on disk", "Peak memory (estimate)", "PEF time (estimate)"]
    at.number_input(key="cp_components_lrm").set_value(4)
    at.number_input(key="cp_values").set_value(200)
    at.number_input(key="cp_iters").set_value(20).run()
    at.expander[0].number_input(key="cp_seed").set_value(17).run()  # a fit no other test makes: computed here once
    at.button(key="cp_compute").click().run()
    first = _until_done(at).success[0].value  # the job runs in its own process; the page shows its outcome
    assert "4 components" in first
    # the fit recorded what it took next to its estimate, and its numbers are the next estimate's
    assert re.fullmatch(r"NPEFF fit: took .+, peak memory .+; estimate .+", _caption(at, "NPEFF fit: took"))
    assert _caption(at, "· NPEFF fit:").endswith(f"{LAST_RUN}, scaled to this size (stored values × components × "
                                                 "iterations)")
    at.button(key="cp_compute").click().run()
    assert _until_done(at).success[0].value.split(":")[0] == first.split(":")[0]  # same decomposition: reused
    assert at.metric[2].value == "cached"


def _until_done(at: AppTest, timeout_s: float = 300) -> AppTest:
    """Rerun the page until its background job shows a success or an error."""
    deadline = time.monotonic() + timeout_s
    while not (at.success or at.error or at.exception):
        assert time.monotonic() < deadline, "the Compute page's job did not finish within the timeout"
        time.sleep(1)
        at.run()
    assert not at.exception and not at.error, [e.value for e in at.error] or at.exception
    return at


def _caption(at: AppTest, start: str) -> str:
    """The page's caption that starts with (or contains, after a link) `start`; fails when there is none."""
    found = [c.value for c in at.main.caption if start in c.value]
    assert found, [c.value for c in at.main.caption]
    return found[-1]


def test_zonotope_page_presets_and_the_epsilon_jump(app_env):
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.switch_page("pages/zonotope.py").run()
    assert not at.exception, at.exception
    assert "[arXiv:2210.00176](https://arxiv.org/abs/2210.00176)" in at.main.caption[0].value  # the paper, not a path
    assert "shared/spec" not in at.main.caption[0].value
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][:3]  # data, slice, zonotope (greedy, m=2)
    for fig in charts:
        assert len(fig["frames"]) > 1 and fig["layout"]["updatemenus"][0]["buttons"][0]["label"] == "▶ Play"
    lines = [frame["data"][1] for frame in charts[0]["frames"]]  # unit 1's line per step (none: all active)
    assert sum(len(line["x"]) == 2 for line in lines[:-1]) >= 2  # drawn before the last step too
    at.selectbox(key="zt_source").set_value("XOR").run()
    at.number_input(key="zt_m").set_value(1).run()
    assert "global optimum for m=1: ½SSE = 0.5" in _caption(at, "global optimum")
    at.selectbox(key="zt_source").set_value("Near-degenerate 3 points (ε)").run()
    at.number_input(key="zt_m").set_value(1).run()
    at.slider(key="zt_eps").set_value(0.0).run()
    assert float(at.metric[0].value) == pytest.approx(1 / 3, abs=1e-5)
    at.slider(key="zt_eps").set_value(0.1).run()
    assert not at.exception
    optimum = _caption(at, "global optimum")
    assert "global optimum for m=1: ½SSE = " in optimum
    assert float(optimum.rsplit("= ", 1)[1]) < 1e-6


def test_without_chromium_figures_say_how_to_export_instead_of_offering_buttons(app_env, monkeypatch):
    """A download's own failure reaches the browser as Streamlit's generic 'Failed to generate file'."""
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.switch_page("pages/zonotope.py").run()
    assert not at.exception, at.exception
    said = [c.value for c in at.main.caption if c.value.startswith("Figure export: BROWSER\\_PATH")]
    assert len(said) == len(at.get("plotly_chart")) >= 3 and "apt-get install chromium" in said[0]
    assert not [b for b in at.get("download_button") if b.proto.label in ("PNG", "SVG", "PDF")]


def _until(at: AppTest, done, timeout_s: float = 90) -> None:
    """Rerun the page until done(at) (an experiment runs as a background job)."""
    deadline = time.monotonic() + timeout_s
    while not done(at):
        assert time.monotonic() < deadline and not at.exception, at.exception
        time.sleep(1)
        at.run()


def _compared(at: AppTest) -> bool:
    return any(c.value.startswith("mean ½SSE: GD") for c in at.main.caption)


def test_zonotope_experiments_run_as_jobs_and_are_cached(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("NPEFF_WORKSPACE", str(tmp_path / "ws"))  # nothing stored yet
    shutil.copytree(app_env / "demos" / "text-demo", tmp_path / "ws" / "demos" / "text-demo")
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.switch_page("pages/zonotope.py").run()
    at.selectbox(key="zt_source").set_value("XOR").run()
    at.number_input(key="zt_seeds").set_value(3).run()
    at.button(key="zt_compare").click().run()
    assert not at.exception, at.exception
    assert any(m.value.startswith("**🔄 Zonotope experiment") or m.value.startswith("**⏳ Zonotope experiment")
               for m in at.main.markdown)  # a live job card
    _until(at, _compared)
    at.button(key="zt_width").click().run()
    assert _compared(at)  # the comparison stays while the width study runs...
    _until(at, lambda at: len(at.get("plotly_chart")) == 6)
    assert _compared(at)  # ...and once it is done: both results are shown
    columns = json.loads(at.dataframe[0].proto.columns)
    assert all(columns[name]["type_config"]["format"] == "%.4g" for name in ("GD", "greedy", "GD + greedy polish"))
    again = AppTest.from_file(str(APP), default_timeout=300).run()  # a new session: read from the workspace
    again.switch_page("pages/zonotope.py").run()
    again.selectbox(key="zt_source").set_value("XOR").run()
    again.number_input(key="zt_seeds").set_value(3).run()
    assert _compared(again)
    assert not [b for b in again.button if b.key in ("zt_compare", "zt_width")]
