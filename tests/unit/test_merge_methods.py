"""Merge methods on planted parameter vectors: identities of the formulas and a per-coordinate loop."""
import numpy as np
import pytest

from analysis.merge.methods import METHODS, MergeSettings, average, fisher, get_method
from analysis.merge.sweep import lambda_grid

rng = np.random.default_rng(0)
THETAS = rng.normal(size=(3, 40))  # [N, M]
FISHERS = rng.gamma(2.0, size=(3, 40))  # [N, M], > 0


def loop_fisher_merge(thetas, fishers, lambdas, floor):
    """θ*_m = Σ_j λ_j max(F_jm, floor) θ_jm / Σ_j λ_j max(F_jm, floor), one coordinate at a time."""
    merged = np.zeros(thetas.shape[1])
    for m in range(thetas.shape[1]):
        w = [lam * max(f, floor) for lam, f in zip(lambdas, fishers[:, m])]
        merged[m] = sum(wj * t for wj, t in zip(w, thetas[:, m])) / sum(w)
    return merged


def test_fisher_merge_matches_a_per_coordinate_loop():
    lambdas = np.array([0.2, 0.5, 0.3])
    fishers = FISHERS.copy()
    fishers[1, :10] = 0.0  # some coordinates at the floor
    np.testing.assert_allclose(fisher(THETAS, fishers, lambdas, MergeSettings()),
                               loop_fisher_merge(THETAS, fishers, lambdas, 1e-6), rtol=1e-12)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_merging_identical_models_gives_the_model(method, lam):
    thetas = np.stack([THETAS[0], THETAS[0]])
    merged = get_method(method).merge(thetas, FISHERS[:2], np.array([lam, 1.0 - lam]), MergeSettings())
    np.testing.assert_allclose(merged, THETAS[0], rtol=1e-12)


def test_with_one_fisher_zero_the_merge_is_the_other_model():
    fishers = np.stack([np.zeros(40), FISHERS[1] + 1.0])  # model 0 carries no information
    merged = fisher(THETAS[:2], fishers, np.array([0.5, 0.5]), MergeSettings())
    np.testing.assert_allclose(merged, THETAS[1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(average(THETAS[:2], None, np.array([0.5, 0.5]), MergeSettings()), THETAS[1], atol=1e-3)


def test_where_every_fisher_is_zero_the_floor_falls_back_to_averaging():
    lambdas = np.array([0.7, 0.3])
    merged = fisher(THETAS[:2], np.zeros((2, 40)), lambdas, MergeSettings())
    np.testing.assert_allclose(merged, average(THETAS[:2], None, lambdas, MergeSettings()), rtol=1e-12)


def test_normalization_removes_each_fishers_scale():
    lambdas = np.array([0.5, 0.5])
    scaled = FISHERS[:2] * np.array([[1000.0], [0.001]])
    normalized = MergeSettings(normalize=True, fisher_floor=1e-12)
    np.testing.assert_allclose(fisher(THETAS[:2], scaled, lambdas, normalized),
                               fisher(THETAS[:2], FISHERS[:2], lambdas, normalized), rtol=1e-6)
    assert not np.allclose(fisher(THETAS[:2], scaled, lambdas, MergeSettings()),
                           fisher(THETAS[:2], FISHERS[:2], lambdas, MergeSettings()), rtol=1e-3)


def test_lambda_grid_weights_the_first_model_and_sums_to_one():
    grid = lambda_grid(3, 5)
    np.testing.assert_allclose(grid[:, 0], [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(grid.sum(1), 1.0)
    np.testing.assert_allclose(grid[:, 1], grid[:, 2])


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"merge method must be one of \['average', 'fisher'\], got 'ties'"):
        get_method("ties")
    with pytest.raises(ValueError, match="fisher_floor must be > 0, got 0.0"):
        MergeSettings(fisher_floor=0.0)
    with pytest.raises(ValueError, match=r"lambdas must be >= 0 with a positive sum, got \[0.0, 0.0\]"):
        average(THETAS[:2], None, np.zeros(2), MergeSettings())
    with pytest.raises(ValueError, match=r"thetas must have shape \[N, M\] with N >= 2 models"):
        average(THETAS[:1], None, np.ones(1), MergeSettings())
    with pytest.raises(ValueError, match=r"fishers must be finite and >= 0"):
        fisher(THETAS[:2], -FISHERS[:2], np.ones(2), MergeSettings())
