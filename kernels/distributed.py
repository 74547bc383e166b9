"""Column partitioning over torch.distributed ranks, and the run control every NPEFF loop shares.

Each rank owns a contiguous slice of the columns of X (and of G or H); only the small products
AG [n*c, r], GG [r, r] (D: AHᵀ, HHᵀ) and scalars are summed across ranks, W is replicated
(spec §3.2, §3.3). When torch.distributed is not initialized every helper is a no-op, so one
driver serves a single process and `torchrun` under gloo (CPU) or nccl (CUDA). `gather_errors` is the
barrier where ranks that share out work (PEF chunks) learn whether any of them failed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.distributed as dist

Progress = Callable[[int, int, "float | None"], None]  # (iteration, total, loss after `iteration` updates)
Checkpoint = Callable[[int, torch.Tensor, torch.Tensor], None]  # (updates done, W [n, r], this rank's Ct [m_p, r])
CONVERGENCE_WINDOW = 10  # iterations over which `tol` compares the relative loss change
N_PROGRESS_CALLS = 100  # progress is reported at most this often per run, plus once at the end


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class ColumnSlice:
    """The kept columns [start, stop) that one rank owns."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def column_slice(n_total: int, rank: int, world_size: int) -> ColumnSlice:
    """Uniform split of n_total columns; the last rank takes the remainder (reference partitioning)."""
    per_rank = n_total // world_size
    start = rank * per_rank
    stop = n_total if rank == world_size - 1 else start + per_rank
    return ColumnSlice(start, stop)


def all_reduce_sum_(*tensors: torch.Tensor) -> None:
    """Sum each tensor over ranks in place, in a single collective."""
    if rank_and_world()[1] == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


def broadcast_from_root_(tensor: torch.Tensor) -> None:
    """Overwrite tensor with rank 0's copy (W is drawn on rank 0 and shared, spec §10.5)."""
    if rank_and_world()[1] > 1:
        dist.broadcast(tensor, src=0)


def gather_columns(local: torch.Tensor, n_total: int) -> torch.Tensor:
    """Concatenate every rank's row block local [m_p, r] into the full [n_total, r] (padded all_gather)."""
    world_size = rank_and_world()[1]
    if world_size == 1:
        return local
    slices = [column_slice(n_total, p, world_size) for p in range(world_size)]
    longest = max(s.size for s in slices)
    padded = torch.zeros(longest, *local.shape[1:], dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: s.size] for part, s in zip(parts, slices)])


def gather_errors(error: str | None) -> list[tuple[int, str]]:
    """(rank, message) of every rank that reports an error, once all ranks got here (a barrier that carries
    each rank's outcome); [] when none failed."""
    rank, world_size = rank_and_world()
    if world_size == 1:
        return [] if error is None else [(rank, error)]
    errors: list[str | None] = [None] * world_size
    dist.all_gather_object(errors, error)
    return [(r, e) for r, e in enumerate(errors) if e is not None]


def rank_generator(seed: int, rank: int) -> torch.Generator:
    """CPU generator seeded seed + rank, so draws are identical on CPU and CUDA (spec §10.5)."""
    return torch.Generator().manual_seed(seed + rank)


def checkpoint_due(done: int, every: int, total: int) -> bool:
    """Whether a fit checkpoints after `done` of its `total` updates (every `every`; not at the end)."""
    return every > 0 and done % every == 0 and done < total


class LossMonitor:
    """Records the loss of every iteration, stops on nan/inf, reports progress and detects convergence.

    losses[t] is the loss after t updates. A resumed fit passes the losses of its checkpoint, so the
    convergence test sees the same window and takes the same decisions as an uninterrupted fit.
    The loss is computed from all-reduced quantities, so every rank takes the same decisions.
    """

    def __init__(self, name: str, total: int, tol: float | None, progress: Progress | None, hint: str,
                 losses: Sequence[float] = ()):
        self.name, self.total, self.tol, self.progress, self.hint = name, total, tol, progress, hint
        self.every = max(1, math.ceil(total / N_PROGRESS_CALLS))
        self.losses: list[float] = [float(loss) for loss in losses]

    def record(self, iteration: int, loss: float, can_stop: bool) -> bool:
        """Log the loss after `iteration` updates; True when the relative change over the window is below tol."""
        if iteration != len(self.losses):
            raise ValueError(f"{self.name}: iteration {iteration} logged after {len(self.losses)} losses")
        if not math.isfinite(loss):
            raise FloatingPointError(f"{self.name}: loss became {loss} at iteration {iteration}; {self.hint}")
        self.losses.append(loss)
        if self.progress is not None and iteration % self.every == 0:
            self.progress(iteration, self.total, loss)
        if not can_stop or self.tol is None or len(self.losses) <= CONVERGENCE_WINDOW:
            return False
        before = self.losses[-1 - CONVERGENCE_WINDOW]
        return before - loss <= self.tol * abs(before)

    def finish(self, iteration: int, loss: float) -> None:
        """Log the loss of the returned factors (after `iteration` updates) and report the end of the run.

        After an early stop the loss of that iteration is already logged; it is replaced by this one.
        """
        if not math.isfinite(loss):
            raise FloatingPointError(f"{self.name}: loss became {loss} at iteration {iteration}; {self.hint}")
        del self.losses[iteration:]
        self.losses.append(loss)
        if self.progress is not None:
            self.progress(iteration, self.total, loss)
