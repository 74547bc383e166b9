"""Untrusted files: zip guards, no unpickling, content hashes."""
import collections
import os
import stat
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from analysis.safe_io import UnsafeFileError, load_state_dict, safe_extract_zip, sha256_files


def _zip(path, members: dict[str, bytes], symlink: str | None = None):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


def test_extracts_and_finds_the_checkpoint_folder(tmp_path):
    archive = _zip(tmp_path / "ckpt.zip", {"ckpt/config.json": b"{}", "ckpt/model.safetensors": b"x"})
    folder = safe_extract_zip(archive, tmp_path / "out")
    assert folder == tmp_path / "out" / "ckpt"
    assert (folder / "config.json").read_bytes() == b"{}"


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
