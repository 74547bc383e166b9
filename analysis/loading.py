"""Models and datasets as the dashboard and the command line name them (specs), loaded, checked as a pair
and registered in the workspace in one place, so both register the same rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from analysis.datasets import Dataset, load_image_file, load_text_file
from analysis.demos import DEMOS, demo_folder
from analysis.models import ClassifierModel, ParamScope, load_model
from analysis.store import Workspace

DEMO_PREFIX = "demo:"  # a spec's source "demo:text" names a built-in demo


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from; hashable, so it can key a cache."""

    source: str  # "demo:<kind>", or a local path (folder, .zip, weights file)
    scope: ParamScope = ParamScope()
    config: str | None = None  # config.json for a bare transformers state dict
    architecture: str | None = None  # registered image architecture for a bare state dict
    label_names: tuple[str, ...] = ()  # classes of a bare image architecture

    @property
    def demo(self) -> str | None:
        """The demo kind when the source is a demo, else None."""
        return self.source.removeprefix(DEMO_PREFIX) if self.source.startswith(DEMO_PREFIX) else None


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from; hashable, so it can key a cache."""

    source: str  # "demo:<kind>", or a local .csv/.jsonl/.parquet/.npz path
    text_columns: tuple[str, ...] = ()
    label_column: str | None = None
    label_names: tuple[str, ...] = field(default=())
    annotation_columns: tuple[str, ...] = ()  # other columns kept for browsing (e.g. a ground-truth rule)


def demo_specs(kind: str, scope: ParamScope | None = None) -> tuple[ModelSpec, DatasetSpec]:
    """The specs of a demo's model (its default scope unless given) and of its browsing dataset."""
    demo_folder(kind, Path("."))  # an unknown kind names the demos that exist
    return (ModelSpec(source=f"{DEMO_PREFIX}{kind}", scope=scope or DEMOS[kind].scope),
            DatasetSpec(source=f"{DEMO_PREFIX}{kind}"))


def load_model_spec(spec: ModelSpec, root: Path) -> ClassifierModel:
    """The model of a spec; demos are read from the workspace `root`, zips are extracted under it."""
    if spec.demo:
        return load_model(demo_folder(spec.demo, root), scope=spec.scope)
    return load_model(spec.source, scope=spec.scope, extract_root=Path(root) / "uploads" / "extracted",
                      config=spec.config, architecture=spec.architecture,
                      label_names=list(spec.label_names) or None)


def load_dataset_spec(spec: DatasetSpec) -> Dataset:
    """The dataset of a spec (.npz images, else a table read with the spec's columns)."""
    if spec.source.startswith(DEMO_PREFIX):
        kind = spec.source.removeprefix(DEMO_PREFIX)
        demo_folder(kind, Path("."))
        return DEMOS[kind].dataset()
    if spec.source.endswith(".npz"):
        return load_image_file(spec.source, label_names=list(spec.label_names))
    return load_text_file(spec.source, text_columns=list(spec.text_columns), label_column=spec.label_column,
                          label_names=list(spec.label_names), annotation_columns=list(spec.annotation_columns))


def check_pair(model: ClassifierModel, dataset: Dataset) -> None:
    """The model's adapter reads the dataset, and the dataset's classes are the model's."""
    model.adapter.check_dataset(dataset)
    if list(dataset.label_names) != list(model.label_names):
        raise ValueError(f"dataset '{dataset.name}' has classes {dataset.label_names} but model '{model.name}' "
                         f"predicts {model.label_names}; relabel the dataset with the model's classes")


def register_pair(ws: Workspace, model: ClassifierModel, dataset: Dataset, model_source: str) -> None:
    """Record the model and the dataset's examples in the workspace (what the pages list and search)."""
    ws.register_model(id=model.content_hash, name=model.name, source=model_source, input_kind=model.input_kind,
                      label_names=model.label_names, n_parameters=model.summary().n_parameters)
    ws.register_dataset(id=dataset.content_hash, name=dataset.name, source=dataset.source, input_kind=dataset.kind,
                        label_names=dataset.label_names, texts=model.adapter.display_texts(dataset),
                        labels=dataset.labels)
