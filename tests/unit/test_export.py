"""Static figure export through kaleido and the system Chromium."""
import struct

import plotly.graph_objects as go
import pytest

from analysis.figures.export import figure_bytes


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
