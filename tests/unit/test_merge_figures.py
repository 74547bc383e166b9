"""Merge figures as plain functions of a hand-made sweep."""
import pandas as pd
import pytest

from analysis.figures.merge import lambda_accuracy_figure, task_accuracy_figure
from analysis.merge.sweep import MergeSweep

SWEEP = MergeSweep(
    names=("A", "B"),
    table=pd.DataFrame({"method": ["average"] * 3 + ["fisher"] * 3, "lambda": [0.0, 0.5, 1.0] * 2,
                        "accuracy A": [0.0, 0.6, 1.0, 0.0, 0.8, 1.0], "accuracy B": [1.0, 0.5, 0.0, 1.0, 0.9, 0.0],
                        "KL A": [3.0, 1.0, 0.0] * 2, "KL B": [0.0, 1.0, 3.0] * 2}),
    parents=pd.DataFrame({"model": ["A", "B"], "accuracy A": [1.0, 0.0], "accuracy B": [0.0, 1.0]}))


def test_task_figure_draws_each_method_through_its_lambdas_and_the_parents():
    fig = task_accuracy_figure(SWEEP)
    assert [t.name for t in fig.data] == ["Isotropic averaging", "Fisher merging", "parents"]
    assert list(fig.data[1].x) == [0.0, 0.8, 1.0] and list(fig.data[1].y) == [1.0, 0.9, 0.0]
    assert list(fig.data[1].customdata) == [0.0, 0.5, 1.0]  # λ on hover
    assert fig.layout.xaxis.title.text == "accuracy on task A"


def test_lambda_figure_has_a_line_per_method_and_task():
    fig = lambda_accuracy_figure(SWEEP)
    assert len(fig.data) == 4 and fig.data[3].name == "Fisher merging: task B"


def test_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match=r"task 'C' is not a parent of this merge; its parents are \['A', 'B'\]"):
        task_accuracy_figure(SWEEP, "C", "A")
