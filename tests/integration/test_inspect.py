"""Inspect a new input on the image demo: coefficients are fit_coefficients on the input's PEF computed with the
PEF run's settings (a dataset digit gets its row of W back), highlights are those of its top component; uploads
become inputs like the dataset's images; D-NPEFF has coefficients but no component score."""
import io

import numpy as np
import pytest
from PIL import Image

from analysis import components as cs
from analysis.datasets import dataset_subset, make_batches, text_examples
from analysis.demos import load_demo
from analysis.fisher import compute_pefs
from analysis.highlights import compute_highlights
from analysis.inspect import image_example, inspect_input, pef_settings, text_example, top_components
from analysis.notes import ComponentNote
from analysis.npeff import fit_coefficients
from analysis.runs import fit_run, load_decomposition, pefs_run
from analysis.store import Workspace

DIGIT = 3  # a dataset example


@pytest.fixture(scope="module")
def image(image_workspace):
    """The image demo with the LRM and D-NPEFF fits the app tests browse (seconds, once per workspace)."""
    model, dataset, _ = load_demo("image", image_workspace)
    ws = Workspace(image_workspace)
    lrm = fit_run(ws, pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=200), n_components=6, n_iters=40)
    diag = fit_run(ws, pefs_run(ws, model, dataset, kind="diag", n_values_per_example=200), n_components=4, n_iters=30)
    ws.close()
    return ws, model, dataset, lrm, diag


def test_a_dataset_digit_gets_fit_coefficients_on_its_pef_and_about_its_row_of_w(image):
    ws, model, dataset, run, _ = image
    dec = load_decomposition(ws, run)
    example = dataset_subset(dataset, [DIGIT])
    found = inspect_input(ws, run, dec, model, example)

    assert pef_settings(ws, run) == {"kind": "lrm", "n_values_per_example": 200, "top_k_classes": None}
    scoped = cs.scoped_model(ws, run, model)
    pefs = compute_pefs(scoped, make_batches(scoped, example), kind="lrm", n_values_per_example=200)
    np.testing.assert_array_equal(found.coefficients, fit_coefficients(dec, pefs, n_iters=200, seed=0)[0])
    W = np.asarray(dec.W[DIGIT])
    # the W step with the components fixed is convex: refitting a dataset example lands near its fitted row
    np.testing.assert_allclose(found.coefficients, W, atol=0.05 * W.max())
    assert found.top_component == int(W.argmax())
    probabilities = cs.softmax(ws.load_array(run.summary["pefs_run"], "logits", mmap=False)[DIGIT:DIGIT + 1])[0]
    np.testing.assert_allclose(found.probabilities, probabilities, rtol=1e-5, atol=1e-7)
    expected = compute_highlights(scoped, example, dec.full_component(found.top_component), np.array([0])).example(0)
    np.testing.assert_allclose(found.highlight.scores, expected.scores)

    table = top_components(found.coefficients, dec.W, {found.top_component: ComponentNote(found.top_component, "ink")})
    assert table["component"].iloc[0] == found.top_component and table["name"].iloc[0] == "ink"
    assert table["coefficient"].is_monotonic_decreasing and len(table) == 5
    column = np.asarray(dec.W[:, found.top_component])  # [n]
    below = (column < found.coefficients[found.top_component]).mean()
    assert table["dataset percentile"].iloc[0] == pytest.approx(below)


def test_d_npeff_inputs_get_coefficients_but_no_highlights(image):
    ws, model, dataset, _, run = image
    dec = load_decomposition(ws, run)
    found = inspect_input(ws, run, dec, model, dataset_subset(dataset, [DIGIT]))
    assert found.highlight is None and found.coefficients.shape == (4,)
    np.testing.assert_allclose(found.coefficients, dec.W[DIGIT], atol=0.05 * np.max(dec.W[DIGIT]))


def _png(pixels: np.ndarray, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode).save(out, format="PNG")
    return out.getvalue()


def test_uploads_become_inputs_like_the_dataset_images(image):
    _, _, dataset, _, _ = image
    digit = np.asarray(dataset.images[DIGIT])  # [8, 8] grey in [0, 1]
    same = image_example(dataset, _png(digit))
    assert same.images.shape == (1, 8, 8) and same.labels.tolist() == [-1]
    np.testing.assert_allclose(same.images[0], digit, atol=0.5 / 255)
    big = np.kron(digit, np.ones((4, 4)))  # [32, 32]; a colour file of it
    shrunk = image_example(dataset, _png(np.repeat(big[..., None], 3, axis=2), "RGB"))
    assert shrunk.images.shape == (1, 8, 8)  # grey like the dataset; Pillow's bilinear shrink blurs a little
    assert np.corrcoef(shrunk.images[0].ravel(), digit.ravel())[0, 1] > 0.95
    with pytest.raises(ValueError, match=r"^notes\.txt: could not be read as a PNG or JPEG image \(.*\); re-save it "
                                         r"as PNG$"):
        image_example(dataset, b"not an image", "notes.txt")


def test_typed_texts_need_one_non_empty_text_per_column():
    pairs = text_examples([("a", "b")], ["no", "yes"], text_columns=("premise", "hypothesis"))
    typed = text_example(pairs, ("a cat", "an animal"))
    assert typed.texts == [("a cat", "an animal")] and typed.text_columns == ("premise", "hypothesis")
    with pytest.raises(ValueError, match=r"^texts must give one text per column \['premise', 'hypothesis'\], got 1$"):
        text_example(pairs, ("a cat",))
    with pytest.raises(ValueError, match=r"^every text column \['premise', 'hypothesis'\] needs some text; type a "
                                         r"word or more$"):
        text_example(pairs, ("a cat", "  "))
