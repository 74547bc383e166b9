"""Fixtures of the app tests beyond tests/conftest.py."""
import pytest

from analysis.demos import load_demo
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace


@pytest.fixture(scope="session")
def diag_run(demo_workspace) -> str:
    """A real D-NPEFF run of the image demo (seconds): the pages must follow its variant, not LRM's."""
    model, dataset, _ = load_demo("image", demo_workspace)
    ws = Workspace(demo_workspace)
    run = fit_run(ws, pefs_run(ws, model, dataset, kind="diag", n_values_per_example=200), n_components=4, n_iters=30)
    ws.close()
    return run.id
