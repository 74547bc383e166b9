"""Benchmarks on synthetic data in their --quick mode (the ones reading a demo: the _image and _text files)."""
import pytest

from tests.integration.quick_benchmarks import run_quick


@pytest.mark.parametrize("name", ["bench_fisher", "bench_npeff", "bench_components", "bench_zonotope"])
def test_benchmark_runs_quick_into_a_temporary_results_file(name, tmp_path):
    run_quick(name, tmp_path, [])
