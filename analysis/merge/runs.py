"""Merge sweeps stored in the workspace: each parent's Fisher cached once per (model, data, scope, variant),
the sweep's tables once per (parents, settings)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from analysis.datasets import Dataset
from analysis.merge.fisher import diagonal_fisher
from analysis.merge.methods import get_method
from analysis.merge.sweep import MergeSweep, Parent, SweepSettings, best_by_method, merge_sweep
from analysis.models import ClassifierModel
from analysis.runs import cached_arrays
from analysis.store import Run, Summary, Workspace

MERGE_KIND = "merge"
FISHER_KIND = "merge-fisher"
StageProgress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class MergeSummary(Summary):
    names: list[str]  # the parents, in merge order
    best: list[dict]  # per method: the λ of the best mean accuracy and the accuracies there


def _scope_key(model: ClassifierModel) -> str:
    return hashlib.sha256("\n".join(model.param_names_in_scope()).encode()).hexdigest()


def fisher_params(model: ClassifierModel, dataset: Dataset, empirical: bool) -> dict:
    """What a parent's Fisher depends on (batching does not change it)."""
    return {"model": model.content_hash, "dataset": dataset.content_hash, "scope": _scope_key(model),
            "adapter": model.adapter.settings(), "empirical": empirical}


def stored_fisher(ws: Workspace, model: ClassifierModel, dataset: Dataset, *, empirical: bool = False,
                  batch_size: int = 32, device: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """F [M] of the model on the dataset, computed once per workspace."""
    arrays = cached_arrays(ws, FISHER_KIND, fisher_params(model, dataset, empirical), lambda: {
        "fisher": diagonal_fisher(model, dataset, empirical=empirical, batch_size=batch_size, device=device,
                                  progress=progress)})
    return arrays["fisher"]


def merge_params(parents: list[Parent], settings: SweepSettings) -> dict:
    return {"parents": [{"name": p.name, "model": p.model.content_hash, "scope": _scope_key(p.model),
                         "fisher_data": p.fisher_data.content_hash, "eval_data": p.eval_data.content_hash}
                        for p in parents], "settings": settings.to_dict()}


def merge_run(ws: Workspace, parents: list[Parent], settings: SweepSettings, *, device: str | None = None,
              progress: StageProgress | None = None) -> Run:
    """The sweep of `settings` over the parents, from the workspace when already computed."""
    report = progress or (lambda stage, done, total: None)
    fishers = None
    if any(get_method(m).needs_fisher for m in settings.methods):
        fishers = np.stack([stored_fisher(ws, p.model, p.fisher_data, empirical=settings.empirical,
                                          batch_size=settings.batch_size, device=device,
                                          progress=lambda d, t, name=p.name: report(f"Fisher of {name}", d, t))
                            for p in parents])  # [N, M]

    def compute(writer) -> MergeSummary:
        sweep = merge_sweep(parents, settings, fishers, device=device,
                            progress=lambda d, t: report("Merging", d, t))
        writer.save_table("sweep", sweep.table)
        writer.save_table("parents", sweep.parents)
        return MergeSummary(names=list(sweep.names), best=best_by_method(sweep).to_dict("records"))

    return ws.compute_once(MERGE_KIND, merge_params(parents, settings), compute, model_id=parents[0].model.content_hash,
                           dataset_id=parents[0].eval_data.content_hash)


def load_merge(ws: Workspace, run: Run) -> MergeSweep:
    """The stored tables of a complete merge run."""
    if run.status != "complete":
        raise ValueError(f"run {run.id} is {run.status}, not complete; run the merge first")
    return MergeSweep(names=tuple(MergeSummary.of(run).names), table=ws.load_table(run.id, "sweep"),
                      parents=ws.load_table(run.id, "parents"))


def merge_survival(ws: Workspace, parents: list[Parent], settings: SweepSettings, *, method: str, lam: float,
                   parent: int, W: np.ndarray, top_n: int = 20) -> pd.DataFrame:
    """component_survival of parent `parent`'s decomposition (coefficients W [n, r] of its validation data) under
    one merge of the sweep: `method` at λ = `lam`, the Fishers read from the workspace."""
    from analysis.merge.survival import component_survival, merged_parameters

    fishers = None
    if get_method(method).needs_fisher:
        fishers = np.stack([stored_fisher(ws, p.model, p.fisher_data, empirical=settings.empirical,
                                          batch_size=settings.batch_size) for p in parents])  # [N, M]
    merged = merged_parameters(parents, fishers, method, lam, settings.merge)
    return component_survival(parents[parent].model, parents[parent].eval_data, W, merged, top_n=top_n,
                              batch_size=settings.batch_size)
