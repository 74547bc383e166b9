"""Highlights without a model: coloured HTML of planted token scores (escaped, spans of the original text), heat
overlays, the stored layout round trip and the legend's completeness error."""
import html
import re

import numpy as np
import pytest

from analysis.highlights import (MAX_ALPHA, NEGATIVE, POSITIVE, ExampleHighlight, Highlights, heat_overlay,
                                 highlighted_html, legend)

TEXT = "<b>Bad</b> & good"


def _spans(fragment: str) -> list[tuple[str, str, str]]:
    """(rgba, title, text) of each token span."""
    return [(c, t, html.unescape(w)) for c, t, w in
            re.findall(r'style="background: rgba\(([^)]*)\)[^"]*" title="([^"]*)">([^<]*)</span>', fragment)]


def _example(spans, scores) -> ExampleHighlight:
    return ExampleHighlight(0, np.array(scores, dtype=float), np.array(spans, dtype=np.int64).reshape(-1, 2), 1.0, 0.0)


def test_tokens_are_coloured_by_sign_and_size_and_the_text_is_escaped():
    # [CLS] "<b>Bad</b>" "&" "good" [SEP]: the markup is text, not HTML
    example = _example([(-1, -1), (0, 10), (11, 12), (13, 17), (-1, -1)], [5.0, -2.0, 0.5, 1.0, 9.0])
    out = highlighted_html(TEXT, example)
    assert "<b>" not in out and "&lt;b&gt;Bad&lt;/b&gt;" in out
    assert html.unescape(re.sub(r"<[^>]+>", "", out)) == TEXT  # every character once, in order
    spans = _spans(out)
    assert [w for _, _, w in spans] == ["<b>Bad</b>", "&", "good"]  # special tokens are not shown
    colours = [tuple(float(v) for v in c.split(",")) for c, _, _ in spans]
    assert colours[0] == (*NEGATIVE, MAX_ALPHA)  # the largest |score| among shown tokens: full colour, blue
    assert colours[1] == (*POSITIVE, round(MAX_ALPHA * 0.5 / 2, 2))
    assert colours[2] == (*POSITIVE, round(MAX_ALPHA * 1.0 / 2, 2))
    assert [float(t) for _, t, _ in spans] == [-2.0, 0.5, 1.0]


def test_pieces_of_one_character_add_up_and_a_long_text_is_cut():
    text = "café ok"
    example = _example([(0, 3), (3, 4), (3, 4), (5, 7)], [1.0, 0.25, 0.25, -1.0])
    spans = _spans(highlighted_html(text, example))
    assert [(w, float(t)) for _, t, w in spans] == [("caf", 1.0), ("é", 0.5), ("ok", -1.0)]
    cut = highlighted_html(text, example, limit=4)
    assert [w for _, _, w in _spans(cut)] == ["caf", "é"] and cut.endswith(" …</div>")


def test_pixel_scores_have_no_token_html():
    with pytest.raises(ValueError, match=r"^example 0 has pixel scores, not token spans; draw it with heat_overlay$"):
        highlighted_html("x", ExampleHighlight(0, np.zeros((2, 2)), None, 1.0, 0.0))


def test_heat_overlay_keeps_zero_pixels_and_colours_the_strongest_fully():
    images = np.array([[[0.0, 1.0], [0.5, 0.25]]])  # one grey image [1, 2, 2]
    scores = np.array([[[0.0, 2.0], [-1.0, 0.0]]])
    out = heat_overlay(images, scores)
    assert out.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 1.0, 1.0])  # no score: the grey value, ink dark (1 - pixel)
    np.testing.assert_allclose(out[0, 1, 1], [0.75, 0.75, 0.75])
    red, blue = np.array(POSITIVE) / 255, np.array(NEGATIVE) / 255
    np.testing.assert_allclose(out[0, 0, 1], 0.0 * (1 - MAX_ALPHA) + red * MAX_ALPHA)
    np.testing.assert_allclose(out[0, 1, 0], 0.5 * (1 - MAX_ALPHA / 2) + blue * MAX_ALPHA / 2)
    np.testing.assert_allclose(heat_overlay(images, np.zeros_like(scores))[0, ..., 0], 1 - images[0])


def test_stored_layout_round_trips_and_trims_each_example_to_its_tokens():
    found = Highlights(indices=np.array([7, 3]), scores=np.array([[0.5, -0.25, np.nan], [1.0, 2.0, 3.0]]),
                       spans=np.array([[[0, 2], [3, 5], [-1, -1]], [[-1, -1], [0, 1], [-1, -1]]]),
                       values=np.array([1.0, 10.0]), baseline_values=np.array([0.5, 4.0]))
    back = Highlights.from_arrays(found.to_arrays())
    first = back.by_index()[7]
    np.testing.assert_array_equal(first.scores, [0.5, -0.25])
    np.testing.assert_array_equal(first.spans, [[0, 2], [3, 5]])
    assert first.delta == pytest.approx(0.25 - 0.5) and first.relative_error == pytest.approx(0.5)
    np.testing.assert_allclose(back.relative_errors, [0.5, 0.0])
    assert "median 25%, largest 50% of s_k(x) − s_k(baseline)" in legend(back)
    assert legend(back).startswith("Highlights: integrated gradients (16 steps) of the component score s_k(x) "
                                   "for the top 2 examples")
    pixels = Highlights(np.array([1]), np.ones((1, 2, 2)), None, np.array([1.0]), np.array([1.0]))
    assert Highlights.from_arrays(pixels.to_arrays()).spans is None
    assert "not defined (s_k(x) = s_k(baseline))" in legend(pixels)
