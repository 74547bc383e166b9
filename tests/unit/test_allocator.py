"""compute_pefs reuses the memory its batches free (analysis.allocator): far fewer page faults than with glibc's
defaults, where every block above 32 MiB is mapped afresh; a fit's iterations hand their freed temporaries back.

Measured in fresh processes, on compute_pefs itself: the settings act on malloc's main arena, which a process's
main thread uses (the CLI and every job worker compute there); a pytest worker that provoked a failed allocation has
moved to another arena. A single freed block is not the measure: glibc 2.36's posix_memalign asks for the block
plus its alignment, so a block freed behind a small allocation that outlives it fits no request of its own size.
"""
import json
import platform
import subprocess
import sys

import pytest

import analysis.allocator as allocator
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings are glibc's")

MEASURE = """
import json, resource, sys, torch
from torch import nn
import analysis.allocator as allocator
from analysis.fisher import compute_pefs
if sys.argv[1] == "plain":
    allocator._mallopt = lambda *settings: None  # glibc's defaults
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(1024, 1024), nn.Tanh(), nn.Linear(1024, 2))  # M = 1.05M parameters
# per batch, per-example gradients of 16 examples x 2 classes x M floats: 134 MB
batches = [(torch.randn(16, 1024), torch.zeros(16, dtype=torch.long)) for _ in range(8)]
compute_pefs(model, batches[:1], n_values_per_example=1024)  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
compute_pefs(model, batches, n_values_per_example=1024)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def measured_in_a_fresh_process(code: str, mode: str) -> float:
    """The number the last line of `python -c code mode` prints."""
    done = subprocess.run([sys.executable, "-c", code, mode], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def faults(mode: str) -> int:
    """Minor page faults of compute_pefs over 8 batches of 134 MB of per-example gradients each."""
    return measured_in_a_fresh_process(MEASURE, mode)


def test_compute_pefs_reuses_what_its_batches_free():
    plain, reused = faults("plain"), faults("reuse")  # measured: 132k and 18-34k minor faults
    assert plain > 8 * 16 * 2 * 1_050_000 * 4 // 4096 // 2  # most of every batch's gradients on fresh pages
    assert reused < plain / 3


def test_nested_contexts_set_the_settings_once_and_put_them_back_once(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "_mallopt", lambda *settings: calls.append(settings))
    monkeypatch.setattr(allocator, "trim_heap", lambda: calls.append("trim"))
    with allocator.reused_allocations():
        with allocator.reused_allocations():  # nested (runs.py around compute_pefs): the inner exit keeps the setting
            assert calls == [((allocator.M_MMAP_MAX, 0), (allocator.M_TRIM_THRESHOLD, allocator.KEEP_FREED))]
        assert len(calls) == 1
    assert calls[1:] == [((allocator.M_MMAP_MAX, allocator.AFTER_MMAP_MAX),
                          (allocator.M_MMAP_THRESHOLD, allocator.AFTER_MMAP_THRESHOLD),
                          (allocator.M_TRIM_THRESHOLD, allocator.AFTER_TRIM_THRESHOLD)), "trim"]


def test_a_release_context_under_a_reuse_context_leaves_reuse_set_until_it_closes(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "_mallopt", lambda *settings: calls.append(settings))
    monkeypatch.setattr(allocator, "trim_heap", lambda: calls.append("trim"))
    reuse = ((allocator.M_MMAP_MAX, 0), (allocator.M_TRIM_THRESHOLD, allocator.KEEP_FREED))
    release = ((allocator.M_MMAP_MAX, allocator.AFTER_MMAP_MAX), (allocator.M_MMAP_THRESHOLD, allocator.RELEASE_ABOVE),
               (allocator.M_TRIM_THRESHOLD, allocator.RELEASE_ABOVE))
    with allocator.released_allocations():
        with allocator.reused_allocations():
            with allocator.released_allocations():  # nested: nothing changes
                assert calls == [release, reuse]
        assert calls == [release, reuse, release]  # the reuse context closed: back to releasing
    assert calls[3:] == [((allocator.M_MMAP_MAX, allocator.AFTER_MMAP_MAX),
                          (allocator.M_MMAP_THRESHOLD, allocator.AFTER_MMAP_THRESHOLD),
                          (allocator.M_TRIM_THRESHOLD, allocator.AFTER_TRIM_THRESHOLD)), "trim"]


RETAINED = """
import contextlib, sys, torch
import analysis.allocator as allocator
from analysis.peak_memory import _status_bytes
torch.ones(4 << 20)  # a freed 16 MiB block raises glibc's mmap threshold to 16 MiB, as a fit's setup does
allocator.trim_heap()
with allocator.released_allocations() if sys.argv[1] == "release" else contextlib.nullcontext():
    before, survivors = _status_bytes("RssAnon"), []
    for _ in range(16):  # 1 MiB temporaries, each freed behind a small survivor (an iteration's [n, r] arrays)
        temporary = torch.ones(1 << 18)
        survivors.append(torch.ones(16))
        del temporary
    print((_status_bytes("RssAnon") - before) / 2**20)
"""


def retained_mib(mode: str) -> float:
    """RssAnon kept after 16 freed 1 MiB temporaries in a fresh process, released or with glibc's settings."""
    return measured_in_a_fresh_process(RETAINED, mode)


def test_released_allocations_hand_freed_temporaries_back():
    released, kept = retained_mib("release"), retained_mib("plain")  # measured: 0.0 and 15 MiB
    assert released < 2 < 12 < kept
