"""Benchmarks reading the image demo, in their --quick mode."""
import pytest

from tests.integration.quick_benchmarks import run_quick


@pytest.mark.parametrize("name, option", [("bench_perturb", "--image-root"), ("bench_perturb_all", "--demo-root")])
def test_benchmark_runs_quick_into_a_temporary_results_file(name, option, image_workspace, tmp_path):
    run_quick(name, tmp_path, [option, str(image_workspace)])
