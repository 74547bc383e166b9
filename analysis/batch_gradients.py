"""One batch's per-example gradients as the PEF containers read them, and the non-finite check.

analysis.fisher computes them (vmapped VJPs); each PEF container (analysis.pefs) sparsifies them its
own way (`from_gradients`), so the choice between LRM and D lives with the container, not here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class NonFiniteFisherError(FloatingPointError):
    """A per-example Fisher holds NaN or Inf; `example` is its position among the examples computed."""

    def __init__(self, example: int):
        self.example = example
        super().__init__(f"per-example Fisher of example {example} has non-finite values (logits or gradients); "
                         "check the input or the model weights")


@dataclass(frozen=True)
class BatchGradients:
    """One batch's per-example gradients, one block per parameter tensor in scope."""

    blocks: list[torch.Tensor]  # D [B, r, n_p], r VJPs per example, n_p entries of parameter p (row-major)
    scale: torch.Tensor | None  # [B, 2] for a binary classifier, A_i = scale_i ⊗ d_i (r = 1); None: A = D
    logits: torch.Tensor  # [B, C]
    class_ids: torch.Tensor  # [B, c]

    @property
    def n_parameters(self) -> int:
        return sum(block.shape[2] for block in self.blocks)

    def columns(self) -> list[torch.Tensor]:
        """A per block: [B, c, n_p] each."""
        return self.blocks if self.scale is None else [self.scale[:, :, None] * block for block in self.blocks]

    def dense_columns(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """A [B, c, M], every block written once into `out` ([B, c, M] on the blocks' device) or a new tensor."""
        first = self.blocks[0]
        c = first.shape[1] if self.scale is None else self.scale.shape[1]
        A = torch.empty(len(first), c, self.n_parameters, dtype=first.dtype, device=first.device) if out is None else out
        start = 0
        for block in self.blocks:
            out = A[:, :, start:start + block.shape[2]]
            if self.scale is None:
                out.copy_(block)
            else:
                torch.mul(self.scale[:, :, None], block, out=out)
            start += block.shape[2]
        return A

    def lrm_grams(self) -> torch.Tensor:
        """A_iᵀ A_i [B, c, c], from DDᵀ summed over blocks (the c×c Gram, never M×M)."""
        DDt = sum(block @ block.mT for block in self.blocks)  # [B, r, r]
        return DDt if self.scale is None else self.scale[:, :, None] * self.scale[:, None, :] * DDt

    def diagonals(self) -> list[torch.Tensor]:
        """f = Σ_y A_y⊙² per block: [B, 1, n_p] each."""
        if self.scale is None:
            return [block.square().sum(1, keepdim=True) for block in self.blocks]
        weight = self.scale.square().sum(1)[:, None, None]  # [B, 1, 1]
        return [weight * block.square() for block in self.blocks]


def check_finite(check: torch.Tensor, logits: torch.Tensor, start: int) -> None:
    """Raise NonFiniteFisherError naming the first example (start + index in the batch) with NaN/Inf.

    check [B, ...] holds per-example sums of squares of the gradients: NaN/Inf when any entry is.
    """
    finite = torch.isfinite(check.reshape(len(check), -1).sum(dim=1)) & torch.isfinite(logits).all(dim=1)  # [B]
    if not bool(finite.all()):
        raise NonFiniteFisherError(start + int((~finite).nonzero()[0, 0]))
