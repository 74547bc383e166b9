"""Names from files (model, dataset, labels, example texts) reach Markdown only escaped: no image is fetched."""
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import tests.conftest as fixtures
from analysis.datasets import load_text_file
from analysis.models import ParamScope, load_model
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace
from pages.common import escape_markdown

APP = Path(__file__).resolve().parents[2] / "app.py"
LABEL = "![x](http://127.0.0.1:9/t.png)"
MODEL_NAME, DATASET_NAME = "![m](t.png)", "![d](t.png)"
TEXT = "good film ![t](http://127.0.0.1:9/t.png) a"
RAW = ("![x](", "![m](", "![d](", "![t](")  # what a browser would fetch as an image


def test_escaped_text_reads_the_same_and_has_no_markup():
    assert escape_markdown(LABEL) == r"\!\[x\]\(http://127.0.0.1:9/t.png\)"
    assert escape_markdown("text-demo 1.5 a+b x=y") == "text-demo 1.5 a+b x=y"  # plain names unchanged
    assert escape_markdown("- item\n1. first\n  + x\n===\n# h") == "\\- item\n1\\. first\n  \\+ x\n\\===\n\\# h"
    assert escape_markdown("$x$ **b** `c` <img> &amp; :red[r] ~~s~~ |t|") == (
        r"\$x\$ \*\*b\*\* \`c\` \<img\> \&amp; :red\[r\] \~\~s\~\~ \|t\|")


@pytest.fixture
def hostile_pair(demo_workspace, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A tiny BERT whose first class, folder and dataset file are Markdown images, with a decomposition."""
    allowed = tmp_path / "allowed"
    ws_root = tmp_path / "ws"
    ws_root.mkdir()
    (ws_root / "demos").symlink_to(Path(demo_workspace) / "demos")
    monkeypatch.setattr(fixtures, "TINY_LABELS", [LABEL, "neu", "pos"])
    bert = fixtures.build_tiny_bert(allowed / MODEL_NAME)
    words = fixtures.TINY_VOCAB[5:]
    texts = [TEXT] + [" ".join(words[(i + j) % len(words)] for j in range(4)) for i in range(19)]  # all in the top 20
    csv = allowed / f"{DATASET_NAME}.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{[LABEL, 'neu', 'pos'][i % 3]}\n" for i, t in enumerate(texts)))
    model = load_model(bert, scope=ParamScope("last_layers", n_layers=1))
    dataset = load_text_file(csv, text_columns=["text"], label_column="label", label_names=model.label_names)
    ws = Workspace(ws_root)
    fit_run(ws, pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=200), n_components=3, n_iters=20)
    ws.close()
    monkeypatch.setenv("NPEFF_ALLOWED_ROOTS", str(allowed))
    monkeypatch.setenv("NPEFF_WORKSPACE", str(ws_root))
    return bert, csv


def _markdown_sources(at: AppTest) -> list[str]:
    """The Markdown source of every element that renders Markdown (bodies and labels)."""
    bodies = ("markdown", "caption", "title", "header", "subheader", "error", "warning", "info", "success", "toast")
    labels = ("metric", "expander", "tabs", "status")
    return ([e.value for kind in bodies for e in at.get(kind)] +
            [e.label for kind in labels for e in at.get(kind)])


def _assert_escaped(at: AppTest, page: str) -> list[str]:
    assert not at.exception, at.exception
    sources = _markdown_sources(at)
    leaks = [s for s in sources if any(raw in s for raw in RAW)]
    assert not leaks, f"{page}: unescaped Markdown images in {leaks}"
    return sources


def test_names_and_labels_never_reach_markdown_unescaped(hostile_pair):
    bert, csv = hostile_pair
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.radio(key="model_source").set_value("Local path").run()
    at.text_input(key="model_path").input(str(bert)).run()
    at.radio(key="data_source").set_value("Local path").run()
    at.text_input(key="data_path").input(str(csv)).run()
    at.button(key="load_pair").click().run()
    assert not at.error, [e.value for e in at.error]
    seen = _assert_escaped(at, "load")
    at.run()  # the sidebar, drawn before the page, shows the new pair from the next run on
    seen += _assert_escaped(at, "load")
    assert any(escape_markdown(LABEL) in s for s in at.sidebar.caption.values)  # the label did reach Markdown
    assert any(escape_markdown(MODEL_NAME) in s for s in at.sidebar.markdown.values)
    for page in ("pages/compute.py", "pages/components.py", "pages/perturb.py"):
        at.switch_page(page).run()
        assert not at.error, [e.value for e in at.error]
        seen += _assert_escaped(at, page)
    assert any(escape_markdown(TEXT) in s for s in seen)  # an example text card (Components page)
    assert any(escape_markdown(DATASET_NAME) in s for s in seen)


def test_a_run_id_in_the_link_is_shown_escaped(app_env):
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.query_params["run"] = LABEL  # a crafted permalink: ?run=![x](http://…)
    at.switch_page("pages/components.py").run()
    assert any("cannot be opened" in w.value for w in at.warning), [w.value for w in at.warning]
    _assert_escaped(at, "components")


def test_a_link_to_another_pairs_run_names_its_model_escaped(hostile_pair):
    bert, _ = hostile_pair
    ws = Workspace(os.environ["NPEFF_WORKSPACE"])
    run = ws.runs(kind="npeff-lrm", status="complete").iloc[0]
    ws.register_model(id=run["model_id"], name=MODEL_NAME, source=str(bert), input_kind="text",
                      label_names=[LABEL, "neu", "pos"], n_parameters=1)  # as the Load page registers it
    ws.close()
    at = AppTest.from_file(str(APP), default_timeout=300).run()  # the session is on the text demo
    at.query_params["run"] = run["id"]
    at.switch_page("pages/components.py").run()
    warnings = [w.value for w in at.warning]
    assert any(f"belongs to model '{escape_markdown(MODEL_NAME)}'" in w for w in warnings), warnings
    _assert_escaped(at, "components")
