"""PEF assembly: the full arrays equal the concatenated chunks, and are written holding about one chunk."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from analysis.runs import _assemble, _chunk_name
from analysis.store import ArraysSummary, Workspace

ROOT = Path(__file__).resolve().parents[2]


def test_assembled_arrays_equal_the_concatenated_chunks(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [5, 5, 5, 2]  # the last chunk is short, as in a run
    chunks = {"values": [rng.standard_normal((n, 7)).astype(np.float32) for n in sizes],
              "indices": [rng.integers(0, 10**9, (n, 3, 7)) for n in sizes],
              "labels": [rng.integers(-1, 4, n) for n in sizes]}
    ws = Workspace(tmp_path / "ws")
    counted = []

    def compute(writer):
        for c in range(len(sizes)):
            ws.save_arrays(writer.run.id, {_chunk_name(c, name): parts[c] for name, parts in chunks.items()})
        counted.append(_assemble(ws, writer, len(sizes), list(chunks)))
        return ArraysSummary(arrays=list(chunks))

    run = ws.compute_once("assemble-test", {}, compute)
    assert counted == [sum(sizes)]
    for name, parts in chunks.items():
        full = ws.load_array(run.id, name, mmap=False)
        assert full.dtype == parts[0].dtype
        np.testing.assert_array_equal(full, np.concatenate(parts))


PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from analysis.runs import _assemble, _chunk_name
    from analysis.store import ArraysSummary, Workspace

    ws, n, rows = Workspace(sys.argv[1]), 8, 8 * 2**20 // (4 * 256)  # 8 chunks of 8 MiB

    def compute(writer):
        for c in range(n):
            ws.save_array(writer.run.id, _chunk_name(c, "values"), np.full((rows, 256), c, np.float32))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _assemble(ws, writer, n, ["values"])
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        return ArraysSummary(arrays=["values"])

    ws.compute_once("rss-probe", {}, compute)
""")


def test_assembly_holds_about_one_chunk_not_the_whole_array(tmp_path):
    """Peak RSS grows by < 3 chunks (24 MiB) while a 64 MiB array is assembled (memory maps of all chunks: ~64)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "ws")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) < 24, done.stdout
