"""The flat parameter vector θ of a model's parameters in scope, layer names, and private module views.

Every place that turns per-tensor parameters into the flat θ [M] of NPEFF (components, perturbation
directions, attribution tangents, module profiles) goes through `ParameterLayout`, so they all agree
on the order: named_parameters() order, each tensor row-major.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def module_of(name: str) -> str:
    """The module a parameter belongs to: its name without the final attribute (weight/bias)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its numbered block for transformers ('encoder.layer.5'), else its module."""
    m = LAYER_INDEX.search(name)
    return name[: m.end() - 1] if m else module_of(name)


def has_layer_index(name: str) -> bool:
    """Whether a parameter sits in a numbered transformer block."""
    return LAYER_INDEX.search(name) is not None


def parameter_offsets(sizes: list[int]) -> np.ndarray:
    """Start of each parameter tensor in the flat vector plus the total: [T + 1] int64."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


@dataclass(frozen=True)
class ParameterLayout:
    """Where each parameter tensor in scope sits in the flat θ [M]: tensor t is θ[offsets[t]:offsets[t+1]]."""

    names: tuple[str, ...]  # [T] in named_parameters() order
    shapes: tuple[tuple[int, ...], ...]  # [T]
    offsets: np.ndarray  # [T + 1] int64, offsets[-1] = M

    @classmethod
    def of(cls, module: nn.Module, names: list[str] | tuple[str, ...]) -> "ParameterLayout":
        """The layout of `names` (parameters of `module`), in named_parameters() order."""
        params = dict(module.named_parameters())
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"parameter '{unknown[0]}' is not a parameter of {type(module).__name__}; "
                             f"names look like {list(params)[:3]}")
        chosen = set(names)
        ordered = [n for n in params if n in chosen]
        shapes = tuple(tuple(params[n].shape) for n in ordered)
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        return cls(names=tuple(ordered), shapes=shapes, offsets=parameter_offsets(sizes))

    @classmethod
    def in_scope(cls, model: nn.Module) -> "ParameterLayout":
        """The layout of a ClassifierModel's parameters in scope (`model.param_names_in_scope()`)."""
        return cls.of(model, model.param_names_in_scope())

    @property
    def n_parameters(self) -> int:
        """M, the length of θ."""
        return int(self.offsets[-1])

    def split(self, flat: torch.Tensor | np.ndarray, like: dict[str, torch.Tensor] | None = None, *,
              what: str = "flat vector") -> dict[str, torch.Tensor]:
        """A flat vector [M] as one tensor per parameter (views, shaped like the parameters).

        With `like` (name -> tensor), each piece is cast to that tensor's dtype and device. `what` names
        the vector in the error for a wrong shape.
        """
        flat = torch.as_tensor(flat)
        if tuple(flat.shape) != (self.n_parameters,):
            raise ValueError(f"{what} must have shape ({self.n_parameters},) (the parameters in scope), "
                             f"got {tuple(flat.shape)}")
        out = {}
        for name, shape, start, stop in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:]):
            piece = flat[int(start):int(stop)].reshape(shape)
            if like is not None:
                piece = piece.to(dtype=like[name].dtype, device=like[name].device)
            out[name] = piece
        return out

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """One tensor per parameter -> the flat vector [M] (concatenated in layout order)."""
        return torch.cat([tensors[name].reshape(-1) for name in self.names])


def private_view(module: nn.Module) -> nn.Module:
    """A copy of the module tree that shares every parameter and buffer tensor but owns its attribute maps.

    torch.func.functional_call swaps tensors into the module it is given for the duration of a call; on a
    module shared by threads (one model cached for every browser session) another thread would see them.
    Calling it on a private view leaves the shared module untouched. The view also owns its hook maps
    (captum registers hooks) and training flags, and its submodules can be replaced. Costs one object per
    submodule.
    """
    view = copy.copy(module)
    for key, value in vars(module).items():
        if isinstance(value, (dict, set)):  # parameters, buffers, hooks, non-persistent buffer names
            vars(view)[key] = copy.copy(value)
    view._modules = {name: None if child is None else private_view(child) for name, child in module._modules.items()}
    return view
