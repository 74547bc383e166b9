"""The Inspect tab's table and figure without a model: top components of a planted coefficient vector."""
import numpy as np

from analysis.figures.inspect import coefficients_figure
from analysis.inspect import top_components
from analysis.notes import ComponentNote


def test_top_components_rank_name_and_place_the_input_among_the_dataset():
    W = np.array([[0.0, 1.0, 0.2], [0.5, 3.0, 0.1], [0.1, 2.0, 0.0], [0.2, 0.0, 0.3]])  # [4 examples, 3 components]
    table = top_components(np.array([0.3, 2.5, 0.0]), W, {1: ComponentNote(1, "negation")}, n=2)
    assert table["component"].tolist() == [1, 0] and table["name"].tolist() == ["negation", ""]
    assert table["coefficient"].tolist() == [2.5, 0.3]
    assert table["dataset percentile"].tolist() == [0.75, 0.75]  # 3 of 4 dataset examples are below
    assert table["largest in dataset"].tolist() == [3.0, 0.5]


def test_coefficient_bars_group_the_input_with_its_start_example():
    fig = coefficients_figure({"this input": np.array([0.1, 2.0]), "example #3": np.array([0.0, 1.0])},
                              ["0", "1 · negation"])
    assert [t.name for t in fig.data] == ["this input", "example #3"]
    assert list(fig.data[0].x) == ["0", "1 · negation"] and list(fig.data[1].y) == [0.0, 1.0]
    assert fig.layout.barmode == "group" and fig.layout.yaxis.title.text == "coefficient"
