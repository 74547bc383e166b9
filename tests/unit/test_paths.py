"""The path policy: paths a visitor gives are resolved, then confined to the configured roots."""
import os
import re
from pathlib import Path

import pytest

from analysis.paths import (PathNotAllowedError, REPOSITORY, UPLOAD_FALLBACK_NAME, allowed_roots, confine,
                            upload_path)


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "root" / "data").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.csv").write_text("key\nhunter2\n")
    return (tmp_path / "root").resolve()


def test_a_path_inside_a_root_is_returned_resolved(root):
    assert confine(root / "data" / "table.csv", [root]) == root / "data" / "table.csv"
    assert confine(root, [root]) == root
    assert confine(root / "new" / "workspace", [root]) == root / "new" / "workspace"  # need not exist yet


def test_a_path_outside_the_roots_is_refused_with_how_to_allow_it(root):
    secret = root.parent / "outside" / "secret.csv"
    message = (f"'{secret}' is outside the folders this server may open ({root}); to allow it, add a folder "
               f"above it to NPEFF_ALLOWED_ROOTS (separated by '{os.pathsep}') and restart the dashboard")
    with pytest.raises(PathNotAllowedError, match=f"^{re.escape(message)}$"):
        confine(secret, [root])


def test_dot_dot_is_resolved_before_the_check(root):
    escaping = root / "data" / ".." / ".." / "outside" / "secret.csv"
    target = root.parent / "outside" / "secret.csv"
    with pytest.raises(PathNotAllowedError, match=re.escape(f"(resolves to '{target}')")):
        confine(escaping, [root])
    assert confine(root / "data" / ".." / "other.csv", [root]) == root / "other.csv"
    with pytest.raises(PathNotAllowedError):
        confine(root / "missing" / ".." / ".." / "outside", [root])  # '..' after a folder that does not exist


def test_a_symlink_out_of_a_root_is_refused(root):
    (root / "data" / "link.csv").symlink_to(root.parent / "outside" / "secret.csv")
    (root / "escape").symlink_to(root.parent / "outside", target_is_directory=True)
    with pytest.raises(PathNotAllowedError, match=re.escape(f"'{root / 'data' / 'link.csv'}' (resolves to")):
        confine(root / "data" / "link.csv", [root])
    with pytest.raises(PathNotAllowedError):
        confine(root / "escape" / "secret.csv", [root])


def test_a_symlinked_root_allows_its_target_and_links_inside_roots_are_followed(root):
    (root.parent / "alias").symlink_to(root, target_is_directory=True)
    assert confine(root / "data" / "x.csv", [root.parent / "alias"]) == root / "data" / "x.csv"
    (root / "data" / "inner").symlink_to(root / "data", target_is_directory=True)
    assert confine(root / "data" / "inner" / "x.csv", [root]) == root / "data" / "x.csv"


def test_a_sibling_with_the_root_as_prefix_is_outside(root):
    (root.parent / "root-evil").mkdir()
    with pytest.raises(PathNotAllowedError):
        confine(root.parent / "root-evil" / "x.csv", [root])


def test_relative_and_home_paths_are_made_absolute(root, monkeypatch):
    monkeypatch.chdir(root)
    assert confine("data/x.csv", [root]) == root / "data" / "x.csv"
    monkeypatch.setenv("HOME", str(root))
    assert confine("~/data", [root]) == root / "data"


def test_default_roots_are_home_and_the_repository_plus_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert allowed_roots({}) == (tmp_path.resolve(), REPOSITORY)
    ws = tmp_path.parent / "elsewhere-ws"
    assert allowed_roots({"NPEFF_WORKSPACE": str(ws)}) == (tmp_path.resolve(), REPOSITORY, ws.resolve())


def test_env_roots_replace_the_defaults_and_the_workspace_stays_allowed(tmp_path):
    a, b, ws = tmp_path / "a", tmp_path / "b", tmp_path / "ws"
    env = {"NPEFF_ALLOWED_ROOTS": f"{a}{os.pathsep}{os.pathsep} {b} ", "NPEFF_WORKSPACE": str(ws)}
    roots = allowed_roots(env, extra=[tmp_path / "initial", a])
    assert roots == (a, b, ws, tmp_path / "initial")  # empty entries skipped, duplicates once, in order
    assert confine(b / "x.csv", roots) == b / "x.csv"
    with pytest.raises(PathNotAllowedError):
        confine(REPOSITORY / "README.md", roots)
    assert allowed_roots(environ=None) == allowed_roots(os.environ)


def test_upload_names_never_leave_the_upload_folder(tmp_path):
    folder = tmp_path / "uploads" / "abc"
    assert upload_path(folder, "data.csv") == folder / "data.csv"
    assert upload_path(folder, "../../etc/passwd") == folder / "passwd"
    assert upload_path(folder, "..\\..\\evil.csv") == folder / "evil.csv"
    assert upload_path(folder, "/abs/model.zip") == folder / "model.zip"
    for name in ("..", ".", "", "dir/..", " "):
        assert upload_path(folder, name) == folder / UPLOAD_FALLBACK_NAME
    assert upload_path(folder, "a\x00b\nc.csv") == folder / "abc.csv"
