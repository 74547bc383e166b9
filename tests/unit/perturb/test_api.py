"""perturb_component, sweep_component, perturb_all on the planted problem: the planted direction is found,
results are consistent and reproducible, bad arguments are refused, and each variant has its strategy."""
import math

import numpy as np
import pytest

from analysis.npeff import LrmDecomposition
from analysis.perturb.api import perturb_all, perturb_component, strategy_for
from analysis.perturb.diag import DiagStrategy
from analysis.perturb.lrm import LrmStrategy
from tests.unit.perturb.planted import BASELINE_N, M, N_DEPENDENT, SETS, TOP_N


def test_planted_direction_moves_top_examples_far_more_than_a_random_one(model, examples, decomposition):
    assert model.summary().n_parameters_in_scope == M
    planted = perturb_component(model, examples, decomposition, 0, magnitude=2.0, **SETS)
    assert set(planted.examples.loc[planted.examples["set"] == "top", "index"]) == set(range(N_DEPENDENT))
    assert planted.kl_ratio > 10
    assert planted.change_norm == pytest.approx(2.0, rel=1e-5)
    random_direction = perturb_component(model, examples, decomposition, 1, magnitude=2.0, **SETS)
    assert random_direction.kl_ratio < 3
    table = perturb_all(model, examples, decomposition, 2.0, **SETS)
    assert list(table["component"]) == [0, 1] and table.loc[0, "kl_ratio"] > 10 > table.loc[1, "kl_ratio"]
    assert {"kl_ratio_pos", "kl_ratio_neg"} <= set(table.columns)
    assert table.loc[0, "kl_ratio"] == max(table.loc[0, "kl_ratio_pos"], table.loc[0, "kl_ratio_neg"])


def test_result_table_is_consistent_with_the_summary(model, examples, decomposition):
    result = perturb_component(model, examples, decomposition, 0, magnitude=5.0, **SETS)
    table = result.examples
    assert len(table) == TOP_N + BASELINE_N and list(table["set"][:TOP_N]) == ["top"] * TOP_N
    assert result.kl_top == pytest.approx(table.loc[table["set"] == "top", "kl"].mean())
    assert result.n_flipped_top == int(table.loc[table["set"] == "top", "flipped"].sum())
    assert (table["flipped"] == (table["original_prediction"] != table["new_prediction"])).all()
    top = table[table["set"] == "top"]
    assert result.acc_top_after == pytest.approx((top["new_prediction"] == top["label"]).mean())


def test_zero_magnitude_changes_nothing(model, examples, decomposition):
    result = perturb_component(model, examples, decomposition, 0, magnitude=0.0, **SETS)
    assert result.kl_top == result.kl_baseline == 0.0 and math.isnan(result.kl_ratio)
    assert result.n_flipped_top == result.n_flipped_baseline == 0


def test_same_seed_same_result(model, examples, decomposition):
    a = perturb_component(model, examples, decomposition, 1, magnitude=1.0, seed=4, **SETS)
    b = perturb_component(model, examples, decomposition, 1, magnitude=1.0, seed=4, **SETS)
    assert a.scalars() == b.scalars()
    assert a.examples.equals(b.examples)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=2), r"^component k must be in \[0, 2\), got 2$"),
    (dict(sign=0), r"^sign must be \+1 or -1, got 0$"),
    (dict(kl_range=(0.1, 0.2)), r"^kl_range applies to D-NPEFF decompositions only; "),
    (dict(magnitude=-1.0), r"^magnitude must be a finite number >= 0, got -1.0$"),
])
def test_bad_arguments_are_refused_with_clear_messages(model, examples, decomposition, kwargs, message):
    arguments = dict(k=0, magnitude=1.0, **SETS) | kwargs
    with pytest.raises(ValueError, match=message):
        perturb_component(model, examples, decomposition, **arguments)


def test_decomposition_over_another_scope_is_refused(model, examples, decomposition):
    smaller = LrmDecomposition(W=decomposition.W, G=decomposition.G[:, :10], kept=np.arange(10), n_parameters=10,
                               losses=np.zeros(1), relative_error=0.0)
    with pytest.raises(ValueError, match=r"^the decomposition covers 10 parameters but model 'planted' has 21 in "
                                         r"scope \(all parameters\); use the scope it was fit with$"):
        perturb_component(model, examples, smaller, 0, magnitude=1.0, **SETS)


def test_each_variant_has_its_strategy_and_other_objects_are_refused(model, examples, decomposition,
                                                                       diag_decomposition):
    assert strategy_for(decomposition) is LrmStrategy and strategy_for(diag_decomposition) is DiagStrategy
    assert LrmStrategy.default_signs == (1, -1) and DiagStrategy.default_signs == (1,)
    with pytest.raises(TypeError, match="^decomposition must be LrmDecomposition or DiagDecomposition, got dict$"):
        perturb_component(model, examples, {}, 0, magnitude=1.0, **SETS)


def test_perturb_all_matches_perturb_component_per_sign(model, examples, decomposition):
    """The pooled perturb_all against the obvious loop of single perturbations (no frozen prefix here)."""
    table = perturb_all(model, examples, decomposition, 1.5, **SETS)
    for k in range(2):
        for sign, name in ((1, "pos"), (-1, "neg")):
            single = perturb_component(model, examples, decomposition, k, magnitude=1.5, sign=sign, **SETS)
            assert table.loc[k, f"kl_ratio_{name}"] == pytest.approx(single.kl_ratio, rel=1e-5)


@pytest.mark.parametrize("signs", [0, (), (1, 1), (1, 2)])
def test_perturb_all_refuses_bad_signs(model, examples, decomposition, signs):
    with pytest.raises(ValueError, match=r"^signs must be 1, -1 or a non-empty subset of \(1, -1\), got "):
        perturb_all(model, examples, decomposition, 1.0, signs=signs, **SETS)
