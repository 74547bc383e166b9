"""AppTest: a dataset with a ground-truth column ("rule") shows it on the Components page, in the overview
table, as a breakdown in the component view's statistics and as a colouring of the map."""
import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis.datasets import load_text_file
from analysis.demos import load_demo
from analysis.loading import DatasetSpec, demo_specs, register_pair
from analysis.runs import pefs_settings
from analysis.store import Workspace

APP = Path(__file__).resolve().parents[2] / "app.py"
SYNTHETIC = "tests/app/test_ground_truth.py"  # marks the planted decomposition's runs
R = 4  # components; component k holds the examples i with i mod R == k, which follow rule k
N = 400  # the demo's first examples: a dataset of its own (runs apart from the demo's)


@pytest.fixture(scope="module")
def rule_pair(demo_workspace) -> tuple[DatasetSpec, str]:
    """The text demo's examples as a table with a planted 'rule' column, and a synthetic decomposition whose
    component k loads on the examples of rule k (every fifth one has no rule: 'none')."""
    model, demo_dataset, _ = load_demo("text", demo_workspace)
    n = min(N, len(demo_dataset))
    owner = np.arange(n) % R
    rules = np.where(np.arange(n) % 5 == 4, "none", [f"rule {k}" for k in owner])
    folder = demo_workspace / "ground-truth"
    folder.mkdir(exist_ok=True)
    source = folder / "rules.csv"
    pd.DataFrame({"text": [t[0] for t in demo_dataset.texts[:n]],
                  "label": [demo_dataset.label_names[label] for label in demo_dataset.labels[:n]],
                  "rule": rules}).to_csv(source, index=False)
    spec = DatasetSpec(source=str(source), text_columns=("text",), label_column="label",
                       label_names=tuple(demo_dataset.label_names), annotation_columns=("rule",))
    dataset = load_text_file(source, text_columns=["text"], label_column="label",
                             label_names=demo_dataset.label_names, annotation_columns=["rule"])
    ws = Workspace(demo_workspace)
    register_pair(ws, model, dataset, "demo:text")  # as the Load page does: label names for the page
    ids = {"model_id": model.content_hash, "dataset_id": dataset.content_hash}
    pefs = ws.start_run("pefs", {**pefs_settings(model, dataset, kind="lrm", n_values_per_example=None,
                                                 top_k_classes=None), "synthetic": SYNTHETIC}, **ids)
    run = ws.start_run("npeff-lrm", {"pefs": pefs.key, "synthetic": SYNTHETIC, "n_components": R}, **ids)
    if run.status != "complete":
        rng = np.random.default_rng(0)
        M, labels = model.summary().n_parameters_in_scope, dataset.labels
        logits = np.stack([-labels, labels], 1).astype(np.float32) * rng.uniform(0.5, 3, (n, 1)).astype(np.float32)
        ws.save_arrays(pefs.id, {"logits": logits, "labels": labels})
        ws.complete_run(pefs.id, {"n_examples": n, "n_parameters": M, "kind": "lrm"}, ["logits", "labels"])
        W = (0.02 * rng.random((n, R))).astype(np.float32)
        W[np.arange(n), owner] += (1 + rng.exponential(1.0, n) * (rules != "none")).astype(np.float32)
        kept = np.sort(rng.choice(M, size=2000, replace=False))
        G = rng.normal(size=(R, len(kept))).astype(np.float32)
        G /= np.linalg.norm(G, axis=1, keepdims=True)
        ws.save_arrays(run.id, {"W": W, "G": G, "kept": kept, "losses": np.array([2.0, 1.0])})
        ws.complete_run(run.id, {"pefs_run": pefs.id, "kind": "lrm", "n_components": R, "n_parameters": M,
                                 "relative_error": 0.5, "final_loss": 1.0}, ["W", "G", "kept", "losses"])
    ws.close()
    return spec, run.id


def _values(y) -> list[float]:
    """A Plotly JSON array: a list, or a typed array {"dtype", "bdata"} (base64)."""
    return list(y) if isinstance(y, list) else np.frombuffer(base64.b64decode(y["bdata"]), y["dtype"]).tolist()


def test_overview_and_component_view_show_the_ground_truth(app_env, rule_pair):
    spec, run_id = rule_pair
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.session_state["model_spec"], at.session_state["dataset_spec"] = demo_specs("text")[0], spec
    at.run()
    at.query_params.update({"run": run_id, "component": "2"})
    at.switch_page("pages/components.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    overview = at.dataframe[0].value
    assert overview["rule_majority"].tolist() == [f"rule {k}" for k in range(R)]  # the planted rules
    assert (overview["rule_share"] == 1.0).all()  # the top 50 of each component all follow its rule
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    rule = [s for s in specs if s["layout"].get("title", {}).get("text") == "rule of component 2's top examples"]
    assert len(rule) == 1, "no rule breakdown in the component view"
    top, every = (dict(zip(bars["x"], _values(bars["y"]))) for bars in rule[0]["data"])
    assert top["rule 2"] == 1.0 and top["none"] == 0.0  # the top 20 all follow rule 2
    assert every["none"] == pytest.approx(0.2, abs=0.01)
    assert "cmp_umap_colour" in {r.key for r in at.radio} and "rule" in at.radio(key="cmp_umap_colour").options

