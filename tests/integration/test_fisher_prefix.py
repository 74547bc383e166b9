"""compute_pefs with a last-layer scope runs the frozen prefix once per batch and vmaps only the rest: the PEFs
equal those of the full vmapped forward (the prefix switched off), on a tiny BERT classifier, the digits CNN and
a tiny GPT-2 next-token model; a replay that would disagree with the full model falls back to it."""
import numpy as np
import pandas as pd
import pytest
import torch

import analysis.fisher as fisher
from analysis.adapters.images import ImageModule
from analysis.datasets import make_batches, text_dataset
from analysis.fisher import compute_pefs
from analysis.image_models import DigitsCNN
from analysis.models import ClassifierModel, ParamScope, load_model
from tests.tiny_models import GPT2_WORDS, build_tiny_gpt2

LAST = ParamScope("last_layers", n_layers=1)
TEXTS = ["the movie was good", "bad", "the plot was awful and the movie was bad", "great", "the plot was great",
         "awful movie"]


def text_batches(model: ClassifierModel, size: int) -> list[dict[str, torch.Tensor]]:
    frame = pd.DataFrame({"text": TEXTS})
    data = text_dataset(frame, text_columns=["text"], label_column=None, label_names=model.label_names, name="t",
                        source="t.csv")
    return list(make_batches(model, data, batch_size=size))


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    model = load_model(tiny_bert_dir, scope=LAST)
    return model, text_batches(model, 4)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    model = load_model(build_tiny_gpt2(tmp_path_factory.mktemp("gpt2")), scope=LAST)  # next token, top 8 classes
    return model, text_batches(model, 4)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = ClassifierModel(DigitsCNN(), adapter=ImageModule([str(d) for d in range(10)]), name="cnn",
                            content_hash="cnn", scope=LAST)
    pixels = torch.rand(7, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, [{"pixels": pixels[:4]}, {"pixels": pixels[4:]}]


def pefs_both_ways(model, batches, monkeypatch, **kwargs):
    """(PEFs with the prefix replayed, PEFs with the full vmapped forward), checking each took its path."""
    replayed, real = [], fisher._replayed_grads

    def spy(*args):
        out = real(*args)
        replayed.append(out is not None)
        return out

    monkeypatch.setattr(fisher, "_replayed_grads", spy)
    with_prefix = compute_pefs(model, batches, **kwargs)
    assert replayed == [True] * len(batches)
    monkeypatch.setattr(fisher, "_find_prefix", lambda *args: None)
    return with_prefix, compute_pefs(model, batches, **kwargs)


def assert_same(a, b) -> None:
    for name in ("values", "norms", "logits"):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-5 * np.abs(y).max(), err_msg=name)
    np.testing.assert_array_equal(a.indices, b.indices)
    if hasattr(a, "class_ids"):
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_array_equal(a.class_offsets, b.class_offsets)


@pytest.mark.parametrize("which", ["bert", "cnn", "gpt2"])
@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_replayed_prefix_gives_the_pefs_of_the_full_forward(which, kind, request, monkeypatch):
    model, batches = request.getfixturevalue(which)
    replayed, full = pefs_both_ways(model, batches, monkeypatch, kind=kind, n_values_per_example=50)
    assert_same(replayed, full)


def test_every_value_kept_and_top_classes_also_agree(gpt2, monkeypatch):
    model, batches = gpt2
    replayed, full = pefs_both_ways(model, batches, monkeypatch, kind="lrm", top_k_classes=3)
    assert replayed.n_classes == 3 and len(GPT2_WORDS) == len(model.label_names)
    assert_same(replayed, full)


def test_a_replay_that_disagrees_with_the_full_model_falls_back_to_it(bert, monkeypatch):
    """Recorded outputs handed out wrongly (here: every example gets the first example's rows) change the
    logits: the first batch's check sees it and the whole call runs in full."""
    model, batches = bert
    expected = compute_pefs(model, batches, n_values_per_example=50)
    real = fisher._replayed_one

    def first_rows_only(prefix, recorded, rows):
        shuffled = fisher.map_tensors(recorded, lambda t: t[:1].expand_as(t) if t.dim() and len(t) == 4 else t)
        return real(prefix, shuffled, rows)

    monkeypatch.setattr(fisher, "_replayed_one", first_rows_only)
    assert_same(compute_pefs(model, batches, n_values_per_example=50), expected)
