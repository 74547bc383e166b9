"""Browser: `streamlit run app.py` driven by headless Chromium (Debian's, via Playwright)."""

import pytest

from analysis.store import Workspace
from tests.app.conftest import ARTIFACTS


@pytest.mark.browser
def test_load_page_shows_the_demo_model_summary(page, app_url):
    page.goto(app_url)
    page.get_by_text("Active model: text-demo").wait_for(timeout=120_000)
    page.get_by_text("22,713,986").first.wait_for(timeout=30_000)
    page.get_by_text("rotten").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)  # the label chart has rendered
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "load_page.png"), full_page=True)
    assert (ARTIFACTS / "load_page.png").stat().st_size > 10_000


@pytest.mark.browser
def test_zonotope_page_draws_the_figure_1_triptych(page, app_url):
    page.goto(f"{app_url}/zonotope")
    page.get_by_text("Zonotope explorer").first.wait_for(timeout=60_000)
    page.get_by_text("Activation regions on the slice").first.wait_for(timeout=60_000)
    page.get_by_text("Zonotope Z").first.wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() >= 3
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "zonotope_page.png"), full_page=True)


@pytest.mark.browser
def test_perturb_page_runs_a_sweep(page, app_url, app_env, image_run):
    ws = Workspace(app_env)
    # a sweep with these default settings that an earlier run stored would show without the button; only those go:
    # test_perturb_page's sweep (a random seed) may be running beside this test on the shared workspace
    with ws.transaction() as con:
        con.execute("DELETE FROM jobs WHERE kind = 'sweep' AND json_extract(spec, '$.settings.seed')::INTEGER = 0")
    ws.close()
    page.goto(f"{app_url}/perturb?run={image_run}&component=2")
    page.get_by_text("Perturb components").first.wait_for(timeout=60_000)
    page.get_by_role("tab", name="Sweep").click()
    page.get_by_role("button", name="Run sweep").click()
    page.get_by_text("Component 2: perturbation sweep").first.wait_for(timeout=120_000)  # the figure, not the job card
    page.get_by_text("KL ratio", exact=False).first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "perturb_page.png"), full_page=True)
    assert page.locator(".js-plotly-plot").count() >= 1
