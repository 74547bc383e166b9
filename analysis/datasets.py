"""Datasets: read CSV/JSONL/Parquet (DuckDB readers), .npz images or folders of PNG/JPEG files, validate, hash,
and batch."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Iterator, Mapping, Sequence

import duckdb
import numpy as np
import pandas as pd
import torch

from analysis.devices import resolve_device

# DuckDB table functions by suffix; "json" is Python's json module (see _read_json)
TABLE_READERS = {".csv": "read_csv_auto", ".gz": "read_csv_auto", ".jsonl": "json", ".json": "json",
                 ".ndjson": "json", ".parquet": "read_parquet"}
PAIR_SEPARATOR = " ‖ "  # how a sentence pair is shown in tables
LABEL_COLUMN_NAMES = ("label", "labels", "class", "target")  # a column so named is the label column by default
MAX_MAPPED_LABELS = 50  # distinct label values a mapping to the model's classes may have (more: not class labels)


@dataclass(frozen=True)
class Dataset:
    """Examples with integer labels (-1 = unknown); a subclass holds the inputs (texts or images)."""

    labels: np.ndarray  # [n] int64
    label_names: list[str]
    name: str
    source: str
    content_hash: str = field(default="")
    annotations: dict[str, list[str]] = field(default_factory=dict)  # other columns to browse by, e.g. a rule

    kind: ClassVar[str] = ""  # what the examples are ("text", "image")

    def __len__(self) -> int:
        return len(self.labels)

    def _rows(self, idx: np.ndarray) -> dict:
        """The fields every dataset keeps per example, at `idx`."""
        return {"labels": self.labels[idx], "annotations": {k: [v[i] for i in idx] for k, v in self.annotations.items()}}

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Dataset":
        """The examples at `indices`, in that order (hash left to the parent: chunks of one dataset)."""
        raise NotImplementedError

    def inputs_bytes(self) -> bytes:
        """The examples' inputs as bytes (for a digest when the dataset was built without a content hash)."""
        raise NotImplementedError

    def digest(self) -> str:
        """The content hash, else a hash of the inputs and labels."""
        return self.content_hash or hash_parts(self.inputs_bytes(), np.ascontiguousarray(self.labels).tobytes())


@dataclass(frozen=True)
class TextDataset(Dataset):
    """Texts: one string per example, or a pair for two text columns."""

    texts: list[tuple[str, ...]] = field(default_factory=list)  # [n] of 1- or 2-tuples
    text_columns: tuple[str, ...] = ("text",)  # the column each part of a text came from

    kind: ClassVar[str] = "text"

    def display_texts(self) -> list[str]:
        return [PAIR_SEPARATOR.join(t) for t in self.texts]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "TextDataset":
        idx = np.asarray(indices, dtype=np.int64)
        return replace(self, texts=[self.texts[i] for i in idx], **self._rows(idx))

    def inputs_bytes(self) -> bytes:
        return json.dumps(self.texts).encode()


@dataclass(frozen=True)
class ImageDataset(Dataset):
    """Images in [0, 1]: grey [n, H, W] or with channels [n, C, H, W] (C = 1 or 3)."""

    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.float32))

    kind: ClassVar[str] = "image"

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageDataset":
        idx = np.asarray(indices, dtype=np.int64)
        return replace(self, images=self.images[idx], **self._rows(idx))

    def inputs_bytes(self) -> bytes:
        return np.ascontiguousarray(self.images).tobytes()


def dataset_slice(dataset: Dataset, start: int, stop: int) -> Dataset:
    """Examples [start, stop) of a dataset (chunks of a streamed computation); hash left to the parent."""
    return dataset.subset(np.arange(start, min(stop, len(dataset))))


def dataset_subset(dataset: Dataset, indices: Sequence[int] | np.ndarray) -> Dataset:
    """The examples at `indices`, in that order (hash left to the parent, as in dataset_slice)."""
    return dataset.subset(indices)


def hash_parts(*parts: bytes) -> str:
    """sha256 hex digest of several byte strings in order (the content hashes of datasets)."""
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


def default_label_column(columns: Sequence[str], text_columns: Sequence[str]) -> str | None:
    """The label column to offer first: one named label/labels/class/target (any case), else the first column
    that is not a text column, else None (never a text column: its values are not classes)."""
    rest = [c for c in columns if c not in text_columns]
    named = [c for c in rest if str(c).lower() in LABEL_COLUMN_NAMES]
    return (named or rest or [None])[0]


def column_profile(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per column of a table (column, kind, distinct, example), shown before a dataset is loaded so the
    text and label columns can be told apart."""
    rows = []
    for column in frame.columns:
        values = frame[column].dropna()
        first = values.iloc[0] if len(values) else None
        first = first.item() if isinstance(first, np.generic) else first  # np.float64(1.5) -> 1.5
        rows.append({"column": str(column), "kind": _kind(first) if first is not None else "empty",
                     "distinct": int(values.astype(str).nunique()), "example": _shown(first) if first is not None else ""})
    return pd.DataFrame(rows, columns=["column", "kind", "distinct", "example"])


def label_values(values: pd.Series) -> list[str]:
    """The distinct values of a label column as strings (how a label map names them), sorted."""
    return sorted({str(v) for v in values.dropna().tolist()})


def unmatched_labels(values: pd.Series, label_names: Sequence[str]) -> list[str]:
    """The distinct values of a label column that are neither a class name (any case) nor a class index: the
    ones a label map must name (as strings)."""
    lookup = {name: i for i, name in enumerate(label_names)}
    lookup.update({name.lower(): i for i, name in enumerate(label_names)})
    distinct = {str(v): v for v in values.dropna().tolist()}
    return sorted(text for text, v in distinct.items() if _class_index(v, lookup, len(label_names)) < 0)


def apply_label_map(values: pd.Series, label_map: Mapping[str, str], source: str, column: str) -> pd.Series:
    """Values of a label column renamed by `label_map` (value as a string -> class name); values it does not
    name are kept. A map naming values the column lacks is refused (a stale map from another file)."""
    if not label_map:
        return values
    present = set(label_values(values))
    stale = sorted(set(label_map) - present)
    if stale:
        raise ValueError(f"{source}: the label map names values {stale[:5]} that column '{column}' does not hold "
                         f"(its values are {sorted(present)[:10]}); map the column's own values")
    return values.map(lambda v: v if pd.isna(v) else label_map.get(str(v), v))


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
                         f"{label_names} (give class names or indices 0..{len(label_names) - 1}, or map each value "
                         "to a class: the Load page's label mapping)")
    return labels


def text_dataset(frame: pd.DataFrame, *, text_columns: Sequence[str], label_column: str | None,
                 label_names: list[str], name: str, source: str,
                 annotation_columns: Sequence[str] = (), label_map: Mapping[str, str] | None = None) -> TextDataset:
    """Validate columns and labels of a table and build a TextDataset (1 text column, or 2 for pairs).

    Text columns must hold strings in every row (see _check_text); annotation columns (e.g. a ground-truth
    rule) are kept as strings for browsing and change nothing computed; `label_map` renames label values to
    class names first (apply_label_map).
    """
    if not 1 <= len(text_columns) <= 2:
        raise ValueError(f"{source}: choose one text column, or two for sentence pairs; got {list(text_columns)}")
    _check_columns(frame, [*text_columns, *([label_column] if label_column else []), *annotation_columns], source)
    for col in text_columns:
        empty = frame[col].isna()
        if empty.any():
            raise ValueError(f"{source}: text column '{col}' is empty in rows {frame.index[empty].tolist()[:5]}; "
                             "drop those rows or fill them")
        _check_text(frame[col], source, col)
    texts = list(zip(*(frame[c].tolist() for c in text_columns)))
    labels = (encode_labels(apply_label_map(frame[label_column], label_map or {}, source, label_column),
                            label_names, source, label_column) if label_column
              else np.full(len(frame), -1, np.int64))
    digest = hash_parts(json.dumps(texts).encode(), labels.tobytes(), json.dumps(label_names).encode())
    annotations = {c: frame[c].astype(str).tolist() for c in annotation_columns}
    return TextDataset(texts=texts, labels=labels, label_names=list(label_names), name=name, source=source,
                       content_hash=digest, text_columns=tuple(text_columns), annotations=annotations)


def text_examples(texts: Sequence[str | tuple[str, ...]], label_names: list[str], *, name: str = "typed",
                  text_columns: tuple[str, ...] = ("text",)) -> TextDataset:
    """Texts given in memory (typed on a page, in a test) as an unlabelled dataset."""
    rows = [(t,) if isinstance(t, str) else tuple(t) for t in texts]
    return TextDataset(texts=rows, labels=np.full(len(rows), -1, np.int64), label_names=list(label_names),
                       name=name, source=name, content_hash=hash_parts(json.dumps(rows).encode()),
                       text_columns=text_columns)


def load_text_file(path: Path | str, *, text_columns: Sequence[str], label_column: str | None,
                   label_names: list[str], annotation_columns: Sequence[str] = (),
                   label_map: Mapping[str, str] | None = None) -> TextDataset:
    path = Path(path)
    return text_dataset(read_table(path), text_columns=text_columns, label_column=label_column,
                        label_names=label_names, name=path.stem, source=path.name,
                        annotation_columns=annotation_columns, label_map=label_map)


def image_dataset(images: np.ndarray, labels: np.ndarray, *, label_names: list[str], name: str,
                  source: str) -> ImageDataset:
    """Validate an image array, grey [n, H, W] or [n, C, H, W] with C = 1 or 3 (values in [0, 1]), and labels [n]."""
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[1] in (1, 3))) or len(images) == 0:
        raise ValueError(f"{source}: images must have shape [n, H, W] or [n, C, H, W] with C = 1 or 3 and n >= 1, "
                         f"got {images.shape}; put the channels second (numpy: images.transpose(0, 3, 1, 2))")
    if labels.shape != (len(images),):
        raise ValueError(f"{source}: labels must have shape [{len(images)}], got {labels.shape}")
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(f"{source}: pixel values must be finite and in [0, 1]; divide by the maximum first")
    bad = sorted(set(labels[(labels < -1) | (labels >= len(label_names))].tolist()))
    if bad:
        raise ValueError(f"{source}: labels {bad[:5]} are outside the model's classes 0..{len(label_names) - 1}")
    return ImageDataset(images=images, labels=labels, label_names=list(label_names), name=name, source=source,
                        content_hash=hash_parts(images.tobytes(), labels.tobytes(), json.dumps(label_names).encode()))


def image_examples(images: np.ndarray, label_names: list[str], *, name: str = "uploaded") -> ImageDataset:
    """Images given in memory ([n, H, W] or [n, C, H, W] in [0, 1]) as an unlabelled dataset."""
    images = np.asarray(images, dtype=np.float32)
    return image_dataset(images, np.full(len(images), -1, np.int64), label_names=label_names, name=name, source=name)


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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_FOLDER_IMAGES = 20_000  # images one folder dataset may hold
MAX_IMAGE_PIXELS = 4096 * 4096  # pixels of one image file (read from its header before decoding)
MAX_FOLDER_BYTES = 2 * 1024 ** 3  # the dataset's float32 array after resizing
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # Pillow modes read as one channel


def image_folder_classes(folder: Path | str) -> list[str]:
    """The class subfolder names of an image folder dataset (hidden entries skipped), sorted."""
    return sorted(e.name for e in Path(folder).iterdir() if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path, label_names: list[str],
                 label_map: Mapping[str, str] | None = None) -> list[tuple[Path, int]]:
    """(file, class index) of every image in `<folder>/<class>/`, sorted by class folder then file name.

    Hidden entries (".DS_Store") are skipped; links, files outside a class folder, other file types and
    class folders that are not the model's classes (after renaming by `label_map`) are refused.
    """
    lookup = {name: i for i, name in enumerate(label_names)}
    lookup.update({name.lower(): i for i, name in enumerate(label_names)})
    label_map = label_map or {}
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            raise ValueError(f"{folder.name}/{entry.name}: is a link; image folders hold plain folders and files only")
        if not entry.is_dir():
            raise ValueError(f"{folder.name}/{entry.name}: is not a class folder; put each image in the subfolder "
                             f"of its class ({label_names})")
        name = label_map.get(entry.name, entry.name)
        label = lookup.get(name, lookup.get(name.lower()))
        if label is None:
            raise ValueError(f"{folder.name}: subfolder '{entry.name}' is not one of the model's classes "
                             f"{label_names}; name each subfolder after a class")
        for file in sorted(entry.iterdir()):
            where = f"{folder.name}/{entry.name}/{file.name}"
            if file.name.startswith("."):
                continue
            if file.is_symlink() or not file.is_file():
                raise ValueError(f"{where}: is not a plain file; a class folder holds only .png, .jpg and .jpeg files")
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{where}: not a PNG or JPEG file; a class folder holds only .png, .jpg and .jpeg "
                                 "files")
            found.append((file, label))
            if len(found) > MAX_FOLDER_IMAGES:
                raise ValueError(f"{folder.name}: holds more than {MAX_FOLDER_IMAGES} images; use a subset")
    if not found:
        raise ValueError(f"{folder.name}: holds no .png, .jpg or .jpeg files in class subfolders "
                         f"(<folder>/<class>/<image>.png, classes {label_names})")
    return found


def _open_image(path: Path, where: str):
    """A Pillow image of a PNG or JPEG file, its size checked from the header before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path, formats=("PNG", "JPEG"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{where}: could not be read as a PNG or JPEG image ({e}); re-save it as PNG") from None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{where}: has {image.width}x{image.height} pixels, more than {MAX_IMAGE_PIXELS}; "
                         "shrink it first")
    return image


def load_image_folder_dataset(folder: Path | str, label_names: list[str], size: tuple[int, int] | None = None,
                              label_map: Mapping[str, str] | None = None) -> ImageDataset:
    """Images from `<folder>/<class>/*.png|jpg|jpeg`, labels from the class folder names (a model's classes, or
    renamed to them by `label_map`).

    All grey files give grey images [n, H, W]; any colour file makes every image RGB [n, 3, H, W]. Images are
    resized (bilinear) to `size` (height, width), by default the first image's size.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder; give a folder with one subfolder of images per class")
    files = _image_files(folder, list(label_names), label_map)
    where = [f"{folder.name}/{p.parent.name}/{p.name}" for p, _ in files]
    headers = []  # (mode, height, width) of each file, read before anything is decoded
    for (path, _), w in zip(files, where):
        with _open_image(path, w) as image:
            headers.append((image.mode, image.height, image.width))
    grey = all(mode in GREY_MODES for mode, _, _ in headers)
    height, width = size or headers[0][1:]
    if len(files) * (1 if grey else 3) * height * width * 4 > MAX_FOLDER_BYTES:
        raise ValueError(f"{folder.name}: {len(files)} images of {height}x{width} pixels need more than "
                         f"{MAX_FOLDER_BYTES // 1024 ** 3} GiB; give a smaller size or fewer images")
    arrays = []
    for (path, _), w in zip(files, where):
        with _open_image(path, w) as image:
            try:
                pixels = image.convert("L" if grey else "RGB").resize((width, height), Image.Resampling.BILINEAR)
            except OSError as e:
                raise ValueError(f"{w}: could not be decoded ({e}); re-save it as PNG") from None
            arrays.append(np.asarray(pixels, dtype=np.float32) / 255.0)
    images = np.stack(arrays)  # [n, H, W] or [n, H, W, 3]
    if not grey:
        images = images.transpose(0, 3, 1, 2)  # [n, 3, H, W]
    labels = np.array([label for _, label in files], dtype=np.int64)
    return image_dataset(images, labels, label_names=list(label_names), name=folder.name, source=folder.name)


def length_order(model, dataset: Dataset) -> np.ndarray:
    """A permutation [n] that batches similar examples together (texts by token count), so batches pad little.

    Per-example results do not depend on the batch, so a caller computes on `dataset_subset(dataset, order)`
    and puts rows back with `np.argsort(order)`.
    """
    return model.adapter.length_order(dataset)


def make_batches(model, dataset: Dataset, *, batch_size: int = 32) -> Iterator[dict]:
    """Batches a ClassifierModel accepts for this dataset (its adapter makes them; it checks the dataset)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.adapter.check_dataset(dataset)
    return model.adapter.batches(dataset, batch_size)


@torch.no_grad()
def predict(model, dataset: Dataset, *, batch_size: int = 64, device: str | None = None,
            progress=None) -> np.ndarray:
    """Logits [n, C] of a model on a dataset, batched in length order (each batch pads to its longest text, so
    similar lengths together pad little), on `device`, rows in dataset order."""
    device = resolve_device(device)
    model.to(device)
    order = length_order(model, dataset)  # [n]
    out, done = [], 0
    for batch in make_batches(model, dataset_subset(dataset, order), batch_size=batch_size):
        out.append(model({k: v.to(device) for k, v in batch.items()}).float().cpu().numpy())
        done += len(out[-1])
        if progress:
            progress(done, len(dataset))
    return np.concatenate(out)[np.argsort(order)]


def preview_images(path: Path | str, k: int = 8) -> list[tuple[str, np.ndarray]]:
    """Up to k (caption, pixels [H, W] or [H, W, 3] in [0, 1]) of an image dataset before it is loaded: the first
    images of an .npz (caption: its label), or the first image of each class subfolder of a folder (caption: the
    subfolder). Reads no pickles and decodes only what it shows."""
    path = Path(path)
    if path.is_dir():
        shown = []
        for name in image_folder_classes(path)[:k]:
            files = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                           and not f.is_symlink())
            if files:
                with _open_image(files[0], f"{path.name}/{name}/{files[0].name}") as image:
                    shown.append((name, np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0))
        return shown
    with np.load(path, allow_pickle=False) as data:
        if "images" not in data:
            raise ValueError(f"{path.name}: needs arrays 'images' and 'labels', found {list(data.keys())}")
        images = np.asarray(data["images"][:k], dtype=np.float32)  # [k, H, W] or [k, C, H, W]
        labels = data["labels"][:k] if "labels" in data else np.full(len(images), -1)
    if images.ndim == 4:
        images = images.transpose(0, 2, 3, 1)  # [k, H, W, C]
        images = images[..., 0] if images.shape[-1] == 1 else images
    return [(f"label {label}", np.clip(image, 0, 1)) for label, image in zip(labels.tolist(), images)]
