"""glibc malloc settings: the per-example gradient loop reuses freed blocks; a fit's iterations hand theirs back.

glibc serves every block above 32 MiB with its own mmap and unmaps it on free, so each batch's per-example
gradients (1.5 GB for a batch of 16 over all of MiniLM, plus a 750 MB zero-filled word-embedding gradient) came
from fresh pages: 700k page faults and 1.4 s of kernel time in 2.1 s for two batches. Inside
`reused_allocations()` malloc takes no new mappings and keeps what is freed, so the next batch reuses it; on the
way out the settings are put back and the kept pages are handed back. Elsewhere than glibc nothing changes.
The settings act on malloc's main arena, the one a process's main thread uses (the CLI and every job worker compute
there); other threads, and a main thread after a failed allocation, use arenas that map blocks above 64 MiB afresh.
Reuse is partial: torch's posix_memalign asks for a block plus its alignment, so a block freed behind a small
allocation that outlives it fits no request of its own size (compute_pefs over 8 large batches: 18-34k minor faults
instead of 132k).
`released_allocations()` does the opposite for a fit's iterations: blocks above RELEASE_ABOVE are mapped on their own
and unmapped when freed, so the small [n, r] temporaries of one iteration are not kept beside the factors (on the
text demo at r = 128 they held ~7 MiB, 0.4 bytes per stored value, next to a floor of 23.7).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt parameters (malloc.h)
KEEP_FREED = 2**31 - 1  # the largest trim threshold mallopt takes: freed heap memory stays for the next batch
# on the way out: no cap on mappings, and glibc's dynamic thresholds where they settle once large blocks were freed
# (mmap above 32 MiB, trim above twice that; setting them by hand switches the dynamic rule off)
AFTER_MMAP_MAX, AFTER_MMAP_THRESHOLD, AFTER_TRIM_THRESHOLD = 65536, 32 << 20, 64 << 20

RELEASE_ABOVE = 256 << 10  # released_allocations(): blocks above this are unmapped when freed, heap tops trimmed

_lock = threading.Lock()
_users = {"reuse": 0, "release": 0}  # contexts of each kind open in this process (nested, or one per thread)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt and malloc_trim mean what this module expects), else None."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def trim_heap() -> None:
    """Give freed malloc pages back to the system (glibc only; elsewhere nothing to do)."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


def _mallopt(*settings: tuple[int, int]) -> None:
    """mallopt(parameter, value) for each pair (glibc only)."""
    if (libc := _glibc()) is not None:
        for parameter, value in settings:
            libc.mallopt(parameter, value)


def _apply_settings() -> None:
    """Set malloc for the contexts open now (reuse wins over release); with none, put glibc's settled values back
    and hand the kept pages back. Called under _lock whenever a kind's first context opens or its last closes."""
    if _users["reuse"]:
        _mallopt((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_FREED))
    elif _users["release"]:
        _mallopt((M_MMAP_MAX, AFTER_MMAP_MAX), (M_MMAP_THRESHOLD, RELEASE_ABOVE), (M_TRIM_THRESHOLD, RELEASE_ABOVE))
    else:
        _mallopt((M_MMAP_MAX, AFTER_MMAP_MAX), (M_MMAP_THRESHOLD, AFTER_MMAP_THRESHOLD),
                 (M_TRIM_THRESHOLD, AFTER_TRIM_THRESHOLD))
        trim_heap()


@contextmanager
def _malloc_settings(kind: str) -> Iterator[None]:
    """Open one context of `kind`: the first of its kind sets malloc, the last puts it back (reentrant, thread-safe)."""
    with _lock:
        _users[kind] += 1
        if _users[kind] == 1:
            _apply_settings()
    try:
        yield
    finally:
        with _lock:
            _users[kind] -= 1
            if _users[kind] == 0:
                _apply_settings()


def reused_allocations():
    """Large blocks freed inside come back from malloc's heap without page faults (process-wide while open).

    Reentrant and thread-safe: the first context to open sets it, the last to close puts mappings back and
    trims the heap, so memory kept for reuse is not held once the loop is over.
    """
    return _malloc_settings("reuse")


def released_allocations():
    """Blocks above RELEASE_ABOVE freed inside go back to the system at once (process-wide while open, unless a
    reused_allocations() context is open too); reentrant and thread-safe like it."""
    return _malloc_settings("release")
