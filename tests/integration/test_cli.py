"""The command line: one-line errors naming the file (tracebacks only with --debug), the estimate check
that refuses what does not fit unless --yes, and causal LMs read through --adapter and --option."""
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from analysis import cli
from analysis.adapters import ADAPTERS
from analysis.cli import main
from analysis.estimates import TIMINGS, Resources
from analysis.store import Workspace
from tests.tiny_models import GPT2_WORDS, build_tiny_gpt2, reviews_csv

PLENTY = Resources(free_disk_bytes=2**40, available_memory_bytes=2**40)


@pytest.fixture
def image_ws(image_workspace, tmp_path):
    """A fresh workspace holding only a copy of the image demo."""
    ws = tmp_path / "ws"
    shutil.copytree(image_workspace / "demos" / "image-demo", ws / "demos" / "image-demo")
    return ws


@pytest.fixture
def digits(tmp_path):
    path = tmp_path / "digits.npz"
    np.savez(path, images=np.random.default_rng(0).random((6, 8, 8)).astype(np.float32), labels=np.arange(6))
    return path


def image_model_copy(image_ws, tmp_path, name: str):
    folder = tmp_path / name
    shutil.copytree(image_ws / "demos" / "image-demo", folder)
    return folder


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("checkpoint", ["image", "text"])
def test_damaged_safetensors(checkpoint, image_ws, tiny_bert_dir, digits, tmp_path, capsys):
    folder = (image_model_copy(image_ws, tmp_path, "damaged") if checkpoint == "image"
              else shutil.copytree(tiny_bert_dir, tmp_path / "damaged"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    data = digits if checkpoint == "image" else tmp_path / "reviews.csv"
    assert main(["--workspace", str(image_ws), "pefs", "--model", str(folder), "--data", str(data)]) == 2
    assert one_error_line(capsys) == (
        f"error: {weights}: not a readable safetensors file (Error while deserializing header: invalid header "
        "length); the file is damaged or incomplete: save or copy it again")


def test_missing_data_file(image_ws, tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    model = image_ws / "demos" / "image-demo"
    assert main(["--workspace", str(image_ws), "pefs", "--model", str(model), "--data", str(missing)]) == 2
    assert one_error_line(capsys) == f"error: {missing}: no such file or directory; check the path"


def test_bad_zip(image_ws, digits, tmp_path, capsys):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(digits.read_bytes()[:200])
    model = image_ws / "demos" / "image-demo"
    assert main(["--workspace", str(image_ws), "pefs", "--model", str(model), "--data", str(truncated)]) == 2
    assert one_error_line(capsys) == (
        f"error: {truncated}: not a valid zip archive (File is not a zip file); the file is damaged or incomplete: "
        "write it again (numpy.savez for .npz, zip for a checkpoint folder)")


def test_invalid_workspace_database(tmp_path, capsys):
    database = tmp_path / "ws" / "npeff.duckdb"
    database.parent.mkdir()
    database.write_text("not a database")
    assert main(["--workspace", str(database.parent), "runs"]) == 2
    assert one_error_line(capsys) == (
        f'error: {database}: not a readable workspace database (IO Error: The file "{database}" exists, but it is '
        "not a valid DuckDB database file!); move the file away to start an empty workspace here, or choose another "
        "workspace folder")


@pytest.fixture
def nan_model(image_ws, tmp_path):
    folder = image_model_copy(image_ws, tmp_path, "nan-model")
    state = load_file(str(folder / "model.safetensors"))
    state["conv1.bias"] = torch.full_like(state["conv1.bias"], float("nan"))
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_nan_weight(image_ws, nan_model, digits, capsys):
    assert main(["--workspace", str(image_ws), "pefs", "--model", str(nan_model), "--data", str(digits)]) == 2
    assert one_error_line(capsys) == (
        f"error: {nan_model}: per-example Fisher of example 0 has non-finite values (logits or gradients); check the "
        "input or the model weights")


def test_debug_prints_the_traceback_instead(image_ws, nan_model, digits, capsys):
    assert main(["--debug", "--workspace", str(image_ws), "pefs", "--model", str(nan_model), "--data",
                 str(digits)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.rstrip().endswith("Error: per-example Fisher of example 0 has non-finite values (logits or "
                                 "gradients); check the input or the model weights")
    assert "error: " not in err


def test_unknown_run_is_not_quoted(image_ws, capsys):
    assert main(["--workspace", str(image_ws), "fit", "--pefs", "nope", "--components", "2"]) == 2
    assert one_error_line(capsys) == f"error: no run 'nope' in workspace {image_ws}"


def test_interrupt_exits_130(image_ws, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_runs", interrupted)
    assert main(["--workspace", str(image_ws), "runs"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def pef_run_id(out: str) -> str:
    return re.search(r"^PEF run (\w+):", out, re.M).group(1)


def test_over_the_estimate_is_refused_without_yes(image_ws, capsys):
    """Default values per example: min(2048, 3,818 parameters × 10 classes) = 2048, 2 × 12.3 MB while computing."""
    tiny = Resources(free_disk_bytes=2**20, available_memory_bytes=2**40)
    command = ["--workspace", str(image_ws), "pefs", "--demo", "image"]
    assert main(command, resources=tiny) == 2
    out, err = capsys.readouterr()
    assert out.startswith("estimate: PEFs 11.8 MiB on disk, up to 23.5 MiB while computing (1.0 MiB free); "
                          "peak memory 23.5 MiB (1,024.0 GiB available); time ")
    assert err == (f"error: {image_ws}: the PEFs need about 23.5 MiB of disk while computing, 1.0 MiB are free; "
                   "keep fewer values (--values-per-example), use fewer examples or another workspace, or pass "
                   "--yes to start anyway\n")
    assert Workspace(image_ws).runs(kind="pefs").empty  # nothing started
    assert len(json.loads((image_ws / TIMINGS).read_text())) == 1  # the measured time per example is kept

    assert main(command + ["--yes"], resources=tiny) == 0
    run = Workspace(image_ws).get_run(pef_run_id(capsys.readouterr().out))
    assert run.status == "complete" and run.params["n_values_per_example"] == 2048


def test_memory_over_the_estimate_is_refused(image_ws, capsys):
    low_memory = Resources(free_disk_bytes=2**40, available_memory_bytes=2**20)
    assert main(["--workspace", str(image_ws), "pefs", "--demo", "image", "--values-per-example", "200"],
                resources=low_memory) == 2
    assert one_error_line(capsys) == (
        f"error: {image_ws}: the computation needs about 7.0 MiB of memory, 1.0 MiB are available; keep fewer "
        "values (--values-per-example), use fewer examples or another workspace, or pass --yes to start anyway")


def test_zero_keeps_all_values(image_ws, capsys):
    """3,818 parameters × 10 classes = 38,180 values per example."""
    assert main(["--workspace", str(image_ws), "pefs", "--demo", "image", "--values-per-example", "0"],
                resources=Resources(free_disk_bytes=2**20, available_memory_bytes=2**40)) == 2
    assert capsys.readouterr().out.startswith("estimate: PEFs 218.5 MiB on disk, up to 437.0 MiB while computing")


def test_a_stored_run_is_reused_without_an_estimate(image_ws, capsys):
    command = ["--workspace", str(image_ws), "pefs", "--demo", "image", "--values-per-example", "200"]
    assert main(command, resources=PLENTY) == 0
    first = capsys.readouterr().out
    assert first.startswith("estimate: PEFs 1.2 MiB on disk")
    assert main(command, resources=Resources(free_disk_bytes=0, available_memory_bytes=0)) == 0
    second = capsys.readouterr().out
    assert not second.startswith("estimate") and pef_run_id(second) == pef_run_id(first)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A tiny GPT-2 causal LM folder and reviews to read it with (sentiment good/bad, answer words)."""
    folder = tmp_path_factory.mktemp("gpt2")
    return build_tiny_gpt2(folder / "tiny-gpt2"), reviews_csv(folder / "reviews.csv", n=16)


def gpt2_pefs(ws, tiny_gpt2, *extra: str) -> list[str]:
    folder, csv = tiny_gpt2
    return ["--workspace", str(ws), "pefs", "--model", str(folder), "--data", str(csv), "--scope", "last:1",
            "--values-per-example", "200", *extra]


def test_a_causal_lm_classifier_computes_headless_with_template_and_label_words(tiny_gpt2, tmp_path, capsys):
    command = gpt2_pefs(tmp_path / "ws", tiny_gpt2, "--label-column", "sentiment", "--adapter", "causal-lm-classifier",
                        "--option", "template={text} Answer:", "--option", "verbalizer=good, bad")
    assert main(command, resources=PLENTY) == 0
    ws = Workspace(tmp_path / "ws")
    run = ws.get_run(pef_run_id(capsys.readouterr().out))
    assert run.status == "complete" and run.summary["n_examples"] == 16
    adapter = run.params["adapter"]
    assert (adapter["adapter"], adapter["template"], adapter["verbalizer"]) == (
        "causal-lm-classifier", "{text} Answer:", ["good", "bad"])
    assert ws.models()["label_names"].map(json.loads).tolist() == [["good", "bad"]]
    (job,) = cli.list_jobs(ws)
    assert job.spec["model"]["adapter"] == "causal-lm-classifier"
    assert dict(job.spec["model"]["options"]) == {"template": "{text} Answer:", "verbalizer": "good, bad"}
    assert main(["--workspace", str(tmp_path / "ws"), "fit", "--pefs", run.id, "--components", "2", "--iters", "5"]) == 0


def test_a_next_token_model_takes_its_top_k_from_the_option(tiny_gpt2, tmp_path, capsys):
    command = gpt2_pefs(tmp_path / "ws", tiny_gpt2, "--label-column", "answer", "--option", "top_k_classes=3")
    assert main(command, resources=PLENTY) == 0
    ws = Workspace(tmp_path / "ws")
    run = ws.get_run(pef_run_id(capsys.readouterr().out))
    assert run.params["top_k_classes"] == 3  # the adapter's option, not all 11 tokens of the vocabulary
    assert ws.load_array(run.id, "class_ids").shape == (16, 3)
    answers = pd.read_csv(tiny_gpt2[1])["answer"]
    assert ws.load_array(run.id, "labels").tolist() == [GPT2_WORDS.index(w) for w in answers]  # answers as tokens


@pytest.mark.parametrize("extra, message", [
    (["--option", "top_k=3"], "adapter 'causal-lm-next-token' takes options ['top_k_classes'], got 'top_k'"),
    (["--adapter", "causal-lm-next-token", "--option", "top_k_classes=many"],
     "option 'top_k_classes' must be an integer, got 'many'"),
    (["--adapter", "causal-lm-classifier", "--option", "verbalizer"],
     "option must be KEY=VALUE, got 'verbalizer'; adapter 'causal-lm-classifier' takes ['template', 'verbalizer']"),
    (["--adapter", "sequence-classification"],
     "adapter 'sequence-classification' does not read a checkpoint saved as GPT2LMHeadModel; use one of "
     "['causal-lm-next-token', 'causal-lm-classifier']"),
    (["--adapter", "gpt"], f"adapter must be one of {sorted(ADAPTERS)}, got 'gpt'"),
])
def test_bad_adapters_and_options_give_one_line_errors(tiny_gpt2, tmp_path, capsys, extra, message):
    assert main(gpt2_pefs(tmp_path / "ws", tiny_gpt2, "--label-column", "answer", *extra), resources=PLENTY) == 2
    assert one_error_line(capsys) == f"error: {tiny_gpt2[0]}: {message}"


def test_options_of_a_model_without_adapter_choice_are_refused(image_ws, capsys):
    assert main(["--workspace", str(image_ws), "pefs", "--demo", "image", "--option", "top_k_classes=3"]) == 2
    assert one_error_line(capsys) == (
        "error: demo:image: options ['top_k_classes=3'] apply to transformers checkpoints read through an adapter; "
        "this model is read as its files declare and takes none")
