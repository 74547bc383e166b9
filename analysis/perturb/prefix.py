"""Replaying the part of a forward pass that a perturbation cannot change.

When only some parameters are in scope (the text demo: the last of six layers + head), the modules before
them compute the same outputs at θ₀ + Δ as at θ₀. `Replay` records those outputs once per batch in a
forward pass at θ₀ and returns them in every perturbed forward pass, which then runs only the rest.

Which modules qualify is found by autograd (analysis.frozen_prefix). Before use, a replayed forward is checked
against a full one at a random Δ; a model where they disagree (or with nothing to replay) gets `None` and runs
in full.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch.func import functional_call

from analysis.frozen_prefix import CHECK_ATOL, CHECK_RTOL, map_tensors, record_outputs, suffix_view, tensor_leaves
from analysis.frozen_prefix import frozen_modules as frozen_submodules
from analysis.perturb.weights import FunctionalModel, Tensors

Batch = dict[str, torch.Tensor]
CHECK_SCALE = 1e-2  # ‖Δ‖ of that check, relative to ‖θ₀‖ over the in-scope parameters
MAX_RECORDED_BYTES = 2 << 30  # recorded outputs beyond this: no replay (the forward passes run in full)


def _rows(obj, rows: torch.Tensor, n: int):
    """obj with every tensor whose first dimension is the batch (n) cut to `rows`; other values as they are."""
    return map_tensors(obj, lambda t: t[rows] if t.dim() > 0 and t.shape[0] == n else t)


def _batch_len(batch: Batch) -> int:
    return int(next(iter(batch.values())).shape[0])


def frozen_modules(fmodel: FunctionalModel, batch: Batch) -> list[str]:
    """Dotted names of the outermost modules whose outputs cannot depend on the in-scope parameters."""
    return frozen_submodules(fmodel.view, fmodel.theta0, fmodel.layout.names, batch)


class Replay:
    """θ₀ outputs of the frozen modules on fixed batches, and perturbed forward passes that reuse them."""

    def __init__(self, fmodel: FunctionalModel, frozen: list[str], batches: list[Batch]):
        self.fmodel, self.frozen, self.batches = fmodel, frozen, batches
        self.recorded: list[dict[str, list]] = []  # per batch: module -> its outputs, in call order
        self._view = suffix_view(fmodel.view, frozen, self)
        # the replayed modules' own tensors are not in the view any more: only pass the others
        self._names = [n for n in fmodel.theta0 if not any(n.startswith(f + ".") for f in frozen)]
        self._current: tuple[dict[str, list], torch.Tensor, int] | None = None
        self._calls: dict[str, int] = defaultdict(int)

    @classmethod
    def build(cls, fmodel: FunctionalModel, batches: list[Batch]) -> tuple["Replay | None", list[torch.Tensor]]:
        """A recorded Replay of `batches` and the θ₀ logits [B_j, C] of each batch; (None, []) when nothing can
        be replayed, and (None, logits) when the recording outgrows MAX_RECORDED_BYTES or the check fails."""
        n = _batch_len(batches[0])
        frozen = frozen_modules(fmodel, _rows(batches[0], torch.arange(min(2, n)), n))
        if not frozen:
            return None, []
        replay = cls(fmodel, frozen, batches)
        logits = replay.record()
        return (replay if replay.recorded and replay.agrees() else None), logits

    @torch.inference_mode()
    def record(self) -> list[torch.Tensor]:
        """Run every batch at θ₀, keeping the frozen modules' outputs (dropped when they outgrow
        MAX_RECORDED_BYTES); returns the logits [B_j, C] of each batch."""
        logits, recorded, size = [], [], 0
        for batch in self.batches:
            batch_logits, outputs = record_outputs(self.fmodel.view, self.fmodel.theta0, self.frozen, batch)
            logits.append(batch_logits)
            size += sum(t.numel() * t.element_size() for t in tensor_leaves(outputs))
            recorded = None if recorded is None or size > MAX_RECORDED_BYTES else recorded + [outputs]
        self.recorded = recorded or []
        return logits

    def next_output(self, name: str):
        recorded, rows, n = self._current
        call = self._calls[name]
        self._calls[name] += 1
        return _rows(recorded[name][call], rows, n)

    @torch.inference_mode()
    def logits(self, j: int, rows: np.ndarray, tensors: Tensors) -> torch.Tensor:
        """Logits [len(rows), C] of rows of batch j with `tensors` (θ₀ + Δ) in place of θ₀."""
        batch = self.batches[j]
        n = _batch_len(batch)
        index = torch.as_tensor(rows, device=next(iter(batch.values())).device)
        self._current, self._calls = (self.recorded[j], index, n), defaultdict(int)
        try:
            return functional_call(self._view, {name: tensors[name] for name in self._names},
                                   (_rows(batch, index, n),))
        finally:
            self._current = None

    def agrees(self, seed: int = 0) -> bool:
        """Whether replayed and full logits agree on a few rows of the first batch at a random Δ
        (a replay that fails outright, e.g. a module called more often than recorded, does not agree)."""
        fm, batch = self.fmodel, self.batches[0]
        theta = fm.layout.flatten({name: fm.theta0[name] for name in fm.layout.names})  # [M]
        g = torch.Generator().manual_seed(seed)
        delta = torch.randn(fm.n_parameters, generator=g).to(theta.device)  # [M]
        delta *= CHECK_SCALE * theta.norm() / (delta.norm() + 1e-12)
        tensors = fm.perturbed(delta)
        rows = np.arange(min(4, _batch_len(batch)))
        with torch.inference_mode():
            full = fm.logits(_rows(batch, torch.as_tensor(rows), _batch_len(batch)), tensors)
        try:
            replayed = self.logits(0, rows, tensors)
        except (IndexError, KeyError, RuntimeError, TypeError):
            return False
        return bool(torch.allclose(replayed, full, rtol=CHECK_RTOL, atol=CHECK_ATOL))
