"""A running fit's loss by iteration, recorded in the workspace by the job's worker and read by the live curve.

The worker buffers the (iteration, loss) points the fit's progress reports and writes them at most every
PROGRESS_EVERY_S (one database write per flush, never one per iteration); the Compute page reads them while
the job runs and draws them against iterations, with the G-only warm-up of the job's fit settings shaded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from analysis.jobs import PROGRESS_EVERY_S, Job, Reporter
from analysis.store import Workspace

LOSS = "loss"  # the series of a fit's losses (step: updates done)


class FitRecorder:
    """The fit progress callback (done, total, loss) of a job: buffers the losses, reports to the Reporter."""

    def __init__(self, ws: Workspace, reporter: Reporter, *, every_s: float = PROGRESS_EVERY_S):
        self.ws, self.reporter, self.every_s = ws, reporter, every_s
        self.buffer: list[tuple[int, float]] = []
        self._last = -float("inf")

    def flush(self) -> None:
        """Write the buffered points; a workspace locked by another process keeps them for the next flush."""
        try:
            self.ws.append_job_points(self.reporter.job_id, LOSS, self.buffer)
        except RuntimeError:
            return
        finally:
            self.ws.close()  # let the dashboard read meanwhile
        self.buffer, self._last = [], time.monotonic()

    def __call__(self, done: int, total: int, loss: float | None) -> None:
        if loss is not None:
            self.buffer.append((done, loss))
        if self.buffer and (done >= total or time.monotonic() - self._last >= self.every_s):
            self.flush()
        self.reporter("NPEFF", done, total, "" if loss is None else f"loss {loss:.4g}")


@dataclass(frozen=True)
class LiveFit:
    """What a running fit job has recorded, for the live loss curve."""

    iterations: np.ndarray  # [p] int64, updates done at each recorded loss (at most `step`)
    losses: np.ndarray  # [p] float64
    step: int  # updates done, as the job row (and its progress bar) says
    total: int  # updates of the whole fit, warm-up included
    n_warm_up: int  # LRM's G-only iterations (W frozen) before the joint ones; 0 for D-NPEFF
    phase: str  # "warm-up" or "joint": what the fit does now


def _fit_config(ws: Workspace, job: Job):
    """The job's FitConfig (variant from the PEF settings of a compute job, or the stored PEF run of a fit job)."""
    from analysis.runs import PefsSummary, fit_config
    from analysis.variants import get_variant

    kind = job.spec["pefs"]["kind"] if "pefs" in job.spec else PefsSummary.of(ws.get_run(job.spec["pefs_run"])).kind
    return fit_config(get_variant(kind), job.spec["fit"])


def live_fit(ws: Workspace, job: Job) -> LiveFit | None:
    """The recorded losses of a job in its NPEFF stage, clipped to its reported step; None in any other stage."""
    if job.stage != "NPEFF" or not job.spec.get("fit"):
        return None
    config = _fit_config(ws, job)
    steps, losses = ws.job_points(job.id, LOSS)
    shown = steps <= job.step  # the curve never runs ahead of the bar
    return LiveFit(iterations=steps[shown], losses=losses[shown], step=job.step, total=config.total_iters,
                   n_warm_up=config.total_iters - config.n_iters, phase=config.phase(job.step))
