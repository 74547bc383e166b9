"""Browser: the Merge page runs the merge-pair demo end to end (demo build, Fishers, sweep) and draws the plot."""
import shutil

import pytest
from playwright.sync_api import sync_playwright

from tests.app.conftest import ARTIFACTS, CHROMIUM_ARGS, streamlit_app


@pytest.mark.slow
@pytest.mark.browser
def test_merge_page_runs_the_demo_pair(demo_workspace, tmp_path):
    root = tmp_path / "ws"  # a fresh workspace: the job builds the pair, computes both Fishers and the sweep
    shutil.copytree(demo_workspace, root, ignore=shutil.ignore_patterns("arrays", "npeff.duckdb*", "jobs",
                                                                        "merge-pair-demo*"))
    with streamlit_app({"NPEFF_WORKSPACE": str(root)}) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(f"{url}/merge")
        page.get_by_role("heading", name="Merge models").wait_for(timeout=120_000)
        box = page.get_by_role("spinbutton", name="Values of λ")
        box.fill("21")
        box.press("Enter")
        page.get_by_role("button", name="Run merge sweep").click()
        page.get_by_text("Best λ per method").wait_for(timeout=300_000)
        page.get_by_text("Merged models: task A vs task B over λ").wait_for(timeout=60_000)
        assert page.get_by_text("Fisher merging").count() >= 1
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "merge_page.png"), full_page=True)
        browser.close()
