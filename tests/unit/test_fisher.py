"""compute_pefs on a tiny MLP: parity with a per-example autograd loop, sparsification, guards and errors."""
import numpy as np
import pytest
import torch
from torch import nn

from analysis.fisher import compute_pefs
from kernels import topk

C = 3
ALL = ["fc1.weight", "fc1.bias", "head.weight", "head.bias"]


class TinyMLP(nn.Module):
    """Dict batch {"x": [B, 5]} -> logits [B, n_classes]; M = 5·7 + 7 + 7·3 + 3 = 66 for 3 classes."""

    def __init__(self, n_classes: int = C, hidden: int = 7):
        super().__init__()
        self.fc1 = nn.Linear(5, hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.tanh(self.fc1(batch["x"])))


@pytest.fixture
def tiny_mlp() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(7, 5, generator=torch.Generator().manual_seed(1)) * 2  # [n, 5]


def loop_pefs(model: nn.Module, x: torch.Tensor, names: list[str], top_k: int | None = None):
    """Slow reference: A [n, c, M] and class ids [n, c], one autograd.grad per example and class."""
    params = [p for n, p in model.named_parameters() if n in names]
    A, ids = [], []
    for i in range(len(x)):
        logp = model({"x": x[i:i + 1]})[0].log_softmax(-1)
        classes = range(len(logp)) if top_k is None else logp.argsort(descending=True)[:top_k].tolist()
        columns = [logp[y].exp().sqrt() * torch.cat([g.flatten() for g in
                                                     torch.autograd.grad(logp[y], params, retain_graph=True)])
                   for y in classes]
        A.append(torch.stack(columns).detach().numpy())
        ids.append(list(classes))
    return np.stack(A), np.array(ids)


def batches(x: torch.Tensor, size: int) -> list[dict[str, torch.Tensor]]:
    return [{"x": x[s:s + size]} for s in range(0, len(x), size)]


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal to 1e-5 relative to the largest entry."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("top_k", [None, 2])
def test_lrm_matches_the_autograd_loop(tiny_mlp, x, top_k):
    A, ids = loop_pefs(tiny_mlp, x, ALL, top_k)
    pefs = compute_pefs(tiny_mlp, batches(x, 3), kind="lrm", top_k_classes=top_k)
    assert pefs.n_parameters == 66 and pefs.n_classes == (top_k or C)
    np.testing.assert_array_equal(pefs.class_ids, ids)
    assert_close(pefs.dense(), A)


@pytest.mark.parametrize("top_k", [None, 2])
def test_diag_matches_the_autograd_loop(tiny_mlp, x, top_k):
    A, _ = loop_pefs(tiny_mlp, x, ALL, top_k)
    pefs = compute_pefs(tiny_mlp, batches(x, 4), kind="diag", top_k_classes=top_k)
    assert_close(pefs.dense(), (A ** 2).sum(axis=1))  # f = Σ_y p_y (∇ log p_y)⊙²


@pytest.mark.parametrize("top_k", [None, 2, 1])
@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_a_binary_classifier_matches_the_autograd_loop(x, top_k, kind):
    """Both classes of a binary classifier come from one VJP (A = scale ⊗ d); one class from one VJP."""
    torch.manual_seed(2)
    binary = TinyMLP(n_classes=2).eval()
    A, ids = loop_pefs(binary, x, ALL, top_k)
    pefs = compute_pefs(binary, batches(x, 3), kind=kind, top_k_classes=top_k)
    if kind == "lrm":
        np.testing.assert_array_equal(pefs.class_ids, ids)
        assert_close(pefs.dense(), A)
        F = A.transpose(0, 2, 1) @ A  # [n, M, M]
        np.testing.assert_allclose(pefs.norms, np.linalg.norm(F, axis=(1, 2)), rtol=1e-5)
    else:
        assert_close(pefs.dense(), (A ** 2).sum(axis=1))


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_sampled_top_k_on_a_wider_model_keeps_exactly_the_k_largest(x, n_classes, kind, monkeypatch):
    """M = 5·h + h + h·C + C with h = 17,000: enough values per example for the sampled top-k path."""
    torch.manual_seed(3)
    wide = TinyMLP(n_classes=n_classes, hidden=17_000).eval()
    k = 900
    full = compute_pefs(wide, batches(x, 4), kind=kind)
    calls, sampled_cpu = [], topk._sampled_cpu

    def counted(*args):
        calls.append(args)
        return sampled_cpu(*args)

    monkeypatch.setattr(topk, "_sampled_cpu", counted)
    pefs = compute_pefs(wide, batches(x, 4), kind=kind, n_values_per_example=k)
    assert calls  # the path under test was taken
    dense = full.dense().reshape(len(x), -1)  # [n, c·M] class-major (LRM) or [n, M] (D)
    for i in range(len(x)):
        if kind == "lrm":
            flat = np.repeat(np.arange(n_classes), np.diff(pefs.class_offsets[i])) * pefs.n_parameters + pefs.indices[i]
            assert (np.diff(flat) > 0).all()  # ordered by (class, parameter)
        else:
            flat = pefs.indices[i]
            assert (np.diff(pefs.values[i]) <= 0).all()  # sorted by value, descending
        np.testing.assert_array_equal(np.sort(flat), np.sort(np.argsort(-np.abs(dense[i]))[:k]))
        np.testing.assert_array_equal(pefs.values[i], dense[i, flat])
    np.testing.assert_allclose(pefs.norms, full.norms, rtol=1e-6)


def test_top_k_columns_are_by_probability_and_not_renormalised(tiny_mlp, x):
    pefs = compute_pefs(tiny_mlp, batches(x, 7), top_k_classes=2)
    probs = torch.as_tensor(pefs.logits).softmax(-1).numpy()
    np.testing.assert_array_equal(pefs.class_ids, np.argsort(-probs, axis=1)[:, :2])
    full = compute_pefs(tiny_mlp, batches(x, 7)).dense()
    assert_close(pefs.dense(), np.take_along_axis(full, pefs.class_ids[:, :, None], axis=1))


def test_a_parameter_subset_is_the_matching_slice_of_theta(tiny_mlp, x):
    A, _ = loop_pefs(tiny_mlp, x, ["head.weight", "head.bias"])
    pefs = compute_pefs(tiny_mlp, batches(x, 7), params=["head.bias", "head.weight"])
    assert pefs.n_parameters == 7 * C + C
    assert_close(pefs.dense(), A)
    assert_close(pefs.dense(), compute_pefs(tiny_mlp, batches(x, 7)).dense()[:, :, 42:])


def test_default_scope_of_a_plain_module_is_its_trainable_parameters(tiny_mlp, x):
    tiny_mlp.fc1.requires_grad_(False)
    assert compute_pefs(tiny_mlp, batches(x, 7)).n_parameters == 7 * C + C


@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_results_do_not_depend_on_batch_size(tiny_mlp, x, kind):
    one = compute_pefs(tiny_mlp, batches(x, 1), kind=kind)
    whole = compute_pefs(tiny_mlp, batches(x, 7), kind=kind)
    assert_close(one.dense(), whole.dense())
    np.testing.assert_allclose(one.norms, whole.norms, rtol=1e-5)


def test_sparsification_keeps_exactly_the_k_largest_values(tiny_mlp, x):
    k = 40
    dense = compute_pefs(tiny_mlp, batches(x, 7)).dense().reshape(len(x), -1)  # [n, c·M], class-major
    pefs = compute_pefs(tiny_mlp, batches(x, 7), n_values_per_example=k)
    assert pefs.values.shape == (len(x), k)
    for i in range(len(x)):
        flat = np.repeat(np.arange(C), np.diff(pefs.class_offsets[i])) * pefs.n_parameters + pefs.indices[i]
        np.testing.assert_array_equal(np.sort(flat), np.sort(np.argsort(-np.abs(dense[i]))[:k]))
        np.testing.assert_array_equal(pefs.values[i], dense[i, flat])  # indices round-trip to the dense values


def test_diag_sparsification_keeps_the_k_largest_sorted(tiny_mlp, x):
    f = compute_pefs(tiny_mlp, batches(x, 7), kind="diag").dense()
    pefs = compute_pefs(tiny_mlp, batches(x, 7), kind="diag", n_values_per_example=10)
    np.testing.assert_array_equal(pefs.values, -np.sort(-f, axis=1)[:, :10])
    np.testing.assert_array_equal(np.take_along_axis(f, pefs.indices, axis=1), pefs.values)


def test_norms_are_dense_norms(tiny_mlp, x):
    A, _ = loop_pefs(tiny_mlp, x, ALL)
    F = A.transpose(0, 2, 1) @ A  # [n, M, M], F_i = A_i A_iᵀ with A_i [M, c]
    lrm = compute_pefs(tiny_mlp, batches(x, 7), n_values_per_example=5)
    np.testing.assert_allclose(lrm.norms, np.linalg.norm(F, axis=(1, 2)), rtol=1e-5)
    diag = compute_pefs(tiny_mlp, batches(x, 7), kind="diag", n_values_per_example=5)
    np.testing.assert_allclose(diag.norms, np.linalg.norm((A ** 2).sum(1), axis=1), rtol=1e-5)


def test_keeping_all_values_reconstructs_the_fisher(tiny_mlp, x):
    A, _ = loop_pefs(tiny_mlp, x, ALL)
    pefs = compute_pefs(tiny_mlp, batches(x, 7), n_values_per_example=C * 66)
    sparse = pefs.dense()
    F, F_sparse = A.transpose(0, 2, 1) @ A, sparse.transpose(0, 2, 1) @ sparse  # [n, M, M]
    np.testing.assert_allclose(F_sparse, F, rtol=0, atol=1e-5 * np.abs(F).max())


def test_logits_and_labels_are_stored(tiny_mlp, x):
    labelled = [{"x": x[:4], "labels": torch.tensor([2, 0, 1, 1])}, {"x": x[4:], "labels": torch.tensor([0, 0, 2])}]
    pefs = compute_pefs(tiny_mlp, labelled, kind="diag")
    np.testing.assert_array_equal(pefs.labels, [2, 0, 1, 1, 0, 0, 2])
    np.testing.assert_allclose(pefs.logits, tiny_mlp({"x": x}).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert (compute_pefs(tiny_mlp, batches(x, 7)).labels == -1).all()


def test_progress_reports_examples_done_and_the_total_when_known(tiny_mlp, x):
    calls = []
    compute_pefs(tiny_mlp, batches(x, 3), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 7), (6, 7), (7, 7)]
    calls.clear()
    compute_pefs(tiny_mlp, iter(batches(x, 4)), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, None), (7, None)]


def test_float64_inputs_give_float32_pefs(tiny_mlp, x):
    pefs = compute_pefs(tiny_mlp, [{"x": x.double().numpy()}])
    assert pefs.values.dtype == np.float32
    assert_close(pefs.dense(), compute_pefs(tiny_mlp, batches(x, 7)).dense())


@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_nan_input_names_the_global_example_index(tiny_mlp, x, kind):
    x = x.clone()
    x[5, 2] = float("nan")
    with pytest.raises(FloatingPointError, match=r"^per-example Fisher of example 5 has non-finite values "
                                                  r"\(logits or gradients\); check the input or the model weights$"):
        compute_pefs(tiny_mlp, batches(x, 3), kind=kind)


def test_inf_weights_name_the_first_example(tiny_mlp, x):
    with torch.no_grad():
        tiny_mlp.head.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="per-example Fisher of example 0 has non-finite values"):
        compute_pefs(tiny_mlp, batches(x, 3))


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "x"}, "kind must be 'lrm' or 'diag', got 'x'"),
    ({"top_k_classes": 5}, r"top_k_classes must be in \[1, C=3\], got 5"),
    ({"top_k_classes": 0}, r"top_k_classes must be in \[1, C=3\], got 0"),
    ({"n_values_per_example": 0}, r"n_values_per_example must be an int >= 1 or None \(keep all\), got 0"),
    ({"params": ["fc1.weight", "fc9.bias"]}, r"params has unknown parameter name 'fc9.bias'; valid names look "
                                             r"like \['fc1.weight', 'fc1.bias', 'head.weight', 'head.bias'\]"),
    ({"params": []}, "params selects no parameter; give at least one parameter name"),
])
def test_bad_arguments_raise_clear_errors(tiny_mlp, x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_pefs(tiny_mlp, batches(x, 7), **kwargs)


def test_a_model_without_logits_b_by_c_raises(x):
    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(5))

        def forward(self, batch):
            return batch["x"] @ self.w  # [B]

    with pytest.raises(ValueError, match=r"model\(batch\) must return logits \[B, C\], got shape \(1,\)"):
        compute_pefs(Scalar().eval(), batches(x, 7))


def test_bad_batches_and_training_mode_raise_clear_errors(tiny_mlp, x):
    with pytest.raises(TypeError, match=r"batches must yield non-empty dicts of tensors with leading dim B "
                                        r"\(model\(batch\) -> logits \[B, C\]\), got Tensor at batch 0"):
        compute_pefs(tiny_mlp, [x])
    with pytest.raises(ValueError, match=r"batch 0: every tensor needs the same leading dim B, got "
                                         r"\{'x': 7, 'labels': 3\}"):
        compute_pefs(tiny_mlp, [{"x": x, "labels": torch.zeros(3)}])
    with pytest.raises(ValueError, match="batches is empty; give at least one batch of examples"):
        compute_pefs(tiny_mlp, [])
    with pytest.raises(ValueError, match=r"model has modules in training mode \(e.g. 'fc1'\); call model.eval\(\)"):
        compute_pefs(tiny_mlp.train(), batches(x, 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_cuda_gives_the_cpu_result(tiny_mlp, x, kind):
    on_gpu = compute_pefs(tiny_mlp, batches(x, 4), kind=kind, top_k_classes=2, device="cuda")
    on_cpu = compute_pefs(tiny_mlp, batches(x, 4), kind=kind, top_k_classes=2, device="cpu")
    assert isinstance(on_gpu.values, np.ndarray)
    assert_close(on_gpu.dense(), on_cpu.dense())


@pytest.mark.parametrize("n_classes", [2, 3])
def test_keeping_every_value_is_the_top_k_layout_with_k_all(x, n_classes, tmp_path):
    """k = None skips the selection: the same arrays as selecting all c·M entries and ordering them by (class,
    parameter), with the indices and offsets one row broadcast over the examples (also after concat, subset
    and a save)."""
    from analysis.pefs import lrm_from_top

    torch.manual_seed(4)
    model = TinyMLP(n_classes=n_classes).eval()
    A, _ = loop_pefs(model, x, ALL)  # [n, c, M]
    n, c, M = A.shape
    shuffled = torch.randperm(c * M, generator=torch.Generator().manual_seed(0)).expand(n, c * M)  # any order
    every = topk.TopK(values=torch.as_tensor(A.reshape(n, c * M)).gather(1, shuffled), flat=shuffled)
    values, indices, offsets = lrm_from_top(every, c, M)
    pefs = compute_pefs(model, batches(x, 3), kind="lrm")
    assert_close(pefs.values, values.numpy())
    np.testing.assert_array_equal(pefs.indices, indices.numpy())
    np.testing.assert_array_equal(pefs.class_offsets, offsets.numpy())
    assert pefs.indices.strides[0] == pefs.class_offsets.strides[0] == 0  # no memory per example
    part = pefs.subset([5, 0])
    assert part.indices.strides[0] == 0 and part.indices.shape == (2, c * M)
    assert_close(part.dense(), A[[5, 0]])
    np.save(tmp_path / "indices.npy", pefs.indices)
    np.testing.assert_array_equal(np.load(tmp_path / "indices.npy"), indices.numpy())
