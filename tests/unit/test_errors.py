"""describe_error: one line naming the file or run, the problem and the fix, for each class of error."""
import errno
import zipfile

import duckdb
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from analysis.errors import about, describe_error


def raised(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # the error under test
        return e
    raise AssertionError("no error")


@pytest.fixture
def truncated_weights(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({"w": torch.ones(4, 4)}, str(folder / "model.safetensors"))
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:6])
    return path


def test_damaged_safetensors_names_the_file(truncated_weights):
    error = raised(load_file, str(truncated_weights))
    assert isinstance(error, SafetensorError)
    expected = (f"{truncated_weights}: not a readable safetensors file (Error while deserializing header: "
                "header too small); the file is damaged or incomplete: save or copy it again")
    assert describe_error(error, source=truncated_weights.parent) == expected  # the folder's one weights file
    assert describe_error(error, source=truncated_weights) == expected


def test_a_library_message_wrapping_a_damaged_file_names_it_by_full_path(truncated_weights):
    cause = raised(load_file, str(truncated_weights))
    try:
        raise ValueError(f"model.safetensors: not a readable safetensors file ({cause})") from cause
    except ValueError as wrapper:
        error = wrapper
    assert describe_error(error, source=truncated_weights.parent) == (
        f"{truncated_weights}: not a readable safetensors file (Error while deserializing header: header too "
        "small); the file is damaged or incomplete: save or copy it again")


def test_bad_zip(tmp_path):
    path = tmp_path / "images.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    error = raised(zipfile.ZipFile, path)
    with pytest.raises(zipfile.BadZipFile) as caught, about(path):
        raise error
    assert describe_error(caught.value) == (
        f"{path}: not a valid zip archive (File is not a zip file); the file is damaged or incomplete: write it "
        "again (numpy.savez for .npz, zip for a checkpoint folder)")


def test_invalid_duckdb_file(tmp_path):
    path = tmp_path / "npeff.duckdb"
    path.write_text("not a database")
    error = raised(duckdb.connect, str(path))
    assert describe_error(error) == (
        f"{path}: not a valid DuckDB database file; rename it to keep it and start a new workspace, or choose "
        "another workspace folder")


def test_os_errors_name_their_file_and_the_fix(tmp_path):
    missing = tmp_path / "missing.csv"
    assert describe_error(raised(open, missing)) == f"{missing}: no such file or directory; check the path"
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "a.npy"))
    assert describe_error(full) == (f"{tmp_path / 'a.npy'}: no space left on device; free some disk space or use "
                                    "another workspace folder")


def test_floating_point_error_gets_the_source_it_happened_in():
    with pytest.raises(FloatingPointError) as caught, about("/models/cnn"):
        raise FloatingPointError("per-example Fisher of example 3 has non-finite values (logits or gradients); "
                                 "check the input or the model weights")
    assert describe_error(caught.value) == (
        "/models/cnn: per-example Fisher of example 3 has non-finite values (logits or gradients); check the input "
        "or the model weights")


def test_innermost_source_wins_over_outer_and_argument():
    with pytest.raises(FloatingPointError) as caught, about("outer"), about("inner"):
        raise FloatingPointError("non-finite")
    assert describe_error(caught.value, source="argument") == "inner: non-finite"
    assert describe_error(FloatingPointError("non-finite"), source="argument") == "argument: non-finite"


def test_library_messages_are_kept_with_the_full_path(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert describe_error(ValueError("config.json: not valid JSON; re-save it"), source=tmp_path) == (
        f"{tmp_path / 'config.json'}: not valid JSON; re-save it")
    assert describe_error(ValueError("data.csv: the file is empty"), source="/in/data.csv") == (
        "/in/data.csv: the file is empty")
    assert describe_error(ValueError("other.csv: the file is empty"), source="/in/model") == (
        "other.csv: the file is empty")


def test_key_error_is_not_quoted_and_multi_line_messages_keep_their_first_line():
    assert describe_error(KeyError("no run 'x' in workspace /ws")) == "no run 'x' in workspace /ws"
    assert describe_error(ValueError("Unknown model type.\n\nMore help below."), source="/m") == (
        "/m: Unknown model type.")


def test_out_of_memory_and_unexpected_errors():
    assert describe_error(MemoryError(), source="PEF run abc") == (
        "PEF run abc: out of memory; keep fewer values per example, use a smaller batch size or fewer examples")
    assert describe_error(TypeError("bad operand"), source="/m") == (
        "/m: TypeError: bad operand (unexpected: please report it with the traceback)")


def test_interrupt():
    assert describe_error(KeyboardInterrupt()) == "interrupted"
