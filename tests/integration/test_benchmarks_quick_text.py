"""Benchmarks reading the text demo, in their --quick mode."""
import pytest

from tests.integration.quick_benchmarks import run_quick

pytestmark = pytest.mark.long


@pytest.mark.parametrize("name, option", [("bench_estimates", "--workspace"), ("bench_pefs_torchrun", "--workspace"),
                                          ("bench_corpus", "--demo-root")])
def test_benchmark_runs_quick_into_a_temporary_results_file(name, option, demo_workspace, tmp_path):
    run_quick(name, tmp_path, [option, str(demo_workspace)])
