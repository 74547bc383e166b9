"""reused_allocations: inside, a large block freed and allocated again costs no page faults; outside it does.

Measured in a fresh process: the settings act on malloc's main arena, which a process's main thread uses (the CLI
and every job worker compute there). A test worker that ran other tests may have moved its main thread to another
arena (glibc does after a failed allocation), where blocks above 64 MiB are always mapped afresh.
"""
import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings are glibc's")

MEASURE = """
import json, resource, torch
from analysis.allocator import reused_allocations
PAGES = (64 << 20) // resource.getpagesize()  # a 64 MiB block: above glibc's largest mmap threshold (32 MiB)

def faults_of_a_fresh_block():
    torch.empty(PAGES * resource.getpagesize() // 4).fill_(1.0)  # allocated, written and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(PAGES * resource.getpagesize() // 4).fill_(2.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

before = faults_of_a_fresh_block()
with reused_allocations():
    with reused_allocations():  # nested: the inner exit keeps the outer's setting
        pass
    inside = faults_of_a_fresh_block()
after = faults_of_a_fresh_block()
print(json.dumps({"pages": PAGES, "before": before, "inside": inside, "after": after}))
"""


def test_a_freed_block_is_reused_inside_and_mapped_afresh_outside():
    done = subprocess.run([sys.executable, "-c", MEASURE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    faults = json.loads(done.stdout.splitlines()[-1])
    pages = faults["pages"]
    assert faults["before"] > pages // 2  # glibc's default: a new mapping, every page faults
    assert faults["inside"] < pages // 20
    assert faults["after"] > pages // 2  # settings put back: mappings again, and the heap was trimmed
