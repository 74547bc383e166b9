"""Browser: a permalink opens a component view in headless Chromium; its figures export as valid PNG and PDF."""
import struct

import pytest

from tests.app.conftest import ARTIFACTS


@pytest.mark.browser
def test_component_view_from_a_link_with_png_and_pdf_export(page, app_url, image_run, tmp_path):
    page.goto(f"{app_url}/components?run={image_run}&component=2")
    page.get_by_role("heading", name="Component 2").wait_for(timeout=120_000)
    page.get_by_text("#", exact=False).filter(visible=True).first.wait_for(timeout=60_000)  # not other tabs'
    page.locator(".js-plotly-plot").filter(visible=True).first.wait_for(timeout=60_000)  # the grid of top images
    assert "component=2" in page.url and f"run={image_run}" in page.url
    page.wait_for_timeout(1500)  # let Plotly finish drawing before the screenshot
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "components_page.png"), full_page=True)
    assert (ARTIFACTS / "components_page.png").stat().st_size > 10_000

    page.get_by_role("tab", name="Statistics").click()
    page.get_by_text("Coefficients of component 2").first.wait_for(timeout=60_000)
    files = {}
    for fmt in ("PNG", "PDF"):
        with page.expect_download(timeout=90_000) as download:
            page.get_by_role("button", name=fmt, exact=True).first.click()
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        files[fmt] = path
    assert files["PNG"].name == "component_2_coefficients.png"
    png = files["PNG"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 900 and height >= 300
    pdf = files["PDF"].read_bytes()
    assert files["PDF"].name == "component_2_coefficients.pdf"
    assert pdf[:5] == b"%PDF-" and b"%%EOF" in pdf[-1024:] and len(pdf) > 1000
