"""Disk, memory and time estimates shown before a computation starts, and the check against free resources.

The estimates are arithmetic on shapes and on measured numbers, which live at the end of the file: the time
per example and peak memory of PEFs (calibrated on a few real batches once per model, dataset, scope, kind,
classes, values kept and batch size), and a fit's time and memory per stored value, kept in the workspace's
`timings.json`. Each complete run records what it really took next to its estimate (`measured.json` in its
folder), and its numbers replace the calibration's for the next estimate. Also: the free disk and memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from analysis.datasets import Dataset, dataset_slice, dataset_subset, length_order, make_batches
from analysis.fisher import compute_pefs
from analysis.models import ClassifierModel
from analysis.npeff import FitConfig
from analysis.npeff.pef_matrix import BLOCK_VALUES
from analysis.peak_memory import measured
from analysis.store import RunWriter, Workspace
from analysis.variants import get_variant, variant_of
from kernels.distributed import rank_and_world

FLOAT, INDEX = 4, 8  # bytes per stored value (float32) and index (int64)
MAX_DEFAULT_VALUES = 2048  # default values kept per example
TIMINGS = "timings.json"  # PefMeasure by timing_key and FitMeasure by fit_key, under the workspace root
MEMINFO = Path("/proc/meminfo")
T = TypeVar("T")
FIT_BYTES_PER_VALUE = 24  # a fit's X by columns (float32 value, int32 row) and the arrays that place it (pef_matrix)
BLOCK_TEMPORARY_BYTES = 100  # per stored value of the block of examples being placed into X (pef_matrix)


@dataclass(frozen=True)
class PefEstimate:
    """Rough sizes (bytes) and time (seconds) of computing PEFs and fitting NPEFF."""

    pef_bytes: int  # sparse PEFs on disk once complete
    disk_bytes: int  # disk used while computing: the chunk files and the assembled arrays, until the chunks go
    pef_memory_bytes: int  # largest of: one dense batch of gradients, or the chunks assembled into one array
    fit_memory_bytes: int  # NPEFF fit: its sparse matrix, block and factors (0 when no fit is planned)
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
                  batch_size: int, seconds_each: float | None, pef_memory_bytes: int | None = None,
                  fit_bytes_per_value: float | None = None) -> PefEstimate:
    """Sizes from the shapes; time = seconds_each × examples. Memory: pef_memory_bytes (measured at this batch
    size) and fit_bytes_per_value × stored values (measured by a fit) where given, else from the shapes.
    n_components=None estimates the PEFs alone."""
    n, M = len(dataset), model.summary().n_parameters_in_scope
    c = top_k_classes or len(model.label_names)
    dense_per_example = get_variant(kind).pefs.n_columns(c) * M
    k = min(n_values_per_example or dense_per_example, dense_per_example)
    pef_bytes = n * k * (FLOAT + INDEX) + n * (c + 1) * INDEX
    batch_bytes = 3 * batch_size * c * M * FLOAT  # per-class gradients, A, and top-k work space
    if pef_memory_bytes is None:
        pef_memory_bytes = max(batch_bytes, 2 * pef_bytes)
    if not n_components:
        fit_bytes = 0
    elif fit_bytes_per_value is not None:
        fit_bytes = round(fit_bytes_per_value * n * k)
    else:
        fit_bytes = fit_memory_from_shapes(n * k, n * c, M, n_components)
    return PefEstimate(pef_bytes=pef_bytes, disk_bytes=2 * pef_bytes, pef_memory_bytes=pef_memory_bytes,
                       fit_memory_bytes=fit_bytes, pef_seconds=None if seconds_each is None else seconds_each * n,
                       values_per_example=k)


def fit_memory_from_shapes(n_values: int, n_rows: int, n_parameters: int, n_components: int) -> int:
    """An upper bound of a fit's peak memory (bytes): X once by columns (FIT_BYTES_PER_VALUE per stored value), one
    block's temporaries, two arrays over all parameters (counts, column map), and four factor-sized arrays over
    the rows of X [n_rows, r] and the kept parameters [m, r], with every parameter kept (m = min(M, values))."""
    m = min(n_parameters, n_values)
    return (FIT_BYTES_PER_VALUE * n_values + BLOCK_TEMPORARY_BYTES * BLOCK_VALUES + 2 * INDEX * n_parameters
            + 4 * n_components * (m + n_rows) * FLOAT)


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
# in the timing key: numbers timed another way are not reused
CALIBRATION = "per example + per padded token, medians after a warm-up"
CALIBRATION_CHUNK = 128  # examples the calibration batches are drawn from: the first chunk, as pefs_run makes it
TIMED_BATCHES = 3  # batches timed after the warm-up batch
# A whole PEF run's peak memory over the peak its calibration batches grew the process by, measured at 1.48 (text
# demo, 1,000 examples, last layer), 1.65 (image demo, 500) and 1.63 (12,808 texts over all 22.7M parameters). In
# the text run each chunk's 8 batches peak ~240 MiB above the chunk's start (its 4 calibration batches: 212-233) and
# the process keeps ~70 MiB more over the first 4 chunks, then no more (the store's connection and files ~12 MiB,
# computing new texts ~15 MiB, the rest not pinned down); the heap keeps freed gradients for reuse
# (analysis/allocator.py).
RUN_MEMORY_GROWTH = 1.55
CALIBRATED = f"calibrated on {TIMED_BATCHES + 1} batches"  # where a stored measure comes from, as the page says it
LAST_RUN = "measured on the last run"
RECORD = "measured.json"  # in a run's folder: what its computation took, next to what was estimated before it


def run_peak_memory(calibration_peak_bytes: int | None) -> int | None:
    """A whole PEF run's peak memory growth from its calibration batches' peak growth (None: unknown)."""
    return None if calibration_peak_bytes is None else round(calibration_peak_bytes * RUN_MEMORY_GROWTH)


@dataclass(frozen=True)
class PefMeasure:
    """The measured cost of PEFs for one timing_key in batches of batch_size, kept in timings.json."""

    seconds_per_example: float  # the part of an example's time that does not grow with its batch's padded length
    memory_bytes: int | None  # peak memory above the start (a calibration's batches, or a whole run); None: unknown
    batch_size: int
    source: str  # CALIBRATED or LAST_RUN
    seconds_per_token: float = 0.0  # per example and token of its batch's padded length (0 where inputs are one size)

    @property
    def run_memory_bytes(self) -> int | None:
        """The peak memory growth a whole run is expected to take: a run's own, or a calibration's scaled to a run."""
        return self.memory_bytes if self.source == LAST_RUN else run_peak_memory(self.memory_bytes)

    def seconds_each(self, tokens_per_example: float) -> float:
        """Mean seconds per example of a dataset whose batches pad to tokens_per_example on average."""
        return self.seconds_per_example + self.seconds_per_token * tokens_per_example

    def scaled_to(self, seconds: float, n_examples: int, tokens_per_example: float, memory_bytes: int | None
                  ) -> "PefMeasure":
        """This measure's two rates scaled so that a run of n_examples takes `seconds` (a whole run's numbers)."""
        factor = seconds / max(self.seconds_each(tokens_per_example) * n_examples, 1e-12)
        return PefMeasure(self.seconds_per_example * factor, memory_bytes, self.batch_size, LAST_RUN,
                          self.seconds_per_token * factor)


@dataclass(frozen=True)
class FitMeasure:
    """The measured cost of an NPEFF fit per stored PEF value, for one variant and device, kept in timings.json."""

    seconds_per_value: float  # per (stored value × component × iteration)
    bytes_per_value: float | None  # peak memory above the start per stored value; None: unknown
    source: str  # FIT_CALIBRATED or LAST_RUN


@dataclass(frozen=True)
class RunRecord:
    """What a PEF run or a fit took (wall seconds, peak memory above its start) and what was estimated before it."""

    seconds: float
    peak_memory_bytes: int | None
    estimated_seconds: float | None  # None: nothing was measured before the run
    estimated_memory_bytes: int | None
    estimate_source: str  # how the estimate was made (a measure's source, or "from the shapes")


def calibrated_costs(batch_seconds: Sequence[float], batch_sizes: Sequence[int], batch_lengths: Sequence[int]
                     ) -> tuple[float, float]:
    """(seconds per example, seconds per example and padded token) of the batches after the first, a robust line
    through their seconds per example against their padded length: the slope is the median of the pairwise
    slopes (0 when the lengths are one, or where it comes out negative), the intercept the median of what is left.

    The first batch pays for allocation and the first call (timed alone it overestimated a run ~4x); medians
    ignore a batch slowed by another process. The padded length matters: per example alone, a recorded text run
    was overestimated 1.5x, its first chunk's texts being longer than most chunks'.
    """
    if not len(batch_seconds) == len(batch_sizes) == len(batch_lengths) or len(batch_seconds) < 2:
        raise ValueError(f"calibration needs a warm-up batch and at least one timed batch with their sizes and "
                         f"lengths, got {len(batch_seconds)} times, {len(batch_sizes)} sizes and "
                         f"{len(batch_lengths)} lengths")
    y = np.asarray(batch_seconds[1:], dtype=float) / np.asarray(batch_sizes[1:])  # [timed] seconds per example
    x = np.asarray(batch_lengths[1:], dtype=float)  # [timed] padded length
    slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x)) if x[j] != x[i]]
    per_token = max(float(np.median(slopes)), 0.0) if slopes else 0.0
    return max(float(np.median(y - per_token * x)), 0.0), per_token


def padded_batches(sizes: np.ndarray, batch_size: int, chunk_size: int = CALIBRATION_CHUNK
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(examples [batches], padded length [batches]) of the batches a PEF run makes of inputs of these sizes [n]:
    chunks of chunk_size in dataset order, each ordered by size (length_order) and cut into batch_size."""
    examples, lengths = [], []
    for start in range(0, len(sizes), chunk_size):
        chunk = np.sort(sizes[start:start + chunk_size], kind="stable")
        for b in range(0, len(chunk), batch_size):
            examples.append(len(chunk[b:b + batch_size]))
            lengths.append(int(chunk[b:b + batch_size].max()))
    return np.array(examples, dtype=np.int64), np.array(lengths, dtype=np.int64)


# tokens_per_example by adapter (its tokenizer, length limit and prompt template), then (dataset, batch size):
# a dataset is tokenized once per process, not on every estimate the Compute page shows
_TOKENS: "weakref.WeakKeyDictionary[object, dict[tuple[str, int], float]]" = weakref.WeakKeyDictionary()


def tokens_per_example(model: ClassifierModel, dataset: Dataset, batch_size: int) -> float:
    """The mean padded length of the examples of a PEF run over the whole dataset (padded_batches)."""
    known, key = _TOKENS.setdefault(model.adapter, {}), (dataset.content_hash, batch_size)
    if key not in known:
        examples, lengths = padded_batches(model.adapter.input_sizes(dataset), batch_size)
        known[key] = float((examples * lengths).sum() / max(examples.sum(), 1))
    return known[key]


def calibration_batches(n_examples: int, batch_size: int, n_timed: int = TIMED_BATCHES) -> list[np.ndarray]:
    """Positions (in length order) of the batches to time: the first as warm-up, then up to n_timed spread
    evenly over the chunk, so short and long texts are both timed; a one-batch chunk is timed twice."""
    starts = range(0, n_examples, batch_size)
    batches = [np.arange(a, min(a + batch_size, n_examples)) for a in starts]
    if len(batches) == 1:
        return [batches[0], batches[0]]
    chosen = np.unique(np.linspace(0, len(batches) - 1, n_timed + 1).round().astype(int))
    return [batches[i] for i in chosen]


def calibrate_pefs(model: ClassifierModel, dataset: Dataset, *, kind: str, top_k_classes: int | None,
                   n_values_per_example: int | None = None, batch_size: int = 16,
                   device: str | None = None) -> PefMeasure:
    """Run compute_pefs batch by batch on the first chunk, batched by length as pefs_run does: a warm-up batch,
    then TIMED_BATCHES more; their costs per example and per padded token (calibrated_costs) and the peak
    memory they grew the process by, warm-up included: much of what it allocates stays resident for the later
    batches, as in a run (120-190 MiB of the text demo's), and the longest texts of the chunk are timed."""
    part = dataset_slice(dataset, 0, CALIBRATION_CHUNK)
    order, sizes = length_order(model, part), model.adapter.input_sizes(part)
    batches = calibration_batches(len(part), batch_size)
    # one batch per chosen position, made lazily so that each batch's time ends at its progress report
    made = (batch for b in batches for batch in make_batches(model, dataset_subset(part, order[b]),
                                                             batch_size=batch_size))
    stamps: list[float] = []

    def timed() -> None:
        stamps.append(time.perf_counter())
        compute_pefs(model, made, kind=kind, top_k_classes=top_k_classes, n_values_per_example=n_values_per_example,
                     device=device, progress=lambda _done, _total: stamps.append(time.perf_counter()))

    memory = measured(timed).peak_growth_bytes
    per_example, per_token = calibrated_costs(np.diff(stamps), [len(b) for b in batches],
                                              [int(sizes[order[b]].max()) for b in batches])
    return PefMeasure(seconds_per_example=per_example, memory_bytes=memory, batch_size=batch_size,
                      source=CALIBRATED, seconds_per_token=per_token)


def timing_key(model: ClassifierModel, dataset: Dataset, *, kind: str,
               top_k_classes: int | None, n_values_per_example: int | None, device: str | None = None) -> str:
    """What the time per example depends on: model, dataset, parameters in scope, kind, classes, values kept
    (keeping all of MiniLM's last layer is 20× slower than keeping 2048), device."""
    blob = json.dumps([CALIBRATION, model.content_hash, model.scope.describe(), dataset.content_hash, kind,
                       top_k_classes, n_values_per_example, device or "default"])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _timings(root: Path) -> dict[str, dict]:
    """timings.json's measures; an entry of another form (a bare number, from before memory was measured) is
    left out, so that it is measured again."""
    try:
        stored = json.loads((Path(root) / TIMINGS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {key: value for key, value in stored.items() if isinstance(value, dict)} if isinstance(stored, dict) else {}


def stored_pef_measure(root: Path, key: str, batch_size: int) -> PefMeasure | None:
    """The PEF measure kept in this workspace for `key` in batches of batch_size, or None."""
    entry = _timings(root).get(key)
    if entry is None or entry.get("batch_size") != batch_size:
        return None
    return PefMeasure(**entry)


def measure_pefs(root: Path, model: ClassifierModel, dataset: Dataset, *, kind: str, top_k_classes: int | None,
                 n_values_per_example: int | None = None, batch_size: int = 16,
                 device: str | None = None) -> PefMeasure:
    """The PEF measure stored in the workspace for this timing_key and batch size, else calibrated now (real
    PEFs of a few batches) and stored: measured once, then replaced by each complete run's own numbers."""
    key = timing_key(model, dataset, kind=kind, top_k_classes=top_k_classes,
                     n_values_per_example=n_values_per_example, device=device)
    stored = stored_pef_measure(root, key, batch_size)
    if stored is not None:
        return stored
    measure = calibrate_pefs(model, dataset, kind=kind, top_k_classes=top_k_classes,
                             n_values_per_example=n_values_per_example, batch_size=batch_size, device=device)
    _store_timing(root, key, asdict(measure))
    return measure


def measure_seconds_per_example(root: Path, model: ClassifierModel, dataset: Dataset, *,
                                kind: str, top_k_classes: int | None, n_values_per_example: int | None = None,
                                batch_size: int = 16, device: str | None = None) -> float:
    """The mean seconds per example of measure_pefs over this dataset's lengths (the command line's estimate)."""
    return measure_pefs(root, model, dataset, kind=kind, top_k_classes=top_k_classes,
                        n_values_per_example=n_values_per_example, batch_size=batch_size,
                        device=device).seconds_each(tokens_per_example(model, dataset, batch_size))


def _store_timing(root: Path, key: str, entry: dict) -> None:
    """Keep a measure in the workspace's timings.json (written atomically)."""
    path = Path(root) / TIMINGS
    tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
    tmp.write_text(json.dumps({**_timings(root), key: entry}, indent=1))
    os.replace(tmp, path)


FIT_CALIBRATION_ITERS = 5  # joint updates the fit calibration runs (after LRM's G-only warm-up, which it also times)
FIT_CALIBRATED = "calibrated on the stored PEFs"


def fit_key(kind: str, device: str | None = None) -> str:
    """Where timings.json keeps the fit's FitMeasure for a variant and device."""
    return f"fit:{get_variant(kind).name}:{device or 'default'}"


def stored_fit_measure(root: Path, kind: str, device: str | None = None) -> FitMeasure | None:
    """The fit measure kept in this workspace for the variant and device (the last calibration or fit), or None."""
    entry = _timings(root).get(fit_key(kind, device))
    return None if entry is None else FitMeasure(**entry)


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


def calibrate_fit(pefs, config: FitConfig, *, device: str | None = None
                  ) -> tuple[float, dict[str, float], int | None]:
    """(setup seconds: before the first update and after the last, seconds per iteration by phase, peak memory
    growth in bytes or None), from the real fit on the stored PEFs: the settings' warm-up, then
    FIT_CALIBRATION_ITERS joint updates (no early stop); building X, the memory's bulk, is all done."""
    stamps: list[tuple[int, float]] = []
    run = measured(lambda: variant_of(config).fit(
        pefs, replace(config, n_iters=FIT_CALIBRATION_ITERS, tol=None), device=device,
        progress=lambda done, _total, _loss: stamps.append((done, time.perf_counter()))))
    setup = run.seconds - (stamps[-1][1] - stamps[0][1])
    return setup, iteration_seconds(stamps, config.phase), run.peak_growth_bytes


def measure_fit(root: Path, pefs, config: FitConfig, *, device: str | None = None) -> tuple[float, int | None]:
    """(the whole fit's seconds, its peak memory in bytes or None) from calibrate_fit; the joint seconds per
    (stored value × component) and the bytes per stored value are kept in the workspace, for fit_from_size
    before the PEFs of other settings exist."""
    setup, per_iteration, memory = calibrate_fit(pefs, config, device=device)
    joint = per_iteration.get("joint", max(per_iteration.values()))
    _store_timing(root, fit_key(variant_of(config).name, device), asdict(FitMeasure(
        seconds_per_value=joint / (pefs.values.size * config.n_components),
        bytes_per_value=None if memory is None else memory / pefs.values.size, source=FIT_CALIBRATED)))
    return setup + fit_seconds(config, per_iteration), memory


def fit_seconds_from_size(root: Path, config: FitConfig, n_values: int, *, device: str | None = None) -> float | None:
    """The whole fit's iterations in seconds from its size: stored values × components × iterations × the
    seconds per value of the last fit calibration or fit in this workspace; None when none was measured."""
    measure = stored_fit_measure(root, variant_of(config).name, device)
    return None if measure is None else measure.seconds_per_value * n_values * config.n_components * config.total_iters


# -- what runs really took ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expected:
    """What is known before a run: its estimate, and the timings.json entry its own numbers replace."""

    seconds: float | None
    memory_bytes: int | None
    source: str  # how the estimate was made: a measure's source, or SHAPES
    key: str
    measure: Callable[[float, int | None], dict]  # (wall seconds, peak bytes) of the whole run -> the entry


SHAPES = "from the shapes"


@dataclass(frozen=True)
class SourcedEstimate:
    """An estimate made with this workspace's measures, and where its PEF and fit numbers come from."""

    estimate: PefEstimate
    pef_source: str  # a PefMeasure's source, or SHAPES (then the time is unknown)
    fit_source: str  # a FitMeasure's source, or SHAPES (then the fit's time is unknown)


def workspace_estimate(root: Path, model: ClassifierModel, dataset: Dataset, *, kind: str,
                       n_values_per_example: int | None, top_k_classes: int | None, n_components: int | None,
                       batch_size: int, device: str | None = None) -> SourcedEstimate:
    """estimate_pefs with the PEF measure of this timing_key and batch size and the variant's fit measure."""
    pefs = stored_pef_measure(root, timing_key(model, dataset, kind=kind, top_k_classes=top_k_classes,
                                               n_values_per_example=n_values_per_example, device=device), batch_size)
    fit = stored_fit_measure(root, kind, device)
    estimate = estimate_pefs(model, dataset, kind=kind, n_values_per_example=n_values_per_example,
                             top_k_classes=top_k_classes, n_components=n_components, batch_size=batch_size,
                             seconds_each=None if pefs is None else pefs.seconds_each(
                                 tokens_per_example(model, dataset, batch_size)),
                             pef_memory_bytes=None if pefs is None else pefs.run_memory_bytes,
                             fit_bytes_per_value=None if fit is None else fit.bytes_per_value)
    return SourcedEstimate(estimate, pef_source=SHAPES if pefs is None else pefs.source,
                           fit_source=SHAPES if fit is None else fit.source)


def pefs_expected(root: Path, model: ClassifierModel, dataset: Dataset, *, kind: str, top_k_classes: int | None,
                  n_values_per_example: int | None, batch_size: int, device: str | None = None) -> Expected:
    """The estimate of a PEF run from this workspace's measure (as the Compute page shows it), and how the run's
    own numbers become the measure: the measure's rates scaled to the run's time (per example where there was
    none), and its peak memory, at this batch size."""
    key = timing_key(model, dataset, kind=kind, top_k_classes=top_k_classes,
                     n_values_per_example=n_values_per_example, device=device)
    before = stored_pef_measure(root, key, batch_size) or PefMeasure(1.0, None, batch_size, LAST_RUN)
    sourced = workspace_estimate(root, model, dataset, kind=kind, n_values_per_example=n_values_per_example,
                                 top_k_classes=top_k_classes, n_components=None, batch_size=batch_size, device=device)
    return Expected(seconds=sourced.estimate.pef_seconds, memory_bytes=sourced.estimate.pef_memory_bytes,
                    source=sourced.pef_source, key=key,
                    measure=lambda seconds, memory: asdict(before.scaled_to(
                        seconds, len(dataset), tokens_per_example(model, dataset, batch_size), memory)))


def fit_expected(root: Path, config: FitConfig, n_values: int, *, n_rows: int, n_parameters: int,
                 device: str | None = None) -> Expected:
    """The estimate of a fit of n_values stored values from this workspace's fit measure (from the size), and how
    the fit's own numbers become the measure: seconds and bytes per stored value."""
    kind = variant_of(config).name
    before = stored_fit_measure(root, kind, device)
    per_value = None if before is None else before.bytes_per_value
    memory = (fit_memory_from_shapes(n_values, n_rows, n_parameters, config.n_components) if per_value is None
              else round(per_value * n_values))
    work = n_values * config.n_components * config.total_iters  # stored value × component × iteration
    return Expected(seconds=fit_seconds_from_size(root, config, n_values, device=device), memory_bytes=memory,
                    source=SHAPES if before is None else before.source, key=fit_key(kind, device),
                    measure=lambda seconds, peak: asdict(FitMeasure(
                        seconds / work, None if peak is None else peak / n_values, LAST_RUN)))


def recorded(ws: Workspace, compute: Callable[[RunWriter], T], expect: Callable[[], Expected],
             resumed: Callable[[str], bool]) -> Callable[[RunWriter], T]:
    """compute(writer) of a run, measured: its RunRecord goes next to the run (RECORD); a run computed whole in
    one process (resumed(run id) false) also replaces the expected's timings.json entry with its own numbers."""
    def run(writer: RunWriter) -> T:
        expected, partial = expect(), resumed(writer.run.id)
        done = measured(lambda: compute(writer))
        rank, world = rank_and_world()
        if rank == 0:
            (ws.run_dir(writer.run.id) / RECORD).write_text(json.dumps(asdict(RunRecord(
                seconds=done.seconds, peak_memory_bytes=done.peak_growth_bytes, estimated_seconds=expected.seconds,
                estimated_memory_bytes=expected.memory_bytes, estimate_source=expected.source)), indent=1))
        if not partial and world == 1:
            _store_timing(ws.root, expected.key, expected.measure(done.seconds, done.peak_growth_bytes))
        return done.result
    return run


def run_record(ws: Workspace, run_id: str) -> RunRecord | None:
    """What a run took and what was estimated before it (recorded), or None for a run computed before records."""
    try:
        return RunRecord(**json.loads((ws.run_dir(run_id) / RECORD).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def describe_record(what: str, record: RunRecord) -> str:
    """One line comparing what a run took with its estimate: time and peak memory, each with estimate / measured."""
    def versus(measured: float | None, estimated: float | None, show: Callable[[float], str]) -> str:
        if measured is None:
            return "not measured here"
        if estimated is None:
            return f"{show(measured)} (no estimate)"
        return f"{show(measured)} (estimated {show(estimated)}, ratio {estimated / max(measured, 1e-9):.2f})"

    return (f"{what}: took {versus(record.seconds, record.estimated_seconds, duration)}, peak memory "
            f"{versus(record.peak_memory_bytes, record.estimated_memory_bytes, gib)}; estimate "
            f"{record.estimate_source}")


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
