"""perturb_all as it was before issue #14, kept as the baseline of benchmarks/bench_perturb_all.py.

Per component and sign: a full forward pass over the component's top and baseline examples at θ' = θ₀ + Δ,
after a forward pass at θ₀ that fills the reference wherever one of those examples is not cached yet. No
pooling, no replay of the frozen prefix (the Setup has no pool, so every pass runs the whole network).
"""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch

from analysis.models import ClassifierModel
from analysis.npeff import Decomposition
from analysis.perturb.api import Progress, _check_magnitude, _component, _perturb, _start, strategy_for
from analysis.perturb.diag import DEFAULT_LAM, FISHER_FLOOR
from analysis.perturb.evaluation import DEFAULT_BASELINE_N, DEFAULT_TOP_N, Examples
from analysis.perturb.targeting import KlTargeter


def baseline_perturb_all(model: ClassifierModel, examples: Examples, decomposition: Decomposition, magnitude: float,
                         *, signs: Sequence[int] | None = None, max_sim: float | None = None,
                         top_n: int = DEFAULT_TOP_N, baseline_n: int = DEFAULT_BASELINE_N, seed: int = 0,
                         batch_size: int = 32, device: str | torch.device | None = None, lam: float = DEFAULT_LAM,
                         kl_range: tuple[float, float] | None = None, targeter: KlTargeter = KlTargeter(),
                         fisher_floor: float = FISHER_FLOOR, progress: Progress | None = None,
                         components: Sequence[int] | None = None) -> pd.DataFrame:
    """The pre-#14 loop (components: a subset to time, default all): one row per component."""
    _check_magnitude(magnitude)
    signs = tuple(signs) if signs is not None else strategy_for(decomposition).default_signs
    if not signs or any(s not in (1, -1) for s in signs):
        raise ValueError(f"signs must be a non-empty subset of (1, -1), got {signs}")
    strategy, setup = _start(model, examples, decomposition, 0, signs[0], top_n=top_n, baseline_n=baseline_n,
                             batch_size=batch_size, device=device, lam=lam, kl_range=kl_range, max_sim=max_sim,
                             fisher_floor=fisher_floor)
    chosen = list(range(decomposition.n_components)) if components is None else list(components)
    rows = []
    for done, k in enumerate(chosen, start=1):
        ev, perturbation = _component(strategy, setup, decomposition.W, k, top_n=top_n, baseline_n=baseline_n,
                                      seed=seed)
        results = {s: _perturb(setup, ev, perturbation, k, magnitude, s, lam, kl_range, targeter) for s in signs}
        best = max(results.values(), key=lambda res: -math.inf if math.isnan(res.kl_ratio) else res.kl_ratio)
        row = best.scalars()
        row.update({f"kl_ratio_{'pos' if s > 0 else 'neg'}": res.kl_ratio for s, res in results.items()})
        rows.append(row)
        if progress is not None:
            progress(done, len(chosen))
    return pd.DataFrame(rows)
