"""compute_pefs on a tiny random BERT: parity with a per-example autograd loop on unpadded inputs."""
import numpy as np
import pytest
import torch

from analysis.fisher import compute_pefs
from analysis.models import ParamScope, load_model

TEXTS = ["good film", "the plot was very boring and not fine", "great acting", "a story is a story is not great",
         "bad"]


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    return load_model(tiny_bert_dir, scope=ParamScope("last_layers", n_layers=1))


@pytest.fixture(scope="module")
def encoded(bert) -> dict[str, torch.Tensor]:
    """All texts padded to a common length (padding=max_length adds padding even to the longest)."""
    return dict(bert.adapter.tokenizer(TEXTS, padding="max_length", max_length=16, return_tensors="pt"))


def loop_pefs(model, encoded: dict[str, torch.Tensor], top_k: int | None = None) -> np.ndarray:
    """Slow reference A [n, c, M]: each example alone and unpadded, autograd.grad per class."""
    names = set(model.param_names_in_scope())
    params = [p for n, p in model.named_parameters() if n in names]
    A = []
    for i in range(len(TEXTS)):
        length = int(encoded["attention_mask"][i].sum())
        alone = {k: v[i:i + 1, :length] for k, v in encoded.items()}
        logp = model(alone)[0].log_softmax(-1)
        classes = range(logp.shape[0]) if top_k is None else logp.argsort(descending=True)[:top_k].tolist()
        A.append(torch.stack([logp[y].exp().sqrt() * torch.cat(
            [g.flatten() for g in torch.autograd.grad(logp[y], params, retain_graph=True)]) for y in classes]))
    return torch.stack(A).detach().numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal to 1e-5 relative to the largest entry."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def split(encoded: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    return [{k: v[s:s + size] for k, v in encoded.items()} for s in range(0, len(TEXTS), size)]


@pytest.mark.parametrize("top_k", [None, 2])
def test_padded_batches_match_the_unpadded_loop_on_last_layer_and_head(bert, encoded, top_k):
    A = loop_pefs(bert, encoded, top_k)
    lrm = compute_pefs(bert, split(encoded, 3), kind="lrm", top_k_classes=top_k)
    assert lrm.n_parameters == A.shape[2] < sum(p.numel() for p in bert.parameters())
    assert_close(lrm.dense(), A)
    diag = compute_pefs(bert, split(encoded, 5), kind="diag", top_k_classes=top_k)
    assert_close(diag.dense(), (A ** 2).sum(axis=1))


def test_all_parameters_including_embeddings_match_the_loop(tiny_bert_dir, encoded):
    bert = load_model(tiny_bert_dir)
    A = loop_pefs(bert, encoded)
    assert_close(compute_pefs(bert, split(encoded, 2), kind="lrm").dense(), A)


def test_padding_and_batch_size_do_not_change_the_pefs(bert, encoded):
    tight = dict(bert.adapter.tokenizer(TEXTS, padding=True, return_tensors="pt"))  # padded to the longest text only
    one_by_one = compute_pefs(bert, split(tight, 1))
    together = compute_pefs(bert, split(encoded, 5))
    assert_close(together.dense(), one_by_one.dense())
    np.testing.assert_allclose(together.norms, one_by_one.norms, rtol=1e-5)
    np.testing.assert_allclose(together.logits, one_by_one.logits, rtol=1e-5, atol=1e-6)
