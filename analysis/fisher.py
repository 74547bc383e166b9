"""Per-example Fishers (spec npeff.md §1.1-1.3): dense A_i or f_i per batch with torch.func, then top-k sparse.

For example i and kept class y, column y of A_i [M, c] is √p_y ∇_θ log p_y(x_i) over the flat θ of the
parameters in scope: F_i = A_i A_iᵀ (LRM) and f_i = Σ_y p_y (∇_θ log p_y)⊙² (D). Each example gets one
forward and one vector-Jacobian product per kept class, vmapped over classes and over examples.

Contract: `model(batch)` takes a dict of tensors with leading dim B (every key but "labels") and returns
logits [B, C]; an example's logits must not depend on the other examples of its batch (eval mode).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vjp, vmap

from analysis.models import ClassifierModel, resolve_device
from analysis.pefs import DiagPefs, LrmPefs, concat_pefs, lrm_norms, sparsify_diag, sparsify_lrm

LABELS = "labels"  # optional batch key [B]: stored with the PEFs, never passed to forward

Batch = Mapping[str, torch.Tensor]
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class _Split:
    """The model's tensors for functional_call: θ in scope (differentiated) and the rest (constants)."""

    theta: dict[str, torch.Tensor]  # parameters in scope, named_parameters() order, detached float32
    consts: dict[str, torch.Tensor]  # parameters out of scope and buffers, detached


def _check_args(kind: str, n_values_per_example: int | None, top_k_classes: int | None) -> None:
    if kind not in ("lrm", "diag"):
        raise ValueError(f"kind must be 'lrm' or 'diag', got '{kind}'")
    k = n_values_per_example
    if k is not None and (not isinstance(k, Integral) or k < 1):
        raise ValueError(f"n_values_per_example must be an int >= 1 or None (keep all), got {n_values_per_example}")
    if top_k_classes is not None and not isinstance(top_k_classes, Integral):
        raise ValueError(f"top_k_classes must be an int in [1, C] or None (all classes), got {top_k_classes}")


def _check_eval(model: nn.Module) -> None:
    """Dropout or batch norm in training mode would make the PEFs random or batch-dependent."""
    training = [name or type(mod).__name__ for name, mod in model.named_modules()
                if mod.training and not any(mod.children())]
    if training:
        raise ValueError(f"model has modules in training mode (e.g. '{training[0]}'); call model.eval() first: "
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


def _batch_size(batch: object, index: int) -> int:
    """Leading dim B shared by every entry of a dict batch; clear errors otherwise."""
    if not isinstance(batch, Mapping) or not batch:
        raise TypeError(f"batches must yield non-empty dicts of tensors with leading dim B "
                        f"(model(batch) -> logits [B, C]), got {type(batch).__name__} at batch {index}")
    sizes = {}
    for key, value in batch.items():
        if not isinstance(value, (torch.Tensor, np.ndarray)) or value.ndim == 0:
            raise TypeError(f"batch {index}: '{key}' must be a tensor with leading dim B, "
                            f"got {type(value).__name__} of shape {tuple(getattr(value, 'shape', ()))}")
        sizes[key] = int(value.shape[0])
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch {index}: every tensor needs the same leading dim B, got {sizes}")
    return next(iter(sizes.values()))


def _model_inputs(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    """Every entry but "labels", on device, float inputs in float32."""
    inputs = {}
    for key, value in batch.items():
        if key != LABELS:
            value = torch.as_tensor(value)
            inputs[key] = value.to(device=device, dtype=torch.float32 if value.is_floating_point() else value.dtype)
    return inputs


def _labels(batch: Batch, size: int) -> np.ndarray:
    """Gold labels [B] int64, or -1 when the batch has none."""
    if LABELS not in batch:
        return np.full(size, -1, np.int64)
    return torch.as_tensor(batch[LABELS]).detach().cpu().numpy().astype(np.int64).reshape(size)


def _per_example_fn(model: nn.Module, consts: dict[str, torch.Tensor], kind: str, top_k_classes: int | None):
    """(θ, one example without batch dim) -> (A [c, M] or f [M], logits [C], class_ids [c]); vmap over examples."""

    def log_probs(theta: dict[str, torch.Tensor], example: dict[str, torch.Tensor]):
        logits = functional_call(model, {**theta, **consts}, ({k: v[None] for k, v in example.items()},))
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise ValueError(f"model(batch) must return logits [B, C], got shape {tuple(logits.shape)} "
                             "for a batch of one example")
        return logits[0].log_softmax(dim=-1), logits[0]  # [C], [C]

    def classes(logp: torch.Tensor) -> torch.Tensor:
        """All classes in class order, or the top_k_classes most probable, most probable first."""
        n_classes = logp.shape[-1]
        if top_k_classes is None:
            return torch.arange(n_classes, device=logp.device)
        if not 1 <= top_k_classes <= n_classes:
            raise ValueError(f"top_k_classes must be in [1, C={n_classes}], got {top_k_classes}")
        return logp.topk(top_k_classes, sorted=True).indices

    def one_example(theta: dict[str, torch.Tensor], example: dict[str, torch.Tensor]):
        logp, vjp_fn, logits = vjp(lambda th: log_probs(th, example), theta, has_aux=True)  # logp [C]
        logp = logp.detach()
        class_ids = classes(logp)  # [c]
        # cotangent row j = √p_y e_y (p not renormalised), so its VJP is √p_y ∇_θ log p_y: column j of A
        sqrt_p = logp[class_ids].mul(0.5).exp()  # [c]
        cotangents = nn.functional.one_hot(class_ids, logp.shape[-1]).to(logp.dtype) * sqrt_p[:, None]  # [c, C]
        (grads,) = vmap(vjp_fn)(cotangents)  # name -> [c, *shape]
        if kind == "lrm":
            dense = torch.cat([g.flatten(1) for g in grads.values()], dim=1)  # A [c, M]
        else:  # f = Σ_y p_y (∇ log p_y)⊙², summed per parameter before flattening (c times less to copy)
            dense = torch.cat([g.square().sum(0).flatten() for g in grads.values()])  # f [M]
        return dense, logits.detach(), class_ids

    return one_example


def _check_finite(dense: torch.Tensor, logits: torch.Tensor, start: int) -> None:
    """Raise FloatingPointError naming the first example (global index) with NaN/Inf."""
    # a per-example sum is NaN/Inf when any entry is (or on overflow), and much cheaper than isfinite(dense)
    finite = torch.isfinite(dense.flatten(1).sum(dim=1)) & torch.isfinite(logits).all(dim=1)  # [B]
    if not bool(finite.all()):
        bad = start + int((~finite).nonzero()[0, 0])
        raise FloatingPointError(f"per-example Fisher of example {bad} has non-finite values (logits or "
                                 "gradients); check the input or the model weights")


def _sparse_lrm(A: torch.Tensor, logits: torch.Tensor, class_ids: torch.Tensor, labels: np.ndarray,
                k: int | None) -> LrmPefs:
    """A [B, c, M] -> LrmPefs of the batch, norms from the dense A."""
    values, indices, offsets = sparsify_lrm(A, k)
    return LrmPefs(values=values.cpu().numpy(), indices=indices.cpu().numpy(), class_offsets=offsets.cpu().numpy(),
                   class_ids=class_ids.cpu().numpy().astype(np.int64), norms=lrm_norms(A).cpu().numpy(),
                   logits=logits.cpu().numpy(), labels=labels, n_parameters=A.shape[2])


def _sparse_diag(f: torch.Tensor, logits: torch.Tensor, labels: np.ndarray, k: int | None) -> DiagPefs:
    """f [B, M] -> DiagPefs of the batch, norms from the dense f."""
    values, indices = sparsify_diag(f, k)
    return DiagPefs(values=values.cpu().numpy(), indices=indices.cpu().numpy(), norms=f.norm(dim=1).cpu().numpy(),
                    logits=logits.cpu().numpy(), labels=labels, n_parameters=f.shape[1])


def _total_examples(batches: Iterable[Batch]) -> int | None:
    """Sum of batch sizes when batches is a sequence (known up front), else None."""
    if isinstance(batches, Sequence):
        return sum(_batch_size(b, i) for i, b in enumerate(batches))
    return None


def compute_pefs(model: nn.Module, batches: Iterable[Batch], *, kind: Literal["lrm", "diag"] = "lrm",
                 n_values_per_example: int | None = None, top_k_classes: int | None = None,
                 params: Sequence[str] | None = None, device: torch.device | str | None = None,
                 progress: Progress | None = None) -> LrmPefs | DiagPefs:
    """Sparse LRM- or D-PEFs of every example in `batches` over `params` (default: the model's scope).

    Classes: all C in class order, or the top_k_classes most probable (most probable first, p not
    renormalised); D sums over the same classes. Norms are of the dense PEFs; memory is O(B·c·M).
    """
    _check_args(kind, n_values_per_example, top_k_classes)
    _check_eval(model)
    device = resolve_device(device)
    split = _split(model, _scope_names(model, params), device)
    batched_fn = vmap(_per_example_fn(model, split.consts, kind, top_k_classes), in_dims=(None, 0))
    total = _total_examples(batches)
    parts, done = [], 0
    for index, batch in enumerate(batches):
        size = _batch_size(batch, index)
        dense, logits, class_ids = batched_fn(split.theta, _model_inputs(batch, device))  # A [B, c, M] or f [B, M]
        _check_finite(dense, logits, done)
        labels = _labels(batch, size)
        parts.append(_sparse_lrm(dense, logits, class_ids, labels, n_values_per_example) if kind == "lrm"
                     else _sparse_diag(dense, logits, labels, n_values_per_example))
        done += size
        if progress is not None:
            progress(done, total)
    if not parts:
        raise ValueError("batches is empty; give at least one batch of examples")
    return concat_pefs(parts)
