"""Experiments of the zonotope explorer: greedy search vs GD over seeds, random vertices vs width."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from analysis.zonotope.gd import gd_train
from analysis.zonotope.search import greedy_search
from analysis.zonotope.vertex import random_vertex_losses

Progress = Callable[[int, int], None]


def greedy_vs_gd(X: np.ndarray, y: np.ndarray, m: int, seeds: Sequence[int], *, gd_steps: int = 3000,
                 progress: Progress | None = None) -> pd.DataFrame:
    """Final ½SSE per seed of GD, greedy from a random vertex, and greedy polishing GD's vertex."""
    rows = []
    for done, seed in enumerate(seeds):
        gd = gd_train(X, y, m, seed=seed, steps=gd_steps)
        greedy = greedy_search(X, y, m, init="random", seed=seed)
        polish = greedy_search(X, y, m, init=(gd.pattern_trace[-1].patterns, gd.signs), seed=seed)
        rows.append({"seed": seed, "GD": gd.loss, "greedy": greedy.loss, "GD + greedy polish": polish.loss,
                     "greedy moves": len(greedy.path) - 1, "greedy QPs": greedy.n_solves})
        if progress:
            progress(done + 1, len(seeds))
    return pd.DataFrame(rows)


def width_study(X: np.ndarray, y: np.ndarray, widths: Sequence[int], n_samples: int, *, seed: int = 0,
                progress: Progress | None = None) -> dict[int, np.ndarray]:
    """½SSE at n_samples random vertices for each width m (overparameterization makes good vertices likely)."""
    out = {}
    for done, m in enumerate(widths):
        out[int(m)] = random_vertex_losses(X, y, int(m), n_samples, seed=seed)
        if progress:
            progress(done + 1, len(widths))
    return out
