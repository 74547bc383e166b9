"""Merge 2+ parents of one architecture over a grid of coefficients λ and measure every merged model on each
parent's validation data: accuracy, and KL(parent ‖ merged) on that parent's own data."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from analysis.datasets import Dataset
from analysis.devices import resolve_device
from analysis.merge.methods import MergeSettings, get_method
from analysis.models import ClassifierModel
from analysis.parameters import ParameterLayout
from analysis.perturb.evaluation import batches, kl_divergence, probabilities
from analysis.perturb.weights import FunctionalModel

Progress = Callable[[int, int], None]
PAPER_N_LAMBDAS = 51  # Matena & Raffel searched 51 values of λ when merging two models


@dataclass(frozen=True)
class Parent:
    """A model to merge, the data its Fisher is taken on and the data it is evaluated on (its task)."""

    name: str
    model: ClassifierModel
    fisher_data: Dataset
    eval_data: Dataset


@dataclass(frozen=True)
class SweepSettings:
    """What a merge sweep computes; every field keys the stored sweep."""

    methods: tuple[str, ...] = ("average", "fisher")
    n_lambdas: int = PAPER_N_LAMBDAS
    empirical: bool = False  # empirical Fisher (gold label) instead of the expectation over the model's classes
    merge: MergeSettings = field(default_factory=MergeSettings)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.n_lambdas < 2:
            raise ValueError(f"n_lambdas must be >= 2, got {self.n_lambdas}")
        if not self.methods:
            raise ValueError("methods must name at least one merge method, got none")
        for name in self.methods:
            get_method(name)

    def to_dict(self) -> dict:
        return {"methods": list(self.methods), "n_lambdas": self.n_lambdas, "empirical": self.empirical,
                "fisher_floor": self.merge.fisher_floor, "normalize": self.merge.normalize,
                "batch_size": self.batch_size}


@dataclass(frozen=True)
class MergeSweep:
    """A sweep's results: one row per (method, λ), and the parents' own scores for reference."""

    names: tuple[str, ...]  # the parents, in merge order
    table: pd.DataFrame  # method, lambda, "accuracy <name>" and "KL <name>" per parent
    parents: pd.DataFrame  # model (a parent's name), "accuracy <name>" per parent's validation data


def accuracy_column(name: str) -> str:
    return f"accuracy {name}"


def kl_column(name: str) -> str:
    return f"KL {name}"


def lambda_grid(n_models: int, n_lambdas: int) -> np.ndarray:
    """Coefficients [n_lambdas, N]: λ ∈ linspace(0, 1) for the first model, 1 − λ shared by the others."""
    lam = np.linspace(0.0, 1.0, n_lambdas)  # [L]
    rest = np.repeat(((1.0 - lam) / (n_models - 1))[:, None], n_models - 1, axis=1)  # [L, N-1]
    return np.concatenate([lam[:, None], rest], axis=1)


def flat_parameters(model: ClassifierModel) -> np.ndarray:
    """θ [M] float64: the model's parameters in scope, in layout order."""
    layout = ParameterLayout.in_scope(model)
    return layout.flatten({n: p.detach().cpu() for n, p in model.named_parameters()}).double().numpy()


def check_compatible(parents: list[Parent]) -> None:
    """Same classes, same parameters in scope (names and shapes), equal tensors outside the scope."""
    if len(parents) < 2:
        raise ValueError(f"merging needs at least 2 models, got {len(parents)}")
    if len({p.name for p in parents}) != len(parents):
        raise ValueError(f"parent names must differ, got {[p.name for p in parents]}")
    first = parents[0]
    layout = ParameterLayout.in_scope(first.model)
    tensors = dict(first.model.named_parameters()) | dict(first.model.named_buffers())
    for other in parents[1:]:
        if other.model.label_names != first.model.label_names:
            raise ValueError(f"model '{other.name}' predicts {other.model.label_names} but '{first.name}' predicts "
                             f"{first.model.label_names}; merge models of the same classes")
        theirs_layout = ParameterLayout.in_scope(other.model)
        if (theirs_layout.names, theirs_layout.shapes) != (layout.names, layout.shapes):
            raise ValueError(f"model '{other.name}' has other parameters in scope than '{first.name}' (names or "
                             "shapes differ); merge checkpoints of one architecture under one scope")
        theirs = dict(other.model.named_parameters()) | dict(other.model.named_buffers())
        for name, tensor in tensors.items():
            if name in layout.names:
                continue
            if name not in theirs or theirs[name].shape != tensor.shape or not torch.equal(theirs[name], tensor):
                raise ValueError(f"'{name}' is outside the scope but differs between '{first.name}' and "
                                 f"'{other.name}'; widen the scope to include it (e.g. all parameters)")


def merge_sweep(parents: list[Parent], settings: SweepSettings, fishers: np.ndarray | None, *,
                device: str | torch.device | None = None, progress: Progress | None = None) -> MergeSweep:
    """Every method of `settings` at every λ of the grid; fishers [N, M] are the parents' diagonal Fishers
    (None when no method needs them)."""
    check_compatible(parents)
    dev = resolve_device(device)
    thetas = np.stack([flat_parameters(p.model) for p in parents])  # [N, M]
    fmodel = FunctionalModel(parents[0].model, dev)  # θ₀ of the first parent, in-scope tensors replaced below
    evals = [batches(p.model, p.eval_data, np.arange(len(p.eval_data)), settings.batch_size, dev) for p in parents]
    # each parent's own predictions on its validation data: the reference of its KL
    own = [probabilities(FunctionalModel(p.model, dev), evals[j]) for j, p in enumerate(parents)]

    def scores(tensors: dict[str, torch.Tensor] | None, model: FunctionalModel = fmodel) -> dict[str, float]:
        row = {}
        for j, parent in enumerate(parents):
            probs = probabilities(model, evals[j], tensors)  # [n_j, C]
            row[accuracy_column(parent.name)] = float((probs.argmax(1) == parent.eval_data.labels).mean())
            row[kl_column(parent.name)] = float(kl_divergence(own[j], probs).mean())
        return row

    grid = lambda_grid(len(parents), settings.n_lambdas)  # [L, N]
    rows, total = [], len(settings.methods) * len(grid)
    for name in settings.methods:
        method = get_method(name)
        for lambdas in grid:
            merged = method.merge(thetas, fishers if method.needs_fisher else None, lambdas, settings.merge)  # [M]
            tensors = fmodel.theta0 | fmodel.layout.split(torch.as_tensor(merged), like=fmodel.theta0)
            rows.append({"method": name, "lambda": float(lambdas[0]), **scores(tensors)})
            if progress is not None:
                progress(len(rows), total)
    reference = [{"model": p.name, **{k: v for k, v in scores(None, FunctionalModel(p.model, dev)).items()
                                      if k.startswith("accuracy")}} for p in parents]
    return MergeSweep(names=tuple(p.name for p in parents), table=pd.DataFrame(rows), parents=pd.DataFrame(reference))


def best_by_method(sweep: MergeSweep) -> pd.DataFrame:
    """Per method, the λ whose merged model has the highest mean accuracy over the parents' validation data."""
    table = sweep.table.assign(**{"mean accuracy": sweep.table[[accuracy_column(n) for n in sweep.names]].mean(axis=1)})
    best = table.loc[table.groupby("method", sort=False)["mean accuracy"].idxmax()]
    return best[["method", "lambda", *[accuracy_column(n) for n in sweep.names], "mean accuracy"]].reset_index(drop=True)
