"""Browser: the Perturb page's decomposition picker, component preview and sweep; the Zonotope page's players."""
import time

import pytest

from analysis.figures.zonotope import FRAME_MS
from tests.app.conftest import ARTIFACTS


@pytest.mark.slow
@pytest.mark.browser
def test_perturb_preview_and_sweep_then_the_zonotope_player(page, app_url, image_run):
    page.goto(f"{app_url}/perturb?run={image_run}&component=2")
    page.get_by_text("Summary of its top").first.wait_for(timeout=120_000)
    page.get_by_text("Decomposition", exact=True).first.wait_for(timeout=30_000)  # the picker
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # the component's top 5 images
    page.get_by_role("tab", name="Sweep").click()
    run_sweep = page.get_by_role("button", name="Run sweep")
    if run_sweep.count():  # not stored by an earlier test
        run_sweep.click()
    page.get_by_text("Flipped predictions at").first.wait_for(timeout=180_000)
    page.get_by_text("Component 2: perturbation sweep").first.wait_for(timeout=30_000)  # the figure
    page.wait_for_timeout(1500)  # let Plotly finish drawing
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "perturb_fixes.png"), full_page=True)

    page.goto(f"{app_url}/zonotope")
    page.get_by_text("Zonotope Z").first.wait_for(timeout=120_000)
    assert page.get_by_role("link", name="arXiv:2210.00176").count() == 1
    play = page.locator(".updatemenu-button").filter(has_text="Play")
    play.first.wait_for(timeout=30_000)
    assert play.count() == 3  # data, slice and zonotope panels each play the search
    step = "() => document.querySelector('.js-plotly-plot')._fullLayout.sliders[0].active"  # the data panel's
    last = page.evaluate(step)
    assert last >= 1
    page.locator(".slider-rail-touch-rect").first.click(position={"x": 3, "y": 5})  # back to the first step
    # the slider marks step 0 at once but shows its frame on the next animation frame; a Play clicked before that
    # is cancelled by it and the player stays on step 0 (CI, under load): wait until the frame is shown
    frame = "() => document.querySelector('.js-plotly-plot')._fullLayout._currentFrame"
    page.wait_for_function(f"() => ({step})() == 0 && ({frame})() === '0'", timeout=10_000)
    play.first.click()
    # played through to the last step: FRAME_MS per step when idle, with room for a loaded 2-core machine
    deadline, seen = time.monotonic() + (30_000 + 6 * last * FRAME_MS) / 1000, []
    while (now := page.evaluate(step)) != last:  # the steps it shows on the way: where a slow play stopped
        seen += [now] if not seen or seen[-1] != now else []
        assert time.monotonic() < deadline, f"the player stopped short of step {last}; steps seen: {seen}"
        page.wait_for_timeout(100)
    page.screenshot(path=str(ARTIFACTS / "zonotope_fixes.png"), full_page=True)
