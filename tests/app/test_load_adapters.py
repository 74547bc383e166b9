"""AppTest of the Load page's adapters: a tiny causal LM saved in the test is read as a classifier (template +
label words, their tokens shown) or as a free-form next-token model whose gold labels are answer strings; the
label values that are not a classifier's classes are mapped to them (a next-token model reads answers itself); the
planted demo builds from the page; a next-token model's Components page says 'not available' for gold-label
statistics."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis.loading import DatasetSpec, ModelSpec, load_dataset_spec, load_model_spec, pair_dataset
from analysis.models import ParamScope
from analysis.runs import pefs_settings
from analysis.store import Workspace
from tests.tiny_models import GPT2_WORDS as WORDS, build_tiny_gpt2, reviews_csv

APP = Path(__file__).resolve().parents[2] / "app.py"
CLASSIFIER = "causal-lm-classifier"
SYNTHETIC = "tests/app/test_load_adapters.py"  # marks the synthetic next-token decomposition's runs


@pytest.fixture
def gpt2_env(app_env, tmp_path, monkeypatch):
    """A tiny GPT-2 folder and a CSV in a folder the server may read."""
    monkeypatch.setenv("NPEFF_ALLOWED_ROOTS", f"{tmp_path}:{app_env}")
    return build_tiny_gpt2(tmp_path / "tiny-gpt2"), reviews_csv(tmp_path / "reviews.csv")


def _app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=300)


def _local_model(at: AppTest, folder: Path, csv: Path) -> AppTest:
    at.radio(key="model_source").set_value("Local path").run()
    at.text_input(key="model_path").input(str(folder)).run()
    at.radio(key="data_source").set_value("Local path").run()
    at.text_input(key="data_path").input(str(csv)).run()
    assert not at.exception, at.exception
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_adapter_select_offers_the_causal_lm_adapters_and_their_options(gpt2_env):
    folder, csv = gpt2_env
    at = _local_model(_app().run(), folder, csv)
    adapter = at.selectbox(key="model_adapter")
    assert adapter.value == "causal-lm-next-token"  # what loading picks for a causal LM folder
    assert set(adapter.options) == {"Causal LM, free-form next token", "Causal LM as a classifier (prompt + label words)"}
    assert at.number_input(key="model_option_causal-lm-next-token_top_k_classes").value == 8
    adapter.set_value(CLASSIFIER).run()
    assert at.text_input(key=f"model_option_{CLASSIFIER}_template").value == "{text}"
    at.text_input(key=f"model_option_{CLASSIFIER}_verbalizer").input("good, good").run()
    assert any("share their first token" in w.value for w in at.warning), [w.value for w in at.warning]


def test_causal_lm_loads_as_a_classifier_with_template_and_label_words(gpt2_env):
    folder, csv = gpt2_env
    at = _local_model(_app().run(), folder, csv)
    at.selectbox(key="model_adapter").set_value(CLASSIFIER).run()
    at.text_input(key=f"model_option_{CLASSIFIER}_template").input("{text} Answer:").run()
    at.text_input(key=f"model_option_{CLASSIFIER}_verbalizer").input("good, bad").run()
    assert any("good → `good`" in c.value and "bad → `bad`" in c.value for c in at.caption)  # before loading
    at.multiselect(key="data_text_columns").set_value(["text"]).run()
    at.selectbox(key="data_label_column").set_value("sentiment").run()
    at.button(key="load_pair").click().run()
    _ok(at)
    assert at.subheader[-1].value == "Active model: tiny-gpt2"
    assert at.metric[0].value == "2"
    assert any("Causal LM as a classifier" in m.value for m in at.markdown)
    assert any(c.value.startswith("Label word → token: good → `good`") for c in at.caption)  # after loading
    preview = at.dataframe[-1].value
    assert preview["text"].iloc[0].endswith("Answer:") and set(preview["gold"]) <= {"good", "bad"}


def test_next_token_model_reads_answer_strings_as_gold_tokens(gpt2_env):
    folder, csv = gpt2_env
    at = _local_model(_app().run(), folder, csv)
    at.selectbox(key="data_label_column").set_value("answer").run()
    at.multiselect(key="data_annotations").set_value(["sentiment"]).run()
    at.button(key="load_pair").click().run()
    _ok(at)
    assert at.metric[0].value == str(len(WORDS))  # the classes are the vocabulary
    answers = pd.read_csv(csv)["answer"].tolist()
    assert at.dataframe[-1].value["gold"].tolist() == answers[:len(at.dataframe[-1].value)]


def test_label_mapping_is_offered_where_the_adapter_has_fixed_classes(gpt2_env):
    folder, csv = gpt2_env
    at = _local_model(_app().run(), folder, csv)
    at.selectbox(key="data_label_column").set_value("answer").run()
    assert not any("Map labels" in m.value for m in at.markdown)  # next-token: answers are read as tokens
    at.selectbox(key="model_adapter").set_value(CLASSIFIER).run()
    at.text_input(key=f"model_option_{CLASSIFIER}_verbalizer").input("good, bad").run()
    assert any("Map labels to the model's classes** (2 of 4 values" in m.value for m in at.markdown)
    assert at.selectbox(key="data_label_map_great").options == ["good", "bad"]
    at.selectbox(key="data_label_map_great").set_value("good")
    at.selectbox(key="data_label_map_awful").set_value("bad").run()
    at.button(key="load_pair").click().run()
    _ok(at)
    gold = pd.read_csv(csv)["answer"].replace({"great": "good", "awful": "bad"}).tolist()
    preview = at.dataframe[-1].value
    assert preview["gold"].tolist() == gold[:len(preview)]


def test_next_token_components_page_says_gold_labels_are_not_available(gpt2_env, app_env):
    folder, _ = gpt2_env
    prompts = folder.parent / "prompts.csv"
    pd.DataFrame({"text": ["the movie was", "the plot was", "the movie was great the plot was"] * 8}).to_csv(
        prompts, index=False)
    at = _local_model(_app().run(), folder, prompts)
    at.selectbox(key="data_label_column").set_value("(none)").run()
    at.button(key="load_pair").click().run()
    _ok(at)
    run_id = _synthetic_next_token_run(app_env, ModelSpec(str(folder), ParamScope("last_layers", n_layers=1)),
                                       DatasetSpec(str(prompts), text_columns=("text",)))
    at.switch_page("pages/components.py").run()
    _ok(at)
    assert at.selectbox(key="cmp_run").value == run_id
    overview = at.dataframe[0].value
    assert (overview["majority_label"] == "not available").all() and overview["purity"].isna().all()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Purity (top 24)"] == "not available" and metrics["Accuracy (top 24)"] == "not available"
    cards = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert cards and all("gold **not available**" in c and "misclassified" not in c for c in cards)
    assert any("predicted **" in c for c in cards)  # predictions are tokens of the vocabulary


def _synthetic_next_token_run(root: Path, model_spec: ModelSpec, dataset_spec: DatasetSpec) -> str:
    """A 3-component decomposition over the tiny GPT-2's next-token logits [n, V]; no gold labels."""
    model = load_model_spec(model_spec, root)
    dataset = pair_dataset(model, load_dataset_spec(dataset_spec))
    ws = Workspace(root)
    ids = {"model_id": model.content_hash, "dataset_id": dataset.content_hash}
    pefs = ws.start_run("pefs", {**pefs_settings(model, dataset, kind="lrm", n_values_per_example=None,
                                                 top_k_classes=None), "synthetic": SYNTHETIC}, **ids)
    run = ws.start_run("npeff-lrm", {"pefs": pefs.key, "synthetic": SYNTHETIC, "n_components": 3}, **ids)
    if run.status != "complete":
        rng = np.random.default_rng(0)
        n, r, M, V = len(dataset), 3, model.summary().n_parameters_in_scope, len(model.label_names)
        logits = rng.normal(size=(n, V)).astype(np.float32)
        ws.save_arrays(pefs.id, {"logits": logits, "labels": dataset.labels})
        ws.complete_run(pefs.id, {"n_examples": n, "n_parameters": M, "kind": "lrm"}, ["logits", "labels"])
        W = (0.02 * rng.random((n, r))).astype(np.float32)
        W[np.arange(n), np.arange(n) % r] += 1.0
        kept = np.sort(rng.choice(M, size=min(M, 500), replace=False))
        G = rng.normal(size=(r, len(kept))).astype(np.float32)
        G /= np.linalg.norm(G, axis=1, keepdims=True)
        ws.save_arrays(run.id, {"W": W, "G": G, "kept": kept, "losses": np.array([2.0, 1.0])})
        ws.complete_run(run.id, {"pefs_run": pefs.id, "kind": "lrm", "n_components": r, "n_parameters": M,
                                 "relative_error": 0.5, "final_loss": 1.0}, ["W", "G", "kept", "losses"])
    ws.close()
    return run.id


@pytest.mark.slow
def test_planted_demo_loads_from_the_load_page(planted_workspace, monkeypatch):
    """The test run's planted build (building a demo from the page is tested on the image demo, test_demo_job)."""
    monkeypatch.setenv("NPEFF_WORKSPACE", str(planted_workspace))
    at = _app().run()
    at.radio(key="model_source").set_value("Planted demo").run()
    assert any("Planted strategies" in m.value for m in at.markdown)
    at.button(key="load_pair").click().run()
    _ok(at)
    assert at.subheader[-1].value == "Active model: planted-demo"
    preview = at.dataframe[-1].value
    assert len(preview) > 0 and preview["text"].str.endswith("=").all()
