"""NPEFF loss curve: the x-axis counts iterations and the G-only warm-up is shaded and named."""
import numpy as np
import pytest

from analysis.figures.npeff import loss_curve


def annotations(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_live_curve_plots_losses_at_their_iterations_over_the_whole_run():
    # as the Compute page logs them: iteration 120 of 350 after 31 progress calls, every 4 iterations
    iterations = list(range(0, 121, 4))
    fig = loss_curve(np.linspace(2, 1, len(iterations)), iterations=iterations, n_iters_g_only=50, total=350)
    assert list(fig.data[0].x) == iterations and fig.data[0].x[-1] == 120
    assert tuple(fig.layout.xaxis.range) == (0, 350) and fig.layout.xaxis.title.text == "iteration"
    assert annotations(fig) == ["G-only warm-up", "joint updates start"]
    warm_up, joint_start = fig.layout.shapes
    assert (warm_up.x0, warm_up.x1) == (0, 50) and joint_start.x0 == 50


def test_stored_losses_default_to_one_per_iteration():
    fig = loss_curve(np.linspace(3, 1, 61), n_iters_g_only=20)
    assert list(fig.data[0].x) == list(range(61)) and fig.layout.yaxis.type == "log"
    assert annotations(fig) == ["G-only warm-up", "joint updates start"]


def test_warm_up_still_running_is_shaded_without_the_joint_marker():
    fig = loss_curve([3.0, 2.5, 2.0], iterations=[0, 10, 20], n_iters_g_only=50)
    assert annotations(fig) == ["G-only warm-up"] and fig.layout.shapes[0].x1 == 20


def test_no_warm_up_no_marks():
    assert annotations(loss_curve([3.0, 2.0, 1.0])) == []


def test_iterations_must_match_the_losses():
    with pytest.raises(ValueError, match=r"iterations must hold one iteration per loss \(3\), got 2"):
        loss_curve([3.0, 2.0, 1.0], iterations=[0, 1])


def test_figures_carry_the_house_template_in_their_exported_json():
    """The template is the default a figure is built with; a figure must still export it (white background)."""
    import json
    import plotly.io as pio
    layout = json.loads(loss_curve(np.linspace(3, 1, 5)).to_json())["layout"]
    assert layout["template"]["layout"]["plot_bgcolor"] == pio.templates["simple_white"].layout.plot_bgcolor == "white"
    assert layout["font"]["family"].startswith("Helvetica")
