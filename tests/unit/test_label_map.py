"""Before a dataset is loaded: its columns profiled, the label column guessed, label values that are not the
model's classes found and renamed by a label map (tables and image folders), its first images read."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.datasets import (apply_label_map, column_profile, default_label_column, load_image_folder_dataset,
                               preview_images, text_dataset, unmatched_labels)
from analysis.loading import DatasetSpec, load_dataset_spec

CLASSES = ["rotten", "fresh"]


@pytest.fixture
def table():
    return pd.DataFrame({"review": ["warm", "dull", "fine", "long"], "score": [1.5, 0.5, 2.0, 0.0],
                         "sentiment": ["positive", "negative", "positive", "negative"]})


@pytest.mark.parametrize("columns, text, expected", [
    (["text", "sentiment", "Label"], ["text"], "Label"),  # a column named label, in any case
    (["target", "text"], ["text"], "target"),
    (["text", "sentiment", "answer"], ["text"], "sentiment"),  # else the first column that is not a text column
    (["question", "text"], ["text"], "question"),
    (["text"], ["text"], None),  # never the text column itself
    (["label", "text"], ["label"], "text"),
])
def test_default_label_column(columns, text, expected):
    assert default_label_column(columns, text) == expected


def test_column_profile_names_kinds_distinct_values_and_an_example(table):
    profile = column_profile(table.assign(empty=[None] * 4))
    assert profile.to_dict("list") == {"column": ["review", "score", "sentiment", "empty"],
                                       "kind": ["text", "a number", "text", "empty"], "distinct": [4, 4, 2, 0],
                                       "example": ["'warm'", "1.5", "'positive'", ""]}


def test_unmatched_labels_are_neither_names_nor_indices(table):
    assert unmatched_labels(table["sentiment"], CLASSES) == ["negative", "positive"]
    assert unmatched_labels(pd.Series(["Fresh", "rotten", "meh", 1, 2]), CLASSES) == ["2", "meh"]


def test_a_label_map_renames_values_to_the_model_classes(table):
    mapped = text_dataset(table, text_columns=["review"], label_column="sentiment", label_names=CLASSES,
                          name="t", source="t.csv", label_map={"positive": "fresh", "negative": "rotten"})
    np.testing.assert_array_equal(mapped.labels, [1, 0, 1, 0])
    direct = text_dataset(table.assign(sentiment=["fresh", "rotten", "fresh", "rotten"]), text_columns=["review"],
                          label_column="sentiment", label_names=CLASSES, name="t", source="t.csv")
    assert mapped.content_hash == direct.content_hash  # the same examples and labels
    with pytest.raises(ValueError, match=r"^t.csv: labels \['negative'\] in column 'sentiment' are outside the "
                                         r"model's classes \['rotten', 'fresh'\] \(give class names or indices "
                                         r"0..1, or map each value to a class: the Load page's label mapping\)$"):
        text_dataset(table, text_columns=["review"], label_column="sentiment", label_names=CLASSES, name="t",
                     source="t.csv", label_map={"positive": "fresh"})


def test_a_label_map_naming_values_the_column_lacks_is_refused(table):
    with pytest.raises(ValueError, match=r"^t.csv: the label map names values \['good'\] that column 'sentiment' "
                                         r"does not hold \(its values are \['negative', 'positive'\]\); map the "
                                         r"column's own values$"):
        apply_label_map(table["sentiment"], {"good": "fresh"}, "t.csv", "sentiment")


def test_the_spec_label_map_reaches_tables_and_image_folders(tmp_path, table):
    table.to_csv(tmp_path / "t.csv", index=False)
    spec = DatasetSpec(source=str(tmp_path / "t.csv"), text_columns=("review",), label_column="sentiment",
                       label_names=tuple(CLASSES), label_map=(("negative", "rotten"), ("positive", "fresh")))
    np.testing.assert_array_equal(load_dataset_spec(spec).labels, [1, 0, 1, 0])
    for name, value in (("good", 255), ("bad", 0)):
        (tmp_path / "pics" / name).mkdir(parents=True)
        Image.fromarray(np.full((4, 5), value, np.uint8)).save(tmp_path / "pics" / name / "0.png")
    folder = load_dataset_spec(DatasetSpec(source=str(tmp_path / "pics"), label_names=tuple(CLASSES),
                                           label_map=(("good", "fresh"), ("bad", "rotten"))))
    np.testing.assert_array_equal(folder.labels, [0, 1])  # bad/ then good/
    with pytest.raises(ValueError, match=r"^pics: subfolder 'bad' is not one of the model's classes"):
        load_image_folder_dataset(tmp_path / "pics", CLASSES)


def test_preview_images_of_an_npz_and_of_a_folder(tmp_path):
    images = np.random.default_rng(0).random((20, 3, 4, 5)).astype(np.float32)
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(20) % 3)
    shown = preview_images(tmp_path / "d.npz", 8)
    assert [c for c, _ in shown] == [f"label {i % 3}" for i in range(8)]
    np.testing.assert_array_equal(shown[1][1], images[1].transpose(1, 2, 0))  # [H, W, C] for st.image
    for name in ("b", "a"):
        (tmp_path / "pics" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "pics" / name / "0.png")
    assert [(c, p.shape) for c, p in preview_images(tmp_path / "pics")] == [("a", (4, 5, 3)), ("b", (4, 5, 3))]
