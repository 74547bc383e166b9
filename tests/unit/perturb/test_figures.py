"""Perturbation figures (analysis.figures.perturb) built from results of the planted problem."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from analysis.figures.perturb import (flipped_probability_figure, kl_ratio_histogram, kl_sweep_figure, log_ticks,
                                      tick_label)
from analysis.perturb.api import perturb_all, perturb_component, sweep_component
from analysis.perturb.evaluation import PerturbationResult
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


def _result(magnitude: float, kl_top: float, kl_baseline: float) -> PerturbationResult:
    """A sweep point with planted KLs (the figures read only the scalars)."""
    nan = float("nan")
    return PerturbationResult(component=3, magnitude=magnitude, sign=1, kl_top=kl_top, kl_baseline=kl_baseline,
                              kl_ratio=kl_top / kl_baseline if kl_baseline else float("inf"), acc_top_before=nan,
                              acc_top_after=nan, acc_baseline_before=nan, acc_baseline_after=nan, n_flipped_top=0,
                              n_flipped_baseline=0, change_norm=magnitude, examples=pd.DataFrame())


@pytest.mark.parametrize("values, expected", [
    ([0.12, 5.76], [0.1, 0.2, 0.5, 1, 2, 5, 10]),  # under 3 decades: 1-2-5 steps, both ends labelled
    ([0.00464, 10.0], [0.001, 0.01, 0.1, 1, 10]),  # more: powers of ten only
    ([3.0, 4.0], [2, 5]),  # inside one step: the steps around it
    ([20.0, float("nan"), float("inf"), 0.0, None], [10, 20, 50]),  # one usable value
    ([1e-12, 1.0], [1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1]),  # 12 decades: every second one
])
def test_log_ticks_are_round_and_cover_the_values(values, expected):
    np.testing.assert_allclose(log_ticks(values), expected, rtol=1e-12)


def test_tick_labels_use_powers_of_ten_not_si_prefixes():
    assert [tick_label(v) for v in (1e-4, 2e-5, 0.001, 0.5, 10, 200, 1e4, 5e6)] == [
        "10⁻⁴", "2×10⁻⁵", "0.001", "0.5", "10", "200", "10⁴", "5×10⁶"]


def test_sweep_figure_labels_the_ratio_axis_and_keeps_the_legend_off_the_title():
    results = [_result(m, top, base) for m, top, base in
               [(0.00464, 1.4e-4, 3.6e-5), (0.215, 1.55, 0.268), (10.0, 1.65, 13.7)]]  # ratios 3.9, 5.8, 0.12
    fig = kl_sweep_figure(results)
    assert list(fig.layout.yaxis2.ticktext) == ["0.1", "0.2", "0.5", "1", "2", "5", "10"]
    assert list(fig.layout.yaxis.ticktext) == ["10⁻⁵", "10⁻⁴", "0.001", "0.01", "0.1", "1", "10", "100"]
    assert list(fig.layout.xaxis.ticktext) == ["0.001", "0.01", "0.1", "1", "10"]
    for axis in (fig.layout.xaxis, fig.layout.yaxis, fig.layout.yaxis2):  # every tick is inside the drawn range
        low, high = axis.range
        assert all(low <= np.log10(v) <= high for v in axis.tickvals)
    legend, title = fig.layout.legend, fig.layout.title
    assert legend.yanchor == "bottom" and legend.y >= 1  # above the plot...
    assert title.yref == "container" and title.yanchor == "top" and fig.layout.margin.t >= 70  # ...under the title


def test_ratio_histogram_ticks_fall_inside_its_axis():
    table = pd.DataFrame({"kl_ratio": [11.1, 32.2, 18.0, 25.3, 12.4, 20.1]})  # all inside one decade
    fig = kl_ratio_histogram(table)
    axis = fig.layout.xaxis
    assert list(axis.ticktext) == ["10", "20", "50"]
    assert axis.range[0] <= min(axis.tickvals) and max(axis.tickvals) <= axis.range[1]
    np.testing.assert_allclose(axis.tickvals, np.log10([10, 20, 50]))
