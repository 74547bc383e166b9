"""D-NPEFF perturbations (spec npeff.md §4.2, §10.4): the Fisher-weighted merge
θ' = (w₁θ₀ + w₂θ_p)/(w₁ + w₂) of θ₀ with θ_p = θ₀ − sign·δ·s, where `magnitude` is δ and λ = `lam` is fixed,
unless `kl_range` asks the KL-targeting search (analysis.perturb.targeting) for (δ, λ)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from analysis.devices import resolve_device
from analysis.models import ClassifierModel
from analysis.npeff import DiagDecomposition
from analysis.perturb.evaluation import Batches, EvalSet, Examples, Setup, batches
from analysis.perturb.targeting import check_range
from analysis.perturb.weights import NORM_EPS, FunctionalModel, scatter_kept

DEFAULT_LAM = 0.5  # D-NPEFF merge weight λ when `magnitude` is δ
FISHER_FLOOR = 1e-6  # w₁ uses max(f_D, FISHER_FLOOR), so w₁ + w₂ > 0 everywhere (spec §10.4)


def _batch_len(batch: dict[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


def _sign_pattern(fmodel: FunctionalModel, batches: Batches, labels: np.ndarray, device: torch.device) -> torch.Tensor:
    """s [M] = sign(Σ_i ∇_θ CE(logits_i, y_i)) over prepared batches with labels [n] (all ≥ 0)."""
    theta = {name: fmodel.theta0[name].detach().requires_grad_(True) for name in fmodel.layout.names}
    total = {name: torch.zeros_like(t) for name, t in theta.items()}
    targets = torch.as_tensor(labels, device=device).split([_batch_len(b) for b in batches])
    for batch, y in zip(batches, targets):
        with torch.enable_grad():
            logits = fmodel.logits(batch, fmodel.theta0 | theta)
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
        for acc, grad in zip(total.values(), grads):
            if grad is not None:
                acc += grad
    return fmodel.layout.flatten(total).sign()


def sign_pattern(model: ClassifierModel, examples: Examples, indices: np.ndarray, *, labels: np.ndarray | None = None,
                 batch_size: int = 8, device: str | torch.device | None = None) -> torch.Tensor:
    """s [M] = sign(Σ_i ∇_θ CE(logits_i, y_i)) over the examples at `indices` (spec §4.2; the summed
    loss makes it independent of batch_size). labels default to the gold labels, which must be known."""
    dev = resolve_device(device)
    indices = np.asarray(indices, dtype=np.int64)
    labels = examples.labels[indices] if labels is None else np.asarray(labels, dtype=np.int64)
    if (labels < 0).any():
        raise ValueError("labels must all be class indices >= 0 for the sign pattern; "
                         f"{int((labels < 0).sum())} of {len(labels)} are unknown (-1)")
    return _sign_pattern(FunctionalModel(model, dev), batches(model, examples, indices, batch_size, dev), labels, dev)


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


@dataclass(frozen=True)
class FisherMerge:
    """Component k ready to perturb by the Fisher-weighted merge."""

    dataset_fisher: torch.Tensor  # f_D [M]
    component_fisher: torch.Tensor  # f_C [M], unit norm
    signs: torch.Tensor  # s [M]
    floor: float
    targets_kl: ClassVar[bool] = True  # (δ, λ) can be searched for a KL range

    def delta(self, magnitude: float, sign: int, lam: float | None = None) -> torch.Tensor:
        """θ' − θ₀ [M] of the merge at δ = sign·magnitude and λ = lam."""
        return fisher_merge_delta(self.dataset_fisher, self.component_fisher, self.signs, delta=sign * magnitude,
                                  lam=lam, floor=self.floor)


class DiagStrategy:
    """Perturbations of a D-NPEFF decomposition by Fisher-weighted merges."""

    default_signs: ClassVar[tuple[int, ...]] = (1,)
    merges: ClassVar[bool] = True  # a merge weight λ and a Fisher floor shape Δ (they key stored runs)

    def __init__(self, decomposition: DiagDecomposition, floor: float):
        self.decomposition, self.floor = decomposition, floor

    @classmethod
    def checked(cls, decomposition: DiagDecomposition, *, max_sim: float | None, lam: float,
                kl_range: tuple[float, float] | None, fisher_floor: float) -> "DiagStrategy":
        """The strategy for these settings; checks λ and kl_range, refuses the LRM-only max_sim."""
        if not 0.0 < lam < 1.0:
            raise ValueError(f"lam must be in (0, 1), got {lam}")
        if kl_range is not None:
            check_range("kl_range", kl_range)
        if max_sim is not None:
            raise ValueError("max_sim applies to LRM-NPEFF decompositions only; leave it None for D-NPEFF")
        return cls(decomposition, fisher_floor)

    def prepare(self, k: int, ev: EvalSet, setup: Setup) -> FisherMerge:
        dec, top_n = self.decomposition, len(ev.top)
        f_C = scatter_kept(np.array(dec.H[k], dtype=np.float32), dec.kept, dec.n_parameters, setup.device)
        # s from the gold labels; unlabelled top examples use the model's own prediction
        predicted = ev.before[:top_n].argmax(axis=1)
        labels = np.where(ev.labels[:top_n] >= 0, ev.labels[:top_n], predicted)
        return FisherMerge(dataset_fisher=setup.dataset_fisher(), component_fisher=f_C / (f_C.norm() + NORM_EPS), floor=self.floor,
                           signs=_sign_pattern(setup.fmodel, ev.top_batches, labels, setup.device))
