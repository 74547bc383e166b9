"""A workspace with both demos built once per test session (the text demo takes ~2 minutes)."""
import os
from pathlib import Path

import pytest

from analysis.demos import build_demo


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> Path:
    """NPEFF_TEST_WORKSPACE reuses a built workspace across local runs; CI builds a fresh one."""
    root = Path(os.environ.get("NPEFF_TEST_WORKSPACE") or tmp_path_factory.mktemp("workspace"))
    for kind in ("image", "text"):
        build_demo(kind, root)
    return root


@pytest.fixture
def app_env(demo_workspace, monkeypatch) -> Path:
    monkeypatch.setenv("NPEFF_WORKSPACE", str(demo_workspace))
    return demo_workspace
