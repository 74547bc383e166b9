"""Input attributions of a prediction and of an NPEFF component: integrated gradients, by captum for one example
and batched (midpoint rule) for the highlights of many.

The component score of an example is s_k(x) = Σ_y p_y(x) (g_kᵀ ∇_θ log p_y(x))² = g_kᵀ F(x) g_k, the
example's Fisher along the component's parameter direction g_k. One forward-mode product
(torch.func.jvp of θ ↦ log p(x; θ) along g_k) gives g_kᵀ∇_θ log p_y for every class y at once. Both methods
attribute the input the model's adapter names (AttributedInput): the word-embedding layer's output for text
(as LayerIntegratedGradients does), the pixels for images. The embedding output being the input, a
direction's entries on the word-embedding matrix do not enter s_k.

Integrated gradients average the gradient over points from the baseline to x; their completeness error
Σ scores − (s_k(x) − s_k(baseline)) shrinks as the steps grow and is reported per example.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp

from analysis.adapters import Attribution
from analysis.datasets import Dataset, make_batches
from analysis.models import ClassifierModel
from analysis.parameters import ParameterLayout, private_view

N_STEPS = 32  # integration steps of integrated gradients


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


def _batch(model: ClassifierModel, examples: Dataset, index: int) -> dict[str, torch.Tensor]:
    """The model inputs of example `index` as a batch of one."""
    if not 0 <= index < len(examples):
        raise ValueError(f"index must be in [0, {len(examples)}), got {index}")
    batch = next(make_batches(model, examples.subset([index]), batch_size=1))
    return {k: v for k, v in batch.items() if k != "labels"}


def _attribute(view: ClassifierModel, batch: dict[str, torch.Tensor], target_fn, n_steps: int) -> Attribution:
    """Integrated gradients of target_fn(batch) for a one-example batch on a private view (hooks and eval() stay
    in it), on the input its adapter attributes: word embeddings for text, pixels for images."""
    from captum.attr import IntegratedGradients

    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    view.eval()
    source = view.adapter.attributed_input(target_fn, view.net, batch)
    attr, delta = IntegratedGradients(source.run).attribute(
        source.inputs, baselines=source.baselines, n_steps=n_steps, internal_batch_size=n_steps,
        return_convergence_delta=True)
    with torch.no_grad():
        values = source.run(torch.cat([source.inputs, source.baselines]))  # [2]
    return Attribution(scores=source.positions(attr)[0].detach().double().numpy(),
                       tokens=None if source.tokens is None else source.tokens[0],
                       target_value=float(values[0]), baseline_value=float(values[1]), delta=float(delta[0]))


def predicted_class(model: ClassifierModel, examples: Dataset, index: int = 0) -> int:
    """The model's predicted class for one example."""
    with torch.no_grad():
        return int(model(_batch(model, examples, index)).argmax(-1)[0])


def class_attribution(model: ClassifierModel, examples: Dataset, index: int = 0, target: int | None = None,
                      n_steps: int = N_STEPS) -> Attribution:
    """Integrated gradients of p_target(x) (default: the predicted class) for example `index`."""
    target = predicted_class(model, examples, index) if target is None else target
    if not 0 <= target < len(model.label_names):
        raise ValueError(f"target must be a class in [0, {len(model.label_names)}), got {target}")
    view = private_view(model)
    return _attribute(view, _batch(model, examples, index), lambda batch: torch.softmax(view(batch), -1)[:, target],
                      n_steps)


def component_attribution(model: ClassifierModel, examples: Dataset, direction: np.ndarray, index: int = 0,
                          n_steps: int = N_STEPS) -> Attribution:
    """Integrated gradients of the component score s_k(x) of example `index` for the direction g_k [M]
    (full parameter space)."""
    tangents = direction_tangents(model, direction)
    view = _jvp_view(model)
    return _attribute(view, _batch(model, examples, index), lambda batch: _score(view, batch, tangents), n_steps)


@dataclass(frozen=True)
class BatchAttribution:
    """Integrated gradients of s_k for each example of a batch, per token or pixel."""

    scores: np.ndarray  # [B, L] per token (0 at padding and kept markers) or [B, H, W] per pixel
    values: np.ndarray  # [B] s_k(x)
    baseline_values: np.ndarray  # [B] s_k(baseline)
    real: np.ndarray | None  # [B, L] bool, the token positions that are not padding; None for images


def component_path_attribution(model: ClassifierModel, batch: dict[str, torch.Tensor],
                               tangents: dict[str, torch.Tensor], n_steps: int) -> BatchAttribution:
    """Integrated gradients of s_k for every example of a batch at once: the mean gradient at the midpoints
    x' + (i + ½)/n_steps · (x − x') times (x − x'), summed per token or pixel; one backward per step.

    The examples of a batch are independent (ClassifierModel's contract), so the gradient of Σ_b s_k(x_b) with
    respect to x_b is that of s_k(x_b). The model is only read.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    view = _jvp_view(model)
    view.eval()
    source = view.adapter.attributed_input(lambda b: _score(view, b, tangents), view.net,
                                           {k: v for k, v in batch.items() if k != "labels"})
    x, x0 = source.inputs.detach(), source.baselines  # [B, ...] each
    total = torch.zeros_like(x)
    for i in range(n_steps):
        point = (x0 + (i + 0.5) / n_steps * (x - x0)).requires_grad_()
        grad, = torch.autograd.grad(source.run(point).sum(), point)  # [B, ...] like x
        total += grad
    with torch.no_grad():
        s, s0 = source.run(x), source.run(x0)  # [B] each
    scores = source.positions(total / n_steps * (x - x0))
    return BatchAttribution(scores=scores.double().cpu().numpy(), values=s.double().cpu().numpy(),
                            baseline_values=s0.double().cpu().numpy(),
                            real=None if source.real is None else source.real.cpu().numpy())
