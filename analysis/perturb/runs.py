"""Perturbation runs stored in the workspace: a magnitude sweep of one component, or every component at
one magnitude, computed once per (decomposition run, settings) and reloaded instantly afterwards.

They go through `Workspace.compute_once` like every stored run; their tables are Parquet files of the run.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.datasets import Dataset
from analysis.models import ClassifierModel
from analysis.perturb.api import Progress, perturb_all, sweep_component
from analysis.perturb.diag import DEFAULT_LAM, FISHER_FLOOR
from analysis.perturb.evaluation import DEFAULT_BASELINE_N, DEFAULT_TOP_N, PerturbationResult
from analysis.perturb.targeting import KlTargeter
from analysis.runs import DecompositionSummary, load_decomposition
from analysis.store import Run, RunWriter, Summary, Workspace
from analysis.variants import get_variant

SWEEP_TABLE, SWEEP_EXAMPLES, ALL_TABLE = "sweep", "examples", "components"
OPTIONAL_FLOATS = ("delta", "lam")
COLUMN_LABELS = {  # the sweep and perturb-all tables' columns as the pages show them
    "component": "Component", "magnitude": "Magnitude", "sign": "Sign", "kl_top": "KL, top examples",
    "kl_baseline": "KL, baseline", "kl_ratio": "KL ratio (top / baseline)", "kl_ratio_pos": "KL ratio, sign +",
    "kl_ratio_neg": "KL ratio, sign −", "acc_top_before": "Top accuracy before",
    "acc_top_after": "Top accuracy after", "acc_baseline_before": "Baseline accuracy before",
    "acc_baseline_after": "Baseline accuracy after", "n_flipped_top": "Flipped, top",
    "n_flipped_baseline": "Flipped, baseline", "change_norm": "‖θ' − θ₀‖₂", "delta": "Merge step δ",
    "lam": "Merge weight λ", "targeting_converged": "KL target reached"}


def _check_pair(model: ClassifierModel, dataset: Dataset, decomposition: Run) -> None:
    """The model and dataset must be the ones the decomposition's PEFs were computed from."""
    if decomposition.status != "complete":
        raise ValueError(f"run {decomposition.id} is {decomposition.status}, not complete; fit it first")
    if model.content_hash != decomposition.model_id:
        raise ValueError(f"model '{model.name}' is not the model of decomposition run {decomposition.id} "
                         f"(hash {model.content_hash[:12]} vs {str(decomposition.model_id)[:12]}); load that model")
    if dataset.content_hash != decomposition.dataset_id:
        raise ValueError(f"dataset '{dataset.name}' is not the dataset of decomposition run {decomposition.id}; "
                         "perturbations need the examples the decomposition was fit on")


@dataclass(frozen=True)
class SweepSummary(Summary):
    decomposition_run: str
    component: int
    n_magnitudes: int
    max_kl_ratio: float | None


@dataclass(frozen=True)
class PerturbAllSummary(Summary):
    decomposition_run: str
    n_components: int
    median_kl_ratio: float | None


def _read_table(ws: Workspace, run: Run, name: str) -> pd.DataFrame:
    if run.status != "complete":
        raise ValueError(f"run {run.id} is {run.status}, not complete; compute it first")
    return ws.load_table(run.id, name)


def _common_settings(decomposition: Run, *, max_sim: float | None, top_n: int, baseline_n: int, seed: int,
                     lam: float, fisher_floor: float) -> dict:
    settings = {"decomposition": decomposition.key, "max_sim": max_sim, "top_n": top_n, "baseline_n": baseline_n,
                "seed": seed}
    if get_variant(DecompositionSummary.of(decomposition).kind).perturbation.merges:  # λ and the floor matter
        settings.update({"lam": lam, "fisher_floor": fisher_floor})
    return settings


def sweep_run(ws: Workspace, model: ClassifierModel, dataset: Dataset, decomposition: Run,
              k: int, magnitudes: Sequence[float], sign: int = 1, *, max_sim: float | None = None,
              top_n: int = DEFAULT_TOP_N, baseline_n: int = DEFAULT_BASELINE_N, seed: int = 0,
              lam: float = DEFAULT_LAM, fisher_floor: float = FISHER_FLOOR, batch_size: int = 32,
              device: str | None = None, progress: Progress | None = None) -> Run:
    """sweep_component of component k over `magnitudes`, from the workspace when already computed."""
    _check_pair(model, dataset, decomposition)
    settings = {**_common_settings(decomposition, max_sim=max_sim, top_n=top_n, baseline_n=baseline_n, seed=seed,
                                   lam=lam, fisher_floor=fisher_floor),
                "component": int(k), "magnitudes": [float(m) for m in magnitudes], "sign": int(sign)}

    def compute(writer: RunWriter) -> SweepSummary:
        results = sweep_component(model, dataset, load_decomposition(ws, decomposition), k, magnitudes, sign=sign,
                                  max_sim=max_sim, top_n=top_n, baseline_n=baseline_n, seed=seed, lam=lam,
                                  fisher_floor=fisher_floor, batch_size=batch_size, device=device, progress=progress)
        writer.save_table(SWEEP_TABLE, pd.DataFrame([r.scalars() for r in results]))
        writer.save_table(SWEEP_EXAMPLES,
                          pd.concat([r.examples.assign(step=i) for i, r in enumerate(results)], ignore_index=True))
        return SweepSummary(decomposition_run=decomposition.id, component=int(k), n_magnitudes=len(results),
                            max_kl_ratio=_largest([r.kl_ratio for r in results]))

    return ws.compute_once("perturb-sweep", settings, compute, model_id=decomposition.model_id,
                           dataset_id=decomposition.dataset_id)


def _largest(values: list[float]) -> float | None:
    """The largest value that is not NaN (None when all are NaN)."""
    kept = [v for v in values if not np.isnan(v)]
    return max(kept) if kept else None


def _optional(value, kind: type):
    return None if value is None or pd.isna(value) else kind(value)


def load_sweep(ws: Workspace, run: Run) -> list[PerturbationResult]:
    """The PerturbationResults of a complete sweep run, one per magnitude, as sweep_component returned them."""
    table, examples = _read_table(ws, run, SWEEP_TABLE), _read_table(ws, run, SWEEP_EXAMPLES)
    results = []
    for step, row in enumerate(table.to_dict("records")):
        rows = examples[examples["step"] == step].drop(columns="step").reset_index(drop=True)
        row.update({name: _optional(row.get(name), float) for name in OPTIONAL_FLOATS})
        row["targeting_converged"] = _optional(row.get("targeting_converged"), bool)
        row.update({name: int(row[name]) for name in ("component", "sign", "n_flipped_top", "n_flipped_baseline")})
        results.append(PerturbationResult(**row, examples=rows))
    return results


def most_selective(results: Sequence[PerturbationResult]) -> PerturbationResult:
    """The result with the largest finite KL ratio (the smaller magnitude on ties): the magnitude at which the
    component moves its own top examples most relative to the baseline. Largest KL on the top examples when no
    ratio is finite."""
    if not results:
        raise ValueError("results must hold at least one PerturbationResult, got none")
    finite = [r for r in results if np.isfinite(r.kl_ratio)]
    if not finite:
        return max(results, key=lambda r: (np.nan_to_num(r.kl_top, nan=-np.inf), -r.magnitude))
    return max(finite, key=lambda r: (r.kl_ratio, -r.magnitude))


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """A sweep or perturb-all table with COLUMN_LABELS' names, without the columns empty for its variant
    (δ and λ are D-NPEFF's); unknown columns keep their names."""
    empty = [c for c in table.columns if table[c].isna().all()]
    return table.drop(columns=empty).rename(columns=COLUMN_LABELS)


def perturb_all_run(ws: Workspace, model: ClassifierModel, dataset: Dataset, decomposition: Run,
                    magnitude: float, *, signs: int | Sequence[int] | None = None, max_sim: float | None = None,
                    top_n: int = DEFAULT_TOP_N, baseline_n: int = DEFAULT_BASELINE_N, seed: int = 0,
                    lam: float = DEFAULT_LAM, kl_range: tuple[float, float] | None = None,
                    targeter: KlTargeter = KlTargeter(), fisher_floor: float = FISHER_FLOOR, batch_size: int = 32,
                    device: str | None = None, progress: Progress | None = None) -> Run:
    """perturb_all at one magnitude (one row per component), from the workspace when already computed."""
    _check_pair(model, dataset, decomposition)
    settings = {**_common_settings(decomposition, max_sim=max_sim, top_n=top_n, baseline_n=baseline_n, seed=seed,
                                   lam=lam, fisher_floor=fisher_floor),
                "magnitude": float(magnitude),
                "signs": None if signs is None else [int(s) for s in np.atleast_1d(signs)]}
    if kl_range is not None:
        settings.update({"kl_range": [float(v) for v in kl_range], "targeter": asdict(targeter)})

    def compute(writer: RunWriter) -> PerturbAllSummary:
        table = perturb_all(model, dataset, load_decomposition(ws, decomposition), magnitude, signs=signs,
                            max_sim=max_sim, top_n=top_n, baseline_n=baseline_n, seed=seed, lam=lam,
                            kl_range=kl_range, targeter=targeter, fisher_floor=fisher_floor, batch_size=batch_size,
                            device=device, progress=progress)
        writer.save_table(ALL_TABLE, table)
        ratios = table["kl_ratio"].to_numpy(dtype=float)
        ratios = ratios[~np.isnan(ratios)]
        return PerturbAllSummary(decomposition_run=decomposition.id, n_components=len(table),
                                 median_kl_ratio=float(np.median(ratios)) if len(ratios) else None)

    return ws.compute_once("perturb-all", settings, compute, model_id=decomposition.model_id,
                           dataset_id=decomposition.dataset_id)


def load_perturb_all(ws: Workspace, run: Run) -> pd.DataFrame:
    """The per-component table of a complete perturb-all run, as perturb_all returned it."""
    return _read_table(ws, run, ALL_TABLE)


def latest_perturb_all(ws: Workspace, decomposition: Run) -> Run | None:
    """The newest complete perturb-all run of this decomposition (any settings), or None."""
    runs = ws.runs(kind="perturb-all", status="complete")
    mine = [row.id for row in runs.sort_values("updated", ascending=False).itertuples()
            if json.loads(row.params).get("decomposition") == decomposition.key]
    return ws.get_run(mine[0]) if mine else None


def latest_selectivity(ws: Workspace, decomposition: Run) -> pd.Series | None:
    """Per-component KL ratio (KL on the top examples / KL on the baseline) of the newest complete perturb-all
    run of this decomposition, indexed by component; None when there is none."""
    run = latest_perturb_all(ws, decomposition)
    if run is None:
        return None
    table = load_perturb_all(ws, run)
    return pd.Series(table["kl_ratio"].to_numpy(dtype=float), index=table["component"].to_numpy(dtype=int),
                     name="selectivity")
