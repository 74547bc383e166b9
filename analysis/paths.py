"""Which server folders the dashboard may open: every path a visitor types is confined to configured roots.

The dashboard is a server, so a path typed into a page is read or written by the server's process. Paths
are resolved (`~`, symlinks, `..`) before they are checked, so a link inside a root cannot lead out of it.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

ALLOWED_ROOTS_ENV = "NPEFF_ALLOWED_ROOTS"
WORKSPACE_ENV = "NPEFF_WORKSPACE"
REPOSITORY = Path(__file__).resolve().parent.parent
UPLOAD_FALLBACK_NAME = "upload"  # an uploaded file whose name has no usable last component


class PathNotAllowedError(ValueError):
    """A path outside the folders the server may open."""


def resolve(path: Path | str) -> Path:
    """Absolute, with `~`, symlinks and `..` resolved; parts that do not exist yet are kept as given."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, an unknown ~user
        raise PathNotAllowedError(f"'{path}' cannot be resolved ({e}); give a plain path") from e


def allowed_roots(environ: Mapping[str, str] | None = None, extra: Iterable[Path | str] = ()) -> tuple[Path, ...]:
    """The folders paths must lie in, resolved: NPEFF_ALLOWED_ROOTS (os.pathsep-separated), else the user's
    home and the repository; the operator's NPEFF_WORKSPACE and `extra` are always allowed."""
    env = os.environ if environ is None else environ
    configured = [Path(p.strip()) for p in env.get(ALLOWED_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    roots = configured or [Path.home(), REPOSITORY]
    if env.get(WORKSPACE_ENV):
        roots.append(Path(env[WORKSPACE_ENV]))
    roots.extend(Path(p) for p in extra)
    return tuple(dict.fromkeys(resolve(root) for root in roots))


def confine(path: Path | str, roots: Iterable[Path | str]) -> Path:
    """`path` resolved, when it lies inside one of `roots`; else PathNotAllowedError naming it and how to allow it."""
    resolved = resolve(path)
    roots = tuple(resolve(root) for root in roots)
    if any(resolved.is_relative_to(root) for root in roots):
        return resolved
    shown = f"'{path}'" if str(path) == str(resolved) else f"'{path}' (resolves to '{resolved}')"
    raise PathNotAllowedError(
        f"{shown} is outside the folders this server may open ({', '.join(map(str, roots))}); to allow it, "
        f"add a folder above it to {ALLOWED_ROOTS_ENV} (separated by '{os.pathsep}') and restart the dashboard")


def upload_path(folder: Path | str, name: str) -> Path:
    """Where an uploaded file called `name` is kept: `folder` / its last path component (either separator),
    without control characters; never outside `folder`."""
    last = "".join(c for c in name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable()).strip()
    return confine(Path(folder) / (UPLOAD_FALLBACK_NAME if last in ("", ".", "..") else last), [folder])
