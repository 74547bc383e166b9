"""What every model adapter provides, and the registry of adapters by kind.

An adapter is how one kind of model meets NPEFF: how examples become batches, how the network's outputs
become class logits [B, C] (its output head), what the classes are called, how an example is attributed
and displayed, and which parameter names form a layer. ClassifierModel runs its network through it, so
per-example Fishers, fits, perturbations and pages never ask what kind of model they hold.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

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


@dataclass(frozen=True)
class Attribution:
    """Attributions of one example's input for one target (the predicted class or a component)."""

    scores: np.ndarray  # [L] per token (summed over the embedding) or [H, W] per pixel
    tokens: list[str] | None  # [L] for text, None for images
    target_value: float  # the attributed function at the input (probability or s_k)
    baseline_value: float  # ... and at the baseline
    delta: float  # completeness error: Σ scores − (target_value − baseline_value)


class ModelAdapter(ABC):
    """How a kind of model turns a dataset into batches and its outputs into class logits [B, C]."""

    kind: ClassVar[str]  # registry name, stored with the runs
    title: ClassVar[str]  # what the Load page calls it
    data: ClassVar[type]  # the dataset class it reads (TextDataset, ImageDataset)
    options: ClassVar[tuple[OptionSpec, ...]] = ()  # settings beyond the checkpoint (template, top-k ...)
    default_top_k_classes: int | None = None  # classes per example PEFs keep unless told (None: all)

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
    def attribute(self, forward: Callable[[Batch], torch.Tensor], net: nn.Module, batch: Batch,
                  n_steps: int) -> Attribution:
        """Integrated gradients of forward(batch) [1] for a one-example batch, on the input it reads."""

    @abstractmethod
    def display_texts(self, dataset: Dataset) -> list[str] | None:
        """How the pages show each example as text, or None when examples are images."""

    @abstractmethod
    def display_images(self, dataset: Dataset) -> np.ndarray | None:
        """Images [n, H, W] or [n, H, W, 3] in [0, 1] the pages show, or None when examples are texts."""

    def check_dataset(self, dataset: Dataset) -> None:
        """Refuse a dataset this adapter cannot read, saying what it needs."""
        if not isinstance(dataset, self.data):
            raise ValueError(f"a {self.title} model reads {self.data.kind} datasets, but '{dataset.name}' holds "
                             f"{dataset.kind}; load a {self.data.kind} dataset for it")

    def align_labels(self, dataset: Dataset) -> Dataset:
        """The dataset with labels over this adapter's classes (unchanged unless the adapter names them itself)."""
        return dataset

    def length_order(self, dataset: Dataset) -> np.ndarray:
        """A permutation [n] that batches similar examples together (identity unless inputs vary in size)."""
        return np.arange(len(dataset))

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


def adapter_class(kind: str) -> type[ModelAdapter]:
    """The adapter registered as `kind`; the error lists the ones that exist."""
    if kind not in ADAPTERS:
        raise ValueError(f"adapter must be one of {sorted(ADAPTERS)}, got '{kind}'")
    return ADAPTERS[kind]
