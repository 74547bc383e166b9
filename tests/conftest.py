"""Shared fixtures: tiny checkpoints and a demo workspace built in the test session (no downloads)."""
import fcntl
import os
from pathlib import Path

import pytest
import torch

from analysis.demos import build_demo, load_demo
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace

TINY_LABELS = ["neg", "neu", "pos"]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "plot", "very", "not", "fine",
              "the", "a", "is", "was", "boring", "great", "acting", "story"]


def build_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT sequence classifier (3 classes) with a word-level tokenizer, saved as safetensors."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=3,
                        id2label=dict(enumerate(TINY_LABELS)), label2id={n: i for i, n in enumerate(TINY_LABELS)})
    BertForSequenceClassification(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """Folder of a tiny random BERT classifier: config.json, model.safetensors, tokenizer files."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def shared_temp(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this run sees (the run's base temp; the worker's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> Path:
    """Both demos built once per test run (text ~2 min), under a file lock so that xdist workers share one build.
    NPEFF_TEST_WORKSPACE reuses one across local runs."""
    root = Path(os.environ.get("NPEFF_TEST_WORKSPACE") or shared_temp(tmp_path_factory) / "workspace")
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.build-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        for kind in ("image", "text"):
            build_demo(kind, root)
    return root


@pytest.fixture
def app_env(demo_workspace, monkeypatch) -> Path:
    """The app under test opens this workspace."""
    monkeypatch.setenv("NPEFF_WORKSPACE", str(demo_workspace))
    return demo_workspace


@pytest.fixture(scope="session")
def image_run(demo_workspace) -> str:
    """A real LRM-NPEFF run of the image demo (PEFs shared with the Compute page test; seconds)."""
    model, dataset, _ = load_demo("image", demo_workspace)
    ws = Workspace(demo_workspace)
    pefs = pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=200)
    run = fit_run(ws, pefs, n_components=6, n_iters=40)
    ws.close()
    return run.id
