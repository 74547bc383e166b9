"""Tests for analysis.zonotope.gd: the Adam baseline and its activation-pattern trace (spec zonotope.md §6.2)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from analysis.zonotope import gd_train, homogenize, solve_vertex
from tests.unit.zonotope.conftest import FIG1, relu_loss, teacher


def test_gd_pattern_trace_is_consistent():
    X, y, _, _ = teacher(20, 2, 4, seed=16)
    result = gd_train(X, y, 3, seed=2, steps=600)
    steps = [change.step for change in result.pattern_trace]
    assert steps[0] == 0 and steps == sorted(set(steps))
    for before, after in zip(result.pattern_trace, result.pattern_trace[1:]):
        assert not np.array_equal(before.patterns, after.patterns)
    np.testing.assert_array_equal(result.pattern_trace[-1].patterns, (homogenize(X) @ result.W.T > 0).T)
    assert result.losses.shape == (601,)
    assert result.losses[-1] == result.loss
    assert relu_loss(X, y, result.W, result.signs) == pytest.approx(result.loss, rel=1e-9)
    at_vertex = solve_vertex(X, y, result.pattern_trace[-1].patterns, result.signs)
    assert at_vertex.loss <= result.loss + 1e-9


@pytest.mark.parametrize("call, message", [
    (lambda: gd_train(FIG1, np.ones(5), 2, lr=0.0), "lr must be > 0, got 0.0"),
    (lambda: gd_train(FIG1, np.ones(5), 2, steps=0), "steps must be an integer >= 1, got 0"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()
