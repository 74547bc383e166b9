"""Perturbation figures (analysis.figures.perturb) built from results of the planted problem."""
import plotly.graph_objects as go

from analysis.figures.perturb import flipped_probability_figure, kl_ratio_histogram, kl_sweep_figure
from analysis.perturb.api import perturb_all, perturb_component, sweep_component
from tests.unit.perturb.planted import LABELS, SETS


def test_figures_are_built_from_results(model, examples, decomposition):
    results = sweep_component(model, examples, decomposition, 0, [4.0, 0.5, 1.0], **SETS)
    fig = kl_sweep_figure(results)
    assert isinstance(fig, go.Figure) and len(fig.data) == 3
    assert list(fig.data[0].x) == [0.5, 1.0, 4.0] and fig.layout.xaxis.type == "log"
    hist = kl_ratio_histogram(perturb_all(model, examples, decomposition, 2.0, **SETS))
    assert isinstance(hist, go.Figure) and len(hist.data[0].x) == 2
    flipped = flipped_probability_figure(results[0], label_names=LABELS)
    assert len(flipped.data) == (2 if results[0].examples["flipped"].any() else 0)
    quiet = perturb_component(model, examples, decomposition, 0, magnitude=0.0, **SETS)
    assert flipped_probability_figure(quiet).layout.annotations[0].text == "no prediction flipped"
