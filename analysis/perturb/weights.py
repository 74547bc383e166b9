"""The model as a function of its weights: forward passes at θ₀ or θ₀ + Δ that never write the model.

A model cached for every browser session is read-only (house style). `FunctionalModel` holds θ₀ (the
model's parameters and buffers, on the device) and runs torch.func.functional_call on a private view
of the module tree (`analysis.parameters.private_view`), so the temporary tensor swaps of
functional_call, and the perturbed copy θ' = θ₀ + Δ, are seen by this call only.
"""
from __future__ import annotations

from itertools import chain

import numpy as np
import torch
from torch.func import functional_call

from analysis.models import ClassifierModel
from analysis.parameters import ParameterLayout, private_view

NORM_EPS = 1e-12  # added to norms before dividing (spec §3.4, §1.1)

Tensors = dict[str, torch.Tensor]


class FunctionalModel:
    """θ₀ of a model on one device and forward passes through a private view at θ₀ or at θ₀ + Δ."""

    def __init__(self, model: ClassifierModel, device: torch.device):
        self.name = model.name
        self.layout = ParameterLayout.in_scope(model)  # flat θ [M] <-> the in-scope tensors
        # no copy when a tensor is already on the device: θ₀ is the model's own storage, only read
        self.theta0: Tensors = {name: t.detach().to(device)
                                for name, t in chain(model.named_parameters(), model.named_buffers())}
        self._view = private_view(model)

    @property
    def view(self) -> torch.nn.Module:
        """The private view forward passes run on (analysis.perturb.prefix copies it to replace modules)."""
        return self._view

    @property
    def n_parameters(self) -> int:
        """M, the number of parameters in scope."""
        return self.layout.n_parameters

    def perturbed(self, delta: torch.Tensor) -> Tensors:
        """θ' = θ₀ + Δ for delta [M] over the in-scope parameters (new tensors), θ₀ for all others."""
        if tuple(delta.shape) != (self.n_parameters,):
            raise ValueError(f"delta must have shape [{self.n_parameters}] (the in-scope parameters of "
                             f"'{self.name}'), got {list(delta.shape)}")
        pieces = self.layout.split(delta, like=self.theta0)
        return self.theta0 | {name: self.theta0[name] + piece for name, piece in pieces.items()}

    def logits(self, batch: dict[str, torch.Tensor], tensors: Tensors | None = None) -> torch.Tensor:
        """Logits [B, C] of the model with `tensors` (default θ₀) in place of its own."""
        return functional_call(self._view, self.theta0 if tensors is None else tensors, (batch,))


def scatter_kept(values: np.ndarray, kept: np.ndarray, n_parameters: int, device: torch.device) -> torch.Tensor:
    """A component row over the kept parameters [m] scattered into parameter space: [M] float32, 0 elsewhere."""
    kept = torch.as_tensor(np.array(kept), device=device)  # copies: stored factors are read-only
    full = torch.zeros(n_parameters, device=device)
    full[kept] = torch.as_tensor(values, device=device)
    return full
