"""Multiplicative-update factors kept out of subnormal floats.

MU steps shrink the coefficients of components an example does not use geometrically; in float32 they reach
subnormal values (below 1.2e-38) after some hundred iterations, and every product that reads one then takes a slow
microcode path on Intel CPUs: a text-demo fit (r = 16, 350 iterations) ran 12.2 s on an Intel Xeon (4.2-4.5 s with
this module), its later iterations 6x slower than its first (AMD EPYC cores showed no such slowdown). So the fits
run with subnormals flushed to zero, and every MU step raises its factor's entries to the smallest normal float
(floored_): flushed to 0 alone, a shrinking entry would stay 0 for good where a subnormal one could still grow back
(the D-NPEFF benchmark's fit then ended 0.05 % higher after 150 iterations; floored, 0.006 % lower than the plain
float32 fit). A result's entries still at the floor are reported as 0 (unfloored_).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Subnormal inputs and results read as 0 in this thread's CPU float math while open (x86 DAZ/FTZ; threads
    started meanwhile inherit it, and torch's worker threads did not slow down either); switched off on the way out
    (the default; torch cannot tell whether it was on before). A no-op where the CPU has no such mode."""
    flushed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def floored_(x: torch.Tensor) -> torch.Tensor:
    """x with its entries below its dtype's smallest normal raised to it, in place (an MU step's new factor)."""
    return x.clamp_min_(torch.finfo(x.dtype).tiny)


def unfloored_(x: torch.Tensor) -> torch.Tensor:
    """x with its entries at the floor set to 0, in place: a fit's result says 'unused' with 0."""
    return x.masked_fill_(x <= torch.finfo(x.dtype).tiny, 0)
