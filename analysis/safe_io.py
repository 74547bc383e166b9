"""Reading untrusted files: zip extraction with guards, weights without unpickling, content hashes."""
from __future__ import annotations

import hashlib
import json
import lzma
import pickle
import shlex
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import load_file

DEFAULT_MAX_UNPACKED_BYTES = 2 * 1024**3  # 2 GiB: larger than any checkpoint we expect to browse on a laptop
# Unpacked / compressed size. Float weights deflate to about 1.1x (MiniLM, the demos), a weights file that is
# 90% zeros to about 7x, tokenizer and config files to 2-13x; a deflate bomb reaches about 1000x.
MAX_MEMBER_RATIO = 100  # per member
MAX_ARCHIVE_RATIO = 20  # the whole archive: many members just under the member cap are a bomb too
# What reading a damaged, encrypted or unusual archive raises (zlib/lzma for bad streams, bz2 raises OSError,
# RuntimeError for a password, NotImplementedError for an unknown compression method)
ZIP_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
                   RuntimeError, NotImplementedError)


class UnsafeFileError(ValueError):
    """A file was refused because reading it could run code or escape its folder."""


def sha256_files(paths: list[Path]) -> str:
    """Content hash of several files (names relative to their common folder + bytes), in sorted order."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda q: q.name):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _checked_members(archive: zipfile.ZipFile, zip_name: str, max_unpacked_bytes: int) -> list[zipfile.ZipInfo]:
    """The archive's members, after refusing unsafe paths, links, duplicates and bombs (nothing is written)."""
    members = archive.infolist()
    seen: set[str] = set()
    for info in members:
        name = PurePosixPath(info.filename)
        if name.is_absolute() or info.filename.startswith(("/", "\\")) or ":" in name.parts[0]:
            raise UnsafeFileError(f"{zip_name}: member '{info.filename}' has an absolute path; refused")
        if ".." in name.parts:
            raise UnsafeFileError(f"{zip_name}: member '{info.filename}' escapes the archive with '..'; refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeFileError(f"{zip_name}: member '{info.filename}' is a symbolic link; refused")
        if name.as_posix() in seen:
            raise UnsafeFileError(f"{zip_name}: member '{info.filename}' appears twice; refused (zip the folder again)")
        seen.add(name.as_posix())
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > MAX_MEMBER_RATIO:
            raise UnsafeFileError(f"{zip_name}: member '{info.filename}' unpacks to {ratio:.0f}x its compressed size "
                                  f"(the limit is {MAX_MEMBER_RATIO}x per member); refused as a zip bomb")
    total = sum(info.file_size for info in members)
    if total > max_unpacked_bytes:
        raise UnsafeFileError(f"{zip_name}: unpacks to more than {max_unpacked_bytes:,} bytes (the limit); "
                              "raise the limit or load the folder by local path")
    ratio = total / max(sum(info.compress_size for info in members), 1)
    if ratio > MAX_ARCHIVE_RATIO:
        raise UnsafeFileError(f"{zip_name}: unpacks to {ratio:.0f}x its compressed size (the limit is "
                              f"{MAX_ARCHIVE_RATIO}x for the whole archive); refused as a zip bomb")
    return members


def _member_blocks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, zip_name: str) -> Iterator[bytes]:
    """The bytes of one member in blocks; reading errors become a ValueError naming the zip and the member."""
    try:
        with archive.open(info) as src:
            yield from iter(lambda: src.read(1 << 20), b"")
    except ZIP_READ_ERRORS as e:
        raise ValueError(f"{zip_name}: member '{info.filename}' cannot be extracted ({e}); the archive is damaged, "
                         "encrypted or uses an unusual compression: zip the checkpoint folder again "
                         "(plain deflate, no password)") from e


def safe_extract_zip(zip_path: Path, root: Path, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> Path:
    """Extract `zip_path` into `root/<zip stem>-<content hash>` and return that folder.

    Refuses absolute paths, '..' members, symlinks, duplicate members and zip bombs before writing. The
    members go to a temporary sibling that is renamed when complete, so a folder that exists is a complete
    extraction of these bytes and is reused; on any failure the partial folder is deleted.
    """
    zip_path, root = Path(zip_path), Path(root)
    final = root / f"{zip_path.stem}-{sha256_files([zip_path])[:16]}"
    if final.is_dir():
        return final
    try:
        archive = zipfile.ZipFile(zip_path)
    except ZIP_READ_ERRORS as e:
        raise ValueError(f"{zip_path.name}: not a valid zip archive ({e}); zip the checkpoint folder again") from e
    with archive:
        members = _checked_members(archive, zip_path.name, max_unpacked_bytes)
        root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{final.name}-", suffix=".partial", dir=root))
        try:
            for info in members:
                target = partial / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    for block in _member_blocks(archive, info, zip_path.name):
                        out.write(block)
            try:
                partial.rename(final)
            except OSError:
                if not final.is_dir():
                    raise
                shutil.rmtree(partial)  # another session extracted the same bytes meanwhile
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return final


def conversion_command(sources: list[Path], dest: Path) -> str:
    """A shell one-liner that merges trusted pickled state dicts (or whole saved models) into one safetensors file.

    torch.load needs weights_only=False for these files (the pinned torch defaults to True); non-tensor
    entries (epochs, argument namespaces) are dropped and shared or strided tensors are copied.
    """
    paths = json.dumps([str(p) for p in sources])
    code = ("import torch; from safetensors.torch import save_file; "
            f'objs = [torch.load(p, map_location="cpu", weights_only=False) for p in {paths}]; '
            'sd = {k: v for o in objs for k, v in (o.state_dict() if hasattr(o, "state_dict") else o).items()}; '
            "save_file({k: v.contiguous().clone() for k, v in sd.items() if isinstance(v, torch.Tensor)}, "
            f"{json.dumps(str(dest))})")
    return f"python -c {shlex.quote(code)}"


def tensor_dtypes(path: Path) -> dict[str, torch.dtype]:
    """The dtype of every tensor in a weights file (safetensors one tensor at a time, others as load_state_dict)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k).dtype for k in f.keys()}
    return {k: v.dtype for k, v in load_state_dict(path).items()}


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from .safetensors, or from .bin/.pt/.pth with torch.load(weights_only=True) only."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:
            raise ValueError(f"{path.name}: not a readable safetensors file ({e})") from e
    if path.suffix in (".bin", ".pt", ".pth"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as e:
            converted = path.with_suffix(".safetensors")
            raise UnsafeFileError(
                f"{path.name}: refused, loading it would unpickle arbitrary Python objects. Only if you trust the "
                f"file, convert it with `{conversion_command([path.resolve()], converted.resolve())}` and load "
                f"{converted.name} instead") from e
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path.name}: expected a state dict of tensors, got {type(state).__name__}; "
                             "save `model.state_dict()` instead of the model object")
        return state
    raise ValueError(f"{path.name}: unsupported weights format '{path.suffix}'; use .safetensors (preferred), .bin or .pt")
