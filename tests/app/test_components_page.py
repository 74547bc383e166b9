"""AppTest of the Components page: both demos render, selecting a component updates the view, a URL opens it
(tab, section, top-N and example included), a link to another pair's run offers to load that pair."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis import notes
from analysis.demos import load_demo
from analysis.jobs import compute_spec, find_job
from analysis.loading import DatasetSpec, demo_specs, load_dataset_spec, pair_dataset, register_pair
from analysis.runs import fit_run, load_decomposition, pefs_run, pefs_settings
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


def test_a_permalink_restores_tab_section_top_n_and_example_with_one_purity_everywhere(app_env, text_run):
    k, top = 2, 30
    W = load_decomposition(Workspace(app_env), Workspace(app_env).get_run(text_run)).W
    example = int(np.argsort(-W[:, k], kind="stable")[25])  # the 26th example: only in a top 30
    at = _open({"run": text_run, "component": str(k), "view": "Attributions", "top": str(top),
                "example": str(example), "tab": "Browse"})
    assert at.slider(key="top").value == top and at.selectbox(key="cmp_attr_idx").value == example
    assert at.session_state["view"] == "Attributions" and at.session_state["tab"] == "Browse"
    link = next(c.value for c in at.code if "component=" in c.value)
    assert link == (f"/components?run={text_run}&component={k}&tab=Browse&view=Attributions&top={top}"
                    f"&example={example}")  # AppTest has no browser URL; the server prefixes http://host:port
    assert at.query_params["example"] == str(example)

    purity = at.dataframe[0].value["purity"].iloc[k]  # over the top 50, whatever the slider says
    shown = f"{purity:.0%}"
    metric = next(m for m in at.metric if m.label.startswith("Purity"))
    assert (metric.label, metric.value) == ("Purity (top 50)", shown)
    picker = at.selectbox(key="cmp_component")
    assert picker.options[k].endswith(f"({shown} of top 50)"), picker.options[k]
    assert next(m for m in at.metric if m.label.startswith("Accuracy")).label == "Accuracy (top 50)"

    bands = [m.value for m in at.markdown if "band **" in m.value]  # the Quantiles view's cards
    assert len(bands) == 15 and r"band **1/5 \(80–100th pct\)**" in bands[0]  # Markdown-escaped parentheses
    assert r"band **5/5 \(0–20th pct\)**" in bands[-1]

    at.toggle(key="cmp_module_shares_show").set_value(True).run()  # the 'direction by module' column, labelled
    heatmap = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                   if "direction lives (module)" in json.loads(c.proto.spec)["layout"]["title"]["text"])
    assert len(heatmap["data"][0]["y"]) == 5 and "module %{x}" in heatmap["data"][0]["hovertemplate"]
    assert len(heatmap["data"][0]["x"]) == len(at.dataframe[0].value["modules"].iloc[0]) > 1  # a column per bar


def test_open_in_browse_switches_from_the_search_tab_to_the_component(app_env, text_run):
    at = _open({"run": text_run, "tab": "Search"})
    assert at.session_state["tab"] == "Search" and at.query_params["tab"] == "Search"
    at.text_input(key="cmp_search").input("#7").run()
    target = at.selectbox(key="cmp_search_open").options[-1]
    at.selectbox(key="cmp_search_open").set_value(int(target)).run()
    at.button(key="cmp_search_go").click().run()
    assert not at.exception, at.exception
    assert at.session_state["tab"] == "Browse" and "tab" not in at.query_params  # the default tab leaves the URL
    assert at.selectbox(key="cmp_component").value == int(target) and at.query_params["component"] == target
    assert [s.value for s in at.subheader] == [f"Component {target}"]


@pytest.fixture(scope="module")
def other_pair_run(demo_workspace) -> tuple[str, str]:
    """A decomposition of the image demo's model on another dataset (its first 40 digits as an .npz in the
    workspace), with the compute job that records how that pair is loaded: (run id, dataset name)."""
    model_spec, _ = demo_specs("image")
    model, digits, _ = load_demo("image", demo_workspace)
    path = Path(demo_workspace) / "uploads" / "components-page-test" / "first-40-digits.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=np.asarray(digits.images[:40]), labels=digits.labels[:40])
    dataset_spec = DatasetSpec(source=str(path), label_names=tuple(model.label_names))
    dataset = pair_dataset(model, load_dataset_spec(dataset_spec))
    ws = Workspace(demo_workspace)
    register_pair(ws, model, dataset, model_spec.source)
    run = fit_run(ws, pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=100), n_components=3, n_iters=20)
    spec = compute_spec(model_spec, dataset_spec, pefs={"kind": "lrm", "n_values_per_example": 100},
                        fit={"n_components": 3, "n_iters": 20})
    if find_job(ws, "compute", spec) is None:
        ws.create_job(f"test-{run.id}", "compute", spec, status="running", host="test", pid=os.getpid())
        ws.finish_job(f"test-{run.id}", "complete", result=run.id)
    ws.close()
    return run.id, dataset.name


def test_a_link_to_another_pairs_run_says_whose_it_is_and_loads_that_pair(app_env, other_pair_run):
    run_id, dataset_name = other_pair_run
    at = _open({"run": run_id, "component": "1"})  # the session starts on the text demo
    warning = at.warning[0].value
    assert warning.startswith(f"Decomposition {run_id} belongs to model 'image-demo' on dataset '{dataset_name}', "
                              "not to the active pair ('text-demo' on 'rotten-tomatoes-demo')")
    assert at.query_params["run"] != run_id
    at.button(key="linked_pair_load").click().run()
    assert not at.exception, at.exception
    assert not at.warning and at.selectbox(key="cmp_run").value == run_id and at.query_params["run"] == run_id
    assert any("image-demo" in m.value and dataset_name in m.value for m in at.sidebar.markdown)
