"""Coefficients of new examples against fixed components (spec §2, §3.8): the fit's W step with G or H frozen."""
from __future__ import annotations

import numpy as np
import torch

from analysis.devices import resolve_device
from analysis.npeff.common import Decomposition, check_at_least, check_decomposition, tensor
from kernels import sparse as sp
from kernels.denormals import flushed_denormals
from kernels.distributed import Progress, rank_generator

DEFAULT_CHUNK_SIZE = 4096  # examples per coefficient-fitting chunk


def fit_coefficients(decomposition: Decomposition, pefs, *, n_iters: int, seed: int = 0,
                     device: str | torch.device | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     progress: Progress | None = None) -> np.ndarray:
    """W [n_new, r] ≥ 0 for new PEFs with the components fixed, by n_iters MU steps.

    The PEFs are normalized and restricted to decomposition.kept chunk_size examples at a time (which
    bounds memory); W's init U(0,1] is drawn for all examples at once, so the result does not depend on
    chunk_size. progress(done_examples, n_examples, None) is called after each chunk.
    """
    check_decomposition(decomposition)
    expected = decomposition.pefs_type
    if not isinstance(pefs, expected):
        raise TypeError(f"pefs must be {expected.__name__} to match a {type(decomposition).__name__}, "
                        f"got {type(pefs).__name__}")
    if pefs.n_parameters != decomposition.n_parameters:
        raise ValueError(f"pefs.n_parameters must be {decomposition.n_parameters} to match the decomposition, "
                         f"got {pefs.n_parameters}")
    check_at_least("n_iters", n_iters, 1)
    check_at_least("chunk_size", chunk_size, 1)
    dev = resolve_device(device)
    kept = tensor(decomposition.kept, torch.int64, dev)
    Ct = tensor(decomposition.components, torch.float32, dev).T.contiguous()  # [m, r]
    n, r = pefs.n_examples, decomposition.n_components
    W0 = 1 - torch.rand(n, r, generator=rank_generator(seed, 0))  # [n, r], U(0, 1]
    chunks = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        chunk = sp.restrict_columns(decomposition.coefficient_entries(pefs, dev, slice(start, stop)), kept)
        X = sp.to_csr(chunk.rows, chunk.cols, chunk.values, (chunk.n_rows, chunk.n_cols))
        with flushed_denormals():  # MU's decaying entries never go subnormal (kernels/denormals.py)
            W = decomposition.fit_w(X, stop - start, Ct, W0[start:stop].to(dev), n_iters)
        if not torch.isfinite(W).all():
            raise FloatingPointError(f"coefficient fitting: W became non-finite for examples [{start}, {stop}); "
                                     f"check the PEFs for Inf or NaN")
        chunks.append(W.cpu())
        if progress is not None:
            progress(stop, n, None)
    return torch.cat(chunks).numpy()
