"""Per-example Fishers (spec npeff.md §1.1-1.3): per-example gradients with torch.func, then top-k sparse.

For example i and kept class y, column y of A_i [M, c] is √p_y ∇_θ log p_y(x_i) over the flat θ of the
parameters in scope: F_i = A_i A_iᵀ (LRM) and f_i = Σ_y p_y (∇_θ log p_y)⊙² (D). Each example gets one
forward and one vector-Jacobian product per kept class (one for both classes of a binary classifier),
vmapped over classes and over examples. When the modules before the parameters in scope hold parameters (a
last-layers scope), that frozen prefix runs once per batch without grad and only the rest is vmapped
(analysis.frozen_prefix); the first batch's logits are checked against the full model's. Gradients stay in one block
per parameter tensor: norms, NaN checks and the top-k selection read the blocks in place, so A_i is never
concatenated into [c, M].

Contract: a batch is a dict of tensors with leading dim B (model(batch) gets every key but "labels"), a
tensor x [B, ...] (model(x)) or a pair (x, labels [B]); the model returns logits [B, C], and an example's
logits must not depend on the other examples of its batch (no dropout or batch norm in training mode).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from numbers import Integral

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vjp, vmap

from analysis.allocator import reused_allocations
from analysis.devices import resolve_device
from analysis.frozen_prefix import (CHECK_ATOL, CHECK_RTOL, Outputs, frozen_modules, holds_parameters, map_tensors,
                                    record_outputs, suffix_tensors, suffix_view, tensor_leaves)
from analysis.models import ClassifierModel
from analysis.parameters import private_view
from analysis.batch_gradients import BatchGradients
from analysis.datasets import make_batches
from analysis.pefs import DiagPefs, LrmPefs, concat_pefs
from analysis.variants import DEFAULT_VARIANT, get_variant

LABELS = "labels"  # optional batch key [B]: stored with the PEFs, never passed to forward
NORM_EPS = 1e-12  # added to ‖f‖ before normalizing the dataset Fisher

Batch = Mapping[str, torch.Tensor] | torch.Tensor | tuple[torch.Tensor, torch.Tensor]
Inputs = dict[str, torch.Tensor] | torch.Tensor  # what the model is called with
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class _Split:
    """The model's tensors for functional_call: θ in scope (differentiated) and the rest (constants)."""

    theta: dict[str, torch.Tensor]  # parameters in scope, named_parameters() order, detached float32
    consts: dict[str, torch.Tensor]  # parameters out of scope and buffers, detached


@dataclass(frozen=True)
class _Prefix:
    """The frozen prefix of a model (analysis.frozen_prefix): run once per batch, replayed example by example."""

    frozen: list[str]  # outermost modules whose outputs cannot depend on θ in scope
    outputs: Outputs  # hands the recorded outputs to the stand-ins
    view: nn.Module  # the model with stand-ins for the frozen modules
    consts: dict[str, torch.Tensor]  # the constants the suffix view still reads, under its names
    # fixed by the first batch, whose replayed logits are checked against the full model's: which recorded
    # tensors have one row per example (in tensor_leaves order), and how many frozen-module calls a pass makes
    rows: tuple[bool, ...] | None = None
    n_calls: int | None = None


def _check_args(n_values_per_example: int | None, top_k_classes: int | None) -> None:
    k = n_values_per_example
    if k is not None and (not isinstance(k, Integral) or k < 1):
        raise ValueError(f"n_values_per_example must be an int >= 1 or None (keep all), got {n_values_per_example}")
    if top_k_classes is not None and not isinstance(top_k_classes, Integral):
        raise ValueError(f"top_k_classes must be an int in [1, C] or None (all classes), got {top_k_classes}")


def _differs_in_training(module: nn.Module) -> bool:
    """Whether a module in training mode may compute something else than in eval mode: dropout with p > 0,
    batch statistics, random slopes, or a forward outside torch.nn (it may read self.training)."""
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True  # batch statistics in training mode, running ones (or batch ones again) in eval mode
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return module.track_running_stats
    if isinstance(module, nn.RReLU):
        return module.lower != module.upper
    if isinstance(module, (nn.MultiheadAttention, nn.RNNBase)):
        return module.dropout > 0
    return not type(module).__module__.startswith("torch.nn.")


def _check_eval(model: nn.Module) -> None:
    """Dropout or batch norm in training mode would make the PEFs random or batch-dependent; built-in modules
    that compute the same in both modes (a plain nn.Sequential MLP, say) may stay in training mode."""
    modules = [(name or type(mod).__name__, mod) for name, mod in model.named_modules() if mod.training]
    differing = [(name, mod) for name, mod in modules if _differs_in_training(mod)]
    if differing:
        # name a leaf: the dropout or norm itself, else (a custom forward) the first leaf in training mode
        leaves = [name for name, mod in differing if not any(mod.children())] or \
                 [name for name, mod in modules if not any(mod.children())] or [differing[0][0]]
        raise ValueError(f"model has modules in training mode (e.g. '{leaves[0]}'); call model.eval() first: "
                         "dropout and batch norm make per-example Fishers random or batch-dependent")


def _scope_names(model: nn.Module, params: Sequence[str] | None) -> list[str]:
    """Names in scope, validated and put in named_parameters() order."""
    named = dict(model.named_parameters())
    if params is None:
        if isinstance(model, ClassifierModel):
            return model.param_names_in_scope()
        return [n for n, p in named.items() if p.requires_grad]
    if isinstance(params, str):
        raise ValueError(f"params must be a list of parameter names, got the string '{params}'")
    unknown = [n for n in params if n not in named]
    if unknown:
        raise ValueError(f"params has unknown parameter name '{unknown[0]}'; valid names look like "
                         f"{list(named)[:4]} ({len(named)} in all)")
    chosen = set(params)
    return [n for n in named if n in chosen]


def _split(model: nn.Module, names: list[str], device: torch.device) -> _Split:
    """θ and constants on device, float tensors in float32 (no copy when already so)."""
    def prep(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=device, dtype=torch.float32 if t.is_floating_point() else t.dtype)

    if not names:
        raise ValueError("params selects no parameter; give at least one parameter name")
    in_scope = set(names)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    return _Split(theta={n: prep(tensors[n]) for n in names},
                  consts={n: prep(t) for n, t in tensors.items() if n not in in_scope})


def _is_array(value: object) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def _batch_size(batch: object, index: int) -> int:
    """Leading dim B shared by every tensor of a batch (dict, tensor or (inputs, labels)); clear errors otherwise."""
    if _is_array(batch):
        entries = {"inputs": batch}
    elif isinstance(batch, (tuple, list)) and len(batch) == 2 and all(_is_array(v) for v in batch):
        entries = {"inputs": batch[0], LABELS: batch[1]}
    elif isinstance(batch, Mapping) and batch:
        entries = batch
    else:
        raise TypeError(f"batches must yield non-empty dicts of tensors with leading dim B "
                        f"(model(batch) -> logits [B, C]), tensors x [B, ...] or pairs (x, labels), "
                        f"got {type(batch).__name__} at batch {index}")
    sizes = {}
    for key, value in entries.items():
        if not _is_array(value) or value.ndim == 0:
            raise TypeError(f"batch {index}: '{key}' must be a tensor with leading dim B, "
                            f"got {type(value).__name__} of shape {tuple(getattr(value, 'shape', ()))}")
        sizes[key] = int(value.shape[0])
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch {index}: every tensor needs the same leading dim B, got {sizes}")
    return next(iter(sizes.values()))


def _to_device(value: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """On device, float inputs in float32."""
    value = torch.as_tensor(value)
    return value.to(device=device, dtype=torch.float32 if value.is_floating_point() else value.dtype)


def _model_inputs(batch: Batch, device: torch.device) -> Inputs:
    """What the model is called with, on device: a dict batch but "labels", a tensor batch, a pair's inputs."""
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items() if key != LABELS}
    return _to_device(batch if _is_array(batch) else batch[0], device)


def _labels(batch: Batch, size: int) -> np.ndarray:
    """Gold labels [B] int64, or -1 when the batch has none."""
    if isinstance(batch, Mapping):
        labels = batch.get(LABELS)
    else:
        labels = None if _is_array(batch) else batch[1]
    if labels is None:
        return np.full(size, -1, np.int64)
    return torch.as_tensor(labels).detach().cpu().numpy().astype(np.int64).reshape(size)


def _forward_one(view: nn.Module, consts: dict[str, torch.Tensor]):
    """(θ, one example without batch dim) -> logits [C]: the model on a batch of one."""

    def logits_of(theta: dict[str, torch.Tensor], example: Inputs) -> torch.Tensor:
        batch = {k: v[None] for k, v in example.items()} if isinstance(example, dict) else example[None]
        logits = functional_call(view, {**theta, **consts}, (batch,))
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise ValueError(f"model(batch) must return logits [B, C], got shape {tuple(logits.shape)} "
                             "for a batch of one example")
        return logits[0]  # [C]

    return logits_of


def _replayed_one(prefix: _Prefix, recorded: dict[str, list], rows: tuple[bool, ...]):
    """(θ, (one example, its rows of the recorded outputs)) -> logits [C]: the suffix on a batch of one, the
    stand-ins handing out the example's rows of the recorded tensors flagged in `rows`, the others whole."""
    forward = _forward_one(prefix.view, prefix.consts)

    def logits_of(theta: dict[str, torch.Tensor], example_rows: tuple[Inputs, list[torch.Tensor]]) -> torch.Tensor:
        example, own = example_rows
        flags, own = iter(rows), iter(own)
        prefix.outputs.serve(map_tensors(recorded, lambda t: next(own)[None] if next(flags) else t))
        try:
            return forward(theta, example)
        finally:
            prefix.outputs.serve(None)

    return logits_of


def _per_example_fn(logits_of, top_k_classes: int | None):
    """(θ, one example) -> (D: name -> [r, *shape], scale [c], logits [C], class_ids [c]), logits_of(θ, example)
    giving the example's logits [C].

    Column y of A is √p_y ∇ log p_y = √p_y (∇z_y − Σ_j p_j ∇z_j) with z the logits: row y of D is the VJP
    of the logits with cotangent √p_y (e_y − p), and A = D (r = c; scale is unused). With both classes
    of a binary classifier one VJP does: d = ∇(z_1 − z_0) gives ∇ log p_0 = −p_1 d and ∇ log p_1 = p_0 d,
    so A = scale ⊗ d with scale = (−√p_0 p_1, √p_1 p_0) (r = 1).
    """

    def classes(logp: torch.Tensor) -> torch.Tensor:
        """All classes in class order, or the top_k_classes most probable, most probable first."""
        n_classes = logp.shape[-1]
        if top_k_classes is None:
            return torch.arange(n_classes, device=logp.device)
        if not 1 <= top_k_classes <= n_classes:
            raise ValueError(f"top_k_classes must be in [1, C={n_classes}], got {top_k_classes}")
        return logp.topk(top_k_classes, sorted=True).indices

    def one_example(theta: dict[str, torch.Tensor], example):
        logits, vjp_fn = vjp(lambda th: logits_of(th, example), theta)
        logits = logits.detach()  # [C]
        logp = logits.log_softmax(dim=-1)
        p = logp.exp()  # [C], the full softmax (not renormalised over kept classes)
        class_ids = classes(logp)  # [c]
        sqrt_p = logp[class_ids].mul(0.5).exp()  # [c]
        if _is_binary(len(class_ids), len(logits)):
            cotangents = torch.stack([-torch.ones_like(p[0]), torch.ones_like(p[0])])[None]  # [1, 2]: z_1 − z_0
            scale = sqrt_p * torch.stack([-p[1], p[0]])[class_ids]  # [2], columns in class_ids order
        else:
            cotangents = sqrt_p[:, None] * (torch.eye(len(logits), dtype=p.dtype, device=p.device)[class_ids] - p)
            scale = sqrt_p  # [c], unused
        (grads,) = vmap(vjp_fn)(cotangents)  # name -> [r, *shape]
        return grads, scale, logits, class_ids

    return one_example


def _is_binary(c: int, n_classes: int) -> bool:
    """Both classes of a binary classifier are kept: A = scale ⊗ d from a single VJP."""
    return c == n_classes == 2


def _gradients(grads: dict[str, torch.Tensor], scale: torch.Tensor, logits: torch.Tensor,
               class_ids: torch.Tensor) -> BatchGradients:
    """The vmapped per-example function's outputs as one block [B, r, n_p] per parameter tensor."""
    size = logits.shape[0]
    blocks = [g.reshape(size, g.shape[1], -1) for g in grads.values()]  # [B, r, n_p], a view when contiguous
    return BatchGradients(blocks=blocks, scale=scale if _is_binary(class_ids.shape[1], logits.shape[1]) else None,
                          logits=logits, class_ids=class_ids)


def _batch_grads(batched_fn, theta: dict[str, torch.Tensor], inputs: Inputs, index: int) -> BatchGradients:
    try:
        return _gradients(*batched_fn(theta, inputs))
    except (TypeError, IndexError, KeyError, AttributeError) as error:
        if isinstance(inputs, dict):
            raise
        # a model whose forward wants a dict, given a tensor
        raise TypeError(f"batches must yield non-empty dicts of tensors with leading dim B (model(batch) -> logits "
                        f"[B, C]), got Tensor at batch {index}, which model(x) refused "
                        f"({type(error).__name__}: {error})") from error


def _in_batch(t: torch.Tensor, size: int) -> bool:
    """Whether a recorded tensor has one row per example (first dim the batch size): replayed row by row."""
    return t.dim() > 0 and t.shape[0] == size


def _head(inputs: Inputs, n: int) -> Inputs:
    """The first n examples of a batch's inputs."""
    return {k: v[:n] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:n]


def _find_prefix(view: nn.Module, split: _Split, inputs: Inputs) -> _Prefix | None:
    """The model's frozen prefix when it holds parameters (replaying it skips real work), else None (also when
    the model fails on the batch: the full path then raises the error it explains)."""
    if not any(name in split.consts for name, _ in view.named_parameters()):
        return None  # every parameter in scope: no frozen module can hold one
    try:
        frozen = frozen_modules(view, split.theta | split.consts, list(split.theta), _head(inputs, 2))
    except (RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError):
        return None
    if not holds_parameters(view, frozen):
        return None
    outputs = Outputs()
    suffix = suffix_view(view, frozen, outputs)
    return _Prefix(frozen=frozen, outputs=outputs, view=suffix, consts=suffix_tensors(suffix, split.consts, view))


def _replayed_grads(prefix: _Prefix, view: nn.Module, split: _Split, inputs: Inputs, size: int,
                    top_k_classes: int | None) -> tuple[BatchGradients, _Prefix] | None:
    """Per-example gradients with the prefix run once for the batch, without grad, and only the suffix vmapped,
    and the prefix with its row flags fixed; None when the replay fails or (first batch) its logits disagree
    with the full model's: the caller runs in full."""
    first = prefix.rows is None
    # the first batch runs in full (its logits check the replay); later ones stop after the prefix
    full, recorded = record_outputs(view, split.theta | split.consts, prefix.frozen, inputs,
                                    stop_after=prefix.n_calls)
    leaves = tensor_leaves(recorded)
    rows = tuple(_in_batch(t, size) for t in leaves) if first else prefix.rows
    if len(rows) != len(leaves) or not all(_in_batch(t, size) for t, row in zip(leaves, rows) if row):
        return None
    batched_fn = vmap(_per_example_fn(_replayed_one(prefix, recorded, rows), top_k_classes), in_dims=(None, 0))
    try:
        grads = _gradients(*batched_fn(split.theta, (inputs, [t for t, row in zip(leaves, rows) if row])))
    except (RuntimeError, IndexError, KeyError, TypeError, ValueError, AttributeError, StopIteration):
        return None
    if first and not (grads.logits.shape == full.shape and torch.allclose(grads.logits, full, rtol=CHECK_RTOL,
                                                                          atol=CHECK_ATOL, equal_nan=True)):
        return None
    return grads, replace(prefix, rows=rows, n_calls=sum(len(v) for v in recorded.values()))


def _total_examples(batches: Iterable[Batch]) -> int | None:
    """Sum of batch sizes when batches is a sequence (known up front), else None."""
    if isinstance(batches, Sequence):
        return sum(_batch_size(b, i) for i, b in enumerate(batches))
    return None


def compute_pefs(model: nn.Module, batches: Iterable[Batch], *, kind: str = DEFAULT_VARIANT,
                 n_values_per_example: int | None = None, top_k_classes: int | None = None,
                 params: Sequence[str] | None = None, device: torch.device | str | None = None,
                 progress: Progress | None = None) -> LrmPefs | DiagPefs:
    """Sparse LRM- or D-PEFs of every example in `batches` over `params` (default: the model's scope).

    Classes: all C in class order, or the top_k_classes most probable (most probable first, p not
    renormalised); D sums over the same classes. Norms are of the dense PEFs; memory is O(B·c·M).

    Any nn.Module works, no wrapper class needed: batches are dicts (model(batch), "labels" kept aside), tensors
    x [B, ...] (model(x)) or pairs (x, labels [B]); a module without dropout or batch norm may stay in training
    mode. E.g. `compute_pefs(nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)), [(x, y)])`.
    A bare function batch -> logits has no parameters to differentiate: keep its weights as nn.Parameters of
    a small module whose forward calls it.
    """
    container = get_variant(kind).pefs  # LrmPefs or DiagPefs: it sparsifies each batch
    _check_args(n_values_per_example, top_k_classes)
    _check_eval(model)
    device = resolve_device(device)
    split = _split(model, _scope_names(model, params), device)
    # functional_call swaps tensors into the module it runs: a private view keeps the shared model untouched
    view = private_view(model)
    batched_fn = vmap(_per_example_fn(_forward_one(view, split.consts), top_k_classes), in_dims=(None, 0))
    total = _total_examples(batches)
    parts, done, prefix, values = [], 0, None, None
    with reused_allocations():  # each batch's gradients take the memory the last one freed, without page faults
        for index, batch in enumerate(batches):
            size = _batch_size(batch, index)
            inputs = _model_inputs(batch, device)
            if index == 0:
                prefix = _find_prefix(view, split, inputs)
            replayed = None if prefix is None else _replayed_grads(prefix, view, split, inputs, size, top_k_classes)
            if replayed is None:  # no prefix, or the replay failed: run in full from here on
                prefix, grads = None, _batch_grads(batched_fn, split.theta, inputs, index)
            else:
                grads, prefix = replayed
            if index == 0:
                values = _kept_values(container, grads, n_values_per_example, total, device)
            out = None if values is None else values[done:done + size]
            parts.append(container.from_gradients(grads, _labels(batch, size), n_values_per_example, done, out=out))
            del grads, replayed  # freed before the next batch computes its own: one batch's gradients at a time
            done += size
            if progress is not None:
                progress(done, total)
    if not parts:
        raise ValueError("batches is empty; give at least one batch of examples")
    return concat_pefs(parts, values=values)


def _kept_values(container, grads: BatchGradients, k: int | None, total: int | None,
                 device: torch.device) -> np.ndarray | None:
    """The final values array [n, c·M] when every value is kept, the examples are counted up front and the work
    is on the CPU: each batch writes its rows in place (no copy of the largest array when stacking)."""
    width = container.kept_width(grads.class_ids.shape[1], grads.n_parameters, k)
    if width is None or total is None or device.type != "cpu":
        return None
    return np.empty((total, width), np.float32)


def dataset_fisher(model: ClassifierModel, examples, *, batch_size: int = 16,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """f_D [M]: mean over examples of the per-example diagonal Fishers (expectation mode, spec §1.1),
    divided by ‖f‖₂ + 1e-12; streamed one batch at a time (memory O(batch·M), never [n, M])."""
    dev = resolve_device(device)
    total = torch.zeros(model.summary().n_parameters_in_scope, dtype=torch.float64, device=dev)
    for batch in make_batches(model, examples, batch_size=batch_size):
        pefs = compute_pefs(model, [batch], kind="diag", device=dev)  # f_D is made of diagonal PEFs, all M values
        total.index_add_(0, torch.as_tensor(pefs.indices, device=dev).flatten(),
                         torch.as_tensor(pefs.values, device=dev).flatten().double())
    mean = total / len(examples)
    return (mean / (mean.norm() + NORM_EPS)).float()
