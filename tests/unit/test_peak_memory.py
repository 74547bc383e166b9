"""Peak memory of one piece of work, measured again and again in one process (as in the Streamlit server)."""
import numpy as np
import pytest

from analysis.peak_memory import measured, reset_peak

MiB = 2**20


@pytest.mark.skipif(reset_peak() is None, reason="the peak resident set cannot be reset on this system")
def test_each_measure_gets_its_own_peak():
    """A 160 MiB array, then a 48 MiB one: the second measure sees 48 MiB, not the first's peak (ru_maxrss would)."""
    big = measured(lambda: float(np.ones(160 * MiB // 8).sum()))
    small = measured(lambda: float(np.ones(48 * MiB // 8).sum()))
    assert big.result == 160 * MiB // 8 and big.seconds > 0
    # lower bounds with room: this machine's kernel pages out cold pages on its own (DAMON "pageout"), so the resident
    # set can shrink while an array grows it (a fresh-clone run measured 144 MiB for the 160 MiB array)
    assert 128 * MiB <= big.peak_growth_bytes <= 200 * MiB
    assert 32 * MiB <= small.peak_growth_bytes <= 90 * MiB
