"""Datasets: read CSV/JSONL/Parquet (DuckDB readers) or .npz images, validate, hash, and batch."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import numpy as np
import pandas as pd
import torch

from analysis.models import resolve_device

# DuckDB table functions by suffix; "json" is Python's json module (see _read_json)
TABLE_READERS = {".csv": "read_csv_auto", ".gz": "read_csv_auto", ".jsonl": "json", ".json": "json",
                 ".ndjson": "json", ".parquet": "read_parquet"}
PAIR_SEPARATOR = " ‖ "  # how a sentence pair is shown in tables


@dataclass(frozen=True)
class TextDataset:
    """Texts (one string, or a pair for two text columns) with integer labels (-1 = unknown)."""

    texts: list[tuple[str, ...]]  # [n] of 1- or 2-tuples
    labels: np.ndarray  # [n] int64
    label_names: list[str]
    name: str
    source: str
    content_hash: str = field(default="")
    input_kind: str = "text"

    def __len__(self) -> int:
        return len(self.texts)

    def display_texts(self) -> list[str]:
        return [PAIR_SEPARATOR.join(t) for t in self.texts]


@dataclass(frozen=True)
class ImageDataset:
    """Grey images in [0, 1] with integer labels (-1 = unknown)."""

    images: np.ndarray  # [n, H, W] float32
    labels: np.ndarray  # [n] int64
    label_names: list[str]
    name: str
    source: str
    content_hash: str = field(default="")
    input_kind: str = "image"

    def __len__(self) -> int:
        return len(self.images)


def dataset_slice(dataset: TextDataset | ImageDataset, start: int, stop: int) -> TextDataset | ImageDataset:
    """Examples [start, stop) of a dataset (chunks of a streamed computation); hash left to the parent."""
    if isinstance(dataset, TextDataset):
        return replace(dataset, texts=dataset.texts[start:stop], labels=dataset.labels[start:stop])
    return replace(dataset, images=dataset.images[start:stop], labels=dataset.labels[start:stop])


def dataset_subset(dataset: TextDataset | ImageDataset, indices: Sequence[int] | np.ndarray) -> TextDataset | ImageDataset:
    """The examples at `indices`, in that order (hash left to the parent, as in dataset_slice)."""
    idx = np.asarray(indices, dtype=np.int64)
    if isinstance(dataset, TextDataset):
        return replace(dataset, texts=[dataset.texts[i] for i in idx], labels=dataset.labels[idx])
    return replace(dataset, images=dataset.images[idx], labels=dataset.labels[idx])


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def _check_utf8(path: Path) -> None:
    """Name the line of the first byte that is not UTF-8 (DuckDB's own error is cryptic)."""
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path.name}: line {line_no} is not valid UTF-8 (byte {line[e.start]:#04x}); "
                                 "re-save the file as UTF-8") from None


def _read_json(path: Path) -> pd.DataFrame:
    """JSON lines (or one JSON array) of objects, parsed with Python's json so each value keeps its type.

    DuckDB's read_json_auto types a column holding both strings and numbers as JSON, and its values come
    back JSON-quoted ('"fresh"').
    """
    text = path.read_text(encoding="utf-8-sig")
    is_array = text.lstrip().startswith("[")
    chunks = [(1, text)] if is_array else [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    records: list = []
    for first_line, chunk in chunks:
        try:
            value = json.loads(chunk)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path.name}: line {first_line + e.lineno - 1} is not valid JSON ({e.msg}); "
                             "write one JSON object per line") from None
        records.extend(value if is_array and isinstance(value, list) else [value])
    if not records:
        raise ValueError(f"{path.name}: holds no JSON records; write one JSON object per line")
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"{path.name}: record {bad + 1} is {_kind(records[bad])}, not an object; "
                         "write one JSON object per line, with the column names as keys")
    return pd.DataFrame(records)


def read_table(path: Path | str) -> pd.DataFrame:
    """A CSV (optionally .gz), JSONL or Parquet file as a DataFrame, with clear errors for bad files.

    Cells keep their types (numbers, lists, structs stay what they are); text_dataset checks them.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    reader = TABLE_READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path.name}: unsupported file type '{path.suffix}'; use .csv, .jsonl or .parquet")
    if path.stat().st_size == 0:
        raise ValueError(f"{path.name}: the file is empty")
    if reader != "read_parquet" and path.suffix != ".gz":
        _check_utf8(path)
    if reader == "json":
        return _read_json(path)
    try:
        with duckdb.connect() as con:
            frame = con.execute(f"SELECT * FROM {reader}(?)", [str(path)]).df()
    except duckdb.Error as e:
        raise ValueError(f"{path.name}: could not be read as {path.suffix.lstrip('.')} ({str(e).splitlines()[0]})") from e
    if frame.empty:
        raise ValueError(f"{path.name}: the file has a header but no rows")
    return frame


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: column(s) {missing} not found; the columns are {list(frame.columns)}")


def _kind(value) -> str:
    """A cell's type as messages name it."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if isinstance(value, (int, np.integer)):
        return "an integer"
    if isinstance(value, (float, np.floating)):
        return "a number"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "a list"
    if isinstance(value, dict):
        return "a struct"
    return f"a {type(value).__name__}"


def _shown(value) -> str:
    """A cell for a message: lists as lists, cut to 60 characters."""
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_text(values: pd.Series, source: str, column: str) -> None:
    """Refuse a text column with any cell that is not a string.

    Numbers (a numeric column) are almost always the wrong column chosen; lists and structs (JSON, Parquet)
    would reach the tokenizer as their Python repr ("['a' 'b']").
    """
    for row, value in values.items():
        if not isinstance(value, str):
            kind = _kind(value)
            fix = ("a numeric column is not the text: choose the column that holds the sentences, or store the "
                   "values as strings if they are the text" if kind in ("a boolean", "an integer", "a number")
                   else "choose a column of strings, or join each row's items into one string first")
            raise ValueError(f"{source}: text column '{column}' ({values.dtype}) holds {kind} in row {row}: "
                             f"{_shown(value)}; {fix}")


def _class_index(value, lookup: dict[str, int], n_classes: int) -> int:
    """One label as a class index: an integer index in [0, n_classes), else a class name in any case; -1 if neither."""
    if isinstance(value, (int, np.integer, np.bool_)):
        return int(value) if 0 <= value < n_classes else -1
    text = str(value)
    return lookup.get(text, lookup.get(text.lower(), -1))


def encode_labels(values: pd.Series, label_names: list[str], source: str, column: str) -> np.ndarray:
    """Map a label column (class indices, class names, or both mixed as JSON allows) to indices in [0, C)."""
    if values.isna().any():
        rows = values.index[values.isna()].tolist()[:5]
        raise ValueError(f"{source}: column '{column}' is empty in rows {rows}; every example needs a label")
    for row, value in values.items():
        if not isinstance(value, (str, int, float, np.integer, np.floating, np.bool_)):
            raise ValueError(f"{source}: label column '{column}' ({values.dtype}) holds {_kind(value)} in row {row}: "
                             f"{_shown(value)}; give one class name or index per row")
    lookup = {name: i for i, name in enumerate(label_names)}
    lookup.update({name.lower(): i for i, name in enumerate(label_names)})
    labels = np.array([_class_index(v, lookup, len(label_names)) for v in values.tolist()], dtype=np.int64)
    bad = sorted(set(values[labels < 0].tolist()), key=str)
    if bad:
        raise ValueError(f"{source}: labels {bad[:5]} in column '{column}' are outside the model's classes "
                         f"{label_names} (give class names or indices 0..{len(label_names) - 1})")
    return labels


def text_dataset(frame: pd.DataFrame, *, text_columns: Sequence[str], label_column: str | None,
                 label_names: list[str], name: str, source: str) -> TextDataset:
    """Validate columns and labels of a table and build a TextDataset (1 text column, or 2 for pairs).

    Text columns must hold strings in every row (see _check_text).
    """
    if not 1 <= len(text_columns) <= 2:
        raise ValueError(f"{source}: choose one text column, or two for sentence pairs; got {list(text_columns)}")
    _check_columns(frame, [*text_columns, *([label_column] if label_column else [])], source)
    for col in text_columns:
        empty = frame[col].isna()
        if empty.any():
            raise ValueError(f"{source}: text column '{col}' is empty in rows {frame.index[empty].tolist()[:5]}; "
                             "drop those rows or fill them")
        _check_text(frame[col], source, col)
    texts = list(zip(*(frame[c].tolist() for c in text_columns)))
    labels = (encode_labels(frame[label_column], label_names, source, label_column) if label_column
              else np.full(len(frame), -1, np.int64))
    digest = _hash(json.dumps(texts).encode(), labels.tobytes(), json.dumps(label_names).encode())
    return TextDataset(texts=texts, labels=labels, label_names=list(label_names), name=name, source=source,
                       content_hash=digest)


def load_text_file(path: Path | str, *, text_columns: Sequence[str], label_column: str | None,
                   label_names: list[str]) -> TextDataset:
    path = Path(path)
    return text_dataset(read_table(path), text_columns=text_columns, label_column=label_column,
                        label_names=label_names, name=path.stem, source=path.name)


def image_dataset(images: np.ndarray, labels: np.ndarray, *, label_names: list[str], name: str,
                  source: str) -> ImageDataset:
    """Validate an image array [n, H, W] (values scaled to [0, 1]) and labels [n]."""
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"{source}: images must have shape [n, H, W] with n >= 1, got {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"{source}: labels must have shape [{len(images)}], got {labels.shape}")
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(f"{source}: pixel values must be finite and in [0, 1]; divide by the maximum first")
    bad = sorted(set(labels[(labels < -1) | (labels >= len(label_names))].tolist()))
    if bad:
        raise ValueError(f"{source}: labels {bad[:5]} are outside the model's classes 0..{len(label_names) - 1}")
    return ImageDataset(images=images, labels=labels, label_names=list(label_names), name=name, source=source,
                        content_hash=_hash(images.tobytes(), labels.tobytes(), json.dumps(label_names).encode()))


def load_image_file(path: Path | str, *, label_names: list[str]) -> ImageDataset:
    """An .npz with arrays `images` [n, H, W] and `labels` [n], read without unpickling."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path.name}: image datasets are .npz files with 'images' and 'labels' arrays")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data or "labels" not in data:
                raise ValueError(f"{path.name}: needs arrays 'images' and 'labels', found {list(data.keys())}")
            return image_dataset(data["images"], data["labels"], label_names=label_names, name=path.stem,
                                 source=path.name)
    except (ValueError, OSError) as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise ValueError(f"{path.name}: holds pickled objects, which are never loaded; save plain arrays") from e
        raise


def text_batches(dataset: TextDataset, tokenizer, *, batch_size: int, max_length: int) -> Iterator[dict]:
    """Tokenized batches (padded to the longest in the batch) with a `labels` key."""
    for start in range(0, len(dataset), batch_size):
        chunk = dataset.texts[start:start + batch_size]
        columns = list(zip(*chunk))
        enc = tokenizer(*[list(c) for c in columns], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        batch = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        batch["labels"] = torch.as_tensor(dataset.labels[start:start + batch_size])
        yield batch


def image_batches(dataset: ImageDataset, *, batch_size: int) -> Iterator[dict]:
    for start in range(0, len(dataset), batch_size):
        yield {"pixels": torch.as_tensor(dataset.images[start:start + batch_size]),
               "labels": torch.as_tensor(dataset.labels[start:start + batch_size])}


def length_order(model, dataset: TextDataset | ImageDataset) -> np.ndarray:
    """A permutation [n] that sorts texts by token count (stable), so batches of neighbours pad little.

    Images (all one size) keep their order. Per-example results do not depend on the batch, so a caller
    computes on `dataset_subset(dataset, order)` and puts rows back with `np.argsort(order)`.
    """
    if dataset.input_kind != "text" or model.tokenizer is None:
        return np.arange(len(dataset))
    columns = [list(c) for c in zip(*dataset.texts)]
    ids = model.tokenizer(*columns, truncation=True, max_length=model.max_length)["input_ids"]
    return np.argsort([len(i) for i in ids], kind="stable")


def make_batches(model, dataset: TextDataset | ImageDataset, *, batch_size: int = 32) -> Iterator[dict]:
    """Batches a ClassifierModel accepts for this dataset; checks the input kinds match."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if model.input_kind != dataset.input_kind:
        raise ValueError(f"model '{model.name}' takes {model.input_kind} inputs but dataset '{dataset.name}' "
                         f"holds {dataset.input_kind}; pick a matching pair")
    if dataset.input_kind == "text":
        if model.tokenizer is None:
            raise ValueError(f"model '{model.name}' has no tokenizer; save one beside its weights")
        return text_batches(dataset, model.tokenizer, batch_size=batch_size, max_length=model.max_length)
    return image_batches(dataset, batch_size=batch_size)


@torch.no_grad()
def predict(model, dataset: TextDataset | ImageDataset, *, batch_size: int = 64, device: str | None = None,
            progress=None) -> np.ndarray:
    """Logits [n, C] of a model on a dataset, batched, on `device`."""
    device = resolve_device(device)
    model.to(device)
    out, done = [], 0
    for batch in make_batches(model, dataset, batch_size=batch_size):
        out.append(model({k: v.to(device) for k, v in batch.items()}).float().cpu().numpy())
        done += len(out[-1])
        if progress:
            progress(done, len(dataset))
    return np.concatenate(out)
