"""Example sets, the KL, and the unperturbed reference: computed once per model and dataset content, and
dropped with the model (analysis.perturb.evaluation)."""
import gc
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import analysis.perturb.evaluation as evaluation
from analysis.adapters.images import ImageModule
from analysis.datasets import ImageDataset
from analysis.models import ClassifierModel, ParamScope
from analysis.perturb.api import perturb_component
from analysis.perturb.evaluation import example_sets, kl_divergence
from tests.unit.perturb.planted import BASELINE_N, LABELS, SETS, TOP_N, Planted

CPU = torch.device("cpu")


def test_baseline_is_a_seeded_sample_disjoint_from_the_top_examples(decomposition):
    top, baseline = example_sets(decomposition.W, 0, top_n=TOP_N, baseline_n=BASELINE_N, seed=7)
    np.testing.assert_array_equal(top, np.argsort(-decomposition.W[:, 0], kind="stable")[:TOP_N])
    assert len(set(baseline)) == BASELINE_N and not set(top) & set(baseline)
    again = example_sets(decomposition.W, 0, top_n=TOP_N, baseline_n=BASELINE_N, seed=7)[1]
    other = example_sets(decomposition.W, 0, top_n=TOP_N, baseline_n=BASELINE_N, seed=8)[1]
    np.testing.assert_array_equal(baseline, again)
    assert not np.array_equal(baseline, other)
    with pytest.raises(ValueError, match=r"^baseline_n must be in \[1, 180\] \(examples outside the top 20\), "
                                         r"got 181$"):
        example_sets(decomposition.W, 0, top_n=TOP_N, baseline_n=181, seed=0)


def test_kl_divergence_is_kl_of_perturbed_from_original_with_clipping():
    p = np.array([[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]])
    q = np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]])
    expected_0 = sum(a * math.log(a / b) for a, b in zip(p[0], q[0]))
    expected_1 = math.log(1 / 0.5) + 1e-7 * math.log(1e-7 / 0.5)  # zeros clipped to 1e-7
    np.testing.assert_allclose(kl_divergence(p, q), [expected_0, expected_1], rtol=1e-6)
    assert kl_divergence(p, p) == pytest.approx([0.0, 0.0], abs=1e-12)


def test_original_probabilities_are_computed_once_per_model_and_examples(model, examples, decomposition, monkeypatch):
    calls = []
    original = evaluation.probabilities

    def counted(fmodel, batches, tensors=None):
        calls.append(len(batches))
        return original(fmodel, batches, tensors)

    monkeypatch.setattr(evaluation, "probabilities", counted)
    perturb_component(model, examples, decomposition, 0, magnitude=1.0, **SETS)
    assert len(calls) == 3  # top and baseline unperturbed, then both perturbed in one call
    calls.clear()
    perturb_component(model, examples, decomposition, 0, magnitude=2.0, sign=-1, **SETS)
    assert len(calls) == 1  # only the perturbed forward pass


def test_references_are_keyed_on_dataset_content_and_scope(model, examples):
    ref = evaluation.reference_for(model, examples, CPU)
    assert evaluation.reference_for(model, replace(examples, name="renamed"), CPU) is ref  # same content hash
    assert evaluation.reference_for(model.with_scope(ParamScope("pattern", pattern="bias")), examples, CPU) is not ref
    unhashed = replace(examples, content_hash="")
    shifted = replace(unhashed, images=examples.images[::-1].copy())
    assert evaluation.reference_for(model, unhashed, CPU) is evaluation.reference_for(model, unhashed, CPU)
    assert evaluation.reference_for(model, shifted, CPU) is not evaluation.reference_for(model, unhashed, CPU)


def test_references_go_with_their_model():
    """Keyed weakly on the network: a new model at a reused address can never find an old model's outputs."""
    model = ClassifierModel(Planted(), adapter=ImageModule(LABELS), name="short-lived", content_hash="x")
    data = ImageDataset(images=np.zeros((4, 1, 6), np.float32), labels=np.zeros(4, np.int64), label_names=LABELS,
                        name="d", source="test", content_hash="d")
    evaluation.reference_for(model, data, CPU)
    assert model.net in evaluation._REFERENCES
    before = len(evaluation._REFERENCES)
    del model
    gc.collect()
    assert len(evaluation._REFERENCES) == before - 1
