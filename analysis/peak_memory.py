"""Peak resident memory of this process over one piece of work, measurable again and again in a long-lived server.

VmHWM in /proc/self/status is the process's peak resident set; writing "5" to /proc/self/clear_refs resets it to
the current resident set (Linux >= 4.0), so each piece of work gets its own peak, unlike getrusage's ru_maxrss,
which only grows. glibc's malloc_trim first hands freed heap pages back, so that memory an earlier computation
freed but kept resident does not hide this one's growth. Other threads of the process (other browser sessions of
a Streamlit server) count too: the number is an upper bound when they allocate meanwhile.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, TypeVar

from analysis.allocator import trim_heap

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
T = TypeVar("T")


@dataclass(frozen=True)
class Measured(Generic[T]):
    """What a piece of work returned, its wall seconds and its peak memory above the resident set at its start."""

    result: T
    seconds: float
    peak_growth_bytes: int | None  # None where the system cannot reset the peak (not Linux, or clear_refs refused)


def _status_bytes(field: str, status: Path = STATUS) -> int | None:
    """A 'Field:   123 kB' line of /proc/self/status in bytes, or None where absent."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak() -> int | None:
    """Reset VmHWM to the current resident set; that resident set (bytes), or None when it cannot be reset."""
    trim_heap()
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return None
    return _status_bytes("VmRSS")


def measured(work: Callable[[], T]) -> Measured[T]:
    """Run work() and measure its wall seconds and the growth of this process's peak resident set it caused."""
    start_rss = reset_peak()
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    growth = None if start_rss is None or peak is None else max(0, peak - start_rss)
    return Measured(result=result, seconds=seconds, peak_growth_bytes=growth)
