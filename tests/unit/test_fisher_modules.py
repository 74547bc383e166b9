"""compute_pefs on plain nn.Modules: tensor and (x, y) batches, training mode allowed unless it changes the output."""
import numpy as np
import pytest
import torch
from torch import nn

from analysis.fisher import compute_pefs
from tests.unit.test_fisher import assert_close, loop_pefs

C = 3


class Wrapped(nn.Module):
    """The dict-batch wrapper of before: {"x": [B, 5]} -> net(x)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["x"])


def mlp(*middle: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), *middle, nn.Linear(7, C))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(7, 5, generator=torch.Generator().manual_seed(1)) * 2  # [n, 5]


@pytest.fixture
def y() -> torch.Tensor:
    return torch.tensor([2, 0, 1, 1, 0, 0, 2])


NAMES = ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]  # of Wrapped(mlp())


@pytest.mark.parametrize("kind", ["lrm", "diag"])
def test_a_plain_mlp_in_training_mode_takes_tensor_batches(x, kind):
    net = mlp().train()
    A, _ = loop_pefs(Wrapped(net), x, NAMES)
    pefs = compute_pefs(net, [x[:3], x[3:]], kind=kind)
    assert pefs.n_parameters == 5 * 7 + 7 + 7 * C + C
    assert_close(pefs.dense(), A if kind == "lrm" else (A ** 2).sum(axis=1))
    assert (pefs.labels == -1).all()
    np.testing.assert_allclose(pefs.logits, net(x).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pair", [tuple, list])
def test_x_y_pairs_keep_the_labels_and_match_the_wrapped_model(x, y, pair):
    net = mlp().train()
    pefs = compute_pefs(net, [pair([x[:4], y[:4]]), pair([x[4:].numpy(), y[4:].numpy()])], top_k_classes=2)
    np.testing.assert_array_equal(pefs.labels, y.numpy())
    assert net.training  # the caller's module is left as it was
    wrapped = compute_pefs(Wrapped(net).eval(), [{"x": x[:4], "labels": y[:4]}, {"x": x[4:], "labels": y[4:]}],
                           top_k_classes=2)
    A, ids = loop_pefs(Wrapped(net), x, NAMES, top_k=2)
    np.testing.assert_array_equal(pefs.class_ids, ids)
    assert_close(pefs.dense(), A)
    assert_close(pefs.dense(), wrapped.dense())
    np.testing.assert_array_equal(pefs.labels, wrapped.labels)


def test_a_parameter_subset_of_a_plain_module(x):
    net = mlp()
    A, _ = loop_pefs(Wrapped(net), x, ["net.2.weight", "net.2.bias"])
    assert_close(compute_pefs(net, [x], params=["2.weight", "2.bias"]).dense(), A)


@pytest.mark.parametrize("middle", [nn.Dropout(0.1), nn.AlphaDropout(0.5), nn.BatchNorm1d(7), nn.RReLU()])
def test_modules_that_differ_in_training_mode_still_need_eval(x, middle):
    net = mlp(middle).train()
    with pytest.raises(ValueError, match=r"^model has modules in training mode \(e.g. '2'\); call "
                                         r"model.eval\(\) first: dropout and batch norm make per-example "
                                         r"Fishers random or batch-dependent$"):
        compute_pefs(net, [x])


@pytest.mark.parametrize("middle", [nn.Dropout(0.1), nn.BatchNorm1d(7)])
def test_in_eval_mode_dropout_and_batch_norm_are_fine(x, middle):
    net = mlp(middle)
    net[2].train()
    net(x)  # batch norm: running statistics of a training step
    net.eval()
    A, _ = loop_pefs(Wrapped(net), x, [f"net.{name}" for name, _ in net.named_parameters()])
    assert_close(compute_pefs(net, [x]).dense(), A)


def test_dropout_with_p_zero_may_stay_in_training_mode(x):
    net = mlp(nn.Dropout(0.0)).train()
    assert_close(compute_pefs(net, [x]).dense(), compute_pefs(mlp().eval(), [x]).dense())


def test_a_custom_forward_in_training_mode_still_needs_eval(x):
    """Its forward may read self.training, so only built-in modules are trusted in training mode."""
    with pytest.raises(ValueError, match=r"model has modules in training mode \(e.g. 'net.0'\)"):
        compute_pefs(Wrapped(mlp()).train(), [{"x": x}])


def test_bad_tensor_batches_raise_clear_errors(x, y):
    net = mlp()
    with pytest.raises(ValueError, match=r"^batch 0: every tensor needs the same leading dim B, got "
                                         r"\{'inputs': 7, 'labels': 3\}$"):
        compute_pefs(net, [(x, y[:3])])
    with pytest.raises(TypeError, match=r"^batches must yield non-empty dicts of tensors with leading dim B "
                                        r"\(model\(batch\) -> logits \[B, C\]\), tensors x \[B, \.\.\.\] or "
                                        r"pairs \(x, labels\), got tuple at batch 1$"):
        compute_pefs(net, [x, (x, y, y)])
    with pytest.raises(TypeError, match=r"got Tensor at batch 0, which model\(x\) refused \(TypeError: "):
        compute_pefs(Wrapped(net).eval(), [x])
