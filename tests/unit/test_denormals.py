"""kernels.denormals: subnormal floats read as 0 inside the context, the MU fits run their iterations in it (on an
Intel Xeon a text-demo fit whose coefficients had gone subnormal ran 3.2x slower), and MU factors are floored at the
smallest normal float, so a shrinking entry can grow back, and reported as 0 there."""
import numpy as np
import pytest
import torch

from analysis.npeff import fit_d_npeff, fit_lrm_npeff
from analysis.pefs import DiagPefs, LrmPefs
from kernels import d_npeff, lrm_npeff
from kernels.denormals import flushed_denormals, floored_, unfloored_

SUBNORMAL = 1e-39  # below float32's smallest normal, 1.18e-38


def flushed() -> bool:
    """Whether this thread's CPU float math reads a subnormal float32 as 0 now."""
    return float(torch.tensor([SUBNORMAL], dtype=torch.float32) * 1.0) == 0.0


@pytest.fixture(autouse=True)
def needs_the_mode():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    torch.set_flush_denormal(False)


def test_subnormals_read_as_zero_inside_and_as_themselves_after():
    assert not flushed()
    with flushed_denormals():
        assert flushed()
        with flushed_denormals():  # nested
            assert flushed()
    assert not flushed()


def test_the_fits_iterate_with_subnormals_flushed():
    seen = []

    def progress(*_):  # called by the fit's loss monitor, from inside its iterations
        seen.append(flushed())

    rng = np.random.default_rng(0)
    d = fit_d_npeff(DiagPefs.from_dense(rng.random((20, 40), dtype=np.float32), n_values_per_example=10), 3,
                    n_iters=4, progress=progress)
    lrm = fit_lrm_npeff(LrmPefs.from_dense(rng.normal(size=(20, 2, 40)).astype(np.float32), n_values_per_example=20),
                        3, n_iters=4, n_iters_g_only=2, progress=progress)
    assert len(seen) >= 8 and all(seen)
    assert not flushed()  # switched off again once each fit is done
    for factor in (d.W, d.H, lrm.W):  # no entry left at or below the floor but 0
        assert not ((factor > 0) & (factor <= TINY)).any()


TINY = float(torch.finfo(torch.float32).tiny)


def test_floored_raises_to_the_smallest_normal_and_unfloored_reports_it_as_zero():
    x = torch.tensor([0.0, 1e-39, TINY, 2 * TINY, 1.0])
    np.testing.assert_array_equal(floored_(x.clone()).numpy(), np.float32([TINY, TINY, TINY, 2 * TINY, 1.0]))
    np.testing.assert_array_equal(unfloored_(floored_(x.clone())).numpy(), np.float32([0, 0, 0, 2 * TINY, 1.0]))


@pytest.mark.parametrize("step", [lambda W: d_npeff.w_step(W, torch.ones(1, 1), torch.full((1, 1), 1e-3)),
                                  lambda W: lrm_npeff.w_step(W, torch.ones(1, 1), torch.full((1, 1), 1e-3))])
def test_an_mu_step_keeps_a_shrinking_entry_where_it_can_grow_back(step):
    """Flushed to 0 a coefficient stays 0 for good; at the floor, a step that favours it grows it again."""
    with flushed_denormals():
        shrunk = step(torch.full((1, 1), 1e-39))  # a subnormal input reads as 0: the step floors its result
        assert float(shrunk) == TINY
        assert float(step(shrunk)) > TINY  # N / (W·HH + eps) > 1 here
