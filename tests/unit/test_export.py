"""Static figure export through kaleido and the system Chromium; the PDF's title."""
import os
import re
import struct
import subprocess
import sys

import plotly.graph_objects as go
import pytest

from analysis.figures.export import CHROMIUM_STOPPED, UNTITLED, figure_bytes, with_pdf_title
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def fig():
    return go.Figure(go.Scatter(x=[0, 1, 2], y=[2, 0, 1])).update_layout(height=300)


def test_png_has_the_requested_size(fig):
    png = figure_bytes(fig, "png", width=400, height=300, scale=2)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (800, 600)


def test_svg_and_pdf_are_vector_files(fig):
    assert b"<svg" in figure_bytes(fig, "svg")[:400]
    assert figure_bytes(fig, "pdf")[:5] == b"%PDF-"


def test_unknown_format_is_refused(fig):
    with pytest.raises(ValueError, match="fmt must be one of \\['pdf', 'png', 'svg'\\], got 'gif'"):
        figure_bytes(fig, "gif")


def _info_title(pdf: bytes) -> str:
    """/Title of a PDF's Info dictionary, read the way a viewer does: the last startxref, its xref section and
    trailer, the Info object at the offset that section gives (checked to start there), its title string."""
    xref_at = int(re.findall(rb"startxref\s+(\d+)\s+%%EOF", pdf)[-1])
    assert pdf[xref_at:xref_at + 4] == b"xref"
    section = pdf[xref_at:pdf.index(b"trailer", xref_at)].split(b"\n")
    trailer = pdf[pdf.index(b"trailer", xref_at):]
    number = int(re.search(rb"/Info\s+(\d+)\s+0\s+R", trailer)[1])
    offsets, line = {}, 1
    while line < len(section) and section[line].strip():
        first, count = map(int, section[line].split())
        for i in range(count):
            entry = section[line + 1 + i]
            assert len(entry) + 1 == 20  # every xref entry is 20 bytes with its end of line
            offsets[first + i] = int(entry[:10])
        line += 1 + count
    at = offsets[number]  # the newest xref section lists the Info object (a KeyError would fail the test)
    assert pdf[at:].startswith(b"%d 0 obj" % number)
    body = pdf[at:pdf.index(b"endobj", at)]
    if m := re.search(rb"/Title\s*<([0-9A-Fa-f]+)>", body):
        return bytes.fromhex(m[1].decode()).decode("utf-16")  # the BOM says big-endian
    return re.search(rb"/Title\s*\((.*?)\)", body)[1].decode("latin-1")


def test_pdf_title_is_the_figure_title_not_kaleidos_page():
    pdf = figure_bytes(go.Figure(go.Bar(y=[1, 2]), layout_title_text="<b>Coefficients</b> of component 3 · naïve"),
                       "pdf")
    assert _info_title(pdf) == "Coefficients of component 3 · naïve"
    assert b"(Kaleido-fier)" in pdf  # the original Info object is still there, superseded by the update
    assert pdf.rstrip().endswith(b"%%EOF") and pdf.count(b"%%EOF") == 2
    assert _info_title(figure_bytes(go.Figure(), "pdf", title="component_3_profile")) == "component_3_profile"
    assert _info_title(figure_bytes(go.Figure(), "pdf")) == UNTITLED
    assert _info_title(with_pdf_title(with_pdf_title(pdf, "first"), "second (x) \\ y")) == "second (x) \\ y"


def test_a_pdf_without_an_info_reference_is_refused():
    with pytest.raises(ValueError, match=r"^pdf: no trailer with an /Info reference at its end; cannot set the title "
                                         r"of this file$"):
        with_pdf_title(b"%PDF-1.4\ntrailer\n<</Root 1 0 R>>\nstartxref\n9\n%%EOF\n", "x")


EXPORT_TWICE = ("import plotly.graph_objects as go\nfrom analysis.figures.export import export_problem, figure_bytes\n"
                "print(export_problem())\n"
                "for _ in range(2):  # the second export starts Chromium again, and fails again\n    try:\n"
                "        figure_bytes(go.Figure(), 'png')\n    except RuntimeError as e:\n        print(e)\n"
                "print(export_problem())\n")


def export_twice(browser_path: str) -> list[str]:
    """What a fresh process with BROWSER_PATH=browser_path prints: export_problem(), the errors of two PNG exports
    (each within the 120 s the process gets: the old code waited forever), then export_problem() again."""
    env = {**os.environ, "BROWSER_PATH": browser_path}
    done = subprocess.run([sys.executable, "-c", EXPORT_TWICE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_a_missing_chromium_is_a_clear_error_not_a_hang():
    """kaleido's export server dies in its own thread without a browser and every export then waited forever."""
    missing = ("figure export: BROWSER_PATH='/nonexistent/chromium' is not an executable file; point it at Chromium "
               "or unset it (Debian: `apt-get install chromium`)")
    # pages show it instead of their buttons
    assert export_twice("/nonexistent/chromium") == [str((missing, True)), missing, missing, str((missing, True))]


def test_a_chromium_that_does_not_start_is_a_clear_error_not_a_hang(tmp_path):
    """A browser that exits at once ended kaleido's export server in its own thread; the export waited forever."""
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    # before any export nothing is known to fail; after, pages show the failure beside their buttons
    assert export_twice(str(broken)) == ["None", CHROMIUM_STOPPED, CHROMIUM_STOPPED, str((CHROMIUM_STOPPED, False))]
