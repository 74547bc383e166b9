"""kernels.denormals: subnormal floats read as 0 inside the context, and the MU fits run their iterations in it
(on an Intel Xeon a text-demo fit whose coefficients had gone subnormal ran 3.2x slower)."""
import numpy as np
import pytest
import torch

from analysis.npeff import fit_d_npeff, fit_lrm_npeff
from analysis.pefs import DiagPefs, LrmPefs
from kernels.denormals import flushed_denormals

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
    fit_d_npeff(DiagPefs.from_dense(rng.random((20, 40), dtype=np.float32), n_values_per_example=10), 3,
                n_iters=4, progress=progress)
    fit_lrm_npeff(LrmPefs.from_dense(rng.normal(size=(20, 2, 40)).astype(np.float32), n_values_per_example=20), 3,
                  n_iters=4, n_iters_g_only=2, progress=progress)
    assert len(seen) >= 8 and all(seen)
    assert not flushed()  # switched off again once each fit is done
