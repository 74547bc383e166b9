"""`torchrun ... analysis.cli pefs` shares the chunks out over the ranks: two gloo ranks store the arrays one process
stores, and a rank that fails on its own chunk fails the run on every rank instead of leaving one waiting."""
import re
import shutil

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from analysis.cli import main
from analysis.runs import array_fields
from analysis.store import Workspace
from analysis.variants import get_variant
from tests.conftest import TINY_LABELS
from tests.integration.test_cli_torchrun import torchrun_cli

# 8 chunks of the image demo's 500 digits: rank 0 computes chunks 0, 2, 4, 6 and rank 1 chunks 1, 3, 5, 7
IMAGE_PEFS = ["pefs", "--demo", "image", "--values-per-example", "200", "--chunk-size", "64"]


def stored_arrays(root, run_id: str) -> dict[str, np.ndarray]:
    return {path.stem: np.load(path) for path in sorted((root / "arrays" / run_id).glob("*.npy"))}


def test_two_ranks_store_the_arrays_of_one_process(demo_workspace, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        shutil.copytree(demo_workspace / "demos" / "image-demo", root / "demos" / "image-demo")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs (OMP_NUM_THREADS=1)
    try:
        assert main(["--workspace", str(one), *IMAGE_PEFS]) == 0
    finally:
        torch.set_num_threads(threads)
    alone = re.search(r"^PEF run (\w+):", capsys.readouterr().out, re.M).group(1)

    done = torchrun_cli(two, *IMAGE_PEFS)
    assert done.returncode == 0, done.stderr[-4000:]
    printed = re.findall(r"^PEF run (\w+): 500 examples", done.stdout, re.M)
    assert len(printed) == 1, done.stdout  # rank 0 reports, once
    ws = Workspace(two)
    assert ws.get_run(printed[0]).status == "complete"
    assert ws.chunk_ranges(printed[0]) == {c: (64 * c, min(64, 500 - 64 * c)) for c in range(8)}
    expected, shared = stored_arrays(one, alone), stored_arrays(two, printed[0])
    assert sorted(shared) == sorted(expected) == sorted(array_fields(get_variant("lrm").pefs))
    for name, array in expected.items():
        assert shared[name].dtype == array.dtype and np.array_equal(shared[name], array), name


def poisoned_bert(source, folder, position: int):
    """A copy of the tiny BERT whose position embedding `position` is NaN: exactly the texts that long get a
    non-finite Fisher (batched one by one: padding would carry it into the shorter texts of their batch)."""
    shutil.copytree(source, folder)
    state = load_file(str(folder / "model.safetensors"))
    state["bert.embeddings.position_embeddings.weight"][position] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_a_rank_failing_on_its_chunk_fails_the_run_on_every_rank(tiny_bert_dir, tmp_path):
    model = poisoned_bert(tiny_bert_dir, tmp_path / "model", 12)
    words = ["good", "bad", "film", "plot", "very", "not", "fine", "great", "acting", "story"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 6)))) for _ in range(160)]  # <= 7 tokens
    texts[150] = " ".join(words + words[:2])  # 14 tokens: chunk 3 (rows 120-159), rank 1's, past the estimate's rows
    data = tmp_path / "reviews.csv"
    pd.DataFrame({"text": texts, "label": [TINY_LABELS[i % 3] for i in range(160)]}).to_csv(data, index=False)

    done = torchrun_cli(tmp_path / "ws", "pefs", "--model", str(model), "--data", str(data), "--label-column",
                        "label", "--values-per-example", "50", "--chunk-size", "40", "--batch-size", "1")
    assert done.returncode != 0
    exits = dict(re.findall(r"rank\s*: (\d) \(local_rank: \d\)\n\s*exitcode\s*: (-?\d+)", done.stderr))
    assert sorted(exits) == ["0", "1"] and "0" not in exits.values(), done.stderr[-4000:]
    row = "the per-example Fisher of row 150 has non-finite values"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all(row in line for line in errors), done.stderr[-4000:]
    runs = Workspace(tmp_path / "ws").runs(kind="pefs")
    assert runs["status"].tolist() == ["failed"]
    assert "rank 1 of 2 failed" in runs["error"][0] and row in runs["error"][0]
    # both ranks recorded the chunks they computed before rank 1 reached row 150
    assert sorted(Workspace(tmp_path / "ws").finished_chunks(runs["id"][0])) == [0, 1, 2]
