"""Computations stored in the workspace: PEFs, NPEFF fits, coefficients and small derived arrays.

Each goes through `Workspace.compute_once` (computed once per settings, leased, failures recorded, files
checked on reuse). A PEF run is streamed in chunks: each chunk's arrays are written (fsynced) before the
chunk and its example range are recorded, so a killed run resumes after the last recorded chunk; chunks
of another chunk size are discarded. Under torchrun the ranks share the chunks out (rank 0 leases the run).
The full arrays are assembled from the chunk files one chunk at a time, and the run is complete only when
they hold exactly one row per dataset example. A single-process NPEFF fit checkpoints its factors every
`checkpoint_every` updates; a failed or killed fit resumes from its last checkpoint and ends with the
factors and losses of an uninterrupted fit. Both record what they took next to their estimate, and feed it
to the next estimate (analysis.estimates.recorded).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from functools import partial
from typing import Callable

import numpy as np
import pandas as pd

from analysis.allocator import reused_allocations
from analysis.batch_gradients import NonFiniteFisherError
from analysis.datasets import Dataset, dataset_slice, dataset_subset, length_order, make_batches
from analysis.errors import describe_error
from analysis.estimates import Expected, fit_expected, pefs_expected, recorded
from analysis.fisher import compute_pefs
from analysis.models import ClassifierModel
from analysis.npeff import Decomposition, FitConfig, fit_coefficients
from analysis.npeff.common import DEFAULT_CHECKPOINT_EVERY, FitCheckpoint
from analysis.store import ArraysSummary, Run, RunWriter, Summary, Workspace, run_key
from analysis.variants import DEFAULT_VARIANT, Variant, get_variant, variant_of_run_kind
from kernels.distributed import gather_errors, rank_and_world

Progress = Callable[[int, int], None]
FitProgress = Callable[[int, int, float | None], None]
OnWait = Callable[[Run], None]
OnCompute = Callable[[Run, set[int]], None]  # (the leased run, its chunks already recorded)


@dataclass(frozen=True)
class PefsSummary(Summary):
    n_examples: int
    n_parameters: int
    kind: str  # the variant name


@dataclass(frozen=True)
class DecompositionSummary(Summary):
    pefs_run: str
    kind: str  # the variant name
    n_components: int
    n_parameters: int
    relative_error: float
    final_loss: float


@dataclass(frozen=True)
class CoefficientsSummary(Summary):
    decomposition_run: str
    pefs_run: str
    n_examples: int


# ------------------------------------------------------------------------------------------------------ PEFs

def pefs_settings(model: ClassifierModel, dataset: Dataset, *, kind: str,
                  n_values_per_example: int | None, top_k_classes: int | None) -> dict:
    """Everything the PEFs depend on: the run key (batching and chunking do not change the result)."""
    scope = hashlib.sha256("\n".join(model.param_names_in_scope()).encode()).hexdigest()
    return {"model": model.content_hash, "dataset": dataset.content_hash, "scope": scope,
            "scope_spec": model.scope.to_dict(), "adapter": model.adapter.settings(), "kind": get_variant(kind).name,
            "n_values_per_example": n_values_per_example, "top_k_classes": top_k_classes}


def array_fields(container: type) -> list[str]:
    """The per-example arrays of a PEF container (every field but n_parameters)."""
    return [f.name for f in fields(container) if f.name != "n_parameters"]


def _chunk_name(chunk: int, name: str) -> str:
    return f"chunk{chunk:06d}_{name}"


def _reusable_chunks(ws: Workspace, run: Run, plan: list[tuple[int, int]], names: list[str]) -> set[int]:
    """Recorded chunks whose example range is the plan's and whose files exist; the others are forgotten."""
    keep, drop = set(), []
    for chunk, (start, n_rows) in ws.chunk_ranges(run.id).items():
        fits = chunk < len(plan) and (start, n_rows) == (plan[chunk][0], plan[chunk][1] - plan[chunk][0])
        if fits and all(ws.array_path(run.id, _chunk_name(chunk, n)).exists() for n in names):
            keep.add(chunk)
        else:
            drop.append(chunk)
    if drop:
        _delete_chunk_files(ws, run, drop, names)
        ws.forget_chunks(run.id, drop)
    return keep


def _delete_chunk_files(ws: Workspace, run: Run, chunks: list[int], names: list[str]) -> None:
    for chunk in chunks:
        for name in names:
            ws.array_path(run.id, _chunk_name(chunk, name)).unlink(missing_ok=True)


def _chunk_pefs(model: ClassifierModel, dataset: Dataset, start: int, stop: int, *, kind: str,
                n_values_per_example: int | None, top_k_classes: int | None, batch_size: int, device,
                progress: Callable[[int], None] | None):
    """PEFs of examples [start, stop), texts batched by length; progress(examples done in the chunk); a NaN/Inf
    names its dataset row."""
    part = dataset_slice(dataset, start, stop)
    order = length_order(model, part)  # short texts batched together: less padding, same PEFs
    try:
        pefs = compute_pefs(model, make_batches(model, dataset_subset(part, order), batch_size=batch_size),
                            kind=kind, n_values_per_example=n_values_per_example, top_k_classes=top_k_classes,
                            device=device, progress=(lambda d, _t: progress(d)) if progress else None)
    except NonFiniteFisherError as e:
        row = start + int(order[e.example])
        raise FloatingPointError(f"{dataset.source}: the per-example Fisher of row {row} has non-finite values "
                                 "(logits or gradients); check that example's input and the model weights") from e
    return pefs.subset(np.argsort(order))


def pef_plan(n_examples: int, chunk_size: int) -> list[tuple[int, int]]:
    """The example ranges [start, stop) of a PEF run's chunks."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [(start, min(start + chunk_size, n_examples)) for start in range(0, n_examples, chunk_size)]


ChunkPefs = Callable[..., object]  # (start, stop, progress=...) -> the PEFs of examples [start, stop)


def _compute_share(ws: Workspace, run: Run, plan: list[tuple[int, int]], done: set[int], names: list[str],
                   chunk_pefs: ChunkPefs, progress: Progress | None) -> None:
    """This rank's share of the chunks not yet recorded (all of them in a single process; under torchrun rank r
    takes the r-th, (r+W)-th, ... of them), each saved (fsynced) and then recorded.

    progress(examples, n) counts the recorded chunks' examples plus this rank's share of the rest at this rank's
    pace: exact in a single process, an estimate under torchrun."""
    rank, world = rank_and_world()
    pending = [c for c in range(len(plan)) if c not in done]
    mine = pending[rank::world]
    n = plan[-1][1] if plan else 0
    recorded = sum(plan[c][1] - plan[c][0] for c in done)
    share = sum(plan[c][1] - plan[c][0] for c in mine)
    computed = 0  # examples of this rank's chunks done before the current one

    def report(in_chunk: int) -> None:
        progress(recorded + (n - recorded) * (computed + in_chunk) // share, n)

    with reused_allocations():  # open over all chunks: a chunk's first batch reuses the last chunk's memory too
        for chunk in mine:
            start, stop = plan[chunk]
            pefs = chunk_pefs(start, stop, progress=report if progress else None)
            try:
                ws.save_arrays(run.id, {_chunk_name(chunk, f): getattr(pefs, f) for f in names})
            except BaseException:  # e.g. a full disk: no partial chunk stays behind
                _delete_chunk_files(ws, run, [chunk], names)
                raise
            ws.record_chunk(run.id, chunk, stop - start, start=start)
            if world > 1:
                ws.close()  # the other ranks record theirs meanwhile
            computed += stop - start


def every_rank(work: Callable[[], None]) -> None:
    """work() on this rank, then a wait for every rank that also tells each rank whether another failed: this
    rank's error is re-raised, another's raised naming its rank, so that no rank goes on alone or waits for one
    that gave up. Just work() in a single process."""
    rank, world = rank_and_world()
    if world == 1:
        work()
        return
    error = None
    try:
        work()
    except Exception as e:
        error = e
    failures = gather_errors(None if error is None else describe_error(error))
    if error is not None:
        raise error
    if failures:
        failed, message = failures[0]
        raise RuntimeError(f"rank {failed} of {world} failed: {message}; the chunks recorded so far are kept: run the "
                           "command again to resume")


@dataclass(frozen=True)
class _ChunkFile:
    """One chunk's array, read only while it is written out, so that assembly holds one chunk at a time (memory
    maps of every chunk would keep each page read so far mapped until the whole array is written)."""

    ws: Workspace
    run_id: str
    name: str  # the chunk file's array name
    shape: tuple[int, ...]
    dtype: np.dtype

    @classmethod
    def open(cls, ws: Workspace, run_id: str, name: str) -> "_ChunkFile":
        header = ws.load_array(run_id, name)  # a memory map: reads the header, touches no rows
        return cls(ws, run_id, name, header.shape, header.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = self.ws.load_array(self.run_id, self.name, mmap=False)  # freed once this part is written
        return rows if dtype is None else rows.astype(dtype)


def _assemble(ws: Workspace, writer: RunWriter, n_chunks: int, names: list[str]) -> int:
    """Write each full array from the chunk files, one chunk in memory at a time; returns the row count."""
    n_rows = 0
    for name in names:
        parts = [_ChunkFile.open(ws, writer.run.id, _chunk_name(c, name)) for c in range(n_chunks)]
        writer.save_array_parts(name, parts)
        n_rows = sum(len(p) for p in parts)
    return n_rows


def pefs_run(ws: Workspace, model: ClassifierModel, dataset: Dataset, *,
             kind: str = DEFAULT_VARIANT, n_values_per_example: int | None = None,
             top_k_classes: int | None = None, chunk_size: int = 128, batch_size: int = 16,
             device: str | None = None, progress: Progress | None = None, on_wait: OnWait | None = None,
             on_compute: OnCompute | None = None) -> Run:
    """PEFs of every example, from the workspace when already computed, else streamed chunk by chunk.

    Under torchrun this runs on rank 0, which holds the run's lease: on_compute(run, done) is called when it is
    about to compute (not reuse a stored run) with the chunks already recorded, for the CLI to hand to the other
    ranks, which compute their share in `pefs_share`; rank 0 assembles the run once every rank has recorded its
    chunks, and a rank that fails leaves the run failed."""
    variant = get_variant(kind)
    settings = pefs_settings(model, dataset, kind=kind, n_values_per_example=n_values_per_example,
                             top_k_classes=top_k_classes)
    n = len(dataset)
    plan = pef_plan(n, chunk_size)
    names = array_fields(variant.pefs)
    chunk_pefs = partial(_chunk_pefs, model, dataset, kind=kind, n_values_per_example=n_values_per_example,
                         top_k_classes=top_k_classes, batch_size=batch_size, device=device)

    def compute(writer: RunWriter) -> PefsSummary:
        done = _reusable_chunks(ws, writer.run, plan, names)
        if on_compute is not None:
            on_compute(writer.run, done)
        every_rank(lambda: _compute_share(ws, writer.run, plan, done, names, chunk_pefs, progress))
        n_rows = _assemble(ws, writer, len(plan), names)
        if n_rows != n:
            raise RuntimeError(f"run {writer.run.id}: assembled {n_rows} rows for {n} examples of {dataset.source}; "
                               "the run stays incomplete (recompute it)")
        return PefsSummary(n_examples=n, n_parameters=model.summary().n_parameters_in_scope, kind=variant.name)

    expect = partial(pefs_expected, ws.root, model, dataset, kind=kind, top_k_classes=top_k_classes,
                     n_values_per_example=n_values_per_example, batch_size=batch_size, device=device)
    run = ws.compute_once("pefs", settings, recorded(ws, compute, expect, resumed=lambda i: bool(ws.chunk_ranges(i))),
                          model_id=model.content_hash, dataset_id=dataset.content_hash, on_wait=on_wait)
    _delete_chunk_files(ws, run, list(range(len(plan))), names)
    return run


def pefs_share(ws: Workspace, run: Run, done: set[int], model: ClassifierModel, dataset: Dataset, *,
               kind: str = DEFAULT_VARIANT, n_values_per_example: int | None = None, top_k_classes: int | None = None,
               chunk_size: int = 128, batch_size: int = 16, device: str | None = None) -> None:
    """A torchrun rank's share of the PEF run that rank 0's pefs_run leased and handed over (run, done): its chunks
    computed and recorded. Call it inside `every_rank` (with the loading before it), as rank 0 computes its share,
    so that a failure here reaches rank 0, which fails the run."""
    settings = pefs_settings(model, dataset, kind=kind, n_values_per_example=n_values_per_example,
                             top_k_classes=top_k_classes)
    if run_key("pefs", settings) != run.key:
        raise ValueError(f"run {run.id}: rank {rank_and_world()[0]} loaded another model, dataset or setting than "
                         "rank 0; give every rank the same files and arguments")
    chunk_pefs = partial(_chunk_pefs, model, dataset, kind=kind, n_values_per_example=n_values_per_example,
                         top_k_classes=top_k_classes, batch_size=batch_size, device=device)
    _compute_share(ws, run, pef_plan(len(dataset), chunk_size), done, array_fields(get_variant(kind).pefs),
                   chunk_pefs, None)


def load_pefs(ws: Workspace, run: Run):
    """The stored PEFs of a complete run (memory-mapped): LrmPefs or DiagPefs."""
    if run.status != "complete":
        raise ValueError(f"run {run.id} is {run.status}, not complete; compute it first")
    summary = PefsSummary.of(run)
    container = get_variant(summary.kind).pefs
    return container(**{name: ws.load_array(run.id, name) for name in array_fields(container)},
                     n_parameters=int(summary.n_parameters))


# ------------------------------------------------------------------------------------------------ NPEFF fits

def fit_config(variant: Variant, settings: dict):
    """The variant's FitConfig from keyword settings; an unknown setting names the ones the variant has."""
    names = [f.name for f in fields(variant.config)]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ValueError(f"{unknown[0]} is not a setting of {variant.title}; its settings are {names}")
    return variant.config(**settings)


CHECKPOINT_STATE = "checkpoint_state"  # [iteration, world size] int64, written last: names the checkpoint's files


def _checkpoint_names(iteration: int, factor: str) -> dict[str, str]:
    """Array names of the checkpoint after `iteration` updates: W, the components (G or H) and the losses."""
    return {part: f"checkpoint{iteration:06d}_{part}" for part in ("W", factor, "losses")}


def _checkpoint_state(ws: Workspace, run: Run) -> tuple[int, int] | None:
    """(iteration, world size) of the run's checkpoint, or None when it has none."""
    if not ws.array_path(run.id, CHECKPOINT_STATE).exists():
        return None
    iteration, world_size = (int(v) for v in ws.load_array(run.id, CHECKPOINT_STATE, mmap=False))
    return iteration, world_size


def _save_checkpoint(ws: Workspace, run: Run, factor: str, state: FitCheckpoint) -> None:
    """The state's arrays, then the state file naming them (each written atomically), then the previous ones go:
    a kill at any point leaves one complete checkpoint. Saved directly, not through the RunWriter, so that
    they are no output of the run."""
    previous = _checkpoint_state(ws, run)
    names = _checkpoint_names(state.iteration, factor)
    ws.save_arrays(run.id, {names["W"]: state.W, names[factor]: state.components, names["losses"]: state.losses})
    ws.save_array(run.id, CHECKPOINT_STATE, np.array([state.iteration, rank_and_world()[1]], dtype=np.int64))
    if previous is not None and previous[0] != state.iteration:
        for name in _checkpoint_names(previous[0], factor).values():
            ws.array_path(run.id, name).unlink(missing_ok=True)


def _load_checkpoint(ws: Workspace, run: Run, config: FitConfig, factor: str) -> FitCheckpoint | None:
    """The run's last checkpoint, or None; one written by another number of processes is refused."""
    found = _checkpoint_state(ws, run)
    if found is None:
        return None
    iteration, world_size = found
    if world_size != rank_and_world()[1]:
        raise ValueError(f"run {run.id} has a checkpoint after {iteration} updates written by {world_size} "
                         f"process(es); it resumes only with {world_size} (fit without torchrun), or delete its "
                         f"checkpoint*.npy files in {ws.run_dir(run.id)} to start over")
    names = _checkpoint_names(iteration, factor)
    return FitCheckpoint(W=ws.load_array(run.id, names["W"], mmap=False),
                         components=ws.load_array(run.id, names[factor], mmap=False), iteration=iteration,
                         phase=config.phase(iteration), losses=ws.load_array(run.id, names["losses"], mmap=False))


def _delete_checkpoint(ws: Workspace, run: Run) -> None:
    """Every checkpoint file of the run (and temp files a kill left behind)."""
    for path in ws.run_dir(run.id).glob("checkpoint*"):
        path.unlink(missing_ok=True)


def fit_run(ws: Workspace, pefs: Run, *, device: str | None = None, progress: FitProgress | None = None,
            on_wait: OnWait | None = None, on_compute: Callable[[], None] | None = None,
            checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, **settings) -> Run:
    """An NPEFF decomposition of a complete PEF run, computed once; the PEFs' variant picks LRM- or D-NPEFF.

    settings: the variant's FitConfig fields (n_components, n_iters, seed, ...), checked by the fit.
    on_compute() is called when this call (not a stored run) is about to fit, e.g. to start torchrun's
    other ranks, which fit their column slices alongside. A single-process fit saves a checkpoint every
    `checkpoint_every` updates (not a setting: it does not change the result) into the run's folder and
    resumes from it when the run failed or was killed; the files are deleted once the run is complete.
    Under torchrun no checkpoint is written, and one left by a single-process fit is refused.
    """
    variant = get_variant(PefsSummary.of(pefs).kind)
    config = fit_config(variant, settings)
    factor = variant.decomposition.factor

    def compute(writer: RunWriter) -> DecompositionSummary:
        resume = _load_checkpoint(ws, writer.run, config, factor)
        if on_compute is not None:
            on_compute()
        single = rank_and_world()[1] == 1
        dec = variant.fit(load_pefs(ws, pefs), config, device=device, progress=progress,
                          checkpoint=(lambda state: _save_checkpoint(ws, writer.run, factor, state)) if single
                          else None, checkpoint_every=checkpoint_every, resume=resume)
        writer.save_arrays({"W": dec.W, "kept": dec.kept, "losses": dec.losses, dec.factor: dec.components})
        return DecompositionSummary(pefs_run=pefs.id, kind=variant.name, n_components=config.n_components,
                                    n_parameters=dec.n_parameters, relative_error=dec.relative_error,
                                    final_loss=float(dec.losses[-1]))

    def expect() -> Expected:
        stored = load_pefs(ws, pefs)
        return fit_expected(ws.root, config, stored.values.size, n_rows=stored.logits.size,  # <= n·C
                            n_parameters=stored.n_parameters, device=device)

    def resumed(run_id: str) -> bool:
        return _checkpoint_state(ws, ws.get_run(run_id)) is not None

    run = ws.compute_once(variant.run_kind, {"pefs": pefs.key, **config.params()},
                          recorded(ws, compute, expect, resumed), model_id=pefs.model_id,
                          dataset_id=pefs.dataset_id, on_wait=on_wait)
    _delete_checkpoint(ws, run)
    return run


def load_decomposition(ws: Workspace, run: Run) -> Decomposition:
    """The stored factors of a complete NPEFF run (LrmDecomposition or DiagDecomposition)."""
    if run.status != "complete":
        raise ValueError(f"run {run.id} is {run.status}, not complete; fit it first")
    cls = variant_of_run_kind(run.kind).decomposition
    summary = DecompositionSummary.of(run)
    return cls(**{name: ws.load_array(run.id, name) for name in ("W", "kept", "losses", cls.factor)},
               n_parameters=int(summary.n_parameters), relative_error=float(summary.relative_error))


def decomposition_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Stored NPEFF runs (Workspace.decomposition_runs rows) as a table to read: one row per run."""
    rows = []
    for run in runs.itertuples():
        # a run still computing (or failed) has no summary yet: SQL NULL, which pandas reads as NaN
        params = json.loads(run.params)
        summary = json.loads(run.summary) if isinstance(run.summary, str) else {}
        rows.append({"run": run.id, "variant": variant_of_run_kind(run.kind).title, "status": run.status,
                     "components": params.get("n_components"), "iterations": params.get("n_iters"),
                     "seed": params.get("seed"), "relative error": summary.get("relative_error"),
                     "error": run.error if isinstance(run.error, str) else "", "updated": run.updated})
    return pd.DataFrame(rows)


def coefficients_run(ws: Workspace, decomposition: Run, pefs: Run, *, n_iters: int, seed: int = 0,
                     device: str | None = None, progress: FitProgress | None = None,
                     on_wait: OnWait | None = None) -> Run:
    """Coefficients W of the examples of another PEF run against a fixed decomposition, computed once."""
    settings = {"decomposition": decomposition.key, "pefs": pefs.key, "n_iters": n_iters, "seed": seed}

    def compute(writer: RunWriter) -> CoefficientsSummary:
        W = fit_coefficients(load_decomposition(ws, decomposition), load_pefs(ws, pefs), n_iters=n_iters,
                             seed=seed, device=device, progress=progress)
        writer.save_array("W", W)
        return CoefficientsSummary(decomposition_run=decomposition.id, pefs_run=pefs.id, n_examples=int(W.shape[0]))

    return ws.compute_once("coefficients", settings, compute, model_id=pefs.model_id, dataset_id=pefs.dataset_id,
                           on_wait=on_wait)


def cached_arrays(ws: Workspace, kind: str, params: dict, compute: Callable[[], dict[str, np.ndarray]]) -> dict:
    """Arrays of a small computation keyed by (kind, params): loaded when stored, else computed and stored."""
    def store(writer: RunWriter) -> ArraysSummary:
        arrays = compute()
        writer.save_arrays(arrays)
        return ArraysSummary(arrays=sorted(arrays))

    run = ws.compute_once(kind, params, store)
    return {name: ws.load_array(run.id, name, mmap=False) for name in ArraysSummary.of(run).arrays}


