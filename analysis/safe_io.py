"""Reading untrusted files: zip extraction with guards, weights without unpickling, content hashes."""
from __future__ import annotations

import hashlib
import pickle
import stat
import zipfile
from pathlib import Path, PurePosixPath

import torch
from safetensors.torch import load_file

DEFAULT_MAX_UNPACKED_BYTES = 2 * 1024**3  # 2 GiB: larger than any checkpoint we expect to browse on a laptop


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


def safe_extract_zip(zip_path: Path, dest: Path, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> Path:
    """Extract `zip_path` into `dest`, refusing absolute paths, '..' members, symlinks and zip bombs.

    Returns the folder holding config.json when the archive wraps the checkpoint in one top folder.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{zip_path.name}: not a valid zip archive ({e}); zip the checkpoint folder again") from e
    with archive:
        members = archive.infolist()
        total = 0
        for info in members:
            name = PurePosixPath(info.filename)
            if name.is_absolute() or info.filename.startswith(("/", "\\")) or ":" in name.parts[0]:
                raise UnsafeFileError(f"{zip_path.name}: member '{info.filename}' has an absolute path; refused")
            if ".." in name.parts:
                raise UnsafeFileError(f"{zip_path.name}: member '{info.filename}' escapes the archive with '..'; refused")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeFileError(f"{zip_path.name}: member '{info.filename}' is a symbolic link; refused")
            total += info.file_size
            if total > max_unpacked_bytes:
                raise UnsafeFileError(
                    f"{zip_path.name}: unpacks to more than {max_unpacked_bytes:,} bytes (the limit); "
                    "raise the limit or load the folder by local path")
        dest.mkdir(parents=True, exist_ok=True)
        for info in members:
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                written = 0
                for block in iter(lambda: src.read(1 << 20), b""):
                    written += len(block)
                    if written > info.file_size:
                        raise UnsafeFileError(f"{zip_path.name}: member '{info.filename}' is larger than it declares; refused")
                    out.write(block)
    configs = sorted(dest.rglob("config.json"), key=lambda p: len(p.parts))
    return configs[0].parent if configs else dest


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
            raise UnsafeFileError(
                f"{path.name}: refused, loading it would unpickle arbitrary Python objects. Convert it to "
                "safetensors where you trust it: `from safetensors.torch import save_file; "
                "save_file(torch.load(path), 'model.safetensors')`") from e
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path.name}: expected a state dict of tensors, got {type(state).__name__}; "
                             "save `model.state_dict()` instead of the model object")
        return state
    raise ValueError(f"{path.name}: unsupported weights format '{path.suffix}'; use .safetensors (preferred), .bin or .pt")
