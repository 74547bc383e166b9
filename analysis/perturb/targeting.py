"""KL targeting for D-NPEFF perturbations (spec npeff.md §4.2): search the merge step δ and weight λ
that bring the mean KL on a component's top examples into a range, assuming KL grows with both."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass(frozen=True)
class KlTargeter:
    """Bounds and step rules of the (δ, λ) search that brings the top examples' mean KL into a range (§4.2)."""

    delta_range: tuple[float, float] = (1e-4, 1.0)
    lam_range: tuple[float, float] = (0.035, 0.965)
    max_iters: int = 25
    backoff_attempts: int = 10
    backoff_factor: float = 2.0


@dataclass(frozen=True)
class TargetingResult:
    """Where the KL search stopped: in range when converged, else the point closest to it (log KL)."""

    delta: float
    lam: float
    kl: float  # mean KL on the top examples at (delta, lam)
    converged: bool
    n_evaluations: int


def check_range(name: str, bounds: tuple[float, float], upper: float = math.inf) -> None:
    """bounds must be (lo, hi) with 0 < lo < hi < upper."""
    lo, hi = bounds
    if not 0.0 < lo < hi < upper:
        limit = "" if upper == math.inf else f" < {upper:g}"
        raise ValueError(f"{name} must be (lo, hi) with 0 < lo < hi{limit}, got {bounds}")


def _steps(delta: float, lam: float, side: int, i: int, t: KlTargeter) -> Iterator[tuple[float, float]]:
    """Candidates halfway to the far bound (δ in log space on odd i, λ on even i), halved per backoff."""
    if i % 2:
        bound = t.delta_range[1] if side < 0 else t.delta_range[0]
        step = (math.log(bound) - math.log(delta)) / 2
        for _ in range(t.backoff_attempts):
            yield math.exp(math.log(delta) + step), lam
            step /= t.backoff_factor
    else:
        bound = t.lam_range[1] if side < 0 else t.lam_range[0]
        step = (bound - lam) / 2
        for _ in range(t.backoff_attempts):
            yield delta, lam + step
            step /= t.backoff_factor


def target_kl(kl_fn: Callable[[float, float], float], kl_range: tuple[float, float], *,
              start: tuple[float, float], targeter: KlTargeter = KlTargeter()) -> TargetingResult:
    """Search (δ, λ) with kl_fn(δ, λ) in kl_range, assuming KL grows with both (the reference's KlTargeter).

    Iteration i moves one variable halfway toward its upper bound when KL is too low (lower bound when
    too high); a move that jumps across the range is halved up to backoff_attempts times. Unlike the
    reference the start is given (not drawn) and a miss is reported, with the closest point, not None.
    """
    check_range("kl_range", kl_range)
    check_range("delta_range", targeter.delta_range)
    check_range("lam_range", targeter.lam_range, upper=1.0)
    if targeter.max_iters < 0 or targeter.backoff_attempts < 1 or not targeter.backoff_factor > 1:
        raise ValueError(f"targeter needs max_iters >= 0, backoff_attempts >= 1 and backoff_factor > 1, "
                         f"got {targeter}")
    lo, hi = kl_range
    evaluations: dict[tuple[float, float], float] = {}  # (δ, λ) -> KL; a point at a bound is not re-run

    def side(delta: float, lam: float) -> int:
        if (delta, lam) not in evaluations:
            evaluations[delta, lam] = float(kl_fn(delta, lam))
        kl = evaluations[delta, lam]
        return 0 if lo <= kl <= hi else -1 if kl < lo else 1  # NaN counts as too high

    delta = float(np.clip(start[0], *targeter.delta_range))
    lam = float(np.clip(start[1], *targeter.lam_range))
    current = side(delta, lam)
    for i in range(targeter.max_iters):
        if current == 0:
            break
        before = current
        for delta, lam in _steps(delta, lam, before, i, targeter):
            current = side(delta, lam)
            if current in (0, before):
                break

    def miss(kl: float) -> float:
        """Distance of kl from the range in log space (0 inside)."""
        if not kl > 0:
            return math.inf
        return max(math.log(lo / kl), math.log(kl / hi), 0.0)

    (delta, lam), kl = (((delta, lam), evaluations[delta, lam]) if current == 0
                        else min(evaluations.items(), key=lambda item: miss(item[1])))
    return TargetingResult(delta=delta, lam=lam, kl=kl, converged=current == 0, n_evaluations=len(evaluations))
