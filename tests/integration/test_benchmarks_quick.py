"""Benchmarks with a --quick mode run on tiny sizes, writing to a temporary results file, so that none rots."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["bench_npeff", "bench_components"]  # the benchmarks that have a --quick mode


@pytest.mark.parametrize("name", QUICK)
def test_benchmark_runs_quick_into_a_temporary_results_file(name, tmp_path):
    results = tmp_path / "RESULTS.md"
    before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick", "--results", str(results)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = results.read_text()
    assert text.startswith("# Benchmark results") and f"Command: `python -m benchmarks.{name} --quick" in text
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == before
