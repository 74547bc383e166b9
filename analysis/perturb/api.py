"""Component perturbations (spec npeff.md §4, §10.3-4): move the weights along one NPEFF component and
compare how much the predictions change on the component's top examples versus a random baseline.

Each NPEFF variant has a strategy (analysis.perturb.lrm, analysis.perturb.diag) that turns a component
into Δ = θ' − θ₀; the variant registry (analysis.variants) binds it. The model is never written: every
forward pass runs on a perturbed copy of θ through functional_call (analysis.perturb.weights).
"""
from __future__ import annotations

import math
from typing import Callable, ClassVar, Protocol, Sequence

import numpy as np
import pandas as pd
import torch

from analysis.fisher import dataset_fisher
from analysis.devices import resolve_device
from analysis.models import ClassifierModel
from analysis.npeff import Decomposition
from analysis.npeff.common import check_decomposition
from analysis.perturb.diag import DEFAULT_LAM, FISHER_FLOOR
from analysis.perturb.evaluation import (DEFAULT_BASELINE_N, DEFAULT_TOP_N, EvalSet, Examples, PerturbationResult,
                                         Setup, check_set_sizes, eval_set, evaluate, example_sets, top_kl)
from analysis.perturb.targeting import KlTargeter, target_kl
from analysis.variants import variant_of

Progress = Callable[[int, int], None]


class Perturbation(Protocol):
    """One component ready to perturb."""

    targets_kl: ClassVar[bool]  # whether Δ has a merge weight λ and kl_range can search (δ, λ)

    def delta(self, magnitude: float, sign: int, lam: float | None = None) -> torch.Tensor:
        """θ' − θ₀ [M]."""


class Strategy(Protocol):
    """How a variant's components become perturbations."""

    default_signs: ClassVar[tuple[int, ...]]  # the signs perturb_all tries unless told
    merges: ClassVar[bool]  # whether a merge weight λ and a Fisher floor shape Δ

    @classmethod
    def checked(cls, decomposition: Decomposition, *, max_sim: float | None, lam: float,
                kl_range: tuple[float, float] | None, fisher_floor: float) -> "Strategy":
        """The strategy for these settings, refusing those that do not apply to the variant."""

    def prepare(self, k: int, ev: EvalSet, setup: Setup) -> Perturbation:
        """Component k, whose top and baseline examples are `ev`."""


def strategy_for(decomposition: Decomposition) -> type[Strategy]:
    """The perturbation strategy of the decomposition's NPEFF variant (the variant registry binds it)."""
    check_decomposition(decomposition)
    return variant_of(decomposition).perturbation


# ---------------------------------------------------------------------------------------------- checks

def _check_inputs(model: ClassifierModel, examples: Examples, decomposition: Decomposition, k: int, sign: int,
                  top_n: int, baseline_n: int) -> None:
    if not 0 <= k < decomposition.n_components:
        raise ValueError(f"component k must be in [0, {decomposition.n_components}), got {k}")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    if decomposition.W.shape[0] != len(examples):
        raise ValueError(f"examples must be the {decomposition.W.shape[0]} examples the decomposition was fit on "
                         f"(row i of W is example i), got {len(examples)}")
    M = model.summary().n_parameters_in_scope
    if decomposition.n_parameters != M:
        raise ValueError(f"the decomposition covers {decomposition.n_parameters} parameters but model "
                         f"'{model.name}' has {M} in scope ({model.scope.describe()}); use the scope it was fit with")
    check_set_sizes(len(examples), top_n, baseline_n)


def _check_magnitude(magnitude: float) -> None:
    if not (magnitude >= 0 and math.isfinite(magnitude)):
        raise ValueError(f"magnitude must be a finite number >= 0, got {magnitude}")


# ------------------------------------------------------------------------------------------- the driver

def _start(model: ClassifierModel, examples: Examples, decomposition: Decomposition, k: int, sign: int, *,
           top_n: int, baseline_n: int, batch_size: int, device, lam: float, kl_range, max_sim,
           fisher_floor: float) -> tuple[Strategy, Setup]:
    """Checked inputs -> the variant's strategy and what its perturbations share."""
    variant = strategy_for(decomposition)
    _check_inputs(model, examples, decomposition, k, sign, top_n, baseline_n)
    strategy = variant.checked(decomposition, max_sim=max_sim, lam=lam, kl_range=kl_range,
                                                   fisher_floor=fisher_floor)
    return strategy, Setup.on(model, examples, resolve_device(device), batch_size, dataset_fisher)


def _component(strategy: Strategy, setup: Setup, W: np.ndarray, k: int, *, top_n: int, baseline_n: int,
               seed: int) -> tuple[EvalSet, Perturbation]:
    ev = eval_set(setup, *example_sets(W, k, top_n=top_n, baseline_n=baseline_n, seed=seed))
    return ev, strategy.prepare(k, ev, setup)


def _pooled(setup: Setup, W: np.ndarray, components: Sequence[int], *, top_n: int, baseline_n: int,
            seed: int) -> Setup:
    """The setup with the top and baseline examples of `components` pooled (Setup.pooled): for callers that
    evaluate several perturbations, which then share one forward pass at θ₀."""
    sets = [example_sets(W, k, top_n=top_n, baseline_n=baseline_n, seed=seed) for k in components]
    return setup.pooled(np.concatenate([np.concatenate(pair) for pair in sets]))


def _signs(signs: int | Sequence[int] | None, decomposition: Decomposition) -> tuple[int, ...]:
    """signs as a tuple: one sign (1 or -1), several, or None for the strategy's default."""
    if signs is None:
        return strategy_for(decomposition).default_signs
    chosen = (signs,) if isinstance(signs, (int, np.integer)) else tuple(signs)
    if not chosen or any(s not in (1, -1) for s in chosen) or len(set(chosen)) != len(chosen):
        raise ValueError(f"signs must be 1, -1 or a non-empty subset of (1, -1), got {signs}")
    return tuple(int(s) for s in chosen)


def _perturb(setup: Setup, ev: EvalSet, perturbation: Perturbation, k: int, magnitude: float, sign: int,
             lam: float, kl_range: tuple[float, float] | None, targeter: KlTargeter) -> PerturbationResult:
    """Evaluate one perturbation, at (magnitude, lam) or at the (δ, λ) that target_kl finds for kl_range."""
    if not perturbation.targets_kl:
        return evaluate(setup, ev, perturbation.delta(magnitude, sign), component=k, magnitude=magnitude, sign=sign)
    if kl_range is None:
        return evaluate(setup, ev, perturbation.delta(magnitude, sign, lam), component=k, magnitude=magnitude,
                        sign=sign, lam=lam)
    found = target_kl(lambda d, l: top_kl(setup, ev, perturbation.delta(d, sign, l)), kl_range,
                      start=(magnitude, lam), targeter=targeter)
    return evaluate(setup, ev, perturbation.delta(found.delta, sign, found.lam), component=k,
                    magnitude=found.delta, sign=sign, lam=found.lam, converged=found.converged)


# ---------------------------------------------------------------------------------------------- public API

def perturb_component(model: ClassifierModel, examples: Examples, decomposition: Decomposition, k: int, *,
                      magnitude: float, sign: int = 1, max_sim: float | None = None, top_n: int = DEFAULT_TOP_N,
                      baseline_n: int = DEFAULT_BASELINE_N, seed: int = 0, batch_size: int = 32,
                      device: str | torch.device | None = None, lam: float = DEFAULT_LAM,
                      kl_range: tuple[float, float] | None = None, targeter: KlTargeter = KlTargeter(),
                      fisher_floor: float = FISHER_FLOOR) -> PerturbationResult:
    """Perturb component k and compare the KL on its top examples with a random disjoint baseline.

    LRM: θ' = θ₀ + sign·magnitude·ĝ_k (max_sim: semi-orthogonalize ĝ_k first). D-NPEFF: Fisher-weighted
    merge with δ = magnitude and λ = lam, or, with kl_range=(lo, hi), the (δ, λ) found by `target_kl`
    starting there (result.targeting_converged tells whether the top KL landed in range).
    """
    _check_magnitude(magnitude)
    strategy, setup = _start(model, examples, decomposition, k, sign, top_n=top_n, baseline_n=baseline_n,
                             batch_size=batch_size, device=device, lam=lam, kl_range=kl_range, max_sim=max_sim,
                             fisher_floor=fisher_floor)
    if kl_range is not None:  # the search evaluates many perturbations of these examples
        setup = _pooled(setup, decomposition.W, [k], top_n=top_n, baseline_n=baseline_n, seed=seed)
    ev, perturbation = _component(strategy, setup, decomposition.W, k, top_n=top_n, baseline_n=baseline_n, seed=seed)
    return _perturb(setup, ev, perturbation, k, magnitude, sign, lam, kl_range, targeter)


def sweep_component(model: ClassifierModel, examples: Examples, decomposition: Decomposition, k: int,
                    magnitudes: Sequence[float], *, sign: int = 1, max_sim: float | None = None,
                    top_n: int = DEFAULT_TOP_N, baseline_n: int = DEFAULT_BASELINE_N, seed: int = 0,
                    batch_size: int = 32, device: str | torch.device | None = None, lam: float = DEFAULT_LAM,
                    fisher_floor: float = FISHER_FLOOR, progress: Progress | None = None) -> list[PerturbationResult]:
    """perturb_component at each magnitude (ε for LRM, δ at fixed λ for D-NPEFF), sharing the examples,
    their tokenization and the direction."""
    if len(magnitudes) == 0:
        raise ValueError("magnitudes must hold at least one value, got none")
    for magnitude in magnitudes:
        _check_magnitude(magnitude)
    strategy, setup = _start(model, examples, decomposition, k, sign, top_n=top_n, baseline_n=baseline_n,
                             batch_size=batch_size, device=device, lam=lam, kl_range=None, max_sim=max_sim,
                             fisher_floor=fisher_floor)
    if len(magnitudes) > 1:
        setup = _pooled(setup, decomposition.W, [k], top_n=top_n, baseline_n=baseline_n, seed=seed)
    ev, perturbation = _component(strategy, setup, decomposition.W, k, top_n=top_n, baseline_n=baseline_n, seed=seed)
    results = []
    for magnitude in magnitudes:
        results.append(_perturb(setup, ev, perturbation, k, float(magnitude), sign, lam, None, KlTargeter()))
        if progress is not None:
            progress(len(results), len(magnitudes))
    return results


def perturb_all(model: ClassifierModel, examples: Examples, decomposition: Decomposition, magnitude: float, *,
                signs: int | Sequence[int] | None = None, max_sim: float | None = None, top_n: int = DEFAULT_TOP_N,
                baseline_n: int = DEFAULT_BASELINE_N, seed: int = 0, batch_size: int = 32,
                device: str | torch.device | None = None, lam: float = DEFAULT_LAM,
                kl_range: tuple[float, float] | None = None, targeter: KlTargeter = KlTargeter(),
                fisher_floor: float = FISHER_FLOOR, progress: Progress | None = None) -> pd.DataFrame:
    """One row per component: the sign with the largest KL ratio (as the reference reports) and its metrics,
    plus kl_ratio_pos / kl_ratio_neg for the signs tried. signs: 1, -1, (1, -1), or None for the strategy's
    default ((+1, −1) for LRM, (+1,) for D-NPEFF); one sign halves the perturbed forward passes.

    The examples of every component are pooled first (Setup.pooled): one forward pass at θ₀ over all of them
    gives the reference and records the frozen prefix, so each perturbation runs only the in-scope part.
    """
    _check_magnitude(magnitude)
    signs = _signs(signs, decomposition)
    strategy, setup = _start(model, examples, decomposition, 0, signs[0], top_n=top_n, baseline_n=baseline_n,
                             batch_size=batch_size, device=device, lam=lam, kl_range=kl_range, max_sim=max_sim,
                             fisher_floor=fisher_floor)
    rows, r = [], decomposition.n_components
    setup = _pooled(setup, decomposition.W, range(r), top_n=top_n, baseline_n=baseline_n, seed=seed)
    for k in range(r):
        ev, perturbation = _component(strategy, setup, decomposition.W, k, top_n=top_n, baseline_n=baseline_n,
                                      seed=seed)
        results = {s: _perturb(setup, ev, perturbation, k, magnitude, s, lam, kl_range, targeter) for s in signs}
        best = max(results.values(), key=lambda res: -math.inf if math.isnan(res.kl_ratio) else res.kl_ratio)
        row = best.scalars()
        row.update({f"kl_ratio_{'pos' if s > 0 else 'neg'}": res.kl_ratio for s, res in results.items()})
        rows.append(row)
        if progress is not None:
            progress(k + 1, r)
    return pd.DataFrame(rows)
