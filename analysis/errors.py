"""One-line descriptions of errors for the command line and the pages: the file or run, what went wrong, what to do.

Messages the library writes (ValueError and friends, already in that form) are kept, with the file's full path
when known. Errors of the libraries underneath are translated: damaged safetensors and zip files (also when a
library message wraps them), DuckDB, the operating system, out of memory. A caller that knows what it is
reading or computing wraps the work in `about(source)`, so an error that names no file gets that one.
"""
from __future__ import annotations

import errno
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import torch
from safetensors import SafetensorError

SOURCE_ATTR = "npeff_source"  # set on an exception by `about`: the file, folder or run being worked on
DAMAGED_FILE_ERRORS = (SafetensorError, zipfile.BadZipFile)  # translated even when a library message wraps them
OS_ADVICE = {errno.ENOENT: "check the path", errno.ENOTDIR: "check the path", errno.EACCES: "check its permissions",
             errno.EPERM: "check its permissions", errno.EISDIR: "give a file, not a folder",
             errno.ENOSPC: "free some disk space or use another workspace folder",
             errno.EROFS: "use a writable workspace folder"}


@contextmanager
def about(source: str | Path) -> Iterator[None]:
    """Attach `source` (what the block reads or computes) to an error raised inside; the innermost one wins."""
    try:
        yield
    except Exception as e:
        if getattr(e, SOURCE_ATTR, None) is None:
            setattr(e, SOURCE_ATTR, str(source))
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _named_file(message: str, source: str | None) -> tuple[str | None, str]:
    """(full path, rest) when `message` starts with 'NAME: ' and NAME is the source or a file in the source folder."""
    name, sep, rest = message.partition(": ")
    if source is None or not sep or "/" in name:
        return None, message
    if Path(source).name == name:
        return source, rest
    if Path(source).is_dir() and (Path(source) / name).exists():
        return str(Path(source) / name), rest
    return None, message


def _located(message: str, source: str | None) -> str:
    """`message` naming its file by full path; one that names no subject ('NAME: ...') gets 'SOURCE: ' in front."""
    path, rest = _named_file(message, source)
    if path is not None:
        return f"{path}: {rest}"
    if source is None or source in message or re.match(r"\S+: ", message):
        return message
    return f"{source}: {message}"


def _weights_file(source: str | None) -> str:
    """The one safetensors file of a checkpoint folder, else the source itself."""
    if source is not None and Path(source).is_dir():
        files = sorted(Path(source).glob("*.safetensors"))
        return str(files[0]) if len(files) == 1 else source
    return source or "weights file"


def _damaged_file(error: BaseException, wrapper: BaseException | None, source: str | None) -> str:
    path = _named_file(_first_line(wrapper), source)[0] if wrapper is not None else None
    if isinstance(error, SafetensorError):
        return (f"{path or _weights_file(source)}: not a readable safetensors file ({_first_line(error)}); the file "
                "is damaged or incomplete: save or copy it again")
    return (f"{path or source or 'archive'}: not a valid zip archive ({_first_line(error)}); the file is damaged or "
            "incomplete: write it again (numpy.savez for .npz, zip for a checkpoint folder)")


def _database(error: duckdb.Error, source: str | None) -> str:
    text = re.sub(r"^[A-Za-z ]*Error: ", "", _first_line(error))
    quoted = re.search(r'"([^"]+)"', text)
    where = quoted.group(1) if quoted else source or "workspace database"
    if "not a valid DuckDB database file" in text:
        return (f"{where}: not a valid DuckDB database file; rename it to keep it and start a new workspace, "
                "or choose another workspace folder")
    if "lock" in text.lower():
        return (f"{where}: the workspace database is open in another process; close it or choose another "
                "workspace folder")
    return f"{where}: workspace database error ({text}); check the file or choose another workspace folder"


def describe_error(exc: BaseException, source: str | Path | None = None) -> str:
    """One line naming the file or run, the problem and the fix. `source` names what was being worked on, for
    errors that do not say (an `about` block around the work takes precedence)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    source = getattr(exc, SOURCE_ATTR, None) or (str(source) if source is not None else None)
    cause = exc.__cause__
    if isinstance(exc, DAMAGED_FILE_ERRORS):
        return _damaged_file(exc, None, source)
    if isinstance(exc, ValueError) and isinstance(cause, DAMAGED_FILE_ERRORS):
        return _damaged_file(cause, exc, source)
    if isinstance(exc, duckdb.Error):
        return _database(exc, source)
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename or source or "file"
        return f"{where}: {exc.strerror.lower()}; {OS_ADVICE.get(exc.errno, 'check the file and the disk')}"
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return (f"{source or 'computation'}: out of memory; keep fewer values per example, use a smaller batch size "
                "or fewer examples")
    if isinstance(exc, (ValueError, KeyError, FloatingPointError, RuntimeError, OSError)):
        return _located(_first_line(exc), source)
    unexpected = f"{type(exc).__name__}: {_first_line(exc)} (unexpected: please report it with the traceback)"
    return unexpected if source is None else f"{source}: {unexpected}"
