"""Merge parents as the page, the command line and the jobs table name them (model and dataset specs), and
the merge job's JSON spec."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.demos import DIGIT_LABELS, demo_folder, merge_pair_tasks
from analysis.errors import about
from analysis.jobs import dataset_spec_from, model_spec_from, spec_dict
from analysis.loading import (DatasetSpec, ModelSpec, check_pair, load_dataset_spec, load_model_spec, pair_dataset,
                              register_pair)
from analysis.merge.methods import MergeSettings
from analysis.merge.sweep import Parent, SweepSettings
from analysis.models import ParamScope
from analysis.store import Workspace

MERGE_DEMO = "merge-pair"


@dataclass(frozen=True)
class ParentSpec:
    """A model to merge, the dataset its Fisher is taken on and the dataset it is evaluated on."""

    name: str
    model: ModelSpec
    fisher_data: DatasetSpec
    eval_data: DatasetSpec


def demo_parents(root: Path) -> list[ParentSpec]:
    """The merge-pair demo's two CNNs with their tasks' digits (files of its folder once it is built)."""
    labels = tuple(DIGIT_LABELS)
    return [ParentSpec(task.name, ModelSpec(str(task.model), scope=ParamScope("all")),
                       DatasetSpec(str(task.fisher_data), label_names=labels),
                       DatasetSpec(str(task.eval_data), label_names=labels))
            for task in merge_pair_tasks(demo_folder(MERGE_DEMO, Path(root)))]


def settings_from(data: dict) -> SweepSettings:
    """The SweepSettings SweepSettings.to_dict wrote."""
    return SweepSettings(methods=tuple(data["methods"]), n_lambdas=int(data["n_lambdas"]),
                         empirical=bool(data["empirical"]), batch_size=int(data["batch_size"]),
                         merge=MergeSettings(fisher_floor=float(data["fisher_floor"]), normalize=bool(data["normalize"])))


def merge_spec(parents: list[ParentSpec], settings: SweepSettings, *, demo: str | None = None) -> dict:
    """A "merge" job: the parents' specs and the sweep's settings; `demo` is built first when given."""
    return {"demo": demo, "settings": settings.to_dict(),
            "parents": [{"name": p.name, "model": spec_dict(p.model), "fisher_data": spec_dict(p.fisher_data),
                         "eval_data": spec_dict(p.eval_data)} for p in parents]}


def parents_from(spec: dict) -> list[ParentSpec]:
    """The ParentSpecs merge_spec wrote."""
    return [ParentSpec(p["name"], model_spec_from(p["model"]), dataset_spec_from(p["fisher_data"]),
                       dataset_spec_from(p["eval_data"])) for p in spec["parents"]]


def load_parent(ws: Workspace, spec: ParentSpec) -> Parent:
    """Load the parent's model and datasets, check each pair and register them (as the Load page does)."""
    with about(spec.model.source):
        model = load_model_spec(spec.model, ws.root)
    datasets = []
    for data in (spec.fisher_data, spec.eval_data):
        with about(data.source):
            dataset = pair_dataset(model, load_dataset_spec(data))
            check_pair(model, dataset)
        register_pair(ws, model, dataset, spec.model.source)
        datasets.append(dataset)
    return Parent(spec.name, model, *datasets)
