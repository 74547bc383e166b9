"""AppTest of the Components page: both demos render, selecting a component updates the view, a URL opens it."""
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis import notes
from analysis.demos import load_demo
from analysis.runs import pefs_settings
from analysis.store import Workspace

APP = Path(__file__).resolve().parents[2] / "app.py"
SYNTHETIC = "tests/app/test_components_page.py"  # marks the synthetic text decomposition's runs


@pytest.fixture(scope="module")
def text_run(demo_workspace) -> str:
    """A synthetic 5-component decomposition of the text demo (text PEFs take minutes on CPU).

    It has the shape of a real run over the demo's default scope: component k holds the examples whose
    index is k mod 5, component 0 prefers 'fresh'; the logits agree with the gold label 80% of the time.
    """
    model, dataset, _ = load_demo("text", demo_workspace)
    ws = Workspace(demo_workspace)
    ids = {"model_id": model.content_hash, "dataset_id": dataset.content_hash}
    pefs = ws.start_run("pefs", {**pefs_settings(model, dataset, kind="lrm", n_values_per_example=None,
                                                 top_k_classes=None), "synthetic": SYNTHETIC}, **ids)
    run = ws.start_run("npeff-lrm", {"pefs": pefs.key, "synthetic": SYNTHETIC, "n_components": 5}, **ids)
    if run.status == "complete":
        ws.close()
        return run.id
    rng = np.random.default_rng(0)
    n, r, M = len(dataset), 5, model.summary().n_parameters_in_scope
    labels = dataset.labels
    predicted = np.where(rng.random(n) < 0.8, labels, 1 - labels)
    logits = np.stack([-predicted, predicted], 1).astype(np.float32) * rng.uniform(0.5, 3, (n, 1)).astype(np.float32)
    ws.save_arrays(pefs.id, {"logits": logits, "labels": labels})
    ws.complete_run(pefs.id, {"n_examples": n, "n_parameters": M, "kind": "lrm"}, ["logits", "labels"])
    W = (0.02 * rng.random((n, r))).astype(np.float32)
    owner = np.arange(n) % r
    W[np.arange(n), owner] += rng.exponential(1.0, n).astype(np.float32) * (1 + labels * (owner == 0))
    kept = np.sort(rng.choice(M, size=3000, replace=False))
    G = rng.normal(size=(r, len(kept))).astype(np.float32)
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    ws.save_arrays(run.id, {"W": W, "G": G, "kept": kept, "losses": np.array([2.0, 1.0])})
    ws.complete_run(run.id, {"pefs_run": pefs.id, "kind": "lrm", "n_components": r, "n_parameters": M,
                             "relative_error": 0.5, "final_loss": 1.0}, ["W", "G", "kept", "losses"])
    ws.close()
    return run.id


def _open(query: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.query_params.update(query)
    at.switch_page("pages/components.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_components_page_renders_for_the_text_demo(app_env, text_run):
    at = _open({"run": text_run})
    assert at.selectbox(key="cmp_run").value == text_run
    assert [s.value for s in at.subheader] == ["Component 0"]
    overview = at.dataframe[0].value
    assert overview["component"].tolist() == [0, 1, 2, 3, 4]
    assert overview["majority_label"].iloc[0] == "fresh"  # the planted preference
    assert len(overview["modules"].iloc[0]) > 1  # module shares of the direction, for the bar column
    assert any(m.value.startswith("**#") and "coefficient" in m.value for m in at.markdown)  # text cards
    n_tables = len(at.dataframe)
    at.toggle(key="cmp_top_0_table").set_value(True).run()  # the top examples as a table instead
    top = at.dataframe[1].value
    assert len(at.dataframe) == n_tables + 1 and "text" in top and top["coefficient"].is_monotonic_decreasing
    at.text_input(key="cmp_search").input("film").run()
    assert not at.exception, at.exception
    found = at.dataframe[-1].value
    assert len(found) > 0 and found["text"].str.contains("film", case=False).all()
    assert at.query_params["component"] == "0"


def test_image_link_opens_its_component_and_selection_updates_the_view(app_env, image_run):
    at = _open({"run": image_run, "component": "4"})  # the session starts on the text demo
    assert any("image-demo" in m.value for m in at.sidebar.markdown)  # the link's demo was activated
    assert at.selectbox(key="cmp_component").value == 4
    assert [s.value for s in at.subheader] == ["Component 4"]
    assert at.caption[-1].value != ""
    at.selectbox(key="cmp_component").set_value(1).run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["Component 1"]
    assert at.query_params["component"] == "1" and at.query_params["run"] == image_run
    at.number_input(key="cmp_attr_steps").set_value(8).run()
    at.button(key="cmp_attr_go").click().run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("Completeness error") for c in at.caption)


def test_a_d_npeff_run_has_no_component_attributions(app_env, diag_run):
    at = _open({"run": diag_run})
    assert at.selectbox(key="cmp_run").value == diag_run
    assert f"{diag_run} · D-NPEFF · 4 components" in " ".join(at.selectbox(key="cmp_run").options)
    assert any("not defined for D-NPEFF components" in i.value for i in at.info), [i.value for i in at.info]
    assert not [b for b in at.button if b.key == "cmp_attr_go"]


def test_page_points_to_compute_without_a_decomposition(demo_workspace, tmp_path, monkeypatch):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "demos").symlink_to(Path(demo_workspace) / "demos")
    monkeypatch.setenv("NPEFF_WORKSPACE", str(tmp_path / "ws"))
    at = _open({})
    assert "No complete NPEFF decomposition" in at.info[0].value


def test_a_named_component_shows_in_the_overview_survives_a_restart_and_reaches_the_latex(app_env, text_run):
    k = 3  # the other tests read component 0 of this run; this note is removed at the end
    try:
        at = _open({"run": text_run, "component": str(k)})
        overview = at.dataframe[0].value
        assert {"name", "tags", "summary"} <= set(overview.columns)
        summary = overview["summary"].iloc[k]
        assert " · " in summary and ("fresh" in summary or "rotten" in summary), summary  # words · label · layer
        assert overview["name"].iloc[k] == ""
        at.text_input(key=f"cmp_note_name_{text_run}_{k}").input("film-heavy rotten")
        at.text_input(key=f"cmp_note_tags_{text_run}_{k}").input("genre, check")
        at.text_area(key=f"cmp_note_text_{text_run}_{k}").input("Mentions of 'film' $x$ everywhere.")
        at.button(key=f"cmp_note_save_{text_run}_{k}").click().run()
        assert not at.exception, at.exception
        overview = at.dataframe[0].value
        assert overview["name"].iloc[k] == "film-heavy rotten" and overview["tags"].iloc[k] == "genre, check"
        assert [s.value for s in at.subheader] == [f"Component {k} · film-heavy rotten"]
        assert any(m.value == r"Mentions of 'film' \$x\$ everywhere." for m in at.markdown)  # shown literally

        at = _open({"run": text_run, "component": str(k)})  # a new session: read back from the workspace
        assert at.dataframe[0].value["name"].iloc[k] == "film-heavy rotten"
        assert at.text_input(key=f"cmp_note_name_{text_run}_{k}").value == "film-heavy rotten"
        latex = next(c.value for c in at.code if r"\documentclass" in c.value)
        assert rf"\subsection*{{Component {k}: film-heavy rotten}}" in latex
        assert r"\textit{Tags: genre, check.} Mentions of 'film' \$x\$ everywhere.\par" in latex
        at.multiselect(key="cmp_filter_tags").select("check").run()
        assert at.dataframe[0].value["component"].tolist() == [k]

        at.text_input(key=f"cmp_note_tags_{text_run}_{k}").input("t" * 41)  # refused: nothing changes
        at.button(key=f"cmp_note_save_{text_run}_{k}").click().run()
        assert [e.value.startswith("tags: each tag must be one line of at most 40 characters") for e in at.error] == [
            True]
        assert notes.get_note(Workspace(app_env), text_run, k).name == "film-heavy rotten"
    finally:
        notes.set_note(Workspace(app_env), text_run, k)
