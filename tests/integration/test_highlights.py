"""Batched integrated gradients of s_k against a slow per-example, per-position, per-step finite-difference
implementation and against captum (a padded BERT batch, a left-padded GPT-2 prompt batch, an image MLP); token spans of the display
text; the highlights job stores its result once."""
import numpy as np
import pytest
import torch

from analysis.adapters.images import ImageModule
from analysis.attributions import component_attribution, component_score, direction_tangents
from analysis.datasets import dataset_subset, image_examples, make_batches, text_examples
from analysis.demos import load_demo
from analysis.highlights import KIND, compute_highlights, highlight_params, highlights_run, stored_highlights
from analysis.jobs import highlights_spec, run_job
from analysis.loading import demo_specs
from analysis.models import ClassifierModel, ParamScope, load_model
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace
from tests.tiny_models import build_tiny_gpt2

WEIGHT_SCALE = 8.0  # the random init (std 0.02) leaves the tiny BERT almost constant in its input
TEXTS = ["the film was good", "bad plot"]  # one padded batch
EPS = 1e-6  # finite-difference step along one position's (input − baseline)
STEPS = 2  # integration steps in the finite-difference comparisons (midpoints 1/4 and 3/4)


def _scaled(model: ClassifierModel) -> ClassifierModel:
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(WEIGHT_SCALE)
    return model


@pytest.fixture(scope="module")
def bert(tiny_bert_dir) -> ClassifierModel:
    return _scaled(load_model(tiny_bert_dir, scope=ParamScope("last_layers", n_layers=1)))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> ClassifierModel:
    """A tiny GPT-2 read as a template + label-word classifier (left padding, position ids)."""
    folder = build_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))
    return _scaled(load_model(folder, adapter="causal-lm-classifier",
                              options={"template": "{text} Answer:", "verbalizer": "good,bad"}))


def _direction(model: ClassifierModel, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed).standard_normal(model.summary().n_parameters_in_scope)
    return g / np.linalg.norm(g)


def _scores_with_embeddings(model, batch, tangents, embeddings: torch.Tensor) -> np.ndarray:
    """s_k of a one-example batch repeated once per row of `embeddings` [b, L, D], each row replacing its
    word-embedding output (a hook on the model, removed after): [b]."""
    handle = model.net.get_input_embeddings().register_forward_hook(lambda _m, _a, _o: embeddings)
    repeated = {k: v.repeat(len(embeddings), *[1] * (v.ndim - 1)) for k, v in batch.items()}
    try:
        with torch.no_grad():
            return component_score(model, repeated, tangents).numpy()
    finally:
        handle.remove()


def _slow_text_scores(model: ClassifierModel, dataset, direction: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Per example alone, per token l: the mean over the midpoints e_α = e' + α (e − e'), α = (i + ½)/STEPS, of
    (s(e_α + ε δ_l) − s(e_α − ε δ_l)) / 2ε with δ_l = row l of (e − e'), e' the embeddings of padding tokens with
    [CLS]/[SEP]/<s>/</s> kept; and s(e)."""
    tangents = direction_tangents(model, direction)
    tok = model.adapter.tokenizer
    markers = {tok.cls_token_id, tok.sep_token_id, tok.bos_token_id, tok.eos_token_id} - {None, tok.pad_token_id}
    out = []
    for i in range(len(dataset)):
        batch = {k: v for k, v in next(make_batches(model, dataset_subset(dataset, [i]), batch_size=1)).items()
                 if k != "labels"}
        ids = batch["input_ids"]
        baseline_ids = torch.tensor([[t if t in markers else tok.pad_token_id for t in ids[0].tolist()]])
        embed = model.net.get_input_embeddings()
        with torch.no_grad():
            e, e0 = embed(ids), embed(baseline_ids)  # [1, L, D] each
        L = ids.shape[1]
        steps = torch.zeros(L, *e.shape[1:], dtype=e.dtype)  # [L, L, D]: row l moves token l only
        steps[torch.arange(L), torch.arange(L)] = e[0] - e0[0]
        scores = np.zeros(L)
        for alpha in (np.arange(STEPS) + 0.5) / STEPS:
            point = e0 + alpha * (e - e0)  # [1, L, D]
            s = _scores_with_embeddings(model, batch, tangents, torch.cat([point + EPS * steps, point - EPS * steps]))
            scores += (s[:L] - s[L:]) / (2 * EPS) / STEPS
        out.append((scores, float(_scores_with_embeddings(model, batch, tangents, e)[0])))
    return out


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_batched_token_scores_match_finite_differences_per_example(name, request):
    model = request.getfixturevalue(name)
    dataset = text_examples(TEXTS, model.label_names)
    g = _direction(model)
    found = compute_highlights(model, dataset, g, np.array([1, 0]), batch_size=2, n_steps=STEPS)  # one batch
    slow = _slow_text_scores(model, dataset, g)
    for i, idx in enumerate([1, 0]):
        example = found.example(i)
        scores, value = slow[idx]
        assert example.idx == idx and np.abs(scores).max() > 0
        np.testing.assert_allclose(example.scores, scores, rtol=1e-5, atol=1e-9 * np.abs(scores).max())
        # s_k of the embeddings as the input: GPT-2's tied word embeddings, in scope as its head, add no tangent
        assert example.value == pytest.approx(value, rel=1e-10)
        assert example.delta == pytest.approx(example.scores.sum() - (example.value - example.baseline_value))
    if name == "bert":  # no word embedding in scope: s_k of the embeddings is s_k of the text
        alone = next(make_batches(model, dataset_subset(dataset, [0]), batch_size=1))
        tangents = direction_tangents(model, g)
        with torch.no_grad():
            value = float(component_score(model, alone, tangents)[0])
        assert found.example(1).value == pytest.approx(value, rel=1e-10)


def test_token_spans_point_at_the_words_of_the_display_text(bert, gpt2):
    texts = text_examples(TEXTS[:1], bert.label_names)
    display = bert.adapter.display_texts(texts)[0]
    spans = bert.adapter.display_spans(texts)[0]
    assert [display[s:e] if s >= 0 else None for s, e in spans.tolist()] == [None, "the", "film", "was", "good", None]
    pair = text_examples([("the film", "was good")], bert.label_names, text_columns=("a", "b"))
    display, spans = bert.adapter.display_texts(pair)[0], bert.adapter.display_spans(pair)[0]
    assert display == "the film ‖ was good"
    assert [display[s:e] for s, e in spans.tolist() if s >= 0] == ["the", "film", "was", "good"]
    prompt = text_examples(["great"], gpt2.label_names)
    display, spans = gpt2.adapter.display_texts(prompt)[0], gpt2.adapter.display_spans(prompt)[0]
    assert [display[s:e] for s, e in spans.tolist()] == ["great", "Answer:"]


def test_pixel_scores_match_finite_differences_and_converge_to_captums_integrated_gradients():
    torch.manual_seed(0)
    model = ClassifierModel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 12), torch.nn.Tanh(),
                                                torch.nn.Linear(12, 10)).double().eval(),
                            adapter=ImageModule([str(i) for i in range(10)]), name="mlp", content_hash="mlp",
                            scope=ParamScope("all"))
    images = np.random.default_rng(1).random((3, 8, 8))
    dataset = image_examples(images, model.label_names)
    g = _direction(model, seed=2)
    found = compute_highlights(model, dataset, g, np.arange(3), batch_size=2, n_steps=STEPS)
    tangents = direction_tangents(model, g)
    for i in range(3):
        x = torch.as_tensor(images[i:i + 1])
        slow = np.zeros((8, 8))
        for alpha in (np.arange(STEPS) + 0.5) / STEPS:  # the baseline is black: the path is α x
            for r in range(8):
                for c in range(8):
                    step = torch.zeros_like(x)
                    step[0, r, c] = x[0, r, c]
                    with torch.no_grad():
                        plus = component_score(model, {"pixels": alpha * x + EPS * step}, tangents)[0]
                        minus = component_score(model, {"pixels": alpha * x - EPS * step}, tangents)[0]
                    slow[r, c] += float(plus - minus) / (2 * EPS) / STEPS
        np.testing.assert_allclose(found.example(i).scores, slow, rtol=1e-5, atol=1e-9 * np.abs(slow).max())
    # many steps: captum's integrated gradients (Gauss-Legendre) and complete (Σ scores = s(x) − s(x'))
    fine = compute_highlights(model, dataset, g, np.arange(1), n_steps=64).example(0)
    ig = component_attribution(model, dataset, g, index=0, n_steps=64).scores
    np.testing.assert_allclose(fine.scores, ig, rtol=1e-3, atol=1e-4 * np.abs(ig).max())
    assert fine.relative_error < 1e-3 < found.example(0).relative_error


@pytest.fixture(scope="module")
def image(image_workspace):
    """The image demo's LRM fit that the app tests browse (seconds, once per workspace), without stored
    highlights: (workspace, model, dataset, fit)."""
    model, dataset, _ = load_demo("image", image_workspace)
    ws = Workspace(image_workspace)
    fit = fit_run(ws, pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=200), n_components=6, n_iters=40)
    with ws.transaction() as con:
        con.execute("DELETE FROM runs WHERE kind = ? AND json_extract_string(params, '$.decomposition') = ?",
                    [KIND, fit.key])
    ws.close()
    return ws, model, dataset, fit


def test_the_highlights_job_stores_them_once_and_the_page_lookup_finds_the_largest(image, monkeypatch):
    ws, model, dataset, fit = image
    assert stored_highlights(ws, fit, 1) is None
    model_spec, dataset_spec = demo_specs("image")
    job_id = f"hl-{len(ws.job_rows())}"
    ws.create_job(job_id, "highlights", highlights_spec(model_spec, dataset_spec, fit.id, 1, 6))
    job = run_job(ws, job_id)
    assert job.status == "complete" and job.result == ws.find_run(KIND, highlight_params(fit, 1, 6)).id
    small = highlights_run(ws, model, dataset, fit, 1, 3)
    found = stored_highlights(ws, fit, 1)
    assert len(found) == 6 and found.scores.shape == (6, 8, 8) and found.spans is None
    np.testing.assert_array_equal(found.indices[:3], small.indices)
    np.testing.assert_allclose(found.scores[:3], small.scores, rtol=1e-5,  # batching changes nothing (float32)
                               atol=1e-6 * np.abs(small.scores).max())

    def fail(*args, **kwargs):
        raise AssertionError("stored highlights were computed again")

    monkeypatch.setattr("analysis.highlights.compute_highlights", fail)
    np.testing.assert_array_equal(highlights_run(ws, model, dataset, fit, 1, 6).scores, found.scores)
    with pytest.raises(ValueError, match=r"^component must be in \[0, 6\), got 6$"):
        highlights_run(ws, model, dataset, fit, 6, 6)
