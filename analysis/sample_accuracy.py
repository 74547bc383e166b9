"""The loaded model's accuracy on the loaded data, measured once per pair on a bounded random sample of the
labelled examples and stored in the workspace (the Load page's sanity check of a model and a label mapping).

A sample keeps the cost of loading independent of the dataset's size (256 forward passes: seconds for the
demos); its standard error is at most 0.5 / sqrt(256) = 3.1 points, enough to tell a working pair from a wrong
label mapping (chance level or worse).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.datasets import Dataset, predict
from analysis.models import ClassifierModel
from analysis.runs import cached_arrays
from analysis.store import Workspace

SAMPLE_SIZE = 256  # labelled examples scored per pair
SAMPLE_SEED = 0
KIND = "sample-accuracy"  # the stored arrays' kind


@dataclass(frozen=True)
class SampleAccuracy:
    """How many of the sampled labelled examples the model predicts right."""

    n_correct: int
    n_scored: int  # sampled labelled examples: min(SAMPLE_SIZE, n_labelled)
    n_labelled: int  # examples with a gold label
    n_examples: int

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_scored

    def describe(self) -> str:
        """'on 256 random labelled examples of 1,000' (or 'on all 24 labelled examples')."""
        if self.n_scored == self.n_labelled:
            return f"on all {self.n_scored:,} labelled examples"
        return f"on {self.n_scored:,} random labelled examples of {self.n_labelled:,}"


def sample_indices(labels: np.ndarray, size: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Sorted indices [min(size, n_labelled)] of labelled examples (labels >= 0), drawn at random: a table
    or an image folder sorted by class must not be scored on its first class alone."""
    labelled = np.flatnonzero(np.asarray(labels) >= 0)  # [n_labelled]
    if len(labelled) <= size:
        return labelled
    return np.sort(np.random.default_rng(seed).choice(labelled, size=size, replace=False))


def sample_accuracy(ws: Workspace, model: ClassifierModel, dataset: Dataset, *, size: int = SAMPLE_SIZE,
                    progress: Callable[[int, int], None] | None = None) -> SampleAccuracy | None:
    """The model's accuracy on a random sample of the dataset's labelled examples, computed once per (model,
    dataset, size) and stored in the workspace; None when no example has a gold label."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    idx = sample_indices(dataset.labels, size)  # [k]
    if len(idx) == 0:
        return None
    params = {"model": model.content_hash, "dataset": dataset.digest(), "size": size, "seed": SAMPLE_SEED}

    def compute() -> dict[str, np.ndarray]:
        logits = predict(model, dataset.subset(idx), progress=progress)  # [k, C]
        return {"indices": idx, "predictions": logits.argmax(axis=1)}

    stored = cached_arrays(ws, KIND, params, compute)
    correct = stored["predictions"] == dataset.labels[stored["indices"]]  # [k] bool
    return SampleAccuracy(n_correct=int(correct.sum()), n_scored=len(correct),
                          n_labelled=int((dataset.labels >= 0).sum()), n_examples=len(dataset))
