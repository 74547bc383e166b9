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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from analysis.datasets import Dataset, dataset_slice, dataset_subset, length_order, make_batches
from analysis.fisher import compute_pefs
from analysis.models import ClassifierModel
from analysis.npeff import FitConfig
from analysis.variants import get_variant, variant_of

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
    values_per_example: int = 0  # values a sparse PEF keeps (k, at most its dense size): the fit's size is n × this

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
                       pef_seconds=None if seconds_each is None else seconds_each * n, values_per_example=k)


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
CALIBRATION = "median of batches after a warm-up"  # in the timing key: numbers timed another way are not reused
CALIBRATION_CHUNK = 128  # examples the calibration batches are drawn from: the first chunk, as pefs_run makes it
TIMED_BATCHES = 3  # batches timed after the warm-up batch


def calibrated_seconds_per_example(batch_seconds: Sequence[float], batch_sizes: Sequence[int]) -> float:
    """Median seconds per example of the batches after the first: the first pays for allocation and the first
    call (timed alone it overestimated a run ~4×), and the median ignores a batch slowed by another process."""
    if len(batch_seconds) != len(batch_sizes) or len(batch_seconds) < 2:
        raise ValueError(f"calibration needs a warm-up batch and at least one timed batch with their sizes, got "
                         f"{len(batch_seconds)} times and {len(batch_sizes)} sizes")
    return float(np.median([t / b for t, b in zip(batch_seconds[1:], batch_sizes[1:])]))


def calibration_batches(n_examples: int, batch_size: int, n_timed: int = TIMED_BATCHES) -> list[np.ndarray]:
    """Positions (in length order) of the batches to time: the first as warm-up, then up to n_timed spread
    evenly over the chunk, so short and long texts are both timed; a one-batch chunk is timed twice."""
    starts = range(0, n_examples, batch_size)
    batches = [np.arange(a, min(a + batch_size, n_examples)) for a in starts]
    if len(batches) == 1:
        return [batches[0], batches[0]]
    chosen = np.unique(np.linspace(0, len(batches) - 1, n_timed + 1).round().astype(int))
    return [batches[i] for i in chosen]


def seconds_per_example(model: ClassifierModel, dataset: Dataset, *, kind: str,
                        top_k_classes: int | None, n_values_per_example: int | None = None, batch_size: int = 16,
                        device: str | None = None) -> float:
    """Time compute_pefs batch by batch on the first chunk, batched by length as pefs_run does: a warm-up batch,
    then TIMED_BATCHES more; their median seconds per example (calibrated_seconds_per_example)."""
    part = dataset_slice(dataset, 0, CALIBRATION_CHUNK)
    order = length_order(model, part)
    batches = calibration_batches(len(part), batch_size)
    # one batch per chosen position, made lazily so that each batch's time ends at its progress report
    made = (batch for b in batches for batch in make_batches(model, dataset_subset(part, order[b]),
                                                             batch_size=batch_size))
    stamps = [time.perf_counter()]
    compute_pefs(model, made, kind=kind, top_k_classes=top_k_classes, n_values_per_example=n_values_per_example,
                 device=device, progress=lambda _done, _total: stamps.append(time.perf_counter()))
    return calibrated_seconds_per_example(np.diff(stamps), [len(b) for b in batches])


def timing_key(model: ClassifierModel, dataset: Dataset, *, kind: str,
               top_k_classes: int | None, n_values_per_example: int | None, device: str | None = None) -> str:
    """What the time per example depends on: model, dataset, parameters in scope, kind, classes, values kept
    (keeping all of MiniLM's last layer is 20× slower than keeping 2048), device."""
    blob = json.dumps([CALIBRATION, model.content_hash, model.scope.describe(), dataset.content_hash, kind,
                       top_k_classes, n_values_per_example, device or "default"])
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
    _store_timing(root, key, seconds)
    return seconds


def _store_timing(root: Path, key: str, seconds: float) -> None:
    """Keep a measured number in the workspace's timings.json (written atomically)."""
    path = Path(root) / TIMINGS
    tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
    tmp.write_text(json.dumps({**_timings(root), key: seconds}, indent=1))
    os.replace(tmp, path)


FIT_CALIBRATION_ITERS = 5  # joint updates the fit calibration runs (after LRM's G-only warm-up, which it also times)


def fit_key(kind: str, device: str | None = None) -> str:
    """Where timings.json keeps the fit's seconds per (stored value × component) for a variant and device."""
    return f"fit:{get_variant(kind).name}:{device or 'default'}"


def iteration_seconds(stamps: Sequence[tuple[int, float]], phase: Callable[[int], str]) -> dict[str, float]:
    """Median seconds per iteration of each phase from (updates done, clock) stamps of a fit's progress; the first
    interval (setup, the first update) and repeated reports of one iteration are left out."""
    times: dict[str, list[float]] = {}
    for (a, ta), (b, tb) in zip(stamps[1:], stamps[2:]):
        if b > a:
            times.setdefault(phase(a), []).append((tb - ta) / (b - a))
    if not times:
        raise ValueError(f"fit calibration needs at least 3 progress reports, got {len(stamps)}")
    return {name: float(np.median(values)) for name, values in times.items()}


def fit_seconds(config: FitConfig, per_iteration: dict[str, float]) -> float:
    """Seconds of the whole fit: each iteration at its phase's seconds (the other phase's when one was not timed)."""
    fallback = max(per_iteration.values())
    return sum(per_iteration.get(config.phase(i), fallback) for i in range(config.total_iters))


def calibrate_fit(pefs, config: FitConfig, *, device: str | None = None) -> tuple[float, dict[str, float]]:
    """(setup seconds: before the first update and after the last, seconds per iteration by phase), from the real
    fit on the stored PEFs: the settings' warm-up, then FIT_CALIBRATION_ITERS joint updates (no early stop)."""
    stamps: list[tuple[int, float]] = []
    start = time.perf_counter()
    variant_of(config).fit(pefs, replace(config, n_iters=FIT_CALIBRATION_ITERS, tol=None), device=device,
                           progress=lambda done, _total, _loss: stamps.append((done, time.perf_counter())))
    setup = (stamps[0][1] - start) + (time.perf_counter() - stamps[-1][1])
    return setup, iteration_seconds(stamps, config.phase)


def measure_fit_seconds(root: Path, pefs, config: FitConfig, *, device: str | None = None) -> float:
    """The whole fit's seconds from calibrate_fit (setup + each iteration); the joint seconds per (stored value ×
    component) are kept in the workspace, for fit_seconds_from_size before the PEFs of other settings exist."""
    setup, per_iteration = calibrate_fit(pefs, config, device=device)
    joint = per_iteration.get("joint", max(per_iteration.values()))
    _store_timing(root, fit_key(variant_of(config).name, device), joint / (pefs.values.size * config.n_components))
    return setup + fit_seconds(config, per_iteration)


def fit_seconds_from_size(root: Path, config: FitConfig, n_values: int, *, device: str | None = None) -> float | None:
    """The whole fit's iterations in seconds from its size: stored values × components × the coefficient measured
    by the last fit calibration in this workspace (every iteration at the joint cost, no setup); None when none
    was measured."""
    coefficient = _timings(root).get(fit_key(variant_of(config).name, device))
    return None if coefficient is None else coefficient * n_values * config.n_components * config.total_iters


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
