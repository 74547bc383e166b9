"""A benchmark's --quick mode run into a temporary results file, so that none rots (tests/integration/
test_benchmarks_quick*.py: one file per demo they read, so that each runs as soon as its demo is built)."""
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# benchmarks that set their own torch thread count: one here, like the rest of the test run (tests/conftest.py)
THREADED = {"bench_fisher", "bench_npeff", "bench_perturb", "bench_perturb_all", "bench_zonotope"}


def run_quick(name: str, tmp_path: Path, demo_args: list[str]) -> None:
    """Run benchmarks.<name> --quick (with demo_args naming a prebuilt demo workspace) into a results file under
    tmp_path; check its header and that benchmarks/RESULTS.md is left alone."""
    results = tmp_path / "RESULTS.md"
    before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    threads = ["--threads", "1"] if name in THREADED else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick", "--results", str(results),
                           *demo_args, *threads], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = results.read_text()
    assert text.startswith("# Benchmark results") and f"Command: `python -m benchmarks.{name} --quick" in text
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == before
