"""reused_allocations: inside, a large block freed and allocated again costs no page faults; outside it does."""
import platform
import resource

import pytest
import torch

from analysis.allocator import reused_allocations

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings are glibc's")
PAGES = (64 << 20) // resource.getpagesize()  # a 64 MiB block: above glibc's largest mmap threshold (32 MiB)


def faults_of_a_fresh_block() -> int:
    """Minor page faults of allocating and writing a 64 MiB block, after one such block was freed."""
    torch.empty(PAGES * resource.getpagesize() // 4).fill_(1.0)  # allocated, written and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(PAGES * resource.getpagesize() // 4).fill_(2.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_freed_block_is_reused_inside_and_mapped_afresh_outside():
    assert faults_of_a_fresh_block() > PAGES // 2  # glibc's default: a new mapping, every page faults
    with reused_allocations():
        with reused_allocations():  # nested: the inner exit keeps the outer's setting
            pass
        assert faults_of_a_fresh_block() < PAGES // 20
    assert faults_of_a_fresh_block() > PAGES // 2  # settings put back: mappings again, and the heap was trimmed
