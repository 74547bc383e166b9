"""What every model adapter provides, and the registry of adapters by kind.

An adapter is how one kind of model meets NPEFF: how examples become batches, how the network's outputs
become class logits [B, C] (its output head), what the classes are called, how an example is attributed
and displayed, and which parameter names form a layer. ClassifierModel runs its network through it, so
per-example Fishers, fits, perturbations and pages never ask what kind of model they hold.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from analysis.datasets import Dataset
from analysis.parameters import layer_of

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class OptionSpec:
    """One setting an adapter takes, as the Load page shows it and the CLI parses it."""

    name: str
    label: str
    default: object
    help: str = ""

    def parse(self, text: str) -> object:
        """The option's value written as text (the command line's KEY=VALUE), typed like its default."""
        if isinstance(self.default, int):
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"option '{self.name}' must be an integer, got '{text}'") from None
        return text


@dataclass(frozen=True)
class Attribution:
    """Attributions of one example's input for one target (the predicted class or a component)."""

    scores: np.ndarray  # [L] per token (summed over the embedding) or [H, W] per pixel
    tokens: list[str] | None  # [L] for text, None for images
    target_value: float  # the attributed function at the input (probability or s_k)
    baseline_value: float  # ... and at the baseline
    delta: float  # completeness error: Σ scores − (target_value − baseline_value)


@dataclass(frozen=True)
class AttributedInput:
    """The input an adapter attributes for a batch of B examples, its baseline, and the attributed function run
    from a replacement of that input; integrated gradients and gradient × input both start from it."""

    inputs: torch.Tensor  # [B, L, D] word embeddings (text) or [B, H, W] / [B, C, H, W] pixels (images)
    baselines: torch.Tensor  # same shape: the baseline tokens' embeddings, or a black image
    run: Callable[[torch.Tensor], torch.Tensor]  # x [b, ...] -> the function at x [b]; b a multiple of B (steps)
    summed: tuple[int, ...]  # dims of an attribution summed into one score per token or pixel
    tokens: list[list[str]] | None  # [B][L] token strings of text inputs; None for images
    real: torch.Tensor | None  # [B, L] bool, the positions that are tokens, not padding; None for images

    def positions(self, attributions: torch.Tensor) -> torch.Tensor:
        """Per-element attributions [B, ...] summed to one score per token [B, L] or pixel [B, H, W]."""
        return attributions.sum(self.summed) if self.summed else attributions


class ModelAdapter(ABC):
    """How a kind of model turns a dataset into batches and its outputs into class logits [B, C]."""

    kind: ClassVar[str]  # registry name, stored with the runs
    title: ClassVar[str]  # what the Load page calls it
    data: ClassVar[type]  # the dataset class it reads (TextDataset, ImageDataset)
    options: ClassVar[tuple[OptionSpec, ...]] = ()  # settings beyond the checkpoint (template, top-k ...)
    default_top_k_classes: int | None = None  # classes per example PEFs keep unless told (None: all)
    # transformers checkpoints it reads: the auto mapping (its name in transformers) of their model classes
    # (None: none), those classes as the errors name them, and its order among the adapters that read one
    # checkpoint (the lowest is the default)
    auto_mapping: ClassVar[str | None] = None
    checkpoint_classes: ClassVar[str] = ""
    rank: ClassVar[int] = 0

    @classmethod
    def transformers_class(cls, config) -> type | None:
        """The transformers model class this adapter loads a checkpoint of `config` with, or None."""
        if cls.auto_mapping is None:
            return None
        import transformers

        mapping = getattr(transformers, cls.auto_mapping)
        if type(config) not in mapping:
            return None
        # a few configs map to several classes (Perceiver's image classifiers): the one saved, else the first
        classes = mapping[type(config)] if isinstance(mapping[type(config)], tuple) else (mapping[type(config)],)
        return next((c for c in classes if c.__name__ in (config.architectures or [])), classes[0])

    @classmethod
    def reads_config(cls, config) -> bool:
        """Whether it reads a transformers checkpoint of `config`: its model class is the one the checkpoint
        was saved as (config.architectures), or, when the config names none, exists for the config."""
        model_class = cls.transformers_class(config)
        saved = config.architectures or []
        return model_class is not None and (not saved or model_class.__name__ in saved)

    @classmethod
    def from_checkpoint(cls, net: nn.Module, folder: Path, options: dict, max_length: int) -> "ModelAdapter":
        """The adapter of a loaded transformers network whose checkpoint files (tokenizer, image processor)
        lie in `folder`, with its options."""
        raise ValueError(f"adapter '{cls.kind}' does not read transformers checkpoints")

    @classmethod
    def check_options(cls, options: dict) -> dict:
        """The options, refused when one is not among the adapter's OptionSpecs (the error lists those)."""
        allowed = [o.name for o in cls.options]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            takes = f"options {allowed}" if allowed else "no options"
            raise ValueError(f"adapter '{cls.kind}' takes {takes}, got '{unknown[0]}'")
        return dict(options)

    @classmethod
    def parse_options(cls, pairs: Iterable[str]) -> dict:
        """Options written as KEY=VALUE texts, each typed by its OptionSpec (the command line's --option)."""
        specs = {o.name: o for o in cls.options}
        parsed = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"option must be KEY=VALUE, got '{pair}'; adapter '{cls.kind}' takes "
                                 f"{[o.name for o in cls.options] or 'no options'}")
            cls.check_options({key.strip(): value})
            parsed[key.strip()] = specs[key.strip()].parse(value)
        return parsed

    @property
    @abstractmethod
    def label_names(self) -> list[str]:
        """The C classes the logits are over."""

    @abstractmethod
    def settings(self) -> dict:
        """Everything besides the weights that changes the logits (stored in the PEF run key)."""

    @abstractmethod
    def batches(self, dataset: Dataset, batch_size: int) -> Iterator[Batch]:
        """Model inputs of consecutive examples, batch_size at a time, each with a "labels" entry [B]."""

    @abstractmethod
    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        """Class logits [B, C] of the network on a batch; an example's row must not depend on the others."""

    @abstractmethod
    def attributed_input(self, forward: Callable[[Batch], torch.Tensor], net: nn.Module,
                         batch: Batch) -> AttributedInput:
        """The input attributions of forward(batch) [B] are taken on (word embeddings, pixels), its baseline and
        forward run from a replacement of it (hooks go on `net`, which must be a private view)."""

    @abstractmethod
    def display_texts(self, dataset: Dataset) -> list[str] | None:
        """How the pages show each example as text, or None when examples are images."""

    @abstractmethod
    def display_images(self, dataset: Dataset) -> np.ndarray | None:
        """Images [n, H, W] or [n, H, W, 3] in [0, 1] the pages show, or None when examples are texts."""

    def display_spans(self, dataset: Dataset) -> list[np.ndarray] | None:
        """Each example's tokens as character spans [L_i, 2] of its display text ([-1, -1] for special tokens),
        or None when examples are not texts."""
        return None

    def check_dataset(self, dataset: Dataset) -> None:
        """Refuse a dataset this adapter cannot read, saying what it needs."""
        if not isinstance(dataset, self.data):
            raise ValueError(f"a {self.title} model reads {self.data.kind} datasets, but '{dataset.name}' holds "
                             f"{dataset.kind}; load a {self.data.kind} dataset for it")

    def data_label_names(self) -> tuple[str, ...]:
        """The class names a dataset's label column is read with: the adapter's classes, or () to read the
        column's own values, which align_labels maps to classes (answer strings of a next-token model)."""
        return tuple(self.label_names)

    def align_labels(self, dataset: Dataset) -> Dataset:
        """The dataset with labels over this adapter's classes (unchanged unless the adapter names them itself)."""
        return dataset

    def input_sizes(self, dataset: Dataset) -> np.ndarray:
        """Each example's input size [n] as a batch pads it (token count for texts; 1 where inputs are one size)."""
        return np.ones(len(dataset), dtype=np.int64)

    def length_order(self, dataset: Dataset) -> np.ndarray:
        """A permutation [n] that batches similar examples together: by input size (identity when all are one)."""
        return np.argsort(self.input_sizes(dataset), kind="stable")

    def layer_of(self, name: str) -> str:
        """The layer a parameter belongs to, for the "last N layers" scope."""
        return layer_of(name)


ADAPTERS: dict[str, type[ModelAdapter]] = {}


def register(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Add an adapter class under its kind (a class decorator)."""
    if cls.kind in ADAPTERS:
        raise ValueError(f"adapter '{cls.kind}' is registered already")
    ADAPTERS[cls.kind] = cls
    return cls


def config_label_names(config) -> list[str]:
    """The classes of a transformers classifier config, in id order (its id2label)."""
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def checkpoint_adapters(config, source: str) -> list[str]:
    """The registered adapters that read a transformers checkpoint of `config` (at `source`), the default first;
    none: an error naming what the checkpoint was saved as and listing the adapters that exist."""
    fits = sorted((cls.rank, kind) for kind, cls in ADAPTERS.items() if cls.reads_config(config))
    if not fits:
        saved = ", ".join(config.architectures or []) or f"a '{config.model_type}' config without architectures"
        readers: dict[str, list[str]] = {}
        for kind, cls in sorted(ADAPTERS.items()):
            if cls.auto_mapping:
                readers.setdefault(cls.checkpoint_classes, []).append(kind)
        read = "; ".join(f"{classes} ({', '.join(kinds)})" for classes, kinds in readers.items())
        raise ValueError(f"{source}: no adapter reads a checkpoint saved as {saved}; the adapters are "
                         f"{sorted(ADAPTERS)}, and those for transformers checkpoints read {read}; save the model "
                         "with one of these heads")
    return [kind for _, kind in fits]


def adapter_class(kind: str) -> type[ModelAdapter]:
    """The adapter registered as `kind`; the error lists the ones that exist."""
    if kind not in ADAPTERS:
        raise ValueError(f"adapter must be one of {sorted(ADAPTERS)}, got '{kind}'")
    return ADAPTERS[kind]
