"""The (δ, λ) search of D-NPEFF KL targeting on a monotone function whose level sets are known."""
import pytest

from analysis.perturb.targeting import KlTargeter, target_kl


def test_target_kl_finds_the_range_of_a_monotone_function_and_reports_a_miss():
    def kl(delta, lam):
        return delta * lam  # monotone in both

    t = KlTargeter(delta_range=(1e-3, 10.0))
    found = target_kl(kl, (0.05, 0.06), start=(1e-3, 0.5), targeter=t)
    assert found.converged and 0.05 <= found.kl <= 0.06
    assert found.kl == pytest.approx(kl(found.delta, found.lam))
    missed = target_kl(kl, (50.0, 60.0), start=(1e-3, 0.5), targeter=t)
    assert not missed.converged
    assert missed.delta == pytest.approx(10.0, rel=1e-2) and missed.lam == pytest.approx(0.965, rel=1e-2)
    assert missed.n_evaluations <= 2 * t.max_iters + 1
    with pytest.raises(ValueError, match=r"^kl_range must be \(lo, hi\) with 0 < lo < hi, got \(0.2, 0.1\)$"):
        target_kl(kl, (0.2, 0.1), start=(1.0, 0.5))
