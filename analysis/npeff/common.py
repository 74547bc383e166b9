"""What LRM- and D-NPEFF fits share: settings checks, the PEF preprocessing, column ownership, initial factors.

The PEFs are normalized to unit Frobenius norm, pruned to the parameters that occur in at least
`min_nnz_per_col` sparse PEFs, and factorized on `device` in float32 (spec §1.5-1.7, §2, §3). Under
`torchrun`, with torch.distributed initialized, every rank owns a slice of the kept parameters
(kernels.distributed). A single-process fit can hand out checkpoints and be resumed from one, finishing
with the same factors and losses as a fit that was never stopped.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from analysis.allocator import trim_heap
from analysis.devices import resolve_device
from analysis.npeff.pef_matrix import BlockEntries, example_blocks, local_matrix, parameter_counts
from kernels import sparse as sp
from kernels.distributed import Checkpoint, ColumnSlice, broadcast_from_root_, column_slice, rank_and_world

DEFAULT_CHECKPOINT_EVERY = 50  # updates between checkpoints (LRM: a multiple of kernels.lrm_npeff.REFRESH_EVERY)


@dataclass(frozen=True)
class FieldSpec:
    """How a page shows one fit setting: label, allowed range and help (pages render it; they hold no ranges)."""

    name: str  # the FitConfig field
    label: str
    low: float
    high: float
    help: str = ""


@dataclass(frozen=True)
class FitConfig:
    """Settings every NPEFF fit takes; a variant's config adds its own. Checked once, by the fit (validate())."""

    n_components: int
    n_iters: int
    seed: int = 0
    tol: float | None = None  # stop when the loss falls by less than tol (relative) over 10 iterations
    min_nnz_per_col: int = 1  # keep parameters present in at least this many sparse PEFs

    ui: ClassVar[tuple[FieldSpec, ...]] = ()  # the variant's own settings, as the Compute page shows them

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of its range."""
        check_at_least("n_components", self.n_components, 1)
        check_at_least("n_iters", self.n_iters, 1)
        check_at_least("min_nnz_per_col", self.min_nnz_per_col, 1)
        if self.tol is not None and not self.tol > 0:
            raise ValueError(f"tol must be > 0 or None, got {self.tol}")

    def params(self) -> dict:
        """The settings that key a stored fit (None means "not set" and is left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def total_iters(self) -> int:
        """Updates of the whole fit (LRM adds the G-only warm-up)."""
        return self.n_iters

    def phase(self, iteration: int) -> str:
        """What the fit does at `iteration`: "warm-up" (LRM's G-only steps) or "joint"."""
        return "joint"


@dataclass(frozen=True)
class FitCheckpoint:
    """A single-process fit after `iteration` updates: what it needs to finish exactly as if never stopped."""

    W: np.ndarray  # [n, r] float32, coefficients as the fit holds them (not rescaled)
    components: np.ndarray  # [r, m] float32, G or H over the kept parameters (not normalized)
    iteration: int  # updates done
    phase: str  # "warm-up" or "joint": what the next update does
    losses: np.ndarray  # [iteration] float64, losses[t] = loss after t updates


def check_at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def check_finite_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def check_pefs(pefs, kind: type) -> None:
    """The PEFs are of the variant's container and hold at least one example."""
    if not isinstance(pefs, kind):
        raise TypeError(f"pefs must be {kind.__name__}, got {type(pefs).__name__}")
    if pefs.n_examples == 0:
        raise ValueError("pefs must hold at least one example, got 0")


def check_init(init: tuple[np.ndarray, np.ndarray], n: int, r: int, m: int, factor: str,
               name: str = "init") -> None:
    W0, C0 = init
    if np.shape(W0) != (n, r) or np.shape(C0) != (r, m):
        raise ValueError(f"{name} must be (W [{n}, {r}], {factor} [{r}, {m}]) over the kept parameters, "
                         f"got shapes {np.shape(W0)} and {np.shape(C0)}")


def check_resume(resume: FitCheckpoint, init: object, total: int) -> None:
    """A checkpoint to resume from: not with `init`, an iteration within the fit, one loss per update done."""
    if init is not None:
        raise ValueError("init and resume are exclusive: a resumed fit continues from the checkpoint's factors")
    if not 0 <= resume.iteration <= total:
        raise ValueError(f"resume.iteration must be in [0, {total}], got {resume.iteration}")
    if len(resume.losses) != resume.iteration:
        raise ValueError(f"resume.losses must hold one loss per update done ({resume.iteration}), "
                         f"got {len(resume.losses)}")


def check_checkpointing(checkpoint: object, resume: object, checkpoint_every: int, multiple_of: int = 1) -> None:
    """Checkpoints need a single process and a positive interval (a multiple of `multiple_of`)."""
    world_size = rank_and_world()[1]
    if (checkpoint is not None or resume is not None) and world_size > 1:
        raise ValueError(f"checkpoint and resume need a single process, got world size {world_size}; "
                         "fit without torchrun to resume a checkpoint")
    if checkpoint_every < 1 or checkpoint_every % multiple_of:
        raise ValueError(f"checkpoint_every must be a positive multiple of {multiple_of}, got {checkpoint_every}")


def tensor(array: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A copy on device (PEF arrays may be read-only memory maps, which torch must not share)."""
    return torch.tensor(array, dtype=dtype, device=device)


def prune(counts: torch.Tensor, min_nnz_per_col: int) -> torch.Tensor:
    """kept [m]: the parameters with at least min_nnz_per_col non-zero entries (counts [M])."""
    kept = sp.kept_columns(counts, min_nnz_per_col)
    if len(kept) == 0:
        raise ValueError(f"no parameter has >= {min_nnz_per_col} non-zero PEF entries; "
                         f"lower min_nnz_per_col (now {min_nnz_per_col})")
    return kept


def my_columns(m: int) -> tuple[int, ColumnSlice]:
    """(rank, the kept columns this rank owns)."""
    rank, world_size = rank_and_world()
    return rank, column_slice(m, rank, world_size)


def initial_factors(init: tuple[np.ndarray, np.ndarray] | None, draw: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                    cols: ColumnSlice, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [n, r], this rank's transposed component block [m_p, r]) from `init` or the seeded draw; W from rank 0."""
    if init is None:
        W, Ct = (t.to(device) for t in draw())
    else:
        W, Ct = tensor(init[0], torch.float32, device), tensor(init[1], torch.float32, device).T[cols.start:cols.stop]
    W = W.contiguous()
    broadcast_from_root_(W)
    if init is None:
        return W, Ct.contiguous()  # the draw's own tensor: a copy would hold two [m_p, r] arrays at once
    return W, Ct.clone(memory_format=torch.contiguous_format)  # never a view of `init`: the fit updates it in place


@dataclass(frozen=True)
class FitSetup:
    """What a fit starts from: the normalized, pruned PEFs of this rank's columns (no other rank's)."""

    device: torch.device
    kept: torch.Tensor  # [m] int64, the kept parameters
    n: int  # examples
    r: int  # components
    m: int  # kept parameters (all ranks)
    rank: int
    cols: ColumnSlice  # this rank's columns of the kept parameters
    X: sp.CscMatrix  # [n*c, m_p] on the CPU, normalized entries of this rank's columns
    example_stats: torch.Tensor  # [n, ...] the variant's per-example statistic over this rank's columns


def fit_setup(pefs, container: type, config: FitConfig, entries: BlockEntries, device: str | torch.device | None,
              init: tuple[np.ndarray, np.ndarray] | None, factor: str, resume: FitCheckpoint | None, *,
              rows_per_example: Callable[[object], int],
              example_stat: Callable[[sp.Entries], torch.Tensor]) -> FitSetup:
    """Check the inputs, then normalize and prune the PEFs (spec §1.5-1.7) into this rank's columns of X.

    The PEFs are read a block of examples at a time, twice (analysis.npeff.pef_matrix); entries(pefs, device,
    examples) gives a block's normalized entries, example_stat(block entries) its per-example statistic,
    rows_per_example(pefs) the rows of X per example (LRM: c).
    """
    check_pefs(pefs, container)
    config.validate()
    if resume is not None:
        check_resume(resume, init, config.total_iters)
    dev = resolve_device(device)
    blocks = example_blocks(pefs.n_examples, int(np.prod(pefs.values.shape[1:])))
    counts = parameter_counts(pefs, blocks)  # [M]
    kept = prune(counts, config.min_nnz_per_col)
    n, r, m = pefs.n_examples, config.n_components, len(kept)
    if init is not None:
        check_init(init, n, r, m, factor)
    if resume is not None:
        check_init((resume.W, resume.components), n, r, m, factor, name="resume")
    rank, cols = my_columns(m)
    X, stats = local_matrix(pefs, entries, blocks, counts, kept[cols.start:cols.stop], rows_per_example(pefs),
                            example_stat)
    del counts
    trim_heap()  # the blocks' freed temporaries stayed resident beside X (~7 bytes per stored value, text demo)
    return FitSetup(device=dev, kept=kept, n=n, r=r, m=m, rank=rank, cols=cols, X=X, example_stats=stats)


def start_from(init: tuple[np.ndarray, np.ndarray] | None,
               resume: FitCheckpoint | None) -> tuple[tuple[np.ndarray, np.ndarray] | None, int, np.ndarray]:
    """(initial factors or None for the seeded draw, updates already done, their losses)."""
    if resume is None:
        return init, 0, np.zeros(0)
    return (resume.W, resume.components), resume.iteration, np.asarray(resume.losses, dtype=np.float64)


def checkpoint_callback(save: Callable[[FitCheckpoint], None] | None, config: FitConfig,
                        monitor) -> Checkpoint | None:
    """The kernel's checkpoint(done, W, Ct) as a FitCheckpoint of copies handed to `save` (single process)."""
    if save is None:
        return None

    def on_checkpoint(done: int, W: torch.Tensor, Ct: torch.Tensor) -> None:
        save(FitCheckpoint(W=W.cpu().numpy().copy(), components=Ct.T.cpu().numpy().copy(), iteration=done,
                           phase=config.phase(done), losses=np.asarray(monitor.losses[:done], dtype=np.float64)))
    return on_checkpoint


def result_arrays(W: torch.Tensor, setup: FitSetup, monitor, denominator: float) -> dict:
    """The fields every Decomposition shares but n_parameters, from the final W [n, r] and the monitor's
    losses; relative_error = final loss / denominator (the loss at zero factors)."""
    losses = np.asarray(monitor.losses, dtype=np.float64)
    return {"W": W.cpu().numpy(), "kept": setup.kept.cpu().numpy(), "losses": losses,
            "relative_error": float(losses[-1] / denominator) if denominator > 0 else 0.0}


def scatter(component: np.ndarray, kept: np.ndarray, n_parameters: int) -> np.ndarray:
    """A component over the kept parameters [m] scattered into parameter space [M], zeros elsewhere."""
    full = np.zeros(n_parameters, dtype=component.dtype)
    full[kept] = component
    return full


@dataclass(frozen=True)
class Decomposition:
    """An NPEFF result: coefficients W of n examples on r unit-norm components over the kept parameters.

    Each variant subclasses it with its component matrix and the two pieces coefficient fitting needs
    (`coefficient_entries`, `fit_w`); generic code reads `components` and never asks which variant it is.
    """

    W: np.ndarray  # [n, r] float32, ≥ 0, coefficients (rescaled by the component norms, spec §3.4)
    kept: np.ndarray  # [m] int64, parameter index (into the M parameters) of each component column
    n_parameters: int  # M
    losses: np.ndarray  # [n_logged] float64, losses[t] = loss after t updates; the last: the returned factors'
    relative_error: float  # final loss / its value at zero factors

    factor: ClassVar[str] = ""  # name of the component matrix ("G", "H"): its field and its stored array
    pefs_type: ClassVar[type] = object  # the PEF container it factorizes (LrmPefs, DiagPefs)

    @property
    def components(self) -> np.ndarray:
        """The component matrix over the kept parameters [r, m]."""
        return getattr(self, self.factor)

    @property
    def loss_iterations(self) -> np.ndarray:
        """The iteration (updates done) of each logged loss [n_logged]: losses[t] is the loss after t updates."""
        return np.arange(len(self.losses))

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def full_component(self, k: int) -> np.ndarray:
        """Component k scattered into parameter space: [M], zeros outside `kept`."""
        return scatter(self.components[k], self.kept, self.n_parameters)

    @staticmethod
    def coefficient_entries(pefs, device: torch.device, examples: slice) -> sp.Entries:
        """Normalized entries of the examples' PEF rows (what W is fitted against)."""
        raise NotImplementedError

    @staticmethod
    def fit_w(X: torch.Tensor, n: int, Ct: torch.Tensor, W: torch.Tensor, n_iters: int) -> torch.Tensor:
        """W [n, r] for fixed components Ct [m, r] on one chunk of rows X, by n_iters MU steps."""
        raise NotImplementedError


def check_decomposition(decomposition: object) -> None:
    """A TypeError listing the decomposition classes unless `decomposition` is one of them."""
    if not isinstance(decomposition, Decomposition):
        known = " or ".join(c.__name__ for c in Decomposition.__subclasses__())
        raise TypeError(f"decomposition must be {known}, got {type(decomposition).__name__}")
