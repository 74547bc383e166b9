"""Browser: the Components page's quantile cards name their band, 'Open in Browse' really switches tab, and the
permalink (a full URL) restores tab, section, top-N and example."""
import re

import numpy as np
import pytest
from PIL import Image

from analysis.runs import load_decomposition
from analysis.store import Workspace
from tests.app.conftest import ARTIFACTS
from tests.app.test_components_page import text_run  # noqa: F401  (fixture)


def _selected_tab(page) -> str:
    return page.locator("[role=tab][aria-selected=true]").first.inner_text().strip()


@pytest.mark.slow
@pytest.mark.browser
def test_bands_open_in_browse_and_a_permalink_with_tab_and_example(page, app_url, app_env, text_run):
    page.goto(f"{app_url}/components?run={text_run}&component=2&view=Quantiles")
    page.get_by_role("heading", name="Component 2").wait_for(timeout=120_000)
    page.get_by_text("(80–100th pct)").first.wait_for(timeout=60_000)  # a quantile card's meta line
    page.locator("code", has_text="component=2").first.wait_for(timeout=60_000)  # the run has finished
    page.wait_for_timeout(1000)
    ARTIFACTS.mkdir(exist_ok=True)
    shots = [ARTIFACTS / "components_fixes_bands.png", ARTIFACTS / "components_fixes_permalink.png"]
    page.screenshot(path=str(shots[0]), full_page=True)

    page.get_by_role("tab", name="Search").click()
    page.get_by_label("Find examples by text (substring) or index (#12, 40)").fill("#7")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Open in Browse").wait_for(timeout=60_000)
    page.get_by_role("button", name="Open in Browse").click()
    page.wait_for_function("() => document.querySelector('[role=tab][aria-selected=true]').innerText.trim() "
                           "=== 'Browse'", timeout=60_000)
    assert "tab=" not in page.url  # the default tab is left out of the URL

    W = load_decomposition(Workspace(app_env), Workspace(app_env).get_run(text_run)).W
    example = int(np.argsort(-W[:, 3], kind="stable")[25])
    query = f"run={text_run}&component=3&tab=Browse&view=Attributions&top=30&example={example}"
    page.goto(f"{app_url}/components?{query}")
    page.get_by_role("heading", name="Component 3").wait_for(timeout=120_000)
    page.wait_for_function("n => (document.querySelector('input[aria-label=Example]') || {}).value?.startsWith(n)",
                           arg=f"#{example} (coefficient", timeout=60_000)  # the restored example
    assert _selected_tab(page) == "Browse"
    assert page.locator("[role=tab][aria-selected=true]", has_text="Attributions").count() == 1
    link = page.locator("code", has_text="component=3").first.inner_text().strip()
    assert link == f"{app_url}/components?{query}", link  # a full URL to copy
    assert re.search(r"top=30\b", page.url) and f"example={example}" in page.url
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots[1]), full_page=True)

    images = [Image.open(s) for s in shots]  # side by side in one file, as the brief asks
    both = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    both.paste(images[0], (0, 0))
    both.paste(images[1], (images[0].width, 0))
    both.save(ARTIFACTS / "components_fixes.png")
