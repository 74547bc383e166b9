"""Component score s_k via jvp against finite differences and dense PEFs; captum completeness on smooth models;
attributions leave the shared model and torch.nn.functional as they were."""
import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

from analysis.adapters.images import ImageModule
from analysis.attributions import (_composite_layer_norm, class_attribution, component_attribution, component_score,
                                   direction_tangents)
from analysis.datasets import image_dataset, image_examples, make_batches, text_examples
from analysis.fisher import compute_pefs
from analysis.image_models import DigitsCNN
from analysis.models import ClassifierModel, ParamScope, load_model

WEIGHT_SCALE = 8.0  # the random init (std 0.02) leaves the tiny BERT almost constant in its input


@pytest.fixture(scope="module")
def bert(tiny_bert_dir) -> ClassifierModel:
    """The tiny random BERT with weights scaled up, so its output depends visibly on the input."""
    model = load_model(tiny_bert_dir, scope=ParamScope("last_layers", n_layers=1)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(WEIGHT_SCALE)
    return model


def _image_model(make: Callable[[], nn.Module], scope: ParamScope = ParamScope("all")) -> ClassifierModel:
    """The module make() builds, initialized from seed 0 (built before the seed, its weights followed test order)."""
    torch.manual_seed(0)
    return ClassifierModel(make().double().eval(), adapter=ImageModule([str(i) for i in range(10)]),
                           name="tiny", content_hash="tiny", scope=scope)


def _images(image: np.ndarray):
    """One image [H, W] as a dataset the digits classes label."""
    return image_examples(image[None], [str(i) for i in range(10)])


def _layer_norm_model() -> ClassifierModel:
    return _image_model(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.LayerNorm(12), nn.Tanh(),
                                              nn.Linear(12, 10)))


def _direction(model: ClassifierModel, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed).standard_normal(model.summary().n_parameters_in_scope)
    return g / np.linalg.norm(g)


def _text_batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[2, 5, 7, 9, 3, 0], [2, 6, 8, 10, 16, 3]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _finite_difference_score(model: ClassifierModel, batch: dict, g: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Σ_y p_y ((log p_y(θ + εg) − log p_y(θ − εg)) / 2ε)², moving the parameters in place and back."""
    tangents = direction_tangents(model, g)
    params = dict(model.named_parameters())
    saved = {name: params[name].detach().clone() for name in tangents}
    shifted = {}
    with torch.no_grad():
        logp = torch.log_softmax(model(batch), -1)
        for sign in (1, -1):
            for name, t in tangents.items():
                params[name].copy_(saved[name] + sign * eps * t)
            shifted[sign] = torch.log_softmax(model(batch), -1)
        for name in tangents:
            params[name].copy_(saved[name])
    d = (shifted[1] - shifted[-1]) / (2 * eps)
    return (logp.exp() * d.square()).sum(-1).numpy()


def test_score_matches_finite_differences_on_tiny_bert(bert):
    g = _direction(bert)
    before = {n: p.clone() for n, p in bert.named_parameters()}
    s = component_score(bert, _text_batch(), direction_tangents(bert, g)).detach().numpy()
    assert all(torch.equal(p, before[n]) for n, p in bert.named_parameters())
    np.testing.assert_allclose(s, _finite_difference_score(bert, _text_batch(), g), rtol=1e-6)


def test_score_matches_finite_differences_on_a_cnn():
    model = _image_model(lambda: DigitsCNN(n_classes=10))
    pixels = torch.as_tensor(np.random.default_rng(0).random((3, 8, 8)))
    g = _direction(model, seed=1)
    s = component_score(model, {"pixels": pixels}, direction_tangents(model, g)).detach().numpy()
    np.testing.assert_allclose(s, _finite_difference_score(model, {"pixels": pixels}, g), rtol=1e-5)


def test_score_is_the_dense_pef_along_the_direction():
    """s_k(x) = g_kᵀ F(x) g_k = Σ_j (a_jᵀ g_k)² with the PEF columns of analysis.fisher (same parameter order)."""
    model = _image_model(lambda: DigitsCNN(n_classes=10))
    rng = np.random.default_rng(2)
    data = image_dataset(rng.random((4, 8, 8)), np.array([0, 1, 2, 3]), label_names=model.label_names,
                         name="x", source="x")
    pefs = compute_pefs(model, make_batches(model, data, batch_size=4), kind="lrm", n_values_per_example=None)
    A = pefs.dense()  # [n, c, M]
    g = _direction(model, seed=3)
    s = component_score(model, {"pixels": torch.as_tensor(data.images, dtype=torch.float64)},
                        direction_tangents(model, g)).detach().numpy()
    np.testing.assert_allclose(s, ((A @ g) ** 2).sum(1), rtol=1e-4)


def test_input_gradient_of_the_score_matches_finite_differences_through_layer_norm():
    """Regression: torch's layer_norm forward-AD rule differentiated again gave wrong input gradients."""
    model = _image_model(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.LayerNorm(12), nn.Tanh(),
                                               nn.Linear(12, 10)))
    tangents = direction_tangents(model, _direction(model, seed=6))
    rng = np.random.default_rng(7)
    pixels = torch.tensor(rng.random((2, 8, 8)), requires_grad=True)
    grad, = torch.autograd.grad(component_score(model, {"pixels": pixels}, tangents).sum(), pixels)
    step, eps = torch.as_tensor(rng.standard_normal((2, 8, 8))), 1e-6
    with torch.no_grad():
        plus = component_score(model, {"pixels": pixels + eps * step}, tangents).sum()
        minus = component_score(model, {"pixels": pixels - eps * step}, tangents).sum()
    assert float((grad * step).sum()) == pytest.approx(float((plus - minus) / (2 * eps)), rel=1e-6)
    assert torch.nn.functional.layer_norm.__name__ == "layer_norm"  # the swap is undone


def test_direction_must_cover_the_parameters_in_scope(bert):
    M = bert.summary().n_parameters_in_scope
    with pytest.raises(ValueError, match=rf"^direction must have shape \({M},\) \(the parameters in scope\), "
                                         r"got \(3,\)$"):
        direction_tangents(bert, np.ones(3))


def test_text_attributions_are_complete_on_a_smooth_model(bert):
    g = _direction(bert)
    comp = component_attribution(bert, text_examples(["the film was good"], bert.label_names), g, n_steps=64)
    assert comp.tokens[0] == "[CLS]" and comp.tokens[-1] == "[SEP]" and len(comp.scores) == len(comp.tokens)
    gap = comp.target_value - comp.baseline_value
    assert abs(comp.scores.sum() - gap) == pytest.approx(abs(comp.delta), abs=1e-12)
    assert abs(comp.delta) <= 0.02 * abs(gap) + 1e-12
    cls = class_attribution(bert, text_examples([("the film", "was good")], bert.label_names), n_steps=64)
    assert cls.tokens.count("[SEP]") == 2
    assert abs(cls.delta) <= 0.02 * abs(cls.target_value - cls.baseline_value) + 1e-12


def test_image_attributions_are_complete_on_a_smooth_model():
    model = _image_model(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.Tanh(), nn.Linear(12, 10)))
    image = _images(np.random.default_rng(4).random((8, 8)))
    comp = component_attribution(model, image, _direction(model, seed=5), n_steps=64)
    assert comp.scores.shape == (8, 8) and comp.tokens is None
    assert abs(comp.delta) <= 0.02 * abs(comp.target_value - comp.baseline_value)
    cls = class_attribution(model, image, target=3, n_steps=64)
    assert abs(cls.delta) <= 0.02 * abs(cls.target_value - cls.baseline_value) + 1e-12
    with pytest.raises(ValueError, match=r"^target must be a class in \[0, 10\), got 10$"):
        class_attribution(model, image, target=10)


def test_score_is_bitwise_the_one_computed_with_layer_norm_swapped_for_the_whole_process(bert, monkeypatch):
    """The former way (F.layer_norm replaced by the composite around the jvp, on the model itself) gives the
    same numbers as the composite layer-norm modules of a private view."""
    pixels = torch.as_tensor(np.random.default_rng(8).random((3, 8, 8)))
    for model, batch in ((bert, _text_batch()), (_layer_norm_model(), {"pixels": pixels})):
        tangents = direction_tangents(model, _direction(model, seed=9))
        theta = {n: p.detach() for n, p in model.named_parameters() if n in tangents}
        with monkeypatch.context() as patched:
            patched.setattr(torch.nn.functional, "layer_norm", _composite_layer_norm)
            logp, dlogp = jvp(lambda params: torch.log_softmax(functional_call(model, params, (batch,)), -1),
                              (theta,), (tangents,))
        assert torch.equal(component_score(model, batch, tangents), (logp.exp() * dlogp.square()).sum(-1))


def test_component_attributions_leave_torch_layer_norm_alone_for_other_threads():
    model, original = _layer_norm_model(), torch.nn.functional.layer_norm
    image, x = _images(np.random.default_rng(4).random((8, 8))), torch.randn(3, 12)
    expected = original(x, (12,))
    done, errors, seen, polls = threading.Event(), [], set(), 0

    def attribute() -> None:
        try:
            for seed in range(4):
                component_attribution(model, image, _direction(model, seed=seed), n_steps=16)
        except Exception as e:  # reported by the main thread
            errors.append(e)
        finally:
            done.set()

    worker = threading.Thread(target=attribute)
    worker.start()
    try:
        while not done.is_set():
            seen.add(torch.nn.functional.layer_norm)
            assert torch.equal(torch.nn.functional.layer_norm(x, (12,)), expected)
            polls += 1
    finally:
        worker.join()
    if errors:
        raise errors[0]
    assert seen == {original} and polls > 0


def test_attributions_leave_the_model_as_it_was():
    """No training flag, hook or tensor of the model changes (captum's hooks and eval() stay in a private view)."""
    model = _layer_norm_model()
    model.train()  # a shared model in any mode stays in it
    before = {n: t.clone() for n, t in model.state_dict().items()}
    image = _images(np.random.default_rng(5).random((8, 8)))
    class_attribution(model, image, target=2, n_steps=8)
    component_attribution(model, image, _direction(model, seed=2), n_steps=8)
    assert all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
