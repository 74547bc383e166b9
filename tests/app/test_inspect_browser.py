"""Browser: the top examples' cards show coloured tokens from stored highlights, and the Inspect tab reads a typed
text (one server; screenshots of both)."""
import re

import pytest

from tests.app.conftest import ARTIFACTS
from tests.app.test_components_page import text_run  # noqa: F401  (the synthetic text decomposition)
from tests.app.test_inspect_page import N_HIGHLIGHTED, TYPED, text_highlights  # noqa: F401


@pytest.mark.slow
@pytest.mark.browser
def test_highlighted_cards_and_a_typed_input_in_the_inspect_tab(page, app_url, text_run, text_highlights):  # noqa: F811
    page.goto(f"{app_url}/components?run={text_run}&component=0")
    page.get_by_role("heading", name="Component 0").wait_for(timeout=120_000)
    first = page.locator(".npeff-token").first
    first.wait_for(timeout=60_000)
    assert page.locator(".npeff-highlight").count() == N_HIGHLIGHTED
    colours = page.locator(".npeff-token").evaluate_all("spans => spans.map(s => getComputedStyle(s).backgroundColor)")
    assert any(re.fullmatch(r"rgba\(214, 39, 40, 0\.8\)|rgba\(31, 119, 180, 0\.8\)", c) for c in colours), colours
    page.get_by_text("Highlights: integrated gradients").first.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "components_highlights.png"))
    assert (ARTIFACTS / "components_highlights.png").stat().st_size > 10_000

    page.get_by_role("tab", name="Inspect").click()
    box = page.get_by_label("text", exact=True)
    box.fill(TYPED)
    box.press("Control+Enter")
    page.get_by_role("button", name="Inspect", exact=True).click()
    page.locator(".npeff-highlight", has_text="lifeless").wait_for(timeout=240_000)
    page.get_by_text("Top components").first.wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").last.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # let Plotly finish drawing
    page.get_by_role("tab", name="Inspect").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "components_inspect.png"))
    assert (ARTIFACTS / "components_inspect.png").stat().st_size > 10_000
