"""AppTest of the Components page's token highlights (coloured cards from stored highlights) and its Inspect tab
(a typed input's coefficients are fit_coefficients on its PEF, computed as the decomposition's PEF run did)."""
import html
import re

import numpy as np
import pytest

from analysis import components as cs
from analysis.datasets import make_batches, predict, text_examples
from analysis.demos import load_demo
from analysis.fisher import compute_pefs
from analysis.highlights import KIND, highlights_run
from analysis.npeff import fit_coefficients
from analysis.runs import load_decomposition
from analysis.store import Workspace
from tests.app.test_components_page import _open, text_run  # noqa: F401  (the synthetic text decomposition)

N_HIGHLIGHTED = 3  # top examples of component 0 highlighted by the fixture (the page shows 20)
TYPED = "a dull, lifeless film"


@pytest.fixture(scope="module")
def text_highlights(demo_workspace, text_run):  # noqa: F811
    """Highlights of component 0's top 3 examples, computed in this process and stored (seconds); highlights of
    more examples an earlier session stored are removed first (the page shows the largest)."""
    model, dataset, _ = load_demo("text", demo_workspace)
    ws = Workspace(demo_workspace)
    run = ws.get_run(text_run)
    with ws.transaction() as con:
        con.execute("DELETE FROM runs WHERE kind = ? AND json_extract_string(params, '$.decomposition') = ? "
                    "AND json_extract_string(params, '$.n') != ?", [KIND, run.key, str(N_HIGHLIGHTED)])
    found = highlights_run(ws, model, dataset, run, 0, N_HIGHLIGHTED)
    ws.close()
    return found, dataset


def _plain(fragment: str) -> str:
    """The text an HTML fragment shows (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def test_top_example_cards_colour_their_tokens(app_env, text_run, text_highlights):  # noqa: F811
    found, dataset = text_highlights
    at = _open({"run": text_run})
    cards = [h.value for h in at.html if "npeff-token" in h.value]
    assert len(cards) == N_HIGHLIGHTED  # the other 17 cards stay plain text
    texts = dataset.display_texts()
    for card, i in zip(cards, range(N_HIGHLIGHTED)):
        example = found.example(i)
        text = texts[example.idx]
        assert _plain(card).removesuffix(" …") == text[:400]
        tokens = re.findall(r'<span class="npeff-token" style="background: rgba\(([\d, .]+)\)[^"]*" '
                            r'title="([^"]+)">([^<]*)</span>', card)
        words = [(s, e) for s, e in example.spans.tolist() if s >= 0]
        assert [html.unescape(t) for _, _, t in tokens] == [text[s:e] for s, e in words]
        scores = [float(title) for _, title, _ in tokens]
        np.testing.assert_allclose(scores, example.scores[example.spans[:, 0] >= 0], rtol=1e-2)
        alphas = [float(c.split(",")[3]) for c, _, _ in tokens]
        assert max(alphas) == 0.8 and all(0 <= a <= 0.8 for a in alphas)  # the strongest token at full colour
        reds = [c.startswith("214") for c, _, _ in tokens]
        assert reds == [s > 0 for s in scores]  # red raises s_k, blue lowers it
    assert any(c.value.startswith("Highlights: integrated gradients (16 steps) of the component score")
               for c in at.caption)
    assert any(c.value.startswith("s_k(x) ") and "completeness error" in c.value for c in at.caption)
    assert at.button(key="cmp_hl_go").label == "Highlight tokens of the top 20"  # 3 of 20 are stored


def test_a_typed_input_gets_the_coefficients_fit_coefficients_gives_it(app_env, demo_workspace, text_run):  # noqa: F811
    at = _open({"run": text_run})
    top = at.session_state["cmp_inspect_start"]
    model, dataset, _ = load_demo("text", demo_workspace)
    assert at.text_area(key="cmp_inspect_text_0").value == dataset.texts[top][0]  # starts from a top example
    at.text_area(key="cmp_inspect_text_0").input(TYPED)
    at.button(key="cmp_inspect_go").click().run()
    assert not at.exception, at.exception

    ws = Workspace(demo_workspace)
    run = ws.get_run(text_run)
    scoped = cs.scoped_model(ws, run, model)
    typed = text_examples([TYPED], dataset.label_names)
    pefs = compute_pefs(scoped, make_batches(scoped, typed), kind="lrm", n_values_per_example=None,
                        top_k_classes=None)  # as the synthetic decomposition's PEF run is keyed
    expected = fit_coefficients(load_decomposition(ws, run), pefs, n_iters=200, seed=0)[0]  # [r]
    ws.close()
    table = next(d.value for d in at.dataframe if "dataset percentile" in d.value.columns)
    order = np.argsort(-expected, kind="stable")
    assert table["component"].tolist() == order.tolist()
    np.testing.assert_allclose(table["coefficient"].to_numpy(), expected[order], rtol=1e-6)
    logits = predict(model, typed)[0]
    assert next(m for m in at.metric if m.label == "Prediction").value == dataset.label_names[int(logits.argmax())]
    assert any(f"Highlights for the top component {order[0]}" in m.value for m in at.markdown)
    assert TYPED in [_plain(h.value) for h in at.html if "npeff-token" in h.value]  # the top component's highlights


def test_the_inspect_tab_of_an_image_run_shows_the_start_digit_with_its_heat_map(app_env, image_run):
    at = _open({"run": image_run})
    at.button(key="cmp_inspect_go").click().run()
    assert not at.exception, at.exception
    assert any(m.label == "Prediction" for m in at.metric)
    assert any(m.value.startswith("**Highlights for the top component") for m in at.markdown)
    assert any(c.value.startswith("s_k(x) ") for c in at.caption)
