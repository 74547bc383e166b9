"""The LRM-NPEFF direction: semi-orthogonalization removes exactly the components at most max_sim similar."""
import numpy as np
import pytest

from analysis.npeff import LrmDecomposition
from analysis.perturb.lrm import perturbation_direction
from tests.unit.perturb.planted import unit


def projection_slow(G: np.ndarray, k: int, rejected: list[int]) -> np.ndarray:
    """g_k minus its projection on span(G[rejected]) through an orthonormal basis (QR, float64)."""
    Q, _ = np.linalg.qr(G[rejected].astype(np.float64).T)  # [m, |rejected|]
    g = G[k].astype(np.float64)
    g = g - Q @ (Q.T @ g)
    return g / np.linalg.norm(g)


def test_semi_orthogonalization_rejects_only_the_components_at_most_max_sim():
    rng = np.random.default_rng(3)
    m = 40
    g0, e1, e2, e3 = (unit(rng.normal(size=m)) for _ in range(4))
    G = np.stack([g0, unit(0.9 * g0 + 0.3 * e1), unit(0.3 * g0 + e2), unit(0.1 * g0 + e3 + 0.5 * e2)])
    cos = np.abs(G @ G[0])
    assert cos[1] > 0.5 > cos[2] > cos[3]  # component 1 is similar to 0; 2 and 3 are not
    dec = LrmDecomposition(W=np.ones((3, 4), np.float32), G=G, kept=np.arange(m), n_parameters=m,
                           losses=np.zeros(1), relative_error=0.0)
    g = perturbation_direction(dec, 0, max_sim=0.5)
    assert np.linalg.norm(g) == pytest.approx(1.0, abs=1e-6)
    assert abs(g @ G[2]) < 1e-6 and abs(g @ G[3]) < 1e-6  # projections removed
    assert abs(g @ G[1]) > 0.5  # the similar component is kept
    np.testing.assert_allclose(g, projection_slow(G, 0, [2, 3]), atol=1e-6)
    np.testing.assert_array_equal(perturbation_direction(dec, 0), G[0])


def test_max_sim_out_of_range_is_refused(decomposition):
    with pytest.raises(ValueError, match=r"^max_sim must be in \(0, 1\) or None, got 1.5$"):
        perturbation_direction(decomposition, 0, max_sim=1.5)
