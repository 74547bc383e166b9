"""Two gloo ranks under torchrun match one process started from the same initial factors.

Each rank draws its slice of G (or H) from seed + rank (spec §10.5) and W comes from rank 0, so the
single-process reference is given init = (rank 0's W, the concatenation of both ranks' slices).
"""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.npeff import fit_d_npeff, fit_lrm_npeff
from analysis.pefs import DiagPefs, LrmPefs
from kernels import d_npeff, lrm_npeff
from kernels.distributed import column_slice

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("npeff_dist_worker.py")
WORLD_SIZE = 2
SEED = 7
KWARGS = {"lrm": dict(n_components=4, n_iters=25, n_iters_g_only=10, seed=SEED),
          "diag": dict(n_components=4, n_iters=40, seed=SEED)}


def pefs_pair() -> tuple[LrmPefs, DiagPefs]:
    """Small sparse LRM- and D-PEFs with an odd number of used parameters (uneven column split)."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(40, 3, 151)).astype(np.float32)
    f = (np.abs(rng.normal(size=(40, 151))) * (rng.random((40, 151)) < 0.3)).astype(np.float32)
    return LrmPefs.from_dense(A, n_values_per_example=120), DiagPefs.from_dense(f, n_values_per_example=40)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, np.ndarray]]:
    """Every rank's result of the worker on two gloo processes."""
    tmp = tmp_path_factory.mktemp("npeff_dist")
    with open(tmp / "inputs.pkl", "wb") as f:
        pickle.dump((*pefs_pair(), KWARGS), f)
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}",
               str(WORKER), str(tmp / "inputs.pkl"), str(tmp)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return [dict(np.load(tmp / f"rank{p}.npz")) for p in range(WORLD_SIZE)]


def concatenated_init(init_factors, m: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(rank 0's W, the full transposed factor [r, m] stacked from every rank's seeded slice)."""
    draws = [init_factors(m_local=column_slice(m, p, WORLD_SIZE).size, seed=SEED, rank=p, **kwargs)
             for p in range(WORLD_SIZE)]
    return draws[0][0].numpy(), torch.cat([Ct for _, Ct in draws]).T.numpy()


def test_every_rank_returns_the_same_decomposition(ranks):
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)


def test_lrm_matches_a_single_process(ranks):
    lrm_pefs, _ = pefs_pair()
    m, r = len(ranks[0]["lrm_kept"]), KWARGS["lrm"]["n_components"]
    init = concatenated_init(lrm_npeff.init_factors, m, n=lrm_pefs.n_examples, m_total=m, r=r)
    single = fit_lrm_npeff(lrm_pefs, **KWARGS["lrm"] | {"init": init})
    np.testing.assert_array_equal(single.kept, ranks[0]["lrm_kept"])
    np.testing.assert_allclose(ranks[0]["lrm_losses"], single.losses, rtol=1e-4)
    np.testing.assert_allclose(ranks[0]["lrm_W"], single.W, rtol=1e-3, atol=1e-4 * single.W.max())
    np.testing.assert_allclose(ranks[0]["lrm_G"], single.G, rtol=1e-3, atol=1e-4)


def test_d_matches_a_single_process(ranks):
    _, diag_pefs = pefs_pair()
    m, r = len(ranks[0]["d_kept"]), KWARGS["diag"]["n_components"]
    init = concatenated_init(d_npeff.init_factors, m, n=diag_pefs.n_examples, r=r)
    single = fit_d_npeff(diag_pefs, **KWARGS["diag"] | {"init": init})
    np.testing.assert_array_equal(single.kept, ranks[0]["d_kept"])
    np.testing.assert_allclose(ranks[0]["d_losses"], single.losses, rtol=1e-5)
    np.testing.assert_allclose(ranks[0]["d_W"], single.W, rtol=1e-4, atol=1e-5 * single.W.max())
    np.testing.assert_allclose(ranks[0]["d_H"], single.H, rtol=1e-4, atol=1e-5)


def test_ranks_draw_different_initial_slices():
    """Seeds differ per rank (spec §10.5), unlike the reference's identical curand seed on every GPU."""
    _, first = lrm_npeff.init_factors(5, 20, 40, 3, seed=SEED, rank=0)
    _, second = lrm_npeff.init_factors(5, 20, 40, 3, seed=SEED, rank=1)
    assert not torch.allclose(first, second)
