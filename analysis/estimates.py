"""Memory and time estimates shown before a computation starts."""
from __future__ import annotations

import time
from dataclasses import dataclass

from analysis.datasets import ImageDataset, TextDataset, dataset_slice, make_batches
from analysis.fisher import compute_pefs
from analysis.models import ClassifierModel

FLOAT, INDEX = 4, 8  # bytes per stored value (float32) and index (int64)


@dataclass(frozen=True)
class PefEstimate:
    """Rough sizes (bytes) and time (seconds) of computing PEFs and fitting NPEFF."""

    pef_bytes: int  # sparse PEFs on disk
    peak_bytes: int  # largest of: one dense batch of PEFs, or the NPEFF factors + sparse matrix
    pef_seconds: float  # whole dataset, extrapolated from a timed sample


def seconds_per_example(model: ClassifierModel, dataset: TextDataset | ImageDataset, *, kind: str,
                        top_k_classes: int | None, sample: int = 4) -> float:
    """Time compute_pefs on the first `sample` examples (after one warm-up example)."""
    part = dataset_slice(dataset, 0, sample)
    compute_pefs(model, make_batches(model, dataset_slice(dataset, 0, 1), batch_size=1), kind=kind,
                 top_k_classes=top_k_classes, n_values_per_example=1)
    start = time.perf_counter()
    compute_pefs(model, make_batches(model, part, batch_size=sample), kind=kind, top_k_classes=top_k_classes,
                 n_values_per_example=1)
    return (time.perf_counter() - start) / len(part)


def estimate_pefs(model: ClassifierModel, dataset: TextDataset | ImageDataset, *, kind: str,
                  n_values_per_example: int | None, top_k_classes: int | None, n_components: int,
                  batch_size: int, seconds_each: float) -> PefEstimate:
    """Sizes from the shapes; time = seconds_each × examples."""
    n, M = len(dataset), model.summary().n_parameters_in_scope
    c = top_k_classes or len(model.label_names)
    dense_per_example = (c if kind == "lrm" else 1) * M
    k = min(n_values_per_example or dense_per_example, dense_per_example)
    pef_bytes = n * k * (FLOAT + INDEX) + n * (c + 1) * INDEX
    batch_bytes = 3 * batch_size * c * M * FLOAT  # per-class gradients, A, and top-k work space
    m = min(M, n * k)  # kept parameters after pruning
    fit_bytes = 2 * n * k * (FLOAT + INDEX) + 4 * n_components * m * FLOAT
    return PefEstimate(pef_bytes=pef_bytes, peak_bytes=max(batch_bytes, fit_bytes), pef_seconds=seconds_each * n)
