"""Input attributions of a prediction and of an NPEFF component (captum integrated gradients).

The component score of an example is s_k(x) = Σ_y p_y(x) (g_kᵀ ∇_θ log p_y(x))² = g_kᵀ F(x) g_k, the
example's Fisher along the component's parameter direction g_k. One forward-mode product
(torch.func.jvp of θ ↦ log p(x; θ) along g_k) gives g_kᵀ∇_θ log p_y for every class y at once, and
captum integrates the input gradient of s_k: LayerIntegratedGradients on the word-embedding layer
for text, IntegratedGradients on the pixels for images. Under the layer attribution the embedding
output is the input, so a direction's entries on the word-embedding matrix do not enter s_k.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp

from analysis.models import ClassifierModel
from analysis.parameters import ParameterLayout, private_view

N_STEPS = 32  # integration steps of integrated gradients


@dataclass(frozen=True)
class Attribution:
    """Attributions of one example's input for one target (the predicted class or a component)."""

    scores: np.ndarray  # [L] per token (summed over the embedding) or [H, W] per pixel
    tokens: list[str] | None  # [L] for text, None for images
    target_value: float  # the attributed function at the input (probability or s_k)
    baseline_value: float  # ... and at the baseline
    delta: float  # completeness error: Σ scores − (target_value − baseline_value)


def direction_tangents(model: ClassifierModel, direction: np.ndarray) -> dict[str, torch.Tensor]:
    """Split a flat direction [M] over the parameters in scope into per-parameter tangents (row-major)."""
    return ParameterLayout.in_scope(model).split(np.asarray(direction), like=dict(model.named_parameters()),
                                                 what="direction")


def _composite_layer_norm(input: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None,
                          bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """F.layer_norm from mean and variance ops: (x − μ) / sqrt(σ² + eps) · weight + bias."""
    dims = tuple(range(-len(normalized_shape), 0))
    mean = input.mean(dims, keepdim=True)
    var = (input - mean).square().mean(dims, keepdim=True)
    out = (input - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


class _CompositeLayerNorm(nn.Module):
    """An nn.LayerNorm computed by _composite_layer_norm, holding the same weight and bias tensors."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.normalized_shape, self.eps = norm.normalized_shape, norm.eps
        self.weight, self.bias = norm.weight, norm.bias  # the same Parameters, under the same names

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _composite_layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


def _jvp_view(model: ClassifierModel) -> ClassifierModel:
    """A private view of the model whose nn.LayerNorm modules compute the composite layer norm.

    PyTorch's layer_norm forward-AD formula gives wrong input gradients when it is differentiated again
    (reverse over forward; found here against finite differences, cf. pytorch/pytorch#196700 for the
    nested-JVP case); the composite's derivatives are exact. Only the view's module map changes: the
    shared model and torch.nn.functional are untouched.
    """
    view = private_view(model)
    norms = [(parent, name) for parent in view.modules() for name, child in parent._modules.items()
             if type(child) is nn.LayerNorm]
    for parent, name in norms:
        parent._modules[name] = _CompositeLayerNorm(parent._modules[name])
    return view


def _score(view: ClassifierModel, batch: dict[str, torch.Tensor], tangents: dict[str, torch.Tensor]) -> torch.Tensor:
    """component_score on a view made by _jvp_view: [B]."""
    theta = {n: p.detach() for n, p in view.named_parameters() if n in tangents}

    def log_probs(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.log_softmax(functional_call(view, params, (batch,)), dim=-1)  # [B, C]

    logp, dlogp = jvp(log_probs, (theta,), (tangents,))  # [B, C] each
    return (logp.exp() * dlogp.square()).sum(-1)


def component_score(model: ClassifierModel, batch: dict[str, torch.Tensor],
                    tangents: dict[str, torch.Tensor]) -> torch.Tensor:
    """s_k(x) = Σ_y p_y(x) (g_kᵀ ∇_θ log p_y(x))² for each example of a batch: [B].

    One jvp of θ ↦ log_softmax(model(x; θ)) along the tangents gives g_kᵀ ∇_θ log p_y for all y;
    the result stays differentiable with respect to the batch's float inputs (layer norms run as
    composite ops for that, see _jvp_view). The model is only read.
    """
    return _score(_jvp_view(model), batch, tangents)


Example = str | tuple[str, ...] | np.ndarray  # a text, a sentence pair, or an image [H, W]


def _text_inputs(model: ClassifierModel, text: str | tuple[str, ...]) -> dict[str, torch.Tensor]:
    if model.tokenizer is None:
        raise ValueError(f"model '{model.name}' has no tokenizer; text attributions need one")
    texts = (text,) if isinstance(text, str) else tuple(text)
    enc = model.tokenizer(*texts, truncation=True, max_length=model.max_length, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _text_baseline(model: ClassifierModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Same length, sequence markers ([CLS], [SEP], <s>, </s>) kept, every other token replaced by [PAD]."""
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    markers = {tok.cls_token_id, tok.sep_token_id, tok.bos_token_id, tok.eos_token_id} - {None}
    keep = torch.tensor([[i in markers for i in input_ids[0].tolist()]])
    return torch.where(keep, input_ids, torch.full_like(input_ids, pad))


def _attribute_text(model: ClassifierModel, text: str | tuple[str, ...], target_fn, n_steps: int) -> Attribution:
    from captum.attr import LayerIntegratedGradients

    inputs = _text_inputs(model, text)
    extra = {k: v for k, v in inputs.items() if k != "input_ids"}

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        batch = {k: v.expand(len(input_ids), -1) for k, v in extra.items()}
        return target_fn({"input_ids": input_ids, **batch})

    ids = inputs["input_ids"]
    baseline = _text_baseline(model, ids)
    lig = LayerIntegratedGradients(forward, model.net.get_input_embeddings())
    attr, delta = lig.attribute(ids, baselines=baseline, n_steps=n_steps, internal_batch_size=n_steps,
                                return_convergence_delta=True)
    with torch.no_grad():
        values = forward(torch.cat([ids, baseline]))
    tokens = model.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    return Attribution(scores=attr.sum(-1)[0].detach().double().numpy(), tokens=tokens,
                       target_value=float(values[0]), baseline_value=float(values[1]), delta=float(delta[0]))


def _attribute_image(model: ClassifierModel, image: np.ndarray, target_fn, n_steps: int) -> Attribution:
    from captum.attr import IntegratedGradients

    dtype = next(model.parameters()).dtype
    pixels = torch.as_tensor(np.asarray(image), dtype=dtype)[None]  # [1, H, W]
    baseline = torch.zeros_like(pixels)

    def forward(p: torch.Tensor) -> torch.Tensor:
        return target_fn({"pixels": p})

    ig = IntegratedGradients(forward)
    attr, delta = ig.attribute(pixels, baselines=baseline, n_steps=n_steps, internal_batch_size=n_steps,
                               return_convergence_delta=True)
    with torch.no_grad():
        values = forward(torch.cat([pixels, baseline]))
    return Attribution(scores=attr[0].detach().double().numpy(), tokens=None, target_value=float(values[0]),
                       baseline_value=float(values[1]), delta=float(delta[0]))


def _attribute(model: ClassifierModel, example: Example, target_fn, n_steps: int) -> Attribution:
    """Integrated gradients of target_fn(batch) on `model`, a private view: captum hooks and eval() stay in it."""
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    model.eval()
    if model.input_kind == "text":
        if not isinstance(example, (str, tuple)):
            raise TypeError(f"a text model needs a str or a tuple of str, got {type(example).__name__}")
        return _attribute_text(model, example, target_fn, n_steps)
    return _attribute_image(model, example, target_fn, n_steps)


def predicted_class(model: ClassifierModel, example: Example) -> int:
    """The model's predicted class for one example."""
    with torch.no_grad():
        if model.input_kind == "text":
            logits = model(_text_inputs(model, example))
        else:
            dtype = next(model.parameters()).dtype
            logits = model({"pixels": torch.as_tensor(np.asarray(example), dtype=dtype)[None]})
    return int(logits.argmax(-1)[0])


def class_attribution(model: ClassifierModel, example: Example, target: int | None = None,
                      n_steps: int = N_STEPS) -> Attribution:
    """Integrated gradients of p_target(x) (default: the predicted class) for a text or an image."""
    target = predicted_class(model, example) if target is None else target
    if not 0 <= target < len(model.label_names):
        raise ValueError(f"target must be a class in [0, {len(model.label_names)}), got {target}")
    view = private_view(model)
    return _attribute(view, example, lambda batch: torch.softmax(view(batch), -1)[:, target], n_steps)


def component_attribution(model: ClassifierModel, example: Example, direction: np.ndarray,
                          n_steps: int = N_STEPS) -> Attribution:
    """Integrated gradients of the component score s_k(x) for the direction g_k [M] (full parameter space)."""
    tangents = direction_tangents(model, direction)
    view = _jvp_view(model)
    return _attribute(view, example, lambda batch: _score(view, batch, tangents), n_steps)
