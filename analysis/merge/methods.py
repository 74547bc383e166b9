"""Merge methods, by name: each turns the parents' flat parameters θ [N, M], their diagonal Fishers F [N, M]
and the merging coefficients λ [N] into merged parameters θ* [M]."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.perturb.diag import FISHER_FLOOR

NORM_EPS = 1e-12  # added to ‖F_j‖₂ before normalizing


@dataclass(frozen=True)
class MergeSettings:
    """How Fisher merging weighs the parents (isotropic averaging reads neither)."""

    fisher_floor: float = FISHER_FLOOR  # F_j is raised to at least this: where every F_j is 0, θ* averages
    normalize: bool = False  # divide each F_j by ‖F_j‖₂ first, so that no parent weighs more by its scale

    def __post_init__(self) -> None:
        if not self.fisher_floor > 0.0:
            raise ValueError(f"fisher_floor must be > 0, got {self.fisher_floor}")


def _check(thetas: np.ndarray, lambdas: np.ndarray) -> None:
    if thetas.ndim != 2 or len(thetas) < 2:
        raise ValueError(f"thetas must have shape [N, M] with N >= 2 models, got {thetas.shape}")
    if lambdas.shape != (len(thetas),):
        raise ValueError(f"lambdas must have shape [{len(thetas)}] (one per model), got {lambdas.shape}")
    if (lambdas < 0).any() or not lambdas.sum() > 0:
        raise ValueError(f"lambdas must be >= 0 with a positive sum, got {lambdas.tolist()}")


def average(thetas: np.ndarray, fishers: np.ndarray | None, lambdas: np.ndarray,
            settings: MergeSettings) -> np.ndarray:
    """Isotropic averaging θ* = Σ_j λ_j θ_j / Σ_j λ_j [M] (the baseline)."""
    _check(thetas, lambdas)
    return lambdas @ thetas / lambdas.sum()


def fisher_weights(fishers: np.ndarray, settings: MergeSettings) -> np.ndarray:
    """F̃_j = max(F_j, floor) [N, M], F_j first divided by ‖F_j‖₂ when settings.normalize."""
    if (fishers < 0).any() or not np.isfinite(fishers).all():
        raise ValueError("fishers must be finite and >= 0 (diagonal Fishers); recompute them")
    if settings.normalize:
        fishers = fishers / (np.linalg.norm(fishers, axis=1, keepdims=True) + NORM_EPS)
    return np.maximum(fishers, settings.fisher_floor)


def fisher(thetas: np.ndarray, fishers: np.ndarray | None, lambdas: np.ndarray, settings: MergeSettings) -> np.ndarray:
    """Fisher merging θ* = Σ_j λ_j F̃_j θ_j / Σ_j λ_j F̃_j [M] (Matena & Raffel, their eq. 3)."""
    _check(thetas, lambdas)
    if fishers is None or fishers.shape != thetas.shape:
        raise ValueError(f"fishers must have the shape of thetas {thetas.shape}, got "
                         f"{None if fishers is None else fishers.shape}")
    weighted = lambdas[:, None] * fisher_weights(fishers, settings)  # [N, M]
    return (weighted * thetas).sum(axis=0) / weighted.sum(axis=0)


@dataclass(frozen=True)
class MergeMethod:
    """A merge method: its function and title, and whether it needs the parents' Fishers."""

    merge: Callable[[np.ndarray, np.ndarray | None, np.ndarray, MergeSettings], np.ndarray]
    title: str
    needs_fisher: bool


METHODS: dict[str, MergeMethod] = {
    "average": MergeMethod(average, "Isotropic averaging", needs_fisher=False),
    "fisher": MergeMethod(fisher, "Fisher merging", needs_fisher=True),
}


def get_method(name: str) -> MergeMethod:
    """The registered method `name`; the error lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"merge method must be one of {sorted(METHODS)}, got '{name}'")
    return METHODS[name]
