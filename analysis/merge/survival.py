"""How much of a parent's NPEFF components survives a merge: for component k, the mean KL(parent ‖ merged)
on its top examples over the mean on all examples. A ratio below 1 means the merge changed the component's
examples less than the average example (the component survives); above 1, the merge dropped it first."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from analysis.datasets import Dataset
from analysis.devices import resolve_device
from analysis.merge.methods import MergeSettings, get_method
from analysis.merge.sweep import Parent, flat_parameters
from analysis.models import ClassifierModel
from analysis.perturb.evaluation import batches, kl_divergence, probabilities
from analysis.perturb.weights import FunctionalModel


def merged_parameters(parents: list[Parent], fishers: np.ndarray | None, method: str, lam: float,
                      settings: MergeSettings) -> np.ndarray:
    """θ* [M] of one method at λ (the first parent's weight, 1 − λ shared by the others)."""
    lambdas = np.array([lam] + [(1.0 - lam) / (len(parents) - 1)] * (len(parents) - 1))  # [N]
    thetas = np.stack([flat_parameters(p.model) for p in parents])  # [N, M]
    chosen = get_method(method)
    return chosen.merge(thetas, fishers if chosen.needs_fisher else None, lambdas, settings)


def component_survival(model: ClassifierModel, dataset: Dataset, W: np.ndarray, merged: np.ndarray, *,
                       top_n: int = 20, batch_size: int = 32, device: str | None = None) -> pd.DataFrame:
    """Per component of W [n, r] (coefficients of the dataset's examples): mean KL on its top_n examples, on
    all examples, and their ratio, between the model and the model with merged [M] in place of its scope."""
    if W.shape[0] != len(dataset):
        raise ValueError(f"W has {W.shape[0]} rows but dataset '{dataset.name}' has {len(dataset)} examples; give "
                         "the coefficients of this dataset's examples")
    if not 1 <= top_n <= len(dataset):
        raise ValueError(f"top_n must be in [1, {len(dataset)}], got {top_n}")
    dev = resolve_device(device)
    fmodel = FunctionalModel(model, dev)
    prepared = batches(model, dataset, np.arange(len(dataset)), batch_size, dev)
    tensors = fmodel.theta0 | fmodel.layout.split(torch.as_tensor(merged), like=fmodel.theta0)
    kl = kl_divergence(probabilities(fmodel, prepared), probabilities(fmodel, prepared, tensors))  # [n]
    top = np.argsort(-np.asarray(W), axis=0, kind="stable")[:top_n]  # [top_n, r]
    kl_top = kl[top].mean(axis=0)  # [r]
    return pd.DataFrame({"component": np.arange(W.shape[1]), "KL top": kl_top, "KL all": kl.mean(),
                         "KL ratio": kl_top / max(kl.mean(), 1e-12)})
