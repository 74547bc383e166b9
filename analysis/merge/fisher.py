"""The diagonal Fisher of a model on a dataset, as Fisher merging weighs parameters with it.

F [M] is the mean over examples i of the per-example diagonal Fisher, taken example by example (never the
square of a batch's summed gradient, which adds the cross terms g_i ⊙ g_j of different examples):
  expectation (default): F = mean_i Σ_y p_y(x_i) (∇_θ log p_y(x_i))⊙², the D-PEFs of analysis.fisher;
  empirical:             F = mean_i (∇_θ log p_{y_i}(x_i))⊙² with y_i the gold label.
Both read the per-example gradients of analysis.fisher.compute_pefs (one gradient path for the product).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from analysis.datasets import Dataset, make_batches
from analysis.fisher import compute_pefs
from analysis.models import ClassifierModel

Progress = Callable[[int, int], None]
MIN_LOG_P_GOLD = -150.0  # below this, √p of the gold class is too small in float32 to recover ∇ log p from A


def _expected_sum(model: ClassifierModel, batch: dict, device) -> np.ndarray:
    """Σ_i f_i [M] over a batch, f_i = Σ_y p_y (∇ log p_y)⊙² (all M values of each D-PEF kept)."""
    pefs = compute_pefs(model, [batch], kind="diag", n_values_per_example=None, device=device)
    total = np.zeros(pefs.n_parameters, dtype=np.float64)
    np.add.at(total, pefs.indices.ravel(), pefs.values.ravel().astype(np.float64))
    return total


def _empirical_sum(model: ClassifierModel, batch: dict, device, first: int, source: str) -> np.ndarray:
    """Σ_i (∇ log p_{y_i})⊙² [M] over a batch, from the LRM columns A_y = √p_y ∇ log p_y of all classes."""
    pefs = compute_pefs(model, [batch], kind="lrm", n_values_per_example=None, device=device)
    n, C, M = pefs.n_examples, pefs.n_classes, pefs.n_parameters
    labels = pefs.labels
    if (labels < 0).any():
        row = first + int(np.flatnonzero(labels < 0)[0])
        raise ValueError(f"{source}: the empirical Fisher needs a gold label for every example; row {row} has "
                         "none (-1); label the dataset or use the expectation (empirical=False)")
    A = pefs.values.reshape(n, C, M)  # [n, C, M], every entry kept, columns in class order
    logp = torch.as_tensor(pefs.logits, dtype=torch.float64).log_softmax(-1).numpy()  # [n, C]
    log_p_gold = logp[np.arange(n), labels]  # [n]
    if (log_p_gold < MIN_LOG_P_GOLD).any():
        row = first + int(np.flatnonzero(log_p_gold < MIN_LOG_P_GOLD)[0])
        raise ValueError(f"{source}: row {row} has log p(gold) = {log_p_gold.min():.1f} < {MIN_LOG_P_GOLD}; its "
                         "gradient underflows in float32, use the expectation (empirical=False)")
    # (∇ log p_y)⊙² = A_y⊙² / p_y for the gold class y
    gold = A[np.arange(n), labels].astype(np.float64)  # [n, M]
    return (gold ** 2 / np.exp(log_p_gold)[:, None]).sum(axis=0)


def diagonal_fisher(model: ClassifierModel, dataset: Dataset, *, empirical: bool = False, batch_size: int = 32,
                    device: str | torch.device | None = None, progress: Progress | None = None) -> np.ndarray:
    """F [M] float64 over the model's parameters in scope: the mean of per-example diagonal Fishers."""
    if len(dataset) == 0:
        raise ValueError(f"{dataset.source}: the dataset a Fisher is taken on needs at least one example, got none")
    total, done = None, 0
    for batch in make_batches(model, dataset, batch_size=batch_size):
        part = (_empirical_sum(model, batch, device, done, dataset.source) if empirical
                else _expected_sum(model, batch, device))
        total = part if total is None else total + part
        done += len(next(iter(batch.values())))
        if progress is not None:
            progress(done, len(dataset))
    return total / done
