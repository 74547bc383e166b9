"""Gradient-descent baseline (spec §6.2): full-batch Adam on ½·SSE, recording every activation-pattern change."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.zonotope.arrangement import _check_count, _check_y, homogenize


@dataclass(frozen=True)
class PatternChange:
    """The activation pattern GD is in from `step` on (step t = parameters after t Adam updates)."""

    step: int
    patterns: np.ndarray  # [m, n] bool


@dataclass(frozen=True)
class GdResult:
    """Full-batch Adam on ½·SSE, reported in the reparameterised form W_j = |a_j| w_j, s_j = sign(a_j)."""

    loss: float  # ½·SSE at the final parameters
    W: np.ndarray  # [m, D]
    signs: np.ndarray  # [m] float ±1
    pattern_trace: tuple[PatternChange, ...]  # first entry is step 0, last is the final pattern
    losses: np.ndarray  # [steps + 1], losses[t] after t updates


def _gd_init(d: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """He-normal first layer with zero biases, W [m, d+1]; output weights a ~ N(0, 1/m) [m]."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(m, d, generator=gen, dtype=torch.float64) * (2.0 / d) ** 0.5
    W = torch.cat([weights, torch.zeros(m, 1, dtype=torch.float64)], dim=1)
    a = torch.randn(m, generator=gen, dtype=torch.float64) / m ** 0.5
    return W.requires_grad_(), a.requires_grad_()


def gd_train(X: np.ndarray, y: np.ndarray, m: int, *, seed: int = 0, steps: int = 3000,
             lr: float = 1e-2) -> GdResult:
    """Full-batch Adam on ½·SSE of f(x) = Σ_j a_j ReLU(⟨w_j, x̃⟩), recording every activation-pattern change.

    The spec's protocol uses 20k steps; the default 3000 keeps the dashboard responsive.
    """
    Xt_np = homogenize(X)
    y = _check_y(y, Xt_np.shape[0])
    m = _check_count("m", m)
    steps = _check_count("steps", steps)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    Xt, target = torch.from_numpy(Xt_np), torch.from_numpy(y)
    W, a = _gd_init(Xt_np.shape[1] - 1, m, seed)
    optimizer = torch.optim.Adam([W, a], lr=lr)
    losses = torch.empty(steps + 1, dtype=torch.float64)
    trace: list[PatternChange] = []
    previous = None
    for step in range(steps + 1):
        H = Xt @ W.T  # [n, m]
        loss = 0.5 * (torch.relu(H) @ a - target).square().sum()
        losses[step] = loss.detach()
        pattern = (H.detach() > 0).T  # [m, n]
        if previous is None or not torch.equal(pattern, previous):
            trace.append(PatternChange(step=step, patterns=pattern.numpy().copy()))
            previous = pattern
        if step == steps:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    a_np = a.detach().numpy()
    return GdResult(loss=float(losses[-1]), W=np.abs(a_np)[:, None] * W.detach().numpy(),
                    signs=np.where(a_np >= 0, 1.0, -1.0), pattern_trace=tuple(trace), losses=losses.numpy())
