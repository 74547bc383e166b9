"""Browser: a component's name, tags and note, stored in the workspace before the server starts, appear in the
component view opened from a permalink, next to the automatic summary (screenshot in tests/artifacts)."""
import pytest

from analysis import notes
from analysis.store import Workspace
from tests.app.conftest import ARTIFACTS


@pytest.fixture
def named_component(app_env, image_run):
    """Component 2 of the image run named and annotated; the note is removed afterwards."""
    ws = Workspace(app_env)
    notes.set_note(ws, image_run, 2, name="round digits", tags="shape, check", note="Loops: 0, 6, 8 and 9.")
    ws.close()
    yield image_run, 2
    notes.set_note(Workspace(app_env), image_run, 2)


@pytest.mark.browser
def test_a_stored_note_shows_in_the_component_view_of_a_permalink(named_component, page, app_url):
    run_id, k = named_component
    page.goto(f"{app_url}/components?run={run_id}&component={k}")
    page.get_by_role("heading", name=f"Component {k} · round digits").wait_for(timeout=120_000)
    # exact: the export panel's LaTeX preview also holds them ("\textit{Tags: shape, check.} Loops: ..."), in spans
    # that may already be drawn
    page.get_by_text("Loops: 0, 6, 8 and 9.", exact=True).wait_for(timeout=30_000)
    page.get_by_text("Tags: shape, check", exact=True).wait_for(timeout=30_000)
    page.get_by_text("Summary of the top 50 examples against the rest: mostly").wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # let the tables and Plotly finish drawing before the screenshot
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "components_notes.png"), full_page=True)
    assert (ARTIFACTS / "components_notes.png").stat().st_size > 10_000
