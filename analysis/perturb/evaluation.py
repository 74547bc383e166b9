"""Evaluating a perturbation: the top and baseline examples of a component, the unperturbed model's
probabilities on them (cached per model and dataset), and the KL and accuracy summary of θ₀ + Δ.

The unperturbed probabilities are computed once per (model, dataset, device, scope) and reused
(`Reference`), so a perturbation costs one forward pass over the top and baseline examples. A caller that
evaluates many perturbations first gathers their examples in a `Pool` (`Setup.pooled`): one forward pass
at θ₀ fills the reference and records what the perturbations cannot change (analysis.perturb.prefix), and
each perturbed pass then runs only the in-scope part of the network.
"""
from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import Callable

import numpy as np
import pandas as pd
import torch

from analysis.datasets import Dataset, dataset_subset, length_order, make_batches
from analysis.models import ClassifierModel
from analysis.perturb.prefix import Replay
from analysis.perturb.weights import FunctionalModel, Tensors

Examples = Dataset
Batches = list[dict[str, torch.Tensor]]

KL_CLIP = 1e-7  # probabilities are clipped to [KL_CLIP, 1] in the KL, as Keras does in the reference
DEFAULT_TOP_N = 32
DEFAULT_BASELINE_N = 128
POOL_BATCH_SIZE = 128  # a pool's batches hold at least this many examples: fewer, larger replayed passes
MAX_REFERENCES = 4  # (dataset, device, scope) triples per model whose unperturbed outputs stay cached


@dataclass(frozen=True, eq=False)
class PerturbationResult:
    """How one perturbation of component `component` changed the predictions."""

    component: int
    magnitude: float  # LRM: ε, the L2 norm of θ' − θ₀; D-NPEFF: δ, the step of θ_p = θ₀ − sign·δ·s
    sign: int  # +1 or -1
    kl_top: float  # mean KL(p_perturbed ‖ p_original) over the top examples
    kl_baseline: float  # the same over the baseline examples
    kl_ratio: float  # kl_top / kl_baseline
    acc_top_before: float  # accuracy on the labelled top examples (NaN when none is labelled)
    acc_top_after: float
    acc_baseline_before: float
    acc_baseline_after: float
    n_flipped_top: int  # examples whose argmax prediction changed
    n_flipped_baseline: int
    change_norm: float  # ‖θ' − θ₀‖₂ as applied
    examples: pd.DataFrame  # one row per example, top first: index, set ("top"/"baseline"), label,
    # original_prediction, p_original_before, p_original_after (its probability), new_prediction, flipped, kl
    delta: float | None = None  # D-NPEFF only
    lam: float | None = None  # D-NPEFF only
    targeting_converged: bool | None = None  # D-NPEFF with kl_range only; False: KL range not reached

    def scalars(self) -> dict:
        """Every field but the per-example table (one row of a summary table)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "examples"}


# ------------------------------------------------------------------------------------------- example sets

def check_set_sizes(n: int, top_n: int, baseline_n: int) -> None:
    if not 1 <= top_n < n:
        raise ValueError(f"top_n must be in [1, {n - 1}] for {n} examples, got {top_n}")
    if not 1 <= baseline_n <= n - top_n:
        raise ValueError(f"baseline_n must be in [1, {n - top_n}] (examples outside the top {top_n}), "
                         f"got {baseline_n}")


def example_sets(W: np.ndarray, k: int, *, top_n: int, baseline_n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(top [top_n], baseline [baseline_n]): argsort(−W[:, k])[:top_n], and a seeded random sample of
    the other examples (sorted), disjoint from the top set (spec §10.3)."""
    n = W.shape[0]
    check_set_sizes(n, top_n, baseline_n)
    top = np.argsort(-np.asarray(W[:, k]), kind="stable")[:top_n]
    rest = np.setdiff1d(np.arange(n), top)
    baseline = np.sort(np.random.default_rng(seed).choice(rest, size=baseline_n, replace=False))
    return top.astype(np.int64), baseline.astype(np.int64)


def batches(model: ClassifierModel, examples: Examples, indices: np.ndarray, batch_size: int,
            device: torch.device) -> Batches:
    """Model inputs of the examples at `indices`, batched and on device (tokenized once, reused)."""
    return [{key: value.to(device) for key, value in batch.items() if key != "labels"}
            for batch in make_batches(model, dataset_subset(examples, indices), batch_size=batch_size)]


@torch.inference_mode()
def probabilities(fmodel: FunctionalModel, batches: Batches, tensors: Tensors | None = None) -> np.ndarray:
    """Softmax probabilities [n, C] (float64) of the model with `tensors` (default θ₀) on prepared batches."""
    return torch.cat([fmodel.logits(b, tensors).double().softmax(-1).cpu() for b in batches]).numpy()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) per row [n] of p, q [n, C], both clipped to [KL_CLIP, 1] as in the reference (spec §4.1)."""
    p, q = np.clip(p, KL_CLIP, 1.0), np.clip(q, KL_CLIP, 1.0)
    return (p * np.log(p / q)).sum(axis=1)


# ---------------------------------------------------------------------------------- the unperturbed model

DatasetFisher = Callable[..., torch.Tensor]  # (model, examples, *, batch_size, device) -> f_D [M]


class Reference:
    """The unperturbed model on one dataset: probabilities (rows filled on first use) and other values
    computed once (the D-NPEFF dataset Fisher). Holds arrays only, never the model or the dataset."""

    def __init__(self, n_examples: int, n_classes: int):
        self.probs = np.full((n_examples, n_classes), np.nan)  # [n, C]
        self.known = np.zeros(n_examples, dtype=bool)  # [n]
        self._values: dict[str, object] = {}

    def fill(self, fmodel: FunctionalModel, indices: np.ndarray, batches: Batches) -> np.ndarray:
        """Probabilities [len(indices), C] at θ₀, computed from `batches` if not known yet."""
        if not self.known[indices].all():
            self.probs[indices] = probabilities(fmodel, batches)
            self.known[indices] = True
        return self.probs[indices]

    def value(self, name: str, compute: Callable[[], object]) -> object:
        """compute() on first use, the same value afterwards."""
        if name not in self._values:
            self._values[name] = compute()
        return self._values[name]


# model's network -> (dataset hash, n, device, scope) -> Reference; an entry goes with its network
_REFERENCES: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict[tuple, Reference]]" = weakref.WeakKeyDictionary()
_REFERENCES_LOCK = threading.Lock()  # guards the maps only; two threads filling one Reference write equal rows


def reference_for(model: ClassifierModel, examples: Examples, device: torch.device) -> Reference:
    """The cached Reference of (model, examples, device, scope); MAX_REFERENCES per model are kept."""
    key = (examples.digest(), len(examples), str(device), model.scope)
    with _REFERENCES_LOCK:
        per_model = _REFERENCES.setdefault(model.net, OrderedDict())
        if key not in per_model:
            per_model[key] = Reference(len(examples), len(model.label_names))
        per_model.move_to_end(key)
        while len(per_model) > MAX_REFERENCES:
            per_model.popitem(last=False)
        return per_model[key]


@dataclass(frozen=True)
class Pool:
    """Examples in length-ordered batches whose frozen-prefix outputs at θ₀ are recorded (`Replay`)."""

    replay: Replay
    batch_of: dict[int, tuple[int, int]]  # example index -> (batch j, row in batch j)

    @classmethod
    def build(cls, model: ClassifierModel, examples: Examples, fmodel: FunctionalModel, reference: Reference,
              indices: np.ndarray, batch_size: int, device: torch.device) -> "Pool | None":
        """Fill the reference on `indices` in length-ordered batches; the Pool when its outputs can be replayed."""
        indices = np.unique(indices)
        order = indices[length_order(model, dataset_subset(examples, indices))]  # [n_pool]
        pooled = batches(model, examples, order, max(batch_size, POOL_BATCH_SIZE), device)
        replay, logits = Replay.build(fmodel, pooled)
        if not logits:  # nothing to replay: the reference alone, from the same batches
            reference.fill(fmodel, order, pooled)
            return None
        unknown = ~reference.known[order]
        reference.probs[order[unknown]] = torch.cat(logits).double().softmax(-1).cpu().numpy()[unknown]
        reference.known[order] = True
        if replay is None:
            return None
        batch = np.repeat(np.arange(len(logits)), [len(lg) for lg in logits])  # [n_pool]
        row = np.concatenate([np.arange(len(lg)) for lg in logits])  # [n_pool]
        return cls(replay=replay, batch_of={int(i): (int(j), int(r)) for i, j, r in zip(order, batch, row)})

    def covers(self, indices: np.ndarray) -> bool:
        return all(int(i) in self.batch_of for i in indices)

    def probabilities(self, indices: np.ndarray, tensors: Tensors) -> np.ndarray:
        """Softmax probabilities [len(indices), C] (float64) at `tensors`, the examples in this order."""
        where = np.array([self.batch_of[int(i)] for i in indices]).reshape(-1, 2)  # [n, 2] (batch, row)
        out = None
        for j in np.unique(where[:, 0]):
            at = np.flatnonzero(where[:, 0] == j)
            p = self.replay.logits(int(j), where[at, 1], tensors).double().softmax(-1).cpu().numpy()
            out = np.empty((len(indices), p.shape[1])) if out is None else out
            out[at] = p
        return out


@dataclass(frozen=True)
class Setup:
    """What the perturbations of one call share: the model as a function on the device, the examples and
    the unperturbed reference."""

    model: ClassifierModel
    examples: Examples
    fmodel: FunctionalModel
    reference: Reference
    device: torch.device
    batch_size: int
    fisher: DatasetFisher  # analysis.fisher.dataset_fisher, given by the caller (it sits above this package)
    pool: Pool | None = None  # examples whose perturbed passes replay the frozen prefix (see `pooled`)

    @classmethod
    def on(cls, model: ClassifierModel, examples: Examples, device: torch.device, batch_size: int,
           fisher: DatasetFisher) -> "Setup":
        return cls(model=model, examples=examples, fmodel=FunctionalModel(model, device),
                   reference=reference_for(model, examples, device), device=device, batch_size=batch_size,
                   fisher=fisher)

    def batches(self, indices: np.ndarray) -> Batches:
        return batches(self.model, self.examples, indices, self.batch_size, self.device)

    def pooled(self, indices: np.ndarray) -> "Setup":
        """This setup with the reference filled on `indices` and, where the model allows, their frozen-prefix
        outputs recorded: for evaluating many perturbations of those examples."""
        pool = Pool.build(self.model, self.examples, self.fmodel, self.reference, indices, self.batch_size,
                          self.device)
        return replace(self, pool=pool)

    def perturbed_probabilities(self, ev: "EvalSet", tensors: Tensors, *, top_only: bool = False) -> np.ndarray:
        """Probabilities [top_n (+ baseline_n), C] at `tensors` on the top (then baseline) examples of ev."""
        indices = ev.top if top_only else np.concatenate([ev.top, ev.baseline])
        if self.pool is not None and self.pool.covers(indices):
            return self.pool.probabilities(indices, tensors)
        return probabilities(self.fmodel, ev.top_batches if top_only else ev.top_batches + ev.baseline_batches,
                             tensors)

    def dataset_fisher(self) -> torch.Tensor:
        """f_D [M] of the unperturbed model on the examples, computed once per reference."""
        return self.reference.value("dataset_fisher", lambda: self.fisher(
            self.model, self.examples, batch_size=self.batch_size, device=self.device))


@dataclass(frozen=True)
class EvalSet:
    """Top and baseline examples of one component, tokenized once, with their unperturbed probabilities."""

    top: np.ndarray  # [top_n] example indices
    baseline: np.ndarray  # [baseline_n]
    top_batches: Batches
    baseline_batches: Batches
    before: np.ndarray  # [top_n + baseline_n, C], top first
    labels: np.ndarray  # [top_n + baseline_n] gold labels, -1 unknown


def eval_set(setup: Setup, top: np.ndarray, baseline: np.ndarray) -> EvalSet:
    top_batches, baseline_batches = setup.batches(top), setup.batches(baseline)
    ref, fmodel = setup.reference, setup.fmodel
    before = np.concatenate([ref.fill(fmodel, top, top_batches), ref.fill(fmodel, baseline, baseline_batches)])
    return EvalSet(top=top, baseline=baseline, top_batches=top_batches, baseline_batches=baseline_batches,
                   before=before, labels=setup.examples.labels[np.concatenate([top, baseline])])


# ------------------------------------------------------------------------------------------- evaluation

def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    known = labels >= 0
    return float((predictions[known] == labels[known]).mean()) if known.any() else math.nan


def _ratio(top: float, baseline: float) -> float:
    if baseline > 0:
        return top / baseline
    return math.inf if top > 0 else math.nan


def evaluate(setup: Setup, ev: EvalSet, delta: torch.Tensor, *, component: int, magnitude: float, sign: int,
             lam: float | None = None, converged: bool | None = None) -> PerturbationResult:
    """Run the top and baseline examples at θ₀ + delta [M] and summarize (lam: the D-NPEFF merge weight)."""
    after = setup.perturbed_probabilities(ev, setup.fmodel.perturbed(delta))  # [top_n + baseline_n, C]
    n_top = len(ev.top)
    kl = kl_divergence(after, ev.before)  # [top_n + baseline_n]
    original, new = ev.before.argmax(axis=1), after.argmax(axis=1)
    rows, flipped = np.arange(len(original)), new != original
    table = pd.DataFrame({
        "index": np.concatenate([ev.top, ev.baseline]), "set": ["top"] * n_top + ["baseline"] * len(ev.baseline),
        "label": ev.labels, "original_prediction": original, "p_original_before": ev.before[rows, original],
        "p_original_after": after[rows, original], "new_prediction": new, "flipped": flipped, "kl": kl})
    top, base = slice(0, n_top), slice(n_top, None)
    kl_top, kl_baseline = float(kl[top].mean()), float(kl[base].mean())
    merge = lam is not None
    return PerturbationResult(
        component=component, magnitude=float(magnitude), sign=sign, kl_top=kl_top, kl_baseline=kl_baseline,
        kl_ratio=_ratio(kl_top, kl_baseline),
        acc_top_before=_accuracy(original[top], ev.labels[top]), acc_top_after=_accuracy(new[top], ev.labels[top]),
        acc_baseline_before=_accuracy(original[base], ev.labels[base]),
        acc_baseline_after=_accuracy(new[base], ev.labels[base]),
        n_flipped_top=int(flipped[top].sum()), n_flipped_baseline=int(flipped[base].sum()),
        change_norm=float(delta.norm()), examples=table, delta=float(magnitude) if merge else None,
        lam=float(lam) if merge else None, targeting_converged=converged)


def top_kl(setup: Setup, ev: EvalSet, delta: torch.Tensor) -> float:
    """Mean KL on the top examples only at θ₀ + delta [M]: what the targeting search evaluates."""
    after = setup.perturbed_probabilities(ev, setup.fmodel.perturbed(delta), top_only=True)
    return float(kl_divergence(after, ev.before[:len(ev.top)]).mean())
