"""Browser: a PEF job started on the Compute page survives a reload and runs to completion; a cancelled fit
starts again from the page and completes."""
import re
import shutil

import pytest
from playwright.sync_api import sync_playwright

from tests.app.conftest import ARTIFACTS, CHROMIUM_ARGS, streamlit_app


@pytest.fixture(scope="module")
def jobs_app(demo_workspace, tmp_path_factory):
    """`streamlit run app.py` on a copy of the demo workspace (its jobs write there, not to the shared one), one for
    this file's tests, which run in order: the second finds the first's job finished."""
    root = tmp_path_factory.mktemp("jobs") / "ws"
    shutil.copytree(demo_workspace, root, ignore=shutil.ignore_patterns("arrays", "npeff.duckdb*", "jobs"))
    with streamlit_app({"NPEFF_WORKSPACE": str(root)}) as url:
        yield url, root


def start_image_demo_job(page, url: str, settings: dict[str, str]) -> None:
    """Load the image demo, set the Compute page's number boxes (label -> value; each lands in the URL) and
    press Compute."""
    page.goto(url)
    page.get_by_text("Active model: text-demo").wait_for(timeout=120_000)
    # let the first visit finish scoring the pair's accuracy before switching demos
    page.get_by_text("scored once per pair").first.wait_for(timeout=120_000)
    page.get_by_text("Image demo", exact=True).first.click()  # the model radio (descriptions mention it too)
    # the click's rerun moves the dataset radio to the image demo; a Load pressed before that rerun reaches the
    # browser sends the old dataset choice back (the text demo's data, refused for the image model)
    page.get_by_text("500 held-out 8×8 digits").wait_for(timeout=60_000)
    page.get_by_role("button", name="Load", exact=True).click()
    page.get_by_text("Active model: image-demo").wait_for(timeout=60_000)
    page.get_by_role("link", name="Compute").click()
    for name, value in settings.items():
        box = page.get_by_role("spinbutton", name=name)
        box.fill(value)
        box.press("Enter")
        page.wait_for_url(re.compile(f"{value}"), timeout=30_000)
    page.get_by_role("button", name="Compute", exact=True).click()


@pytest.mark.browser
def test_a_pef_job_continues_through_a_reload(jobs_app):
    url, root = jobs_app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        start_image_demo_job(page, url, {"Values kept per example (0 = all)": "0", "Iterations": "20",
                                         "Components": "4"})
        page.get_by_text(re.compile(r"Per-example Fishers: [1-9][\d,]*/500")).first.wait_for(timeout=60_000)
        job_id = re.search(r"job=(\w+)", page.url)[1]

        page.reload()  # mid-way: a fresh session picks the job up from the URL and shows it running on
        page.get_by_text(f"(job {job_id})").first.wait_for(timeout=60_000)
        assert f"job={job_id}" in page.url and "cp_iters=20" in page.url
        page.get_by_text(re.compile(r"(Per-example Fishers|NPEFF): [\d,]+/")).first.wait_for(timeout=60_000)
        page.get_by_text(re.compile(r"Decomposition \w+: 4 components")).wait_for(timeout=180_000)
        assert page.get_by_role("spinbutton", name="Iterations").input_value() == "20"  # settings survived
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "compute_job_after_reload.png"), full_page=True)

        page.goto(f"{url}/jobs")
        page.get_by_text(f"(job {job_id})").first.wait_for(timeout=60_000)
        page.get_by_text("Finished (1)").wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "jobs_page.png"), full_page=True)
        browser.close()


@pytest.mark.browser
def test_a_cancelled_fit_starts_again_and_completes(jobs_app):
    url, root = jobs_app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        # a fit long enough to cancel mid-way (~10 s here), short enough to finish after it starts again
        start_image_demo_job(page, url, {"Values kept per example (0 = all)": "200", "Iterations": "5000",
                                         "Components": "4"})
        page.get_by_text(re.compile(r"NPEFF: [\d,]+/5,\d+")).first.wait_for(timeout=120_000)
        page.get_by_role("button", name="Cancel").click()
        page.get_by_text("cancelled; start it again to resume").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "compute_job_cancelled.png"), full_page=True)

        page.get_by_role("button", name="Start again").click()  # resumes from the fit's last checkpoint
        page.get_by_text(re.compile(r"Decomposition \w+: 4 components")).wait_for(timeout=240_000)
        page.get_by_text("Jobs (1 active)").wait_for(state="hidden", timeout=30_000)  # the sidebar panel clears
        page.screenshot(path=str(ARTIFACTS / "compute_job_resumed.png"), full_page=True)
        browser.close()
