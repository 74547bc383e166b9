"""The perturbed forward (analysis.perturb.weights): θ₀ + Δ runs through functional_call on a private view,
so the shared model's tensors stay bitwise unchanged during and after every perturbation, also on error."""
import copy

import pytest
import torch

from analysis.perturb.api import perturb_component, sweep_component
from analysis.perturb.weights import FunctionalModel
from tests.unit.perturb.planted import D, M, SETS, assert_identical, snapshot

CPU = torch.device("cpu")


def test_weights_bitwise_identical_after_perturbation_and_sweep(model, examples, decomposition, diag_decomposition):
    before = snapshot(model)
    perturb_component(model, examples, decomposition, 0, magnitude=3.0, sign=-1, **SETS)
    assert_identical(model, before)
    sweep_component(model, examples, decomposition, 1, [0.1, 1.0, 10.0], max_sim=0.5, **SETS)
    assert_identical(model, before)
    perturb_component(model, examples, diag_decomposition, 0, magnitude=0.3, kl_range=(1e-3, 2e-3), **SETS)
    assert_identical(model, before)


def test_shared_module_is_unchanged_during_and_after_a_perturbed_evaluation_that_raises(model):
    before = snapshot(model)
    seen = {}

    def inside(module, args):
        """Runs on the view's linear layer in the middle of the perturbed forward pass."""
        seen["weight"] = module.weight.detach().clone()
        assert_identical(model, before)
        raise RuntimeError("boom")

    handle = model.net.linear.register_forward_pre_hook(inside)  # the view takes a copy of the hooks
    try:
        fmodel = FunctionalModel(model, CPU)
    finally:
        handle.remove()
    with pytest.raises(RuntimeError, match="^boom$"):
        fmodel.logits({"pixels": torch.ones(2, 1, D)}, fmodel.perturbed(torch.full((M,), 0.37)))
    assert torch.equal(seen["weight"], before["net.linear.weight"] + 0.37)  # the view saw θ₀ + Δ
    assert_identical(model, before)


def test_delta_of_the_wrong_length_is_refused(model):
    with pytest.raises(ValueError, match=r"^delta must have shape \[21\] \(the in-scope parameters of 'planted'\), "
                                         r"got \[5\]$"):
        FunctionalModel(model, CPU).perturbed(torch.zeros(5))


def test_perturbed_forward_equals_the_model_with_its_weights_moved(model):
    """The slow obvious way: a deep copy of the model with Δ added to its weights in place."""
    delta = torch.randn(M, generator=torch.Generator().manual_seed(0))
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.net.linear.weight += delta[:-3].view(3, D)
        moved.net.linear.bias += delta[-3:]
    batch = {"pixels": torch.rand(4, 1, D, generator=torch.Generator().manual_seed(1))}
    fmodel = FunctionalModel(model, CPU)
    assert torch.equal(fmodel.logits(batch, fmodel.perturbed(delta)), moved(batch))
    assert torch.equal(fmodel.logits(batch), model(batch))


def test_hooks_registered_on_the_view_never_reach_the_shared_module(model):
    """captum registers forward hooks on the module it attributes: on a view they stay there."""
    fmodel = FunctionalModel(model, CPU)
    view_linear = fmodel._view.net.linear
    view_linear.register_forward_hook(lambda module, args, out: out * 0)
    batch = {"pixels": torch.ones(2, 1, D)}
    assert not model.net.linear._forward_hooks
    assert torch.equal(fmodel.logits(batch), torch.zeros(2, 3)) and model(batch).abs().sum() > 0
