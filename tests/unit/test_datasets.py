"""Dataset readers: formats, validation messages, batching."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.adapters.images import ImageModule
from analysis.datasets import image_dataset, load_image_file, load_text_file, read_table, text_dataset

LABELS = ["neg", "pos"]


@pytest.fixture
def table():
    return pd.DataFrame({"sentence": ["good film", "bad plot", "fine"], "premise": ["a", "b", "c"],
                         "label": ["pos", "neg", "pos"], "y": [1, 0, 1]})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_formats_read_the_same(tmp_path, table, suffix):
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        table.to_csv(path, index=False)
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in table.to_dict("records")))
    else:
        table.to_parquet(path)
    ds = load_text_file(path, text_columns=["sentence"], label_column="label", label_names=LABELS)
    assert [t[0] for t in ds.texts] == table.sentence.tolist()
    assert ds.labels.tolist() == [1, 0, 1]
    by_index = load_text_file(path, text_columns=["sentence"], label_column="y", label_names=LABELS)
    assert by_index.labels.tolist() == [1, 0, 1] and by_index.content_hash == ds.content_hash


def test_pairs_and_missing_label_column(table):
    ds = text_dataset(table, text_columns=["premise", "sentence"], label_column=None, label_names=LABELS,
                      name="t", source="t.csv")
    assert ds.texts[0] == ("a", "good film") and ds.labels.tolist() == [-1, -1, -1]


def test_wrong_column_names_the_columns(table):
    with pytest.raises(ValueError, match=r"t.csv: column\(s\) \['text'\] not found; the columns are "
                                         r"\['sentence', 'premise', 'label', 'y'\]"):
        text_dataset(table, text_columns=["text"], label_column="label", label_names=LABELS, name="t", source="t.csv")


def test_labels_outside_the_model_classes(table):
    table.loc[2, "label"] = "meh"
    with pytest.raises(ValueError, match=r"t.csv: labels \['meh'\] in column 'label' are outside the model's "
                                         r"classes \['neg', 'pos'\]"):
        text_dataset(table, text_columns=["sentence"], label_column="label", label_names=LABELS, name="t",
                     source="t.csv")
    with pytest.raises(ValueError, match=r"labels \[2\] in column 'y' are outside"):
        text_dataset(table.assign(y=[0, 1, 2]), text_columns=["sentence"], label_column="y", label_names=LABELS,
                     name="t", source="t.csv")


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv: the file is empty"):
        read_table(empty)
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    with pytest.raises(ValueError, match="header.csv: the file has a header but no rows"):
        read_table(header)


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nok,pos\ncaf\xe9,neg\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.csv: line 3 is not valid UTF-8 \\(byte 0xe9\\); re-save the file as UTF-8"):
        read_table(path)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "d.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="d.xlsx: unsupported file type '.xlsx'; use .csv, .jsonl or .parquet"):
        read_table(path)


def test_empty_text_cells_are_named(table):
    table.loc[1, "sentence"] = None
    with pytest.raises(ValueError, match=r"text column 'sentence' is empty in rows \[1\]"):
        text_dataset(table, text_columns=["sentence"], label_column="label", label_names=LABELS, name="t",
                     source="t.csv")


def test_images_npz_round_trip_and_batches(tmp_path):
    images = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "imgs.npz", images=images, labels=np.array([0, 1, 2, 1, 0]))
    ds = load_image_file(tmp_path / "imgs.npz", label_names=["a", "b", "c"])
    batches = list(ImageModule(ds.label_names).batches(ds, batch_size=2))
    assert [len(b["pixels"]) for b in batches] == [2, 2, 1]
    assert torch.equal(torch.cat([b["labels"] for b in batches]), torch.tensor([0, 1, 2, 1, 0]))


def test_npz_with_objects_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", images=np.array([{"a": 1}], dtype=object), labels=np.array([0]))
    with pytest.raises(ValueError, match="obj.npz: holds pickled objects, which are never loaded"):
        load_image_file(tmp_path / "obj.npz", label_names=["a"])


def test_image_values_must_be_scaled():
    with pytest.raises(ValueError, match=r"x: pixel values must be finite and in \[0, 1\]"):
        image_dataset(np.full((2, 4, 4), 255.0), np.array([0, 0]), label_names=["a"], name="x", source="x")


def test_jsonl_with_mixed_types_keeps_each_value_as_written(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "good film", "label": "pos", "n": 1}\n{"text": "bad plot", "label": 0, "n": "two"}\n\n'
                    '{"text": "fine", "label": "POS", "n": 2.5}\n')
    frame = read_table(path)
    assert frame["label"].tolist() == ["pos", 0, "POS"] and frame["n"].tolist() == [1, "two", 2.5]
    ds = load_text_file(path, text_columns=["text"], label_column="label", label_names=LABELS)
    assert ds.texts == [("good film",), ("bad plot",), ("fine",)] and ds.labels.tolist() == [1, 0, 1]


def test_json_array_files_read_like_json_lines(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[{"text": "a", "label": 1},\n {"text": "b", "label": "neg"}]')
    ds = load_text_file(path, text_columns=["text"], label_column="label", label_names=LABELS)
    assert ds.texts == [("a",), ("b",)] and ds.labels.tolist() == [1, 0]


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\n{"text": oops}\n',
     "d.jsonl: line 2 is not valid JSON (Expecting value); write one JSON object per line"),
    ('{"text": "a"}\n["text", "b"]\n', "d.jsonl: record 2 is a list, not an object; write one JSON object per line, "
                                       "with the column names as keys"),
    ("\n\n", "d.jsonl: holds no JSON records; write one JSON object per line"),
])
def test_bad_json_lines_are_named(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_table(path)


def test_parquet_list_column_as_text_is_refused(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["good film", "bad"], "tags": [["a", "b"], ["c"]], "label": [1, 0]}).to_parquet(path)
    message = ("d.parquet: text column 'tags' (object) holds a list in row 0: ['a', 'b']; choose a column of strings, "
               "or join each row's items into one string first")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_text_file(path, text_columns=["tags"], label_column="label", label_names=LABELS)


@pytest.mark.parametrize("column, value, kind", [("y", "1", "an integer"), ("score", "0.5", "a number")])
def test_numeric_column_chosen_as_text_is_refused(table, column, value, kind):
    frame = table.assign(score=[0.5, 0.25, 1.0])
    message = (f"t.csv: text column '{column}' ({frame[column].dtype}) holds {kind} in row 0: {value}; a numeric "
               "column is not the text: choose the column that holds the sentences, or store the values as strings "
               "if they are the text")
    with pytest.raises(ValueError, match=re.escape(message)):
        text_dataset(frame, text_columns=[column], label_column="label", label_names=LABELS, name="t", source="t.csv")


def test_json_number_in_a_text_column_is_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "good film", "label": 1}\n{"text": 12, "label": 0}\n')
    message = "d.jsonl: text column 'text' (object) holds an integer in row 1: 12; a numeric column is not the text"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_text_file(path, text_columns=["text"], label_column="label", label_names=LABELS)


def test_struct_label_column_is_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": {"name": "pos"}}\n{"text": "b", "label": {"name": "neg"}}\n')
    message = ("d.jsonl: label column 'label' (object) holds a struct in row 0: {'name': 'pos'}; "
               "give one class name or index per row")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_text_file(path, text_columns=["text"], label_column="label", label_names=LABELS)
