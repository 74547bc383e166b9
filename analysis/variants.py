"""The NPEFF variants (LRM-NPEFF, D-NPEFF): one registry binding each variant's pieces under one name.

A variant is its PEF container, fit settings, fit function, decomposition class and perturbation
strategy, plus what the pages need to show it. Lower layers that only hold a kind name (analysis.fisher)
import this module; the implementations it binds never import it back. Code that depends on the variant asks the registry
(`get_variant(name)`, `variant_of(obj)`) and never compares kind strings itself. A new variant is its
modules plus one `register(...)` call below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.npeff import (Decomposition, DiagDecomposition, DiagFitConfig, FitConfig, LrmDecomposition,
                            LrmFitConfig, fit_diag, fit_lrm)
from analysis.pefs import DiagPefs, LrmPefs
from analysis.perturb.diag import DiagStrategy
from analysis.perturb.lrm import LrmStrategy


@dataclass(frozen=True)
class MagnitudeScale:
    """The perturbation magnitudes a page offers: `n` values log-spaced from 10^low to 10^high."""

    label: str  # what the magnitude is called ("Magnitude ε", "Merge step δ")
    low: float
    high: float
    n: int

    def grid(self) -> np.ndarray:
        return np.logspace(self.low, self.high, self.n)


@dataclass(frozen=True)
class Variant:
    """Everything that differs between NPEFF variants, under one name."""

    name: str  # stored in PEF settings ("kind") and decomposition summaries
    title: str  # "LRM-NPEFF"
    description: str  # what the PEFs and components are, one line
    pefs: type  # PEF container (computes itself from batch gradients: from_gradients)
    config: type[FitConfig]  # fit settings (validated by the fit); config.ui lists the variant's own fields
    fit: Callable[..., Decomposition]  # fit(pefs, config, *, device, progress, init, checkpoint, checkpoint_every,
    #                                    resume) -> decomposition
    decomposition: type[Decomposition]  # result class; .factor names the component matrix ("G", "H")
    perturbation: type  # strategy turning a component into θ' − θ₀ (analysis.perturb.api.Strategy)
    default_components: int  # the Compute page's starting value
    magnitude: MagnitudeScale  # what a perturbation's magnitude means for this variant
    perturbation_formula: str  # one line for the Perturb page
    component_attributions: bool  # whether the component score s_k(x) = g_kᵀ F(x) g_k is defined

    @property
    def run_kind(self) -> str:
        """Kind of the stored decomposition runs ("npeff-lrm")."""
        return f"npeff-{self.name}"


VARIANTS: dict[str, Variant] = {}
DEFAULT_VARIANT = "lrm"  # what PEFs are computed for when a caller does not say


def register(variant: Variant) -> Variant:
    """Add a variant under its name (names are unique)."""
    if variant.name in VARIANTS:
        raise ValueError(f"variant '{variant.name}' is registered already")
    VARIANTS[variant.name] = variant
    return variant


def get_variant(name: str) -> Variant:
    """The variant called `name`; the error lists the registered ones."""
    if name not in VARIANTS:
        raise ValueError(f"kind must be {' or '.join(repr(n) for n in VARIANTS)}, got '{name}'")
    return VARIANTS[name]


def variant_of(obj: object) -> Variant:
    """The variant of a PEF container, fit config or decomposition (instance or class)."""
    cls = obj if isinstance(obj, type) else type(obj)
    for variant in VARIANTS.values():
        if issubclass(cls, (variant.pefs, variant.config, variant.decomposition)):
            return variant
    known = ", ".join(f"{v.pefs.__name__}/{v.decomposition.__name__}" for v in VARIANTS.values())
    raise TypeError(f"{cls.__name__} belongs to no NPEFF variant; expected one of {known}")


def variant_of_run_kind(run_kind: str) -> Variant:
    """The variant of a stored decomposition run kind ("npeff-lrm")."""
    for variant in VARIANTS.values():
        if variant.run_kind == run_kind:
            return variant
    raise ValueError(f"run kind must be one of {[v.run_kind for v in VARIANTS.values()]}, got '{run_kind}'")


register(Variant(
    name="lrm", title="LRM-NPEFF", description="low-rank PEFs, rank-1 PSD components", pefs=LrmPefs,
    config=LrmFitConfig, fit=fit_lrm, decomposition=LrmDecomposition, perturbation=LrmStrategy,
    default_components=16, magnitude=MagnitudeScale("Magnitude ε", -3.0, 1.5, 28),
    perturbation_formula="θ' = θ + sign·ε·ĝ_k (optionally semi-orthogonalized)", component_attributions=True))
register(Variant(
    name="diag", title="D-NPEFF", description="diagonal PEFs, non-negative components", pefs=DiagPefs,
    config=DiagFitConfig, fit=fit_diag, decomposition=DiagDecomposition, perturbation=DiagStrategy,
    default_components=10, magnitude=MagnitudeScale("Merge step δ", -4.0, 0.0, 25),
    perturbation_formula="the Fisher-weighted merge of θ with θ − δ·s", component_attributions=False))
