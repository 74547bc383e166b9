"""Computations stored in the workspace: computed once per settings, streamed in chunks, resumable.

A PEF run writes each chunk's arrays (fsynced) before recording the chunk; killing the process
loses at most the chunk in flight, and the next call resumes after the last recorded chunk. The
run is marked complete only after the assembled arrays are on disk.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import fields
from typing import Callable, Iterator, Literal

import numpy as np

from analysis.datasets import ImageDataset, TextDataset, dataset_slice, dataset_subset, length_order, make_batches
from analysis.fisher import compute_pefs
from analysis.models import ClassifierModel
from analysis.npeff import (DEFAULT_LR, DEFAULT_N_ITERS_G_ONLY, DiagDecomposition, LrmDecomposition,
                            fit_coefficients, fit_d_npeff, fit_lrm_npeff)
from analysis.pefs import DiagPefs, LrmPefs, concat_pefs
from analysis.store import Run, Workspace

Progress = Callable[[int, int], None]
FitProgress = Callable[[int, int, float | None], None]
PEF_CLASSES = {"lrm": LrmPefs, "diag": DiagPefs}
LRM_FIT_DEFAULTS = {"n_iters_g_only": DEFAULT_N_ITERS_G_ONLY, "lr": DEFAULT_LR, "step": "line_search", "ortho_reg": 0.0}


@contextmanager
def failures_recorded(ws: Workspace, run: Run) -> Iterator[None]:
    """Mark the run failed (with the error) if the block raises, then re-raise."""
    try:
        yield
    except BaseException as e:
        ws.fail_run(run.id, f"{type(e).__name__}: {e}")
        raise


def pefs_settings(model: ClassifierModel, dataset: TextDataset | ImageDataset, *, kind: str,
                  n_values_per_example: int | None, top_k_classes: int | None) -> dict:
    """Everything the PEFs depend on: the run key (batching and chunking do not change the result)."""
    scope = hashlib.sha256("\n".join(model.param_names_in_scope()).encode()).hexdigest()
    return {"model": model.content_hash, "dataset": dataset.content_hash, "scope": scope,
            "scope_text": model.scope.describe(), "kind": kind, "n_values_per_example": n_values_per_example,
            "top_k_classes": top_k_classes, "max_length": model.max_length}


def _array_fields(kind: str) -> list[str]:
    return [f.name for f in fields(PEF_CLASSES[kind]) if f.name != "n_parameters"]


def _save_pefs(ws: Workspace, run_id: str, pefs: LrmPefs | DiagPefs, prefix: str = "") -> None:
    ws.save_arrays(run_id, {prefix + name: getattr(pefs, name) for name in _array_fields(_kind_of(pefs))})


def _kind_of(pefs: LrmPefs | DiagPefs) -> str:
    return "lrm" if isinstance(pefs, LrmPefs) else "diag"


def _load_pefs_arrays(ws: Workspace, run_id: str, kind: str, n_parameters: int, prefix: str = "",
                      mmap: bool = True) -> LrmPefs | DiagPefs:
    arrays = {name: ws.load_array(run_id, prefix + name, mmap=mmap) for name in _array_fields(kind)}
    return PEF_CLASSES[kind](**arrays, n_parameters=n_parameters)


def pefs_run(ws: Workspace, model: ClassifierModel, dataset: TextDataset | ImageDataset, *,
             kind: Literal["lrm", "diag"] = "lrm", n_values_per_example: int | None = None,
             top_k_classes: int | None = None, chunk_size: int = 128, batch_size: int = 16,
             device: str | None = None, progress: Progress | None = None) -> Run:
    """PEFs of every example, from the workspace when already computed, else streamed chunk by chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    settings = pefs_settings(model, dataset, kind=kind, n_values_per_example=n_values_per_example,
                             top_k_classes=top_k_classes)
    run = ws.start_run("pefs", settings, model_id=model.content_hash, dataset_id=dataset.content_hash)
    if run.status == "complete":
        return run
    n = len(dataset)
    starts = list(range(0, n, chunk_size))
    done = ws.finished_chunks(run.id)
    n_parameters = model.summary().n_parameters_in_scope
    with failures_recorded(ws, run):
        for chunk, start in enumerate(starts):
            if chunk in done:
                continue
            part = dataset_slice(dataset, start, start + chunk_size)
            order = length_order(model, part)  # short texts batched together: less padding, same PEFs
            pefs = compute_pefs(model, make_batches(model, dataset_subset(part, order), batch_size=batch_size),
                                kind=kind, n_values_per_example=n_values_per_example, top_k_classes=top_k_classes,
                                device=device,
                                progress=(lambda d, _t, s=start: progress(s + d, n)) if progress else None
                                ).subset(np.argsort(order))
            _save_pefs(ws, run.id, pefs, prefix=f"chunk{chunk:06d}_")
            ws.record_chunk(run.id, chunk, len(part))
        parts = [_load_pefs_arrays(ws, run.id, kind, n_parameters, prefix=f"chunk{c:06d}_", mmap=False)
                 for c in range(len(starts))]
        full = concat_pefs(parts)
        _save_pefs(ws, run.id, full)
        ws.complete_run(run.id, {"n_examples": full.n_examples, "n_parameters": full.n_parameters,
                                 "kind": kind}, expected_arrays=_array_fields(kind))
    for c in range(len(starts)):
        for name in _array_fields(kind):
            ws.array_path(run.id, f"chunk{c:06d}_{name}").unlink(missing_ok=True)
    return ws.get_run(run.id)


def load_pefs(ws: Workspace, run: Run) -> LrmPefs | DiagPefs:
    """The stored PEFs of a complete run (memory-mapped)."""
    if run.status != "complete":
        raise ValueError(f"run {run.id} is {run.status}, not complete; compute it first")
    return _load_pefs_arrays(ws, run.id, run.params["kind"], int(run.summary["n_parameters"]))


def fit_run(ws: Workspace, pefs: Run, *, n_components: int, n_iters: int, seed: int = 0,
            device: str | None = None, progress: FitProgress | None = None, **fit_options) -> Run:
    """An NPEFF decomposition of a complete PEF run (LRM or D by the PEFs' kind), computed once."""
    kind = pefs.params["kind"]
    if kind == "lrm":  # defaults spelled out, so a default and an explicit value share one run
        fit_options = {**LRM_FIT_DEFAULTS, **fit_options}
    settings = {"pefs": pefs.key, "n_components": n_components, "n_iters": n_iters, "seed": seed, **fit_options}
    run = ws.start_run(f"npeff-{kind}", settings, model_id=pefs.model_id, dataset_id=pefs.dataset_id)
    if run.status == "complete":
        return run
    with failures_recorded(ws, run):
        fit = fit_lrm_npeff if kind == "lrm" else fit_d_npeff
        dec = fit(load_pefs(ws, pefs), n_components, n_iters=n_iters, seed=seed, device=device,
                  progress=progress, **fit_options)
        factors = {"W": dec.W, "kept": dec.kept, "losses": dec.losses,
                   **({"G": dec.G} if kind == "lrm" else {"H": dec.H})}
        ws.save_arrays(run.id, factors)
        ws.complete_run(run.id, {"pefs_run": pefs.id, "kind": kind, "n_components": n_components,
                                 "n_parameters": dec.n_parameters, "relative_error": dec.relative_error,
                                 "final_loss": float(dec.losses[-1])}, expected_arrays=list(factors))
    return ws.get_run(run.id)


def load_decomposition(ws: Workspace, run: Run) -> LrmDecomposition | DiagDecomposition:
    """The stored factors of a complete NPEFF run."""
    if run.status != "complete":
        raise ValueError(f"run {run.id} is {run.status}, not complete; fit it first")
    common = {"W": ws.load_array(run.id, "W"), "kept": ws.load_array(run.id, "kept"),
              "losses": ws.load_array(run.id, "losses"), "n_parameters": int(run.summary["n_parameters"]),
              "relative_error": float(run.summary["relative_error"])}
    if run.summary["kind"] == "lrm":
        return LrmDecomposition(G=ws.load_array(run.id, "G"), **common)
    return DiagDecomposition(H=ws.load_array(run.id, "H"), **common)


def coefficients_run(ws: Workspace, decomposition: Run, pefs: Run, *, n_iters: int, seed: int = 0,
                     device: str | None = None, progress: FitProgress | None = None) -> Run:
    """Coefficients W of the examples of another PEF run against a fixed decomposition, computed once."""
    settings = {"decomposition": decomposition.key, "pefs": pefs.key, "n_iters": n_iters, "seed": seed}
    run = ws.start_run("coefficients", settings, model_id=pefs.model_id, dataset_id=pefs.dataset_id)
    if run.status == "complete":
        return run
    with failures_recorded(ws, run):
        W = fit_coefficients(load_decomposition(ws, decomposition), load_pefs(ws, pefs), n_iters=n_iters,
                             seed=seed, device=device, progress=progress)
        ws.save_array(run.id, "W", W)
        ws.complete_run(run.id, {"decomposition_run": decomposition.id, "pefs_run": pefs.id,
                                 "n_examples": int(W.shape[0])}, expected_arrays=["W"])
    return ws.get_run(run.id)


def cached_arrays(ws: Workspace, kind: str, params: dict, compute: Callable[[], dict[str, np.ndarray]]) -> dict:
    """Arrays of a small computation keyed by (kind, params): loaded when stored, else computed and stored."""
    run = ws.start_run(kind, params)
    if run.status != "complete":
        with failures_recorded(ws, run):
            arrays = compute()
            ws.save_arrays(run.id, arrays)
            ws.complete_run(run.id, {"arrays": sorted(arrays)}, expected_arrays=list(arrays))
        return arrays
    return {name: ws.load_array(run.id, name, mmap=False) for name in ws.get_run(run.id).summary["arrays"]}
