"""Browser: `streamlit run app.py` driven by headless Chromium (Debian's, via Playwright)."""
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from analysis.store import Workspace
from tests.app.conftest import streamlit_app

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def app_url(app_env):
    with streamlit_app({"NPEFF_WORKSPACE": str(app_env)}) as url:
        yield url


@pytest.fixture
def page(app_url):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1900})
        page.goto(app_url)
        yield page
        browser.close()


@pytest.mark.browser
def test_load_page_shows_the_demo_model_summary(page):
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
    with ws.transaction() as con:  # a sweep an earlier run stored would show without the button
        con.execute("DELETE FROM jobs WHERE kind = 'sweep'")
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
