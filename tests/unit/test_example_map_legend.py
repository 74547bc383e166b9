"""The example map coloured by correctness names each colour in its legend (wrong predictions stand out)."""
import numpy as np

from analysis.figures import components as figs


def test_correctness_colours_are_named_in_the_legend():
    correct = np.array([True, False, True, False, True])
    known = np.array([True, True, True, True, False])
    labels = figs.correctness(correct, known)
    assert labels.tolist() == ["correct", "wrong", "correct", "wrong", "no gold label"]
    fig = figs.example_map(np.zeros((5, 2)), labels, colour_name="correctness", hover=[""] * 5,
                           colors=figs.CORRECTNESS_COLORS)
    shown = {t.name: (t.marker.color, sorted(t.customdata)) for t in fig.data}
    assert shown == {"correct": (figs.BLUE, [0, 2]), "wrong": (figs.RED, [1, 3]),
                     "no gold label": (figs.GREY, [4])}
    assert fig.layout.showlegend and fig.layout.legend.title.text == "correctness"
    assert all(t.showlegend is not False for t in fig.data)


def test_a_category_absent_from_the_examples_gets_no_legend_entry():
    fig = figs.example_map(np.zeros((2, 2)), ["correct", "correct"], colour_name="correctness", hover=["", ""],
                           colors=figs.CORRECTNESS_COLORS)
    assert [t.name for t in fig.data] == ["correct"]
