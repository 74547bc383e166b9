"""AppTest of the Components and Perturb pages on real decompositions of a tiny GPT-2 causal LM (built in the
test, 16 reviews): read as a classifier (template + label words) and as a free-form next-token model. Both
decompositions are computed and stored by the library, as the Compute page or the command line stores them."""
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis.loading import (DatasetSpec, ModelSpec, load_dataset_spec, load_model_spec, pair_dataset,
                              paired_dataset_spec)
from analysis.models import ParamScope
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace
from tests.tiny_models import GPT2_WORDS, build_tiny_gpt2, reviews_csv

APP = Path(__file__).resolve().parents[2] / "app.py"
CLASSIFIER, NEXT_TOKEN = "causal-lm-classifier", "causal-lm-next-token"
TEMPLATE, LABEL_WORDS = "{text} Answer:", ("good", "bad")
N_EXAMPLES, N_COMPONENTS = 16, 3


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("causal-lm-pages")
    return build_tiny_gpt2(folder / "tiny-gpt2"), reviews_csv(folder / "reviews.csv", n=N_EXAMPLES)


def _decompose(root: Path, model_spec: ModelSpec, dataset_spec: DatasetSpec, top_k_classes: int | None) -> str:
    """PEFs (last layer, 200 values per example) and a 3-component LRM fit, stored in the workspace."""
    model = load_model_spec(model_spec, root)
    dataset = pair_dataset(model, load_dataset_spec(paired_dataset_spec(model, dataset_spec)))
    ws = Workspace(root)
    pefs = pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=200, top_k_classes=top_k_classes,
                    batch_size=8)
    run = fit_run(ws, pefs, n_components=N_COMPONENTS, n_iters=30, seed=0)
    ws.close()
    return run.id


@pytest.fixture
def classifier_run(app_env, gpt2_files, monkeypatch) -> str:
    folder, csv = gpt2_files
    monkeypatch.setenv("NPEFF_ALLOWED_ROOTS", f"{folder.parent}:{app_env}")
    spec = ModelSpec(str(folder), ParamScope("last_layers", n_layers=1), adapter=CLASSIFIER,
                     options=(("template", TEMPLATE), ("verbalizer", ", ".join(LABEL_WORDS))))
    return _decompose(app_env, spec, DatasetSpec(str(csv), text_columns=("text",), label_column="sentiment"), None)


@pytest.fixture
def next_token_run(app_env, gpt2_files, monkeypatch) -> str:
    folder, csv = gpt2_files
    monkeypatch.setenv("NPEFF_ALLOWED_ROOTS", f"{folder.parent}:{app_env}")
    spec = ModelSpec(str(folder), ParamScope("last_layers", n_layers=1), adapter=NEXT_TOKEN,
                     options=(("top_k_classes", 3),))
    return _decompose(app_env, spec, DatasetSpec(str(csv), text_columns=("text",), label_column="answer"), 3)


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _load(gpt2_files, run_id: str, adapter: str, options: dict[str, object], label_column: str) -> AppTest:
    """The Load page with the tiny GPT-2 read through `adapter`, the decomposition in the URL."""
    folder, csv = gpt2_files
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.query_params["run"] = run_id
    at.run()
    at.radio(key="model_source").set_value("Local path").run()
    at.text_input(key="model_path").input(str(folder)).run()
    at.selectbox(key="model_adapter").set_value(adapter).run()
    for name, value in options.items():
        widget = at.number_input if isinstance(value, int) else at.text_input
        widget(key=f"model_option_{adapter}_{name}").set_value(value).run()
    at.radio(key="data_source").set_value("Local path").run()
    at.text_input(key="data_path").input(str(csv)).run()
    at.multiselect(key="data_text_columns").set_value(["text"]).run()
    at.selectbox(key="data_label_column").set_value(label_column).run()
    at.button(key="load_pair").click().run()
    _ok(at)
    return at


def _card_texts(at: AppTest) -> list[str]:
    """The text under each example card's meta line ('**#idx** · gold ...')."""
    shown = [m.value for m in at.markdown]
    return [shown[i + 1] for i, value in enumerate(shown[:-1]) if value.startswith("**#")]


def _perturb_strongly(at: AppTest) -> pd.DataFrame:
    """The Perturb page's one perturbation of component 0 at the largest magnitude: its flipped examples."""
    at.switch_page("pages/perturb.py").run()
    _ok(at)
    magnitude = at.select_slider(key="pt_magnitude")
    magnitude.set_value(magnitude.options[-1]).run()
    at.button(key="pt_one").click().run()
    _ok(at)
    assert [m.label for m in at.metric][:3] == ["KL on top examples", "KL on baseline", "KL ratio"]
    assert float(at.metric[0].value) > 0
    flips = [d.value for d in at.dataframe if "before" in d.value.columns]
    assert flips, [m.value for m in at.markdown]
    return flips[0]


def test_a_causal_lm_classifier_decomposition_renders_with_its_label_words(gpt2_files, classifier_run):
    at = _load(gpt2_files, classifier_run, CLASSIFIER,
               {"template": TEMPLATE, "verbalizer": ", ".join(LABEL_WORDS)}, "sentiment")
    at.switch_page("pages/components.py").run()
    _ok(at)
    assert at.selectbox(key="cmp_run").value == classifier_run
    overview = at.dataframe[0].value
    assert len(overview) == N_COMPONENTS and set(overview["majority_label"]) <= set(LABEL_WORDS)
    cards = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert cards and all(any(f"gold **{w}**" in c for w in LABEL_WORDS) for c in cards), cards
    assert all(c.endswith("Answer:") for c in _card_texts(at)), _card_texts(at)  # prompts, as the model reads them
    flips = _perturb_strongly(at)
    assert set(flips["before"]) | set(flips["after"]) <= set(LABEL_WORDS)


def test_a_next_token_decomposition_perturbs_with_tokens_as_classes(gpt2_files, next_token_run):
    at = _load(gpt2_files, next_token_run, NEXT_TOKEN, {"top_k_classes": 3}, "answer")
    flips = _perturb_strongly(at)
    assert set(flips["before"]) | set(flips["after"]) <= set(GPT2_WORDS)
