"""Untrusted files: zip guards, no unpickling, content hashes."""
import argparse
import collections
import os
import random
import re
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from analysis import safe_io
from analysis.safe_io import (MAX_ARCHIVE_RATIO, MAX_MEMBER_RATIO, UnsafeFileError, load_state_dict,
                              safe_extract_zip, sha256_files)


def _zip(path, members: dict[str, bytes], symlink: str | None = None):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


def test_extracts_into_a_folder_named_by_content_hash(tmp_path):
    archive = _zip(tmp_path / "ckpt.zip", {"ckpt/config.json": b"{}", "ckpt/model.safetensors": b"x"})
    folder = safe_extract_zip(archive, tmp_path / "out")
    assert folder == tmp_path / "out" / f"ckpt-{sha256_files([archive])[:16]}"
    assert (folder / "ckpt" / "config.json").read_bytes() == b"{}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [folder.name]  # no partial folder left
    (folder / "ckpt" / "marker").write_text("kept")
    assert safe_extract_zip(archive, tmp_path / "out") == folder and (folder / "ckpt" / "marker").exists()  # reused


def test_same_zip_name_with_other_bytes_gets_its_own_folder(tmp_path):
    first = safe_extract_zip(_zip(tmp_path / "ckpt.zip", {"ckpt/model.safetensors": b"first"}), tmp_path / "out")
    second = safe_extract_zip(_zip(tmp_path / "ckpt.zip", {"ckpt/pytorch_model.bin": b"second"}), tmp_path / "out")
    assert first != second
    assert [p.name for p in (second / "ckpt").iterdir()] == ["pytorch_model.bin"]


@pytest.mark.parametrize("name, message", [
    ("../evil.txt", "member '../evil.txt' escapes the archive with '..'; refused"),
    ("a/../../evil.txt", "escapes the archive"),
    ("/abs/evil.txt", "member '/abs/evil.txt' has an absolute path; refused"),
])
def test_traversal_and_absolute_members_are_refused(tmp_path, name, message):
    archive = _zip(tmp_path / "bad.zip", {name: b"owned"})
    with pytest.raises(UnsafeFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


def test_symlink_member_is_refused(tmp_path):
    archive = _zip(tmp_path / "link.zip", {"ok.txt": b"1"}, symlink="passwd")
    with pytest.raises(UnsafeFileError, match="member 'passwd' is a symbolic link; refused"):
        safe_extract_zip(archive, tmp_path / "out")


def test_size_limit_stops_zip_bombs_before_writing(tmp_path):
    archive = _zip(tmp_path / "big.zip", {"zeros.bin": b"\0" * 5000})
    with pytest.raises(UnsafeFileError, match="unpacks to more than 1,000 bytes"):
        safe_extract_zip(archive, tmp_path / "out", max_unpacked_bytes=1000)
    assert not (tmp_path / "out").exists()


def test_member_compression_ratio_is_capped(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ckpt/config.json", "{}")
        z.writestr("ckpt/model.safetensors", b"\0" * 2_000_000)
    info = zipfile.ZipFile(archive).getinfo("ckpt/model.safetensors")
    with pytest.raises(UnsafeFileError, match=re.escape(
            f"bomb.zip: member 'ckpt/model.safetensors' unpacks to {info.file_size / info.compress_size:.0f}x its "
            f"compressed size (the limit is {MAX_MEMBER_RATIO}x per member); refused as a zip bomb")):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_compression_ratio_is_capped(tmp_path):
    archive = tmp_path / "many.zip"
    rng = random.Random(0)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(10):  # each member about 40x: under the member cap, over the archive cap
            z.writestr(f"part{i}.bin", rng.randbytes(200) + b"\0" * 9800)
    members = zipfile.ZipFile(archive).infolist()
    assert all(MAX_ARCHIVE_RATIO < i.file_size / i.compress_size < MAX_MEMBER_RATIO for i in members)
    ratio = sum(i.file_size for i in members) / sum(i.compress_size for i in members)
    with pytest.raises(UnsafeFileError, match=re.escape(
            f"many.zip: unpacks to {ratio:.0f}x its compressed size (the limit is {MAX_ARCHIVE_RATIO}x for the "
            "whole archive); refused as a zip bomb")):
        safe_extract_zip(archive, tmp_path / "out")


def test_member_larger_than_it_declares_is_refused_and_cleaned_up(tmp_path):
    archive = tmp_path / "lie.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ckpt/config.json", "{}")  # extracted first, then deleted with the partial folder
        z.writestr("ckpt/model.safetensors", random.Random(0).randbytes(100_000))
    data = bytearray(archive.read_bytes())
    info = zipfile.ZipFile(archive).getinfo("ckpt/model.safetensors")
    central = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 4)  # the second central directory entry
    struct.pack_into("<I", data, info.header_offset + 22, 1000)  # declared size: 1,000 bytes
    struct.pack_into("<I", data, central + 24, 1000)
    archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(
            "lie.zip: member 'ckpt/model.safetensors' cannot be extracted (Bad CRC-32 for file "
            "'ckpt/model.safetensors'); the archive is damaged, "
            "encrypted or uses an unusual compression: zip the checkpoint folder again (plain deflate, no password)")):
        safe_extract_zip(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_duplicate_members_are_refused(tmp_path):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("ckpt/model.safetensors", b"first")
        z.writestr("ckpt/model.safetensors", b"second")
    with pytest.raises(UnsafeFileError, match=re.escape(
            "dup.zip: member 'ckpt/model.safetensors' appears twice; refused (zip the folder again)")):
        safe_extract_zip(archive, tmp_path / "out")


def test_a_concurrent_extraction_of_the_same_bytes_wins_cleanly(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "ckpt.zip", {"ckpt/config.json": b"{}"})
    final = tmp_path / "out" / f"ckpt-{sha256_files([archive])[:16]}"
    blocks = safe_io._member_blocks

    def other_session_finishes_first(*args):
        (final / "ckpt").mkdir(parents=True)
        (final / "ckpt" / "config.json").write_text("{}")
        return blocks(*args)

    monkeypatch.setattr(safe_io, "_member_blocks", other_session_finishes_first)
    assert safe_extract_zip(archive, tmp_path / "out") == final
    assert [p.name for p in (tmp_path / "out").iterdir()] == [final.name]


def test_not_a_zip_says_so(tmp_path):
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="x.zip: not a valid zip archive"):
        safe_extract_zip(bad, tmp_path / "out")


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/npeff-pwned",))


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": Evil()}, path)
    with pytest.raises(UnsafeFileError, match="evil.pt: refused, loading it would unpickle arbitrary Python objects"):
        load_state_dict(path)
    assert not os.path.exists("/tmp/npeff-pwned")


def _run_suggested_command(message: str) -> subprocess.CompletedProcess:
    """Run the `python -c ...` command a refusal suggests, with this interpreter first on PATH."""
    command = re.search(r"`(python -c .*)`", message).group(1)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("saved", ["state dict with metadata", "whole module"])
def test_refusal_gives_a_conversion_command_that_works(tmp_path, saved):
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "trusted checkpoint.pt"  # a space in the name: the command must quote it
    if saved == "whole module":
        torch.save(net, path)
    else:
        torch.save({**net.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafeFileError) as refused:
        load_state_dict(path)
    message = str(refused.value)
    assert message.startswith("trusted checkpoint.pt: refused, loading it would unpickle arbitrary Python objects. "
                              "Only if you trust the file, convert it with `python -c ")
    assert message.endswith("` and load trusted checkpoint.safetensors instead")
    result = _run_suggested_command(message)
    assert result.returncode == 0, result.stderr
    converted = load_state_dict(tmp_path / "trusted checkpoint.safetensors")
    assert converted.keys() == {"weight", "bias"}
    assert all(torch.equal(converted[k], v) for k, v in net.state_dict().items())


def test_plain_tensor_state_dicts_load(tmp_path):
    state = collections.OrderedDict(w=torch.arange(3.0))
    torch.save(state, tmp_path / "ok.pt")
    save_file(dict(state), str(tmp_path / "ok.safetensors"))
    assert torch.equal(load_state_dict(tmp_path / "ok.pt")["w"], state["w"])
    assert torch.equal(load_state_dict(tmp_path / "ok.safetensors")["w"], state["w"])


def test_unknown_weight_format_is_refused(tmp_path):
    (tmp_path / "w.pkl").write_bytes(b"x")
    with pytest.raises(ValueError, match="w.pkl: unsupported weights format '.pkl'"):
        load_state_dict(tmp_path / "w.pkl")


def test_content_hash_depends_on_bytes_only(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("1")
    b.write_text("2")
    h = sha256_files([a, b])
    assert h == sha256_files([b, a])
    b.write_text("3")
    assert h != sha256_files([a, b])
