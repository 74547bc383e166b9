"""The Load page's accuracy: a random sample of the labelled examples, scored once and kept in the workspace;
checked on the image demo with planted wrong labels (the answer is known) and against a per-example loop."""
from dataclasses import replace

import numpy as np
import pytest

import analysis.sample_accuracy as sample_accuracy_module
from analysis.datasets import predict
from analysis.demos import load_demo
from analysis.sample_accuracy import sample_accuracy, sample_indices
from analysis.store import Workspace


@pytest.fixture(scope="module")
def planted(image_workspace):
    """The image demo with gold labels planted: right (the model's own prediction) for 3 examples in 4, wrong
    for the 4th, unknown for every 10th."""
    model, dataset, _ = load_demo("image", image_workspace)
    predictions = predict(model, dataset).argmax(axis=1)  # [n]
    n = len(dataset)
    labels = np.where(np.arange(n) % 4 == 3, (predictions + 1) % 10, predictions)
    labels[np.arange(n) % 10 == 0] = -1
    return model, replace(dataset, labels=labels, content_hash=f"planted-{dataset.content_hash}")


def test_sample_indices_draw_labelled_examples_from_the_whole_dataset():
    labels = np.repeat(np.arange(4), 100)  # sorted by class, as an image folder is
    labels[::7] = -1
    idx = sample_indices(labels, 40)
    assert len(idx) == 40 and len(set(idx)) == 40 and (np.diff(idx) > 0).all()
    assert (labels[idx] >= 0).all() and set(labels[idx]) == {0, 1, 2, 3}
    assert (sample_indices(labels, 1_000) == np.flatnonzero(labels >= 0)).all()  # all of them when fewer


def test_planted_accuracy_on_all_and_on_a_sample(planted, tmp_path):
    model, dataset = planted
    ws = Workspace(tmp_path)
    labelled = np.flatnonzero(dataset.labels >= 0)
    whole = sample_accuracy(ws, model, dataset, size=len(dataset))
    assert (whole.n_scored, whole.n_labelled, whole.n_examples) == (len(labelled), len(labelled), len(dataset))
    assert whole.n_correct == int((labelled % 4 != 3).sum())  # exactly the planted right ones
    assert whole.describe() == f"on all {len(labelled)} labelled examples"
    part = sample_accuracy(ws, model, dataset, size=64)
    idx = sample_indices(dataset.labels, 64)
    assert part.n_scored == 64 and part.n_correct == int((idx % 4 != 3).sum())
    assert part.describe() == f"on 64 random labelled examples of {len(labelled)}"
    ws.close()


def test_sample_matches_a_per_example_loop_and_is_stored(planted, tmp_path, monkeypatch):
    model, dataset = planted
    ws = Workspace(tmp_path)
    measured = sample_accuracy(ws, model, dataset, size=32)
    slow = [int(predict(model, dataset.subset([i]))[0].argmax() == dataset.labels[i])
            for i in sample_indices(dataset.labels, 32)]
    assert measured.n_correct == sum(slow)

    def no_forward_pass(*args, **kwargs):
        raise AssertionError("the stored accuracy was computed again")

    monkeypatch.setattr(sample_accuracy_module, "predict", no_forward_pass)
    assert sample_accuracy(ws, model, dataset, size=32) == measured
    ws.close()


def test_no_labels_no_accuracy(planted, tmp_path):
    model, dataset = planted
    unlabelled = replace(dataset, labels=np.full(len(dataset), -1), content_hash="unlabelled")
    ws = Workspace(tmp_path)
    assert sample_accuracy(ws, model, unlabelled) is None
    with pytest.raises(ValueError, match=r"^size must be >= 1, got 0$"):
        sample_accuracy(ws, model, dataset, size=0)
    ws.close()
