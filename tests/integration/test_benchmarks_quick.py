"""Benchmarks with a --quick mode run on tiny sizes, writing to a temporary results file, so that none rots."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.demos
ROOT = Path(__file__).resolve().parents[2]
# benchmark -> the option naming the prebuilt demo workspace it reads (None: synthetic data only)
QUICK = {"bench_fisher": None, "bench_npeff": None, "bench_components": None, "bench_zonotope": None,
         "bench_perturb": "--image-root", "bench_perturb_all": "--demo-root", "bench_estimates": "--workspace",
         "bench_pefs_torchrun": "--workspace", "bench_corpus": "--demo-root"}
# benchmarks that set their own torch thread count: one here, like the rest of the test run (tests/conftest.py)
THREADED = {"bench_fisher", "bench_npeff", "bench_perturb", "bench_perturb_all", "bench_zonotope"}


@pytest.mark.parametrize("name", QUICK)
def test_benchmark_runs_quick_into_a_temporary_results_file(name, tmp_path, request):
    results = tmp_path / "RESULTS.md"
    before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    demos = [QUICK[name], str(request.getfixturevalue("demo_workspace"))] if QUICK[name] else []
    threads = ["--threads", "1"] if name in THREADED else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick", "--results", str(results), *demos, *threads],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = results.read_text()
    assert text.startswith("# Benchmark results") and f"Command: `python -m benchmarks.{name} --quick" in text
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == before
