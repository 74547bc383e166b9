"""Subnormal floats flushed to zero around the multiplicative-update fits.

MU steps drive the coefficients of components an example does not use geometrically towards 0; in float32 they
reach subnormal values (below 1.2e-38) after some hundred iterations, and every product that reads one then takes a
slow microcode path on Intel CPUs: a text-demo fit (r = 16, 350 iterations) ran 12.2 s instead of 3.8 s on an Intel
Xeon, its later iterations 6x slower than its first (AMD EPYC cores showed no such slowdown). Flushed, such values
become 0, which MU keeps at 0: nothing a float32 sum could see changes.
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
