"""Models and datasets as the dashboard and the command line name them (specs), loaded, checked as a pair
and registered in the workspace in one place, so both register the same rows."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from analysis.adapters import OptionSpec, adapter_class
from analysis.adapters.causal_lm import CausalLmClassifier
from analysis.adapters.text import load_tokenizer
from analysis.datasets import (Dataset, load_image_file, load_image_folder_dataset, load_text_file,
                               read_table)
from analysis.demos import DEMOS, demo_folder
from analysis.models import (IMAGE_CONFIG, ClassifierModel, ParamScope, _checkpoint_in, adapter_choice, load_model,
                             read_config)
from analysis.safe_io import safe_extract_zip
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
    adapter: str | None = None  # how a transformers checkpoint is read (a registered adapter kind)
    options: tuple[tuple[str, object], ...] = ()  # the adapter's options as (name, value) pairs (hashable)

    @property
    def demo(self) -> str | None:
        """The demo kind when the source is a demo, else None."""
        return self.source.removeprefix(DEMO_PREFIX) if self.source.startswith(DEMO_PREFIX) else None


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from; hashable, so it can key a cache."""

    source: str  # "demo:<kind>", a local .csv/.jsonl/.parquet/.npz path, or a folder of <class>/<image> files
    text_columns: tuple[str, ...] = ()
    label_column: str | None = None
    label_names: tuple[str, ...] = field(default=())
    annotation_columns: tuple[str, ...] = ()  # other columns kept for browsing (e.g. a ground-truth rule)
    image_size: tuple[int, int] | None = None  # (height, width) an image folder is resized to (default: first image)
    label_map: tuple[tuple[str, str], ...] = ()  # (label value as a string, model class name) pairs, applied first


def demo_specs(kind: str, scope: ParamScope | None = None) -> tuple[ModelSpec, DatasetSpec]:
    """The specs of a demo's model (its default scope unless given) and of its browsing dataset."""
    demo_folder(kind, Path("."))  # an unknown kind names the demos that exist
    return (ModelSpec(source=f"{DEMO_PREFIX}{kind}", scope=scope or DEMOS[kind].scope),
            DatasetSpec(source=f"{DEMO_PREFIX}{kind}"))


def load_model_spec(spec: ModelSpec, root: Path) -> ClassifierModel:
    """The model of a spec; demos are read from the workspace `root`, zips are extracted under it."""
    how = {"adapter": spec.adapter, "options": dict(spec.options) or None}
    if spec.demo:
        return load_model(demo_folder(spec.demo, root), scope=spec.scope, **how)
    return load_model(spec.source, scope=spec.scope, extract_root=Path(root) / "uploads" / "extracted", **how,
                      config=spec.config, architecture=spec.architecture,
                      label_names=list(spec.label_names) or None)


def load_dataset_spec(spec: DatasetSpec) -> Dataset:
    """The dataset of a spec (.npz images, a folder of class subfolders of images, else a table).

    A table's label column with no label_names given has its own distinct values as classes (e.g. the answer
    strings of a free-form next-token dataset, which pair_dataset turns into the model's vocabulary). The
    spec's label_map renames a table's label values or an image folder's class subfolders to the model's
    classes."""
    if spec.source.startswith(DEMO_PREFIX):
        kind = spec.source.removeprefix(DEMO_PREFIX)
        demo_folder(kind, Path("."))
        return DEMOS[kind].dataset()
    if Path(spec.source).is_dir():
        return load_image_folder_dataset(spec.source, list(spec.label_names), size=spec.image_size,
                                         label_map=dict(spec.label_map))
    if spec.source.endswith(".npz"):
        return load_image_file(spec.source, label_names=list(spec.label_names))
    names = list(spec.label_names)
    if spec.label_column and not names:
        names = sorted({str(v) for v in read_table(spec.source)[spec.label_column].dropna().tolist()})
    return load_text_file(spec.source, text_columns=list(spec.text_columns), label_column=spec.label_column,
                          label_names=names, annotation_columns=list(spec.annotation_columns),
                          label_map=dict(spec.label_map))


def paired_dataset_spec(model: ClassifierModel, spec: DatasetSpec) -> DatasetSpec:
    """The spec of a dataset file for the model: its label column read as the model's classes, or as its own
    values where the adapter maps them itself (answer strings of a free-form next-token model)."""
    return replace(spec, label_names=model.adapter.data_label_names())


def pair_dataset(model: ClassifierModel, dataset: Dataset) -> Dataset:
    """The dataset with labels over the model's classes (its adapter decides: a free-form next-token model reads
    a label column of answer strings as each answer's first token)."""
    return model.adapter.align_labels(dataset)


def check_pair(model: ClassifierModel, dataset: Dataset) -> None:
    """The model's adapter reads the dataset, and the dataset's classes are the model's."""
    model.adapter.check_dataset(dataset)
    if list(dataset.label_names) != list(model.label_names):
        raise ValueError(f"dataset '{dataset.name}' has classes {dataset.label_names} but model '{model.name}' "
                         f"predicts {model.label_names}; relabel the dataset with the model's classes")


def _checkpoint_folder(source: str, root: Path) -> Path | None:
    """The checkpoint folder of a model source (a demo's in the workspace `root`, a zip extracted under `root`
    as load_model_spec extracts it), or None for a bare weights file."""
    if source.startswith(DEMO_PREFIX):
        return demo_folder(source.removeprefix(DEMO_PREFIX), Path(root))
    path = Path(source)
    if path.suffix == ".zip":
        return _checkpoint_in(safe_extract_zip(path, Path(root) / "uploads" / "extracted"), path.name)
    return path if path.is_dir() else None


def adapter_choices(source: str, root: Path) -> tuple[list[str], str | None]:
    """The registered adapters that can read a model source, and the one load_model picks by default.

    ([], None) for a bare weights file or a folder without config (those are read as they declare)."""
    folder = _checkpoint_folder(source, root)
    if folder is None or (folder / IMAGE_CONFIG).exists() or not (folder / "config.json").exists():
        return [], None
    choice = adapter_choice(read_config(folder), folder)
    return list(choice.kinds), choice.kind


def adapter_settings(source: str, root: Path, adapter: str | None, pairs: Iterable[str]) -> dict:
    """ModelSpec's adapter and options from text (the command line's --adapter NAME, --option KEY=VALUE): each
    value typed by the option specs of the adapter named, else of the one loading picks for the source."""
    pairs = list(pairs)
    if adapter is None and not pairs:
        return {}
    kind = adapter or adapter_choices(source, root)[1]
    if kind is None:
        raise ValueError(f"{source}: options {pairs} apply to transformers checkpoints read through an adapter; "
                         "this model is read as its files declare and takes none")
    return {"adapter": adapter, "options": tuple(sorted(adapter_class(kind).parse_options(pairs).items()))}


def adapter_options(kind: str) -> tuple[OptionSpec, ...]:
    """The settings an adapter takes beyond the checkpoint (what the Load page renders as inputs)."""
    return adapter_class(kind).options


def label_word_tokens(source: str, root: Path, verbalizer: str) -> dict[str, str]:
    """Label word -> the token that stands for it, from the checkpoint's tokenizer (before loading weights);
    the verbalizer's error when words encode to nothing or share a first token."""
    folder = _checkpoint_folder(source, root)
    if folder is None:
        raise ValueError(f"{source}: the label words' tokens need a checkpoint folder with its tokenizer")
    return CausalLmClassifier(load_tokenizer(folder), verbalizer=verbalizer).label_tokens


def register_pair(ws: Workspace, model: ClassifierModel, dataset: Dataset, model_source: str) -> None:
    """Record the model and the dataset's examples in the workspace (what the pages list and search)."""
    ws.register_model(id=model.content_hash, name=model.name, source=model_source, input_kind=model.input_kind,
                      label_names=model.label_names, n_parameters=model.summary().n_parameters)
    ws.register_dataset(id=dataset.content_hash, name=dataset.name, source=dataset.source, input_kind=dataset.kind,
                        label_names=dataset.label_names, texts=model.adapter.display_texts(dataset),
                        labels=dataset.labels)
