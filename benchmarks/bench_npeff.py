"""NPEFF kernels: D-NPEFF against scikit-learn's MU NMF, LRM-NPEFF iterations against their sparse products.

Run from the repo root: `python -m benchmarks.bench_npeff`. Goals: D-NPEFF reaches scikit-learn's loss
>= 3x faster on CPU; an LRM-NPEFF joint iteration costs <= 1.5x its two sparse products X Gᵀ and Xᵀ Wag
(n=5000, c=3, 2000 values per example, M=200k, r=64).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from sklearn.decomposition import NMF
from sklearn.decomposition._nmf import _initialize_nmf  # the exact init of NMF(init='random')

from analysis.npeff import fit_d_npeff, fit_lrm_npeff
from analysis.pefs import DiagPefs, LrmPefs
from benchmarks.results import best_time, command_line, write_section
from kernels import sparse as sp

SKLEARN_ITERS = 150  # scikit-learn's run sets the target loss
EXTRA_ITERS = 50  # D-NPEFF may take this many more iterations to reach it
SAME_LOSS_RTOL = 1e-4  # "the same loss": the precision scikit-learn reports its own loss with (float32)
LRM_ITERS = 7  # joint iterations per configuration; the fastest of the last 5 counts (one run each)
PRODUCT_REPEATS = 3  # the sparse products alone: fastest of this many


# ------------------------------------------------------------------------------------------------ synthetic PEFs

def strided_indices(rng: np.random.Generator, n: int, k: int, low: int, size: int) -> np.ndarray:
    """[n, k] int64: per row k distinct indices low + (a + b t) mod size, b odd and coprime to 5 (size = 2^p 5^q)."""
    a = rng.integers(0, size, (n, 1))
    b = 2 * rng.integers(0, size // 2, (n, 1)) + 1
    b[b % 5 == 0] += 2
    return low + (a + b * np.arange(k)) % size


def diag_pefs(n: int, M: int, k: int, n_components: int, seed: int = 0) -> DiagPefs:
    """Planted D-PEFs: f_i = Σ_k W_ik h_k + noise, 1-3 active components, top-k entries kept.

    Each h_k is log-normal on a pool of 2k parameters; the noise is 10% of the mass on k other parameters.
    """
    rng = np.random.default_rng(seed)
    pools = strided_indices(rng, n_components, 2 * k, 0, M)  # [r, 2k]
    h = rng.lognormal(size=(n_components, 2 * k))
    values, indices = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    for i in range(n):
        active = rng.choice(n_components, rng.integers(1, 4), replace=False)
        noise = strided_indices(rng, 1, k, 0, M)[0]
        idx = np.concatenate([pools[active].ravel(), noise])
        f = np.concatenate([(rng.uniform(0.5, 1.5, (len(active), 1)) * h[active]).ravel(),
                            0.1 * rng.lognormal(size=k)])
        idx, inverse = np.unique(idx, return_inverse=True)
        f = np.bincount(inverse, weights=f)  # duplicates across pools add up
        top = np.argsort(-f)[:k]
        values[i], indices[i] = f[top], idx[top]
    return DiagPefs(values=values, indices=indices, norms=np.linalg.norm(values, axis=1),
                    logits=np.zeros((n, 1), np.float32), labels=np.full(n, -1), n_parameters=M)


def lrm_pefs(n: int, c: int, M: int, k: int, seed: int = 0) -> LrmPefs:
    """Sparse LRM-PEFs with k distinct parameters per example split over c classes (40%, 35%, 25% for c=3)."""
    rng = np.random.default_rng(seed)
    shares = np.linspace(1.3, 0.7, c) / np.linspace(1.3, 0.7, c).sum()
    offsets = np.concatenate([[0], np.round(np.cumsum(shares) * k).astype(np.int64)])
    values = (rng.standard_t(3, size=(n, k)) / np.repeat(np.arange(1, c + 1), np.diff(offsets))).astype(np.float32)
    indices = strided_indices(rng, n, k, 0, M)
    entries = sp.lrm_entries(torch.as_tensor(values), torch.as_tensor(indices),
                             torch.as_tensor(np.tile(offsets, (n, 1))), M)
    norms = sp.example_grams(entries).square().sum(dim=(1, 2)).sqrt().numpy()
    return LrmPefs(values=values, indices=indices, class_offsets=np.tile(offsets, (n, 1)),
                   class_ids=np.tile(np.arange(c), (n, 1)), norms=norms, logits=np.zeros((n, c), np.float32),
                   labels=np.full(n, -1), n_parameters=M)


# --------------------------------------------------------------------------------------------------- timing

@dataclass(frozen=True)
class Trace:
    """Wall-clock time and loss at every progress call of one fit, measured from the call."""

    times: list[float]
    losses: list[float]
    iterations: list[int]


def traced(fit: Callable[..., object], *args, **kwargs) -> tuple[object, Trace]:
    trace = Trace([], [], [])
    start = time.perf_counter()

    def progress(done: int, total: int, loss: float | None) -> None:
        trace.times.append(time.perf_counter() - start)
        trace.losses.append(loss)
        trace.iterations.append(done)

    return fit(*args, progress=progress, **kwargs), trace


# ---------------------------------------------------------------------------------------------------- D-NPEFF

def normalized_matrix(pefs: DiagPefs) -> scipy.sparse.csr_matrix:
    """The matrix D-NPEFF factorizes: D-PEFs divided by ‖f_i‖ + 1e-9, empty columns pruned, scipy CSR float32."""
    e = sp.normalize(sp.diag_entries(torch.as_tensor(pefs.values), torch.as_tensor(pefs.indices), pefs.n_parameters),
                     sp.diag_scales(torch.as_tensor(pefs.norms)))
    e = sp.restrict_columns(e, sp.prune_columns(e, 1))
    return scipy.sparse.csr_matrix((e.values.numpy(), (e.rows.numpy(), e.cols.numpy())),
                                   shape=(e.n_examples, e.n_cols))


def sklearn_mu(A: scipy.sparse.csr_matrix, r: int) -> tuple[float, int, float, float]:
    """(seconds, iterations, ‖A − WH‖²_F in float64, its own float32 value) of scikit-learn's MU NMF."""
    start = time.perf_counter()
    model = NMF(r, solver="mu", init="random", beta_loss="frobenius", max_iter=SKLEARN_ITERS, tol=0.0,
                random_state=0)
    W = model.fit_transform(A)
    seconds = time.perf_counter() - start
    return seconds, model.n_iter_, frobenius_loss(A, W, model.components_), model.reconstruction_err_**2


def frobenius_loss(A: scipy.sparse.csr_matrix, W: np.ndarray, H: np.ndarray) -> float:
    """‖A − WH‖²_F = ‖A‖² − 2⟨A Hᵀ, W⟩ + ⟨WᵀW, HHᵀ⟩ in float64."""
    A64, W64, H64 = A.astype(np.float64), W.astype(np.float64), H.astype(np.float64)
    return float(A64.multiply(A64).sum() - 2 * np.sum((A64 @ H64.T) * W64) + np.sum((W64.T @ W64) * (H64 @ H64.T)))


def bench_d(n: int = 4000, M: int = 100_000, k: int = 1000, r: int = 32) -> str:
    pefs = diag_pefs(n, M, k, n_components=r)
    A = normalized_matrix(pefs)
    sk_seconds, sk_iters, target, sk_reported = sklearn_mu(A, r)
    init = _initialize_nmf(A, r, init="random", random_state=0)  # the start scikit-learn's fit used
    n_iters = SKLEARN_ITERS + EXTRA_ITERS
    _, trace = traced(fit_d_npeff, pefs, r, n_iters=n_iters, init=init)
    sk_per_iter = sk_seconds / sk_iters
    reached = [i for i, loss in enumerate(trace.losses) if loss <= target * (1 + SAME_LOSS_RTOL)]
    same_count = trace.iterations.index(SKLEARN_ITERS)
    rows = ["| method | iterations | seconds | s / iteration | ‖A − WH‖²_F |", "|---|---|---|---|---|",
            f"| scikit-learn NMF(solver='mu', init='random') | {sk_iters} | {sk_seconds:.2f} | {sk_per_iter:.4f} "
            f"| {target:.4f} |"]
    for label, i in [("until scikit-learn's loss", reached[0] if reached else None), ("same iterations", same_count)]:
        if i is not None:
            per_iter = (trace.times[i] - trace.times[0]) / trace.iterations[i]  # the loop alone
            rows.append(f"| fit_d_npeff, {label} | {trace.iterations[i]} | {trace.times[i]:.2f} | {per_iter:.4f} "
                        f"| {trace.losses[i]:.4f} |")
    verdict = (f"**Time to scikit-learn's loss: {sk_seconds / trace.times[reached[0]]:.1f}x faster** (goal ≥ 3x)"
               if reached else f"**scikit-learn's loss was not reached in {n_iters} iterations**")
    verdict += f"; same iterations: {sk_seconds / trace.times[same_count]:.1f}x."
    return (f"### D-NPEFF vs scikit-learn MU NMF (n={n}, M={M:,}, {k} values per example, nnz={A.nnz:,}, r={r})\n\n"
            f"Planted D-PEFs (f_i = Σ W_ik h_k + noise, top-k). Both factorize the same normalized, pruned CSR "
            f"matrix (float32) from the same start, scikit-learn's init='random' (random_state=0, tol=0) handed to "
            f"fit_d_npeff as `init`, so both run the same Lee–Seung iterations and the init's luck is out of the "
            f"comparison. scikit-learn's loss is recomputed in float64 from its factors: its own "
            f"`reconstruction_err_²` ({sk_reported:.4f}) is evaluated in float32 and reads "
            f"{(target - sk_reported) / target:.1e} (relative) low. \"The same loss\" is therefore within "
            f"{SAME_LOSS_RTOL:.0e} (relative) of scikit-learn's final loss; rounding alone moves the two float32 "
            f"runs apart by about that much on the slow tail of the curve. Our time runs from the call "
            f"(normalization, pruning and CSR construction included); our loss is read from the progress callback "
            f"(every {-(-n_iters // 100)} iterations); its seconds per iteration leave the preprocessing out. "
            f"One run each.\n\n" + "\n".join(rows) + f"\n\n{verdict}\n")


# ------------------------------------------------------------------------------------------------------ LRM

def products_alone(pefs: LrmPefs, r: int) -> float:
    """Best time of X Gᵀ plus best time of Xᵀ Wag on the same normalized, pruned matrix, random dense factors."""
    e = sp.lrm_entries(torch.as_tensor(pefs.values), torch.as_tensor(pefs.indices),
                       torch.as_tensor(pefs.class_offsets), pefs.n_parameters)
    e = sp.normalize(sp.restrict_columns(e, sp.prune_columns(e, 1)), sp.lrm_scales(torch.as_tensor(pefs.norms)))
    X, Xt = sp.csr_pair(e)
    Gt, Wag = torch.randn(e.n_cols, r), torch.randn(e.n_rows, r)
    return (best_time(lambda: X @ Gt, PRODUCT_REPEATS, warmup=True)
            + best_time(lambda: Xt @ Wag, PRODUCT_REPEATS, warmup=True))


def lrm_iteration(pefs: LrmPefs, r: int) -> tuple[float, float]:
    """(best seconds per joint iteration, seconds of the two sparse products alone)."""
    _, trace = traced(fit_lrm_npeff, pefs, r, n_iters=LRM_ITERS, n_iters_g_only=0, seed=0)
    steps = np.diff(trace.times[:LRM_ITERS])  # progress at the start of every iteration
    return float(steps[1:].min()), products_alone(pefs, r)


def bench_lrm(n: int = 5000, c: int = 3, M: int = 200_000) -> str:
    configs = [(2000, 64), (500, 64), (1000, 64), (2000, 16), (2000, 128)]  # (values per example, r)
    rows = ["| values / example | nnz | r | s / joint iteration | X Gᵀ + Xᵀ Wag alone (s) | ratio |",
            "|---|---|---|---|---|---|"]
    headline = ""
    pefs_by_k: dict[int, LrmPefs] = {}
    for k, r in configs:
        pefs = pefs_by_k.setdefault(k, lrm_pefs(n, c, M, k))
        iteration, products = lrm_iteration(pefs, r)
        rows.append(f"| {k} | {n * k:,} | {r} | {iteration:.3f} | {products:.3f} | {iteration / products:.2f}x |")
        if not headline:
            headline = (f"**Headline (k=2000, r=64): a joint iteration costs {iteration / products:.2f}x its two "
                        f"sparse products** (goal ≤ 1.5x).")
    return (f"### LRM-NPEFF joint iteration vs its sparse products (n={n}, c={c}, M={M:,})\n\n"
            f"Per configuration one fit of {LRM_ITERS} joint iterations (no G-only phase); the iteration time is "
            f"the shortest gap between progress calls, skipping the first. The products are timed alone on the "
            f"same matrix (fastest of {PRODUCT_REPEATS} each); minima, because other jobs share the machine. "
            f"Repetitions were cut, not sizes, to keep the benchmark "
            f"within its time budget; the iteration includes the W step, the exact line search (X Dᵀ replaces "
            f"X Gᵀ; AG and GG move with the step) and the dense r²m products.\n\n" + "\n".join(rows) +
            f"\n\n{headline}\n")


def main() -> None:
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    body = bench_d() + "\n" + bench_lrm()
    body += (f"\nTotal benchmark time: {time.perf_counter() - start:.0f} s. The machine is shared: 1-minute load "
             f"average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (on 2 cores, other "
             f"jobs slow the 2-thread torch side more than single-threaded scipy).\n")
    write_section("NPEFF", command_line(), body)
    print(body)


if __name__ == "__main__":
    main()
