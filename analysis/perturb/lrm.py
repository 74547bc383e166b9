"""LRM-NPEFF perturbations (spec npeff.md §4.1): θ' = θ₀ + sign·ε·ĝ_k, with ĝ_k the unit pseudo-Fisher
vector of component k, optionally made orthogonal to the components it barely overlaps (`max_sim`),
and ε = `magnitude` the L2 norm of the change."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from analysis.npeff import LrmDecomposition
from analysis.perturb.evaluation import EvalSet, Setup
from analysis.perturb.weights import NORM_EPS, scatter_kept


def _semi_orthogonal(G: np.ndarray, k: int, max_sim: float, GG: np.ndarray) -> np.ndarray:
    """g_k [m] minus its projection on span{g_j : j ≠ k, |cos(g_k, g_j)| ≤ max_sim} (spec §4.1).

    The projection is exact and order-free (the least-squares coefficients c solve (G_S G_Sᵀ) c = G_S g),
    i.e. Gram–Schmidt run to completion; it is applied twice ("twice is enough") for float32 accuracy.
    """
    norms = np.sqrt(np.maximum(np.diag(GG), 0.0))  # [r]
    cos = np.abs(GG[k]) / (norms[k] * norms + NORM_EPS)  # [r]
    S = np.flatnonzero(cos <= max_sim)
    S = S[S != k]
    g = np.array(G[k], dtype=np.float32)
    if len(S) == 0:
        return g
    for _ in range(2):
        b = (G @ g)[S].astype(np.float64)  # [|S|], G_S g
        c = np.linalg.lstsq(GG[np.ix_(S, S)], b, rcond=1e-7)[0]  # [|S|]
        coef = np.zeros(G.shape[0], dtype=np.float32)
        coef[S] = c
        g -= coef @ G  # g <- g − G_Sᵀ c
    return g


def perturbation_direction(decomposition: LrmDecomposition, k: int, max_sim: float | None = None,
                           GG: np.ndarray | None = None) -> np.ndarray:
    """Unit ĝ_k [m] over the kept parameters, semi-orthogonalized when max_sim is given (GG = G Gᵀ [r, r])."""
    G = np.asarray(decomposition.G)
    if max_sim is None:
        g = np.array(G[k], dtype=np.float32)
    else:
        if not 0.0 < max_sim < 1.0:
            raise ValueError(f"max_sim must be in (0, 1) or None, got {max_sim}")
        g = _semi_orthogonal(G, k, max_sim, (G @ G.T).astype(np.float64) if GG is None else GG)
    norm = float(np.linalg.norm(g))
    if norm < 1e-6:
        raise ValueError(f"component {k} lies in the span of the components it is made orthogonal to "
                         f"(max_sim={max_sim}); lower max_sim or leave it None")
    return g / norm


@dataclass(frozen=True)
class LrmPerturbation:
    """Component k ready to perturb along ĝ_k."""

    direction: torch.Tensor  # ĝ_k [M], unit norm
    targets_kl: ClassVar[bool] = False  # the magnitude is ε; there is no (δ, λ) to search

    def delta(self, magnitude: float, sign: int, lam: float | None = None) -> torch.Tensor:
        """θ' − θ₀ = sign·ε·ĝ_k [M]."""
        return (sign * magnitude) * self.direction


class LrmStrategy:
    """Perturbations of an LRM-NPEFF decomposition along its (semi-orthogonalized) components."""

    default_signs: ClassVar[tuple[int, ...]] = (1, -1)
    merges: ClassVar[bool] = False  # a merge weight λ and a Fisher floor shape Δ (they key stored runs)

    def __init__(self, decomposition: LrmDecomposition, max_sim: float | None):
        self.decomposition, self.max_sim = decomposition, max_sim
        G = np.asarray(decomposition.G)
        self.GG = None if max_sim is None else (G @ G.T).astype(np.float64)  # [r, r], once for all components

    @classmethod
    def checked(cls, decomposition: LrmDecomposition, *, max_sim: float | None, lam: float,
                kl_range: tuple[float, float] | None, fisher_floor: float) -> "LrmStrategy":
        """The strategy for these settings; refuses the D-NPEFF-only kl_range."""
        if kl_range is not None:
            raise ValueError("kl_range applies to D-NPEFF decompositions only; an LRM perturbation has magnitude ε")
        return cls(decomposition, max_sim)

    def prepare(self, k: int, ev: EvalSet, setup: Setup) -> LrmPerturbation:
        dec = self.decomposition
        g = perturbation_direction(dec, k, self.max_sim, self.GG)  # [m]
        return LrmPerturbation(direction=scatter_kept(g, dec.kept, dec.n_parameters, setup.device))
