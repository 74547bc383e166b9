"""Disk, memory and time estimates shown before a computation starts, and the check against free resources.

The estimates are pure arithmetic on shapes. The measured numbers they need live at the end of the file:
the time per example (timed once per model, dataset, scope, kind, classes and values kept, then kept in the
workspace's `timings.json`) and the free disk and memory of this machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from analysis.datasets import Dataset, dataset_slice, make_batches
from analysis.fisher import compute_pefs
from analysis.models import ClassifierModel
from analysis.variants import get_variant

FLOAT, INDEX = 4, 8  # bytes per stored value (float32) and index (int64)
MAX_DEFAULT_VALUES = 2048  # default values kept per example
TIMINGS = "timings.json"  # seconds per example, by timing_key, under the workspace root
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class PefEstimate:
    """Rough sizes (bytes) and time (seconds) of computing PEFs and fitting NPEFF."""

    pef_bytes: int  # sparse PEFs on disk once complete
    disk_bytes: int  # disk used while computing: the chunk files and the assembled arrays, until the chunks go
    pef_memory_bytes: int  # largest of: one dense batch of gradients, or the chunks assembled into one array
    fit_memory_bytes: int  # NPEFF factors + sparse matrix (0 when no fit is planned)
    pef_seconds: float | None  # whole dataset from a measured time per example; None when not measured

    @property
    def peak_bytes(self) -> int:
        return max(self.pef_memory_bytes, self.fit_memory_bytes)


@dataclass(frozen=True)
class Resources:
    """What the machine has for a computation (bytes)."""

    free_disk_bytes: int  # on the workspace's file system
    available_memory_bytes: int | None  # MemAvailable; None where the system does not say


def default_values_per_example(model: ClassifierModel) -> int:
    """Values kept per example unless asked otherwise: min(2048, parameters in scope × classes)."""
    return min(MAX_DEFAULT_VALUES, model.summary().n_parameters_in_scope * len(model.label_names))


def estimate_pefs(model: ClassifierModel, dataset: Dataset, *, kind: str,
                  n_values_per_example: int | None, top_k_classes: int | None, n_components: int | None,
                  batch_size: int, seconds_each: float | None) -> PefEstimate:
    """Sizes from the shapes; time = seconds_each × examples. n_components=None estimates the PEFs alone."""
    n, M = len(dataset), model.summary().n_parameters_in_scope
    c = top_k_classes or len(model.label_names)
    dense_per_example = get_variant(kind).pefs.n_columns(c) * M
    k = min(n_values_per_example or dense_per_example, dense_per_example)
    pef_bytes = n * k * (FLOAT + INDEX) + n * (c + 1) * INDEX
    batch_bytes = 3 * batch_size * c * M * FLOAT  # per-class gradients, A, and top-k work space
    m = min(M, n * k)  # kept parameters after pruning
    fit_bytes = 2 * n * k * (FLOAT + INDEX) + 4 * n_components * m * FLOAT if n_components else 0
    return PefEstimate(pef_bytes=pef_bytes, disk_bytes=2 * pef_bytes,
                       pef_memory_bytes=max(batch_bytes, 2 * pef_bytes), fit_memory_bytes=fit_bytes,
                       pef_seconds=None if seconds_each is None else seconds_each * n)


def gib(n_bytes: float) -> str:
    """A size for messages: '1.5 GiB', '12.0 MiB'."""
    return f"{n_bytes / 2**30:,.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.1f} MiB"


def resource_problems(estimate: PefEstimate, resources: Resources, *, pefs_stored: bool = False) -> list[str]:
    """What the computation would run out of ([] when it fits). Stored PEFs need no disk and no PEF memory."""
    problems = []
    if not pefs_stored and estimate.disk_bytes > resources.free_disk_bytes:
        problems.append(f"the PEFs need about {gib(estimate.disk_bytes)} of disk while computing, "
                        f"{gib(resources.free_disk_bytes)} are free")
    memory = estimate.fit_memory_bytes if pefs_stored else estimate.peak_bytes
    if resources.available_memory_bytes is not None and memory > resources.available_memory_bytes:
        problems.append(f"the computation needs about {gib(memory)} of memory, "
                        f"{gib(resources.available_memory_bytes)} are available")
    return problems


def duration(seconds: float) -> str:
    """A time for messages: '< 1 s', '42 s', '3.5 min', '380.2 h'."""
    if seconds < 1:
        return "< 1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:,.1f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def describe_estimate(estimate: PefEstimate, resources: Resources) -> str:
    """One line for the command line: disk, memory and time, next to what the machine has."""
    seconds = "not measured" if estimate.pef_seconds is None else duration(estimate.pef_seconds)
    memory = ("" if resources.available_memory_bytes is None
              else f" ({gib(resources.available_memory_bytes)} available)")
    return (f"estimate: PEFs {gib(estimate.pef_bytes)} on disk, up to {gib(estimate.disk_bytes)} while computing "
            f"({gib(resources.free_disk_bytes)} free); peak memory {gib(estimate.peak_bytes)}{memory}; "
            f"time {seconds}")


# -- measured numbers -------------------------------------------------------------------------------
def seconds_per_example(model: ClassifierModel, dataset: Dataset, *, kind: str,
                        top_k_classes: int | None, n_values_per_example: int | None = None, batch_size: int = 16,
                        device: str | None = None) -> float:
    """Time compute_pefs on one batch of the first examples, after the same batch once as a warm-up
    (the first call of a batch shape pays for tracing)."""
    part = dataset_slice(dataset, 0, batch_size)

    def run() -> None:
        compute_pefs(model, make_batches(model, part, batch_size=batch_size), kind=kind, top_k_classes=top_k_classes,
                     n_values_per_example=n_values_per_example, device=device)

    run()  # warm-up
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / len(part)


def timing_key(model: ClassifierModel, dataset: Dataset, *, kind: str,
               top_k_classes: int | None, n_values_per_example: int | None, device: str | None = None) -> str:
    """What the time per example depends on: model, dataset, parameters in scope, kind, classes, values kept
    (keeping all of MiniLM's last layer is 20× slower than keeping 2048), device."""
    blob = json.dumps([model.content_hash, model.scope.describe(), dataset.content_hash, kind, top_k_classes,
                       n_values_per_example, device or "default"])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _timings(root: Path) -> dict[str, float]:
    try:
        return json.loads((Path(root) / TIMINGS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def stored_seconds_per_example(root: Path, key: str) -> float | None:
    """The time per example measured before for `key` in this workspace, or None."""
    return _timings(root).get(key)


def measure_seconds_per_example(root: Path, model: ClassifierModel, dataset: Dataset, *,
                                kind: str, top_k_classes: int | None, n_values_per_example: int | None = None,
                                batch_size: int = 16, device: str | None = None) -> float:
    """The time per example stored in the workspace for this timing_key, else timed now (real PEFs, one batch of
    this size) and stored: a rough number, measured once."""
    key = timing_key(model, dataset, kind=kind, top_k_classes=top_k_classes,
                     n_values_per_example=n_values_per_example, device=device)
    stored = stored_seconds_per_example(root, key)
    if stored is not None:
        return stored
    seconds = seconds_per_example(model, dataset, kind=kind, top_k_classes=top_k_classes,
                                  n_values_per_example=n_values_per_example, batch_size=batch_size, device=device)
    path = Path(root) / TIMINGS
    tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
    tmp.write_text(json.dumps({**_timings(root), key: seconds}, indent=1))
    os.replace(tmp, path)
    return seconds


def available_memory_bytes(meminfo: Path = MEMINFO) -> int | None:
    """MemAvailable from /proc/meminfo (bytes), or None where the file is absent."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts in kB
    except OSError:
        return None
    return None


def machine_resources(root: Path) -> Resources:
    """Free disk of the workspace's file system and available memory, now."""
    return Resources(free_disk_bytes=shutil.disk_usage(root).free, available_memory_bytes=available_memory_bytes())


MAX_CLASS_CHOICES = 64  # above this many classes (a vocabulary), "all" is not offered: PEFs keep the top k


def class_options(n_classes: int) -> list[str]:
    """The "classes per example" a page offers: "all" and 1 .. C−1, or 1 .. MAX_CLASS_CHOICES for large C."""
    if n_classes > MAX_CLASS_CHOICES:
        return [str(k) for k in range(1, MAX_CLASS_CHOICES + 1)]
    return ["all"] + [str(k) for k in range(1, n_classes)]
