"""Component perturbations (spec npeff.md §4, §10.3-4): move the weights along one NPEFF component and
compare how much the predictions change on the component's top examples versus a random baseline.

LRM-NPEFF: θ' = θ₀ + sign·ε·ĝ_k, with ĝ_k the unit pseudo-Fisher vector (optionally made orthogonal
to the components it barely overlaps, `max_sim`) and ε = `magnitude` the L2 norm of the change.
D-NPEFF: the Fisher-weighted merge θ' = (w₁θ₀ + w₂θ_p)/(w₁ + w₂) with θ_p = θ₀ − sign·δ·s, where
`magnitude` is δ and λ = `lam` is fixed, unless `kl_range` asks the KL-targeting search for (δ, λ).

The weights are changed in place (no model copy) and always restored bitwise (`perturbed_parameters`).
The unperturbed probabilities are computed once per (model, examples, device) and reused
(`Reference`), so a perturbation costs one forward pass over the top and baseline examples.
"""
from __future__ import annotations

import functools
import math
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call

from analysis.datasets import ImageDataset, TextDataset, dataset_subset, make_batches
from analysis.fisher import compute_pefs
from analysis.models import ClassifierModel, resolve_device
from analysis.npeff import DiagDecomposition, LrmDecomposition

Examples = TextDataset | ImageDataset
Decomposition = LrmDecomposition | DiagDecomposition
Progress = Callable[[int, int], None]

KL_CLIP = 1e-7  # probabilities are clipped to [KL_CLIP, 1] in the KL, as Keras does in the reference
NORM_EPS = 1e-12  # added to norms before dividing (spec §3.4, §1.1)
DEFAULT_TOP_N = 32
DEFAULT_BASELINE_N = 128
DEFAULT_LAM = 0.5  # D-NPEFF merge weight λ when `magnitude` is δ
FISHER_FLOOR = 1e-6  # w₁ uses max(f_D, FISHER_FLOOR), so w₁ + w₂ > 0 everywhere (spec §10.4)
MAX_REFERENCES = 4  # (model, examples, device) triples whose unperturbed outputs stay cached
_WEIGHTS_LOCK = threading.RLock()  # held while weights are perturbed or read as the reference


# ------------------------------------------------------------------------------------------------ results

@dataclass(frozen=True)
class KlTargeter:
    """Bounds and step rules of the (δ, λ) search that brings the top examples' mean KL into a range (§4.2)."""

    delta_range: tuple[float, float] = (1e-4, 1.0)
    lam_range: tuple[float, float] = (0.035, 0.965)
    max_iters: int = 25
    backoff_attempts: int = 10
    backoff_factor: float = 2.0


@dataclass(frozen=True)
class TargetingResult:
    """Where the KL search stopped: in range when converged, else the point closest to it (log KL)."""

    delta: float
    lam: float
    kl: float  # mean KL on the top examples at (delta, lam)
    converged: bool
    n_evaluations: int


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


# ----------------------------------------------------------------------------------------------- weights

def _scope_params(model: ClassifierModel) -> list[torch.nn.Parameter]:
    """The in-scope parameters in flat-θ order (named_parameters() order)."""
    params = dict(model.named_parameters())
    return [params[name] for name in model.param_names_in_scope()]


@contextmanager
def perturbed_parameters(model: ClassifierModel, delta: torch.Tensor) -> Iterator[None]:
    """Add delta [M] to the in-scope parameters in place; on exit (also on error) copy the saved originals back.

    Restoring from saved copies, not by subtracting, leaves the weights bitwise identical (spec §10.3).
    Holds the module's lock (see `_serialized`); code outside this module reading the model meanwhile sees θ'.
    """
    params = _scope_params(model)
    M = sum(p.numel() for p in params)
    if delta.shape != (M,):
        raise ValueError(f"delta must have shape [{M}] (the in-scope parameters of '{model.name}'), "
                         f"got {list(delta.shape)}")
    with _WEIGHTS_LOCK:
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                offset = 0
                for p in params:
                    p.add_(delta[offset:offset + p.numel()].view_as(p).to(device=p.device, dtype=p.dtype))
                    offset += p.numel()
            yield
        finally:
            with torch.no_grad():
                for p, original in zip(params, saved):
                    p.copy_(original)


def _serialized(fn: Callable) -> Callable:
    """Run fn under the module's lock, so an unperturbed forward pass (cached as the reference) never
    overlaps a perturbation from another thread, e.g. two Streamlit sessions sharing a cached model."""
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with _WEIGHTS_LOCK:
            return fn(*args, **kwargs)
    return locked


# --------------------------------------------------------------------------------------- examples and sets

def _check_set_sizes(n: int, top_n: int, baseline_n: int) -> None:
    if not 1 <= top_n < n:
        raise ValueError(f"top_n must be in [1, {n - 1}] for {n} examples, got {top_n}")
    if not 1 <= baseline_n <= n - top_n:
        raise ValueError(f"baseline_n must be in [1, {n - top_n}] (examples outside the top {top_n}), "
                         f"got {baseline_n}")


def example_sets(W: np.ndarray, k: int, *, top_n: int, baseline_n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(top [top_n], baseline [baseline_n]): argsort(−W[:, k])[:top_n], and a seeded random sample of
    the other examples (sorted), disjoint from the top set (spec §10.3)."""
    n = W.shape[0]
    _check_set_sizes(n, top_n, baseline_n)
    top = np.argsort(-np.asarray(W[:, k]), kind="stable")[:top_n]
    rest = np.setdiff1d(np.arange(n), top)
    baseline = np.sort(np.random.default_rng(seed).choice(rest, size=baseline_n, replace=False))
    return top.astype(np.int64), baseline.astype(np.int64)


def _batches(model: ClassifierModel, examples: Examples, indices: np.ndarray, batch_size: int,
             device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Model inputs of the examples at `indices`, batched and on device (tokenized once, reused)."""
    return [{key: value.to(device) for key, value in batch.items() if key != "labels"}
            for batch in make_batches(model, dataset_subset(examples, indices), batch_size=batch_size)]


@torch.inference_mode()
def _probs(model: ClassifierModel, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """Softmax probabilities [n, C] (float64) of the model on prepared batches."""
    return torch.cat([model(b).double().softmax(-1).cpu() for b in batches]).numpy()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) per row [n] of p, q [n, C], both clipped to [KL_CLIP, 1] as in the reference (spec §4.1)."""
    p, q = np.clip(p, KL_CLIP, 1.0), np.clip(q, KL_CLIP, 1.0)
    return (p * np.log(p / q)).sum(axis=1)


class Reference:
    """The unperturbed model on `examples`: probabilities (rows filled on first use) and, for D-NPEFF, the
    dataset-level Fisher. Valid while the weights change only through `perturbed_parameters`."""

    def __init__(self, model: ClassifierModel, examples: Examples, device: torch.device):
        self._model, self._examples = weakref.ref(model), weakref.ref(examples)
        self.device = device
        self.probs = np.full((len(examples), len(model.label_names)), np.nan)  # [n, C]
        self.known = np.zeros(len(examples), dtype=bool)  # [n]
        self._dataset_fisher: torch.Tensor | None = None

    def describes(self, model: ClassifierModel, examples: Examples) -> bool:
        return self._model() is model and self._examples() is examples

    def fill(self, indices: np.ndarray, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
        """Probabilities [len(indices), C] of the unperturbed model, computed from `batches` if not known yet."""
        if not self.known[indices].all():
            self.probs[indices] = _probs(self._model(), batches)
            self.known[indices] = True
        return self.probs[indices]

    def dataset_fisher(self, batch_size: int) -> torch.Tensor:
        """f_D [M] on device, computed once (see `dataset_fisher`)."""
        if self._dataset_fisher is None:
            self._dataset_fisher = dataset_fisher(self._model(), self._examples(), batch_size=batch_size,
                                                  device=self.device)
        return self._dataset_fisher


_REFERENCES: "OrderedDict[tuple[int, int, str], Reference]" = OrderedDict()


def reference_for(model: ClassifierModel, examples: Examples, device: str | torch.device | None = None) -> Reference:
    """The cached Reference of (model, examples, device); the MAX_REFERENCES most recent are kept."""
    dev = resolve_device(device)
    key = (id(model), id(examples), str(dev))
    ref = _REFERENCES.get(key)
    if ref is None or not ref.describes(model, examples):
        ref = _REFERENCES[key] = Reference(model, examples, dev)
    _REFERENCES.move_to_end(key)
    while len(_REFERENCES) > MAX_REFERENCES:
        _REFERENCES.popitem(last=False)
    return ref


@dataclass(frozen=True)
class _EvalSet:
    """Top and baseline examples of one component, tokenized once, with their unperturbed probabilities."""

    top: np.ndarray  # [top_n] example indices
    baseline: np.ndarray  # [baseline_n]
    top_batches: list[dict[str, torch.Tensor]]
    baseline_batches: list[dict[str, torch.Tensor]]
    before: np.ndarray  # [top_n + baseline_n, C], top first
    labels: np.ndarray  # [top_n + baseline_n] gold labels, -1 unknown


def _eval_set(model: ClassifierModel, examples: Examples, ref: Reference, top: np.ndarray, baseline: np.ndarray,
              batch_size: int, device: torch.device) -> _EvalSet:
    top_batches = _batches(model, examples, top, batch_size, device)
    baseline_batches = _batches(model, examples, baseline, batch_size, device)
    before = np.concatenate([ref.fill(top, top_batches), ref.fill(baseline, baseline_batches)])
    return _EvalSet(top=top, baseline=baseline, top_batches=top_batches, baseline_batches=baseline_batches,
                    before=before, labels=examples.labels[np.concatenate([top, baseline])])


# ---------------------------------------------------------------------------------------- LRM direction

def _semi_orthogonal(G: np.ndarray, k: int, max_sim: float, GG: np.ndarray) -> np.ndarray:
    """g_k [m] minus its projection on span{g_j : j ≠ k, |cos(g_k, g_j)| ≤ max_sim} (spec §4.1).

    The projection is exact and order-free (the least-squares coefficients c solve (G_S G_Sᵀ) c = G_S g),
    i.e. Gram–Schmidt run to completion; it is applied twice ("twice is enough") for float32 accuracy.
    """
    norms = np.sqrt(np.maximum(np.diag(GG), 0.0))  # [r]
    cos = np.abs(GG[k]) / (norms[k] * norms + NORM_EPS)  # [r]
    S = np.flatnonzero(cos <= max_sim)
    S = S[S != k]
    g = np.array(G[k], dtype=np.float32)
    if len(S) == 0:
        return g
    for _ in range(2):
        b = (G @ g)[S].astype(np.float64)  # [|S|], G_S g
        c = np.linalg.lstsq(GG[np.ix_(S, S)], b, rcond=1e-7)[0]  # [|S|]
        coef = np.zeros(G.shape[0], dtype=np.float32)
        coef[S] = c
        g -= coef @ G  # g <- g − G_Sᵀ c
    return g


def perturbation_direction(decomposition: LrmDecomposition, k: int, max_sim: float | None = None,
                           GG: np.ndarray | None = None) -> np.ndarray:
    """Unit ĝ_k [m] over the kept parameters, semi-orthogonalized when max_sim is given (GG = G Gᵀ [r, r])."""
    G = np.asarray(decomposition.G)
    if max_sim is None:
        g = np.array(G[k], dtype=np.float32)
    else:
        if not 0.0 < max_sim < 1.0:
            raise ValueError(f"max_sim must be in (0, 1) or None, got {max_sim}")
        g = _semi_orthogonal(G, k, max_sim, (G @ G.T).astype(np.float64) if GG is None else GG)
    norm = float(np.linalg.norm(g))
    if norm < 1e-6:
        raise ValueError(f"component {k} lies in the span of the components it is made orthogonal to "
                         f"(max_sim={max_sim}); lower max_sim or leave it None")
    return g / norm


# -------------------------------------------------------------------------------------------- D-NPEFF parts

def dataset_fisher(model: ClassifierModel, examples: Examples, *, batch_size: int = 16,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """f_D [M]: mean over examples of the per-example diagonal Fishers (expectation mode, spec §1.1),
    divided by ‖f‖₂ + 1e-12; streamed one batch at a time (memory O(batch·M), never [n, M])."""
    dev = resolve_device(device)
    model.to(dev)
    total = torch.zeros(model.summary().n_parameters_in_scope, dtype=torch.float64, device=dev)
    for batch in make_batches(model, examples, batch_size=batch_size):
        pefs = compute_pefs(model, [batch], kind="diag", device=dev)  # all M values kept
        total.index_add_(0, torch.as_tensor(pefs.indices, device=dev).flatten(),
                         torch.as_tensor(pefs.values, device=dev).flatten().double())
    mean = total / len(examples)
    return (mean / (mean.norm() + NORM_EPS)).float()


def _batch_len(batch: dict[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


def _sign_pattern(model: ClassifierModel, batches: list[dict[str, torch.Tensor]], labels: np.ndarray,
                  device: torch.device) -> torch.Tensor:
    """s [M] = sign(Σ_i ∇_θ CE(logits_i, y_i)) over prepared batches with labels [n] (all ≥ 0)."""
    params = dict(model.named_parameters())
    theta = {name: params[name].detach().requires_grad_(True) for name in model.param_names_in_scope()}
    total = [torch.zeros_like(t) for t in theta.values()]
    targets = torch.as_tensor(labels, device=device).split([_batch_len(b) for b in batches])
    for batch, y in zip(batches, targets):
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(functional_call(model, theta, (batch,)), y, reduction="sum")
            grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
        for acc, grad in zip(total, grads):
            if grad is not None:
                acc += grad
    return torch.cat([t.flatten() for t in total]).sign()


def sign_pattern(model: ClassifierModel, examples: Examples, indices: np.ndarray, *, labels: np.ndarray | None = None,
                 batch_size: int = 8, device: str | torch.device | None = None) -> torch.Tensor:
    """s [M] = sign(Σ_i ∇_θ CE(logits_i, y_i)) over the examples at `indices` (spec §4.2; the summed
    loss makes it independent of batch_size). labels default to the gold labels, which must be known."""
    dev = resolve_device(device)
    model.to(dev)
    indices = np.asarray(indices, dtype=np.int64)
    labels = examples.labels[indices] if labels is None else np.asarray(labels, dtype=np.int64)
    if (labels < 0).any():
        raise ValueError("labels must all be class indices >= 0 for the sign pattern; "
                         f"{int((labels < 0).sum())} of {len(labels)} are unknown (-1)")
    return _sign_pattern(model, _batches(model, examples, indices, batch_size, dev), labels, dev)


def fisher_merge_delta(dataset_fisher: torch.Tensor, component_fisher: torch.Tensor, sign_pattern: torch.Tensor, *,
                       delta: float, lam: float, floor: float = FISHER_FLOOR) -> torch.Tensor:
    """Δ [M] such that θ₀ + Δ = (w₁θ₀ + w₂θ_p)/(w₁ + w₂), with θ_p = θ₀ − δ·s,
    w₁ = (1−λ)·max(f_D, floor) and w₂ = λ·f_C (spec §4.2, with the max of §10.4)."""
    if not 0.0 < lam < 1.0:
        raise ValueError(f"lam must be in (0, 1), got {lam}")
    if not floor > 0.0:
        raise ValueError(f"floor must be > 0, got {floor}")
    w1 = (1.0 - lam) * dataset_fisher.clamp(min=floor)
    w2 = lam * component_fisher
    # θ' − θ₀ = w₂(θ_p − θ₀)/(w₁ + w₂) = −δ·s·w₂/(w₁ + w₂)
    return -delta * sign_pattern * (w2 / (w1 + w2))


def _check_range(name: str, bounds: tuple[float, float], upper: float = math.inf) -> None:
    lo, hi = bounds
    if not 0.0 < lo < hi < upper:
        limit = "" if upper == math.inf else f" < {upper:g}"
        raise ValueError(f"{name} must be (lo, hi) with 0 < lo < hi{limit}, got {bounds}")


def _steps(delta: float, lam: float, side: int, i: int, t: KlTargeter) -> Iterator[tuple[float, float]]:
    """Candidates halfway to the far bound (δ in log space on odd i, λ on even i), halved per backoff."""
    if i % 2:
        bound = t.delta_range[1] if side < 0 else t.delta_range[0]
        step = (math.log(bound) - math.log(delta)) / 2
        for _ in range(t.backoff_attempts):
            yield math.exp(math.log(delta) + step), lam
            step /= t.backoff_factor
    else:
        bound = t.lam_range[1] if side < 0 else t.lam_range[0]
        step = (bound - lam) / 2
        for _ in range(t.backoff_attempts):
            yield delta, lam + step
            step /= t.backoff_factor


def target_kl(kl_fn: Callable[[float, float], float], kl_range: tuple[float, float], *,
              start: tuple[float, float], targeter: KlTargeter = KlTargeter()) -> TargetingResult:
    """Search (δ, λ) with kl_fn(δ, λ) in kl_range, assuming KL grows with both (the reference's KlTargeter).

    Iteration i moves one variable halfway toward its upper bound when KL is too low (lower bound when
    too high); a move that jumps across the range is halved up to backoff_attempts times. Unlike the
    reference the start is given (not drawn) and a miss is reported, with the closest point, not None.
    """
    _check_range("kl_range", kl_range)
    _check_range("delta_range", targeter.delta_range)
    _check_range("lam_range", targeter.lam_range, upper=1.0)
    if targeter.max_iters < 0 or targeter.backoff_attempts < 1 or not targeter.backoff_factor > 1:
        raise ValueError(f"targeter needs max_iters >= 0, backoff_attempts >= 1 and backoff_factor > 1, "
                         f"got {targeter}")
    lo, hi = kl_range
    evaluations: dict[tuple[float, float], float] = {}  # (δ, λ) -> KL; a point at a bound is not re-run

    def side(delta: float, lam: float) -> int:
        if (delta, lam) not in evaluations:
            evaluations[delta, lam] = float(kl_fn(delta, lam))
        kl = evaluations[delta, lam]
        return 0 if lo <= kl <= hi else -1 if kl < lo else 1  # NaN counts as too high

    delta = float(np.clip(start[0], *targeter.delta_range))
    lam = float(np.clip(start[1], *targeter.lam_range))
    current = side(delta, lam)
    for i in range(targeter.max_iters):
        if current == 0:
            break
        before = current
        for delta, lam in _steps(delta, lam, before, i, targeter):
            current = side(delta, lam)
            if current in (0, before):
                break

    def miss(kl: float) -> float:
        """Distance of kl from the range in log space (0 inside)."""
        if not kl > 0:
            return math.inf
        return max(math.log(lo / kl), math.log(kl / hi), 0.0)

    (delta, lam), kl = (((delta, lam), evaluations[delta, lam]) if current == 0
                        else min(evaluations.items(), key=lambda item: miss(item[1])))
    return TargetingResult(delta=delta, lam=lam, kl=kl, converged=current == 0, n_evaluations=len(evaluations))


# ------------------------------------------------------------------------------------------ one component

@dataclass(frozen=True)
class _Component:
    """One component ready to perturb: its examples and how the weights move (LRM or D-NPEFF)."""

    k: int
    evalset: _EvalSet
    direction: torch.Tensor | None = None  # LRM: ĝ_k [M], unit norm
    dataset_fisher: torch.Tensor | None = None  # D: f_D [M]
    component_fisher: torch.Tensor | None = None  # D: f_C [M], unit norm
    signs: torch.Tensor | None = None  # D: s [M]
    floor: float = FISHER_FLOOR

    def delta(self, magnitude: float, sign: int, lam: float | None = None) -> torch.Tensor:
        """θ' − θ₀ [M]: sign·ε·ĝ_k (LRM) or the Fisher-weighted merge at δ = magnitude (D)."""
        if self.direction is not None:
            return (sign * magnitude) * self.direction
        return fisher_merge_delta(self.dataset_fisher, self.component_fisher, self.signs, delta=sign * magnitude,
                                  lam=lam, floor=self.floor)


def _check_inputs(model: ClassifierModel, examples: Examples, decomposition: Decomposition, k: int, sign: int,
                  top_n: int, baseline_n: int) -> None:
    if not isinstance(decomposition, (LrmDecomposition, DiagDecomposition)):
        raise TypeError(f"decomposition must be LrmDecomposition or DiagDecomposition, "
                        f"got {type(decomposition).__name__}")
    if not 0 <= k < decomposition.n_components:
        raise ValueError(f"component k must be in [0, {decomposition.n_components}), got {k}")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    if decomposition.W.shape[0] != len(examples):
        raise ValueError(f"examples must be the {decomposition.W.shape[0]} examples the decomposition was fit on "
                         f"(row i of W is example i), got {len(examples)}")
    M = model.summary().n_parameters_in_scope
    if decomposition.n_parameters != M:
        raise ValueError(f"the decomposition covers {decomposition.n_parameters} parameters but model "
                         f"'{model.name}' has {M} in scope ({model.scope.describe()}); use the scope it was fit with")
    _check_set_sizes(len(examples), top_n, baseline_n)


def _component(model: ClassifierModel, examples: Examples, decomposition: Decomposition, k: int, *,
               max_sim: float | None, top_n: int, baseline_n: int, seed: int, batch_size: int,
               device: torch.device, ref: Reference, floor: float, GG: np.ndarray | None = None) -> _Component:
    top, baseline = example_sets(decomposition.W, k, top_n=top_n, baseline_n=baseline_n, seed=seed)
    evalset = _eval_set(model, examples, ref, top, baseline, batch_size, device)
    kept = torch.as_tensor(np.array(decomposition.kept), device=device)  # copies: stored factors are read-only
    full = torch.zeros(decomposition.n_parameters, device=device)
    if isinstance(decomposition, LrmDecomposition):
        full[kept] = torch.as_tensor(perturbation_direction(decomposition, k, max_sim, GG), device=device)
        return _Component(k=k, evalset=evalset, direction=full)
    full[kept] = torch.as_tensor(np.array(decomposition.H[k], dtype=np.float32), device=device)
    # s from the gold labels; unlabelled top examples use the model's own prediction
    predicted = evalset.before[:top_n].argmax(axis=1)
    labels = np.where(evalset.labels[:top_n] >= 0, evalset.labels[:top_n], predicted)
    return _Component(k=k, evalset=evalset, dataset_fisher=ref.dataset_fisher(batch_size),
                      component_fisher=full / (full.norm() + NORM_EPS), floor=floor,
                      signs=_sign_pattern(model, evalset.top_batches, labels, device))


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    known = labels >= 0
    return float((predictions[known] == labels[known]).mean()) if known.any() else math.nan


def _ratio(top: float, baseline: float) -> float:
    if baseline > 0:
        return top / baseline
    return math.inf if top > 0 else math.nan


def _evaluate(model: ClassifierModel, comp: _Component, magnitude: float, sign: int, *, lam: float | None = None,
              converged: bool | None = None) -> PerturbationResult:
    """Apply one perturbation, run the top and baseline examples, restore, and summarize."""
    ev = comp.evalset
    delta = comp.delta(magnitude, sign, lam)
    with perturbed_parameters(model, delta):
        after = np.concatenate([_probs(model, ev.top_batches), _probs(model, ev.baseline_batches)])
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
    is_d = comp.direction is None
    return PerturbationResult(
        component=comp.k, magnitude=float(magnitude), sign=sign, kl_top=kl_top, kl_baseline=kl_baseline,
        kl_ratio=_ratio(kl_top, kl_baseline),
        acc_top_before=_accuracy(original[top], ev.labels[top]), acc_top_after=_accuracy(new[top], ev.labels[top]),
        acc_baseline_before=_accuracy(original[base], ev.labels[base]),
        acc_baseline_after=_accuracy(new[base], ev.labels[base]),
        n_flipped_top=int(flipped[top].sum()), n_flipped_baseline=int(flipped[base].sum()),
        change_norm=float(delta.norm()), examples=table, delta=float(magnitude) if is_d else None,
        lam=float(lam) if is_d else None, targeting_converged=converged)


def _top_kl(model: ClassifierModel, comp: _Component, delta: float, sign: int, lam: float) -> float:
    """Mean KL on the top examples only: what the targeting search evaluates."""
    ev = comp.evalset
    with perturbed_parameters(model, comp.delta(delta, sign, lam)):
        after = _probs(model, ev.top_batches)
    return float(kl_divergence(after, ev.before[:len(ev.top)]).mean())


def _perturb(model: ClassifierModel, comp: _Component, magnitude: float, sign: int, lam: float,
             kl_range: tuple[float, float] | None, targeter: KlTargeter) -> PerturbationResult:
    if comp.direction is not None or kl_range is None:
        return _evaluate(model, comp, magnitude, sign, lam=None if comp.direction is not None else lam)
    found = target_kl(lambda d, l: _top_kl(model, comp, d, sign, l), kl_range, start=(magnitude, lam),
                      targeter=targeter)
    return _evaluate(model, comp, found.delta, sign, lam=found.lam, converged=found.converged)


# ---------------------------------------------------------------------------------------------- public API

def _prepare(model: ClassifierModel, examples: Examples, decomposition: Decomposition, k: int, sign: int,
             top_n: int, baseline_n: int, device, lam: float, kl_range, max_sim) -> tuple[torch.device, Reference]:
    _check_inputs(model, examples, decomposition, k, sign, top_n, baseline_n)
    if isinstance(decomposition, DiagDecomposition):
        if not 0.0 < lam < 1.0:
            raise ValueError(f"lam must be in (0, 1), got {lam}")
        if kl_range is not None:
            _check_range("kl_range", kl_range)
        if max_sim is not None:
            raise ValueError("max_sim applies to LRM-NPEFF decompositions only; leave it None for D-NPEFF")
    elif kl_range is not None:
        raise ValueError("kl_range applies to D-NPEFF decompositions only; an LRM perturbation has magnitude ε")
    dev = resolve_device(device)
    model.to(dev)
    return dev, reference_for(model, examples, dev)


def _check_magnitude(magnitude: float) -> None:
    if not (magnitude >= 0 and math.isfinite(magnitude)):
        raise ValueError(f"magnitude must be a finite number >= 0, got {magnitude}")


@_serialized
def perturb_component(model: ClassifierModel, examples: Examples, decomposition: Decomposition, k: int, *,
                      magnitude: float, sign: int = 1, max_sim: float | None = None, top_n: int = DEFAULT_TOP_N,
                      baseline_n: int = DEFAULT_BASELINE_N, seed: int = 0, batch_size: int = 32,
                      device: str | torch.device | None = None, lam: float = DEFAULT_LAM,
                      kl_range: tuple[float, float] | None = None, targeter: KlTargeter = KlTargeter(),
                      fisher_floor: float = FISHER_FLOOR) -> PerturbationResult:
    """Perturb component k and compare the KL on its top examples with a random disjoint baseline.

    LRM: θ' = θ₀ + sign·magnitude·ĝ_k (max_sim: semi-orthogonalize ĝ_k first). D-NPEFF: Fisher-weighted
    merge with δ = magnitude and λ = lam, or, with kl_range=(lo, hi), the (δ, λ) found by `target_kl`
    starting there (result.targeting_converged tells whether the top KL landed in range).
    """
    _check_magnitude(magnitude)
    dev, ref = _prepare(model, examples, decomposition, k, sign, top_n, baseline_n, device, lam, kl_range, max_sim)
    comp = _component(model, examples, decomposition, k, max_sim=max_sim, top_n=top_n, baseline_n=baseline_n,
                      seed=seed, batch_size=batch_size, device=dev, ref=ref, floor=fisher_floor)
    return _perturb(model, comp, magnitude, sign, lam, kl_range, targeter)


@_serialized
def sweep_component(model: ClassifierModel, examples: Examples, decomposition: Decomposition, k: int,
                    magnitudes: Sequence[float], *, sign: int = 1, max_sim: float | None = None,
                    top_n: int = DEFAULT_TOP_N, baseline_n: int = DEFAULT_BASELINE_N, seed: int = 0,
                    batch_size: int = 32, device: str | torch.device | None = None, lam: float = DEFAULT_LAM,
                    fisher_floor: float = FISHER_FLOOR, progress: Progress | None = None) -> list[PerturbationResult]:
    """perturb_component at each magnitude (ε for LRM, δ at fixed λ for D-NPEFF), sharing the examples,
    their tokenization and the direction."""
    if len(magnitudes) == 0:
        raise ValueError("magnitudes must hold at least one value, got none")
    for magnitude in magnitudes:
        _check_magnitude(magnitude)
    dev, ref = _prepare(model, examples, decomposition, k, sign, top_n, baseline_n, device, lam, None, max_sim)
    comp = _component(model, examples, decomposition, k, max_sim=max_sim, top_n=top_n, baseline_n=baseline_n,
                      seed=seed, batch_size=batch_size, device=dev, ref=ref, floor=fisher_floor)
    results = []
    for magnitude in magnitudes:
        results.append(_perturb(model, comp, float(magnitude), sign, lam, None, KlTargeter()))
        if progress is not None:
            progress(len(results), len(magnitudes))
    return results


@_serialized
def perturb_all(model: ClassifierModel, examples: Examples, decomposition: Decomposition, magnitude: float, *,
                signs: Sequence[int] | None = None, max_sim: float | None = None, top_n: int = DEFAULT_TOP_N,
                baseline_n: int = DEFAULT_BASELINE_N, seed: int = 0, batch_size: int = 32,
                device: str | torch.device | None = None, lam: float = DEFAULT_LAM,
                kl_range: tuple[float, float] | None = None, targeter: KlTargeter = KlTargeter(),
                fisher_floor: float = FISHER_FLOOR, progress: Progress | None = None) -> pd.DataFrame:
    """One row per component: the sign with the largest KL ratio (as the reference reports) and its metrics,
    plus kl_ratio_pos / kl_ratio_neg. signs default to (+1, −1) for LRM and (+1,) for D-NPEFF."""
    _check_magnitude(magnitude)
    signs = tuple(signs) if signs is not None else (1, -1) if isinstance(decomposition, LrmDecomposition) else (1,)
    if not signs or any(s not in (1, -1) for s in signs):
        raise ValueError(f"signs must be a non-empty subset of (1, -1), got {signs}")
    dev, ref = _prepare(model, examples, decomposition, 0, signs[0], top_n, baseline_n, device, lam, kl_range,
                        max_sim)
    GG = None
    if isinstance(decomposition, LrmDecomposition) and max_sim is not None:
        G = np.asarray(decomposition.G)
        GG = (G @ G.T).astype(np.float64)
    rows, r = [], decomposition.n_components
    for k in range(r):
        comp = _component(model, examples, decomposition, k, max_sim=max_sim, top_n=top_n, baseline_n=baseline_n,
                          seed=seed, batch_size=batch_size, device=dev, ref=ref, floor=fisher_floor, GG=GG)
        results = {s: _perturb(model, comp, magnitude, s, lam, kl_range, targeter) for s in signs}
        best = max(results.values(), key=lambda res: -math.inf if math.isnan(res.kl_ratio) else res.kl_ratio)
        row = best.scalars()
        row.update({f"kl_ratio_{'pos' if s > 0 else 'neg'}": res.kl_ratio for s, res in results.items()})
        rows.append(row)
        if progress is not None:
            progress(k + 1, r)
    return pd.DataFrame(rows)
