"""AppTest: the app opens on the text demo with no configuration, and the Load page switches pairs: the sidebar
follows at once, the accuracy is shown, a failure ends the status box in error, a demo model takes the user's
own table (previewed, its label column guessed, its label values mapped to the model's classes)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis.loading import demo_specs, load_dataset_spec
from analysis.sample_accuracy import sample_indices

APP = Path(__file__).resolve().parents[2] / "app.py"


def _app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=180)


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_app_opens_on_the_text_demo(app_env):
    at = _app().run()
    assert not at.exception, at.exception
    assert at.subheader[-1].value == "Active model: text-demo"
    assert [m.value for m in at.metric][:2] == ["2", "22,713,986"]
    assert any("rotten" in c.value and "fresh" in c.value for c in at.sidebar.caption)
    assert [p.proto.page for p in at.sidebar.page_link][:8] == ["", "compute", "components", "compare", "perturb",
                                                                "merge", "jobs", "zonotope"]  # url paths; "" is the default page
    assert all(p.proto.icon.startswith(":material/") for p in at.sidebar.page_link)


def test_accuracy_is_shown_on_a_stated_sample(app_env):
    at = _app().run()
    _ok(at)
    dataset = load_dataset_spec(demo_specs("text")[1])
    idx = sample_indices(dataset.labels)  # the numbers themselves: tests/unit/test_sample_accuracy.py
    [metric] = [m for m in at.metric if m.label == "Accuracy"]
    assert metric.value.endswith("%") and 50 < float(metric.value[:-1]) <= 100
    assert any(f"on {len(idx)} random labelled examples of {len(dataset):,}" in c.value for c in at.caption)


def test_switch_to_the_image_demo(app_env):
    at = _app().run()
    at.radio(key="model_source").set_value("Image demo").run()
    assert at.radio(key="data_source").value == "Image demo"  # a demo model starts with its own data
    at.button(key="load_pair").click().run()
    _ok(at)
    assert at.subheader[-1].value == "Active model: image-demo"
    assert at.metric[0].value == "10"
    assert any("**Model:** image-demo" in m.value for m in at.sidebar.markdown)  # rerun: no stale sidebar
    assert any("Loaded image-demo" in s.value for s in at.success)
    [metric] = [m for m in at.metric if m.label == "Accuracy"]
    assert float(metric.value[:-1]) > 90  # the digits CNN is 98% accurate on held-out digits


def test_bad_local_path_ends_the_status_in_error_and_keeps_the_pair(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("NPEFF_ALLOWED_ROOTS", str(tmp_path))  # allowed, but nothing there
    at = _app().run()
    at.radio(key="model_source").set_value("Local path").run()
    at.text_input(key="model_path").input(str(tmp_path / "nope")).run()
    at.radio(key="data_source").set_value("Text demo").run()
    at.button(key="load_pair").click().run()
    assert not at.exception
    assert any("no such file or folder" in e.value for e in at.error)
    [status] = at.status
    assert status.state == "error"
    assert status.label.startswith("Not loaded: ") and "no such file or folder" in status.label
    assert "\n" not in status.label
    assert at.subheader[-1].value == "Active model: text-demo"


@pytest.fixture
def own_reviews(app_env, tmp_path, monkeypatch) -> Path:
    """A table of the user's own: its labels are not the text demo's class names (rotten, fresh)."""
    monkeypatch.setenv("NPEFF_ALLOWED_ROOTS", f"{tmp_path}:{app_env}")
    rng = np.random.default_rng(0)
    good = rng.random(12) < 0.5
    pd.DataFrame({"id": np.arange(12), "review": [("a delight, warm and funny" if g else "dull and far too long")
                                                   + f" ({i})" for i, g in enumerate(good)],
                  "sentiment": np.where(good, "positive", "negative")}).to_csv(tmp_path / "mine.csv", index=False)
    return tmp_path / "mine.csv"


def test_demo_model_with_own_table_previewed_and_its_labels_mapped(own_reviews):
    at = _app().run()
    at.radio(key="data_source").set_value("Local path").run()  # the text demo model stays
    at.text_input(key="data_path").input(str(own_reviews)).run()
    _ok(at)
    profile, head = [d.value for d in at.dataframe][:2]  # shown before Load, above the active pair's tables
    assert profile["column"].tolist() == ["id", "review", "sentiment"]
    assert profile["kind"].tolist() == ["an integer", "text", "text"]
    assert head.columns.tolist() == ["id", "review", "sentiment"] and len(head) == 8
    assert at.multiselect(key="data_text_columns").value == ["review"]
    assert at.selectbox(key="data_label_column").value == "id"  # no column named label: the first non-text one
    at.selectbox(key="data_label_column").set_value("sentiment").run()
    assert any("Map labels to the model's classes" in m.value for m in at.markdown)
    at.button(key="load_pair").click().run()  # unmapped: refused with the fix
    assert any("outside the model's classes" in e.value and "label mapping" in e.value for e in at.error)
    at.selectbox(key="data_label_map_negative").set_value("rotten")
    at.selectbox(key="data_label_map_positive").set_value("fresh").run()
    at.button(key="load_pair").click().run()
    _ok(at)
    assert at.subheader[-1].value == "Active model: text-demo"
    assert any("**Dataset:** mine" in m.value for m in at.sidebar.markdown)
    assert at.session_state["dataset_spec"].label_map == (("negative", "rotten"), ("positive", "fresh"))
    expected = pd.read_csv(own_reviews)["sentiment"].map({"negative": "rotten", "positive": "fresh"})
    preview = at.dataframe[-1].value
    assert preview["gold"].tolist() == expected.tolist()[:len(preview)]


def test_the_adapter_refuses_a_dataset_of_the_wrong_kind(own_reviews):
    at = _app().run()
    at.radio(key="model_source").set_value("Image demo").run()
    at.radio(key="data_source").set_value("Local path").run()
    at.text_input(key="data_path").input(str(own_reviews)).run()
    at.selectbox(key="data_label_column").set_value("(none)").run()
    at.button(key="load_pair").click().run()
    assert at.status[0].state == "error"
    assert any("reads image datasets" in e.value for e in at.error), [e.value for e in at.error]
