"""Tests for analysis.zonotope.arrangement: homogenisation and the input checks every public function shares."""
from __future__ import annotations

import re

import numpy as np
import pytest

from analysis.zonotope import chambers, homogenize, solve_vertex
from tests.unit.zonotope.conftest import FIG1


def test_homogenize():
    Xt = homogenize([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(Xt, [[1, 2, 1], [3, 4, 1]])


@pytest.mark.parametrize("call, message", [
    (lambda: homogenize(np.ones(5)), "X must be a 2-D array [n, d], got shape (5,)"),
    (lambda: homogenize(np.ones((0, 2))), "X must have at least one row and one column, got shape (0, 2)"),
    (lambda: chambers(np.array([[0.0, np.nan]])), "X must be finite, got 1 NaN or inf entries"),
    (lambda: solve_vertex(FIG1, np.ones(4), np.ones((1, 5)), [1]),
     "y must be a 1-D array of length n=5 (one target per row of X), got shape (4,)"),
    (lambda: solve_vertex(FIG1, [0, 0, 0, 0, np.inf], np.ones((1, 5)), [1]), "y must be finite, got 1 NaN or inf entries"),
    (lambda: solve_vertex(FIG1, np.ones(5), np.ones((1, 4)), [1]),
     "patterns must have shape (m, 5) (units x examples, m >= 1), got (1, 4)"),
    (lambda: solve_vertex(FIG1, np.ones(5), np.full((1, 5), 2), [1]), "patterns must be boolean or 0/1, got other values"),
    (lambda: solve_vertex(FIG1, np.ones(5), np.ones((2, 5)), [1, 0]),
     "signs must be a 1-D array of m=2 entries, each +1 or -1, got [1.0, 0.0]"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()
