"""Perturb all components of the text demo: the pooled perturb_all vs the pre-#14 loop, in the same run.

Run from the repo root: `python -m benchmarks.bench_perturb_all` (about 2 min on a quiet 2-core machine
for the build, then the rounds; `--quick`: a slice of the image demo, 4 components, one round, seconds). Goal
(issue #14): perturb-all of 32 components of the text demo in under 3 minutes on 2 cores.

Model: the text demo (MiniLM-L6, last layer + head in scope) built under /tmp/ws; decomposition: LRM-NPEFF,
32 components, fit with the library (pefs_run + fit_run) in /tmp/bench_ws and reused from there. Each timed
call starts with the unperturbed-probability cache cleared (a first perturb-all in a session). The baseline
is timed on the first `--baseline-components` components and extrapolated linearly: its cost per component
is constant (one forward pass at θ₀ and one per sign over the same number of examples). Both sides run in this
process with the same torch thread count (--threads).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from analysis.datasets import dataset_slice  # noqa: E402
from analysis.demos import load_demo  # noqa: E402
from analysis.perturb import evaluation  # noqa: E402
from analysis.perturb.api import perturb_all  # noqa: E402
from analysis.runs import fit_run, load_decomposition, pefs_run  # noqa: E402
from analysis.store import Workspace  # noqa: E402
from benchmarks.baseline_perturb_all import baseline_perturb_all  # noqa: E402
from benchmarks.results import add_common_args, command_line, write_section  # noqa: E402

DEMO_ROOT, WORKSPACE = Path("/tmp/ws"), Path("/tmp/bench_ws")
N_COMPONENTS, N_VALUES, N_ITERS = 32, 16384, 100
MAGNITUDE, GOAL_S = 1.0, 180.0
TOP_N, BASELINE_N = 32, 128
QUICK = dict(examples=200, values=200, iters=10, top_n=8, baseline_n=16)  # --quick: a slice of the image demo
NAMES = {"text": "MiniLM-L6 text demo, last layer + head", "image": "DigitsCNN image demo, all parameters"}


def cold(fn):
    """Time fn() with the unperturbed-probability cache emptied first; returns (seconds, result)."""
    evaluation._REFERENCES.clear()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=N_COMPONENTS, help="components perturbed by the new code")
    parser.add_argument("--baseline-components", type=int, default=4, help="components the baseline is timed on")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (baseline, then new)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both sides")
    parser.add_argument("--demo-root", type=Path, default=DEMO_ROOT, help="a workspace holding the built demos")
    parser.add_argument("--workspace", type=Path, default=WORKSPACE, help="where the decomposition is fit or reused")
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.components, args.baseline_components, args.rounds = 4, 2, 1
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        body = run_rounds(args, Workspace(Path(tmp) / "ws") if args.quick else Workspace(args.workspace))
    write_section("Perturb all components", command_line(), body, path=args.results)
    print(body)


def run_rounds(args: argparse.Namespace, ws: Workspace) -> str:
    """Fit (or reuse) the decomposition, time the interleaved rounds; returns the section's markdown."""
    kind, n_values, n_iters = ("image", QUICK["values"], QUICK["iters"]) if args.quick else ("text", N_VALUES, N_ITERS)
    top_n, baseline_n = (QUICK["top_n"], QUICK["baseline_n"]) if args.quick else (TOP_N, BASELINE_N)
    model, dataset, _ = load_demo(kind, args.demo_root)
    if args.quick:  # fewer examples: shorter PEFs and fit, the same calls
        dataset = dataset_slice(dataset, 0, QUICK["examples"])
    pefs = pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=n_values, device="cpu")
    run = fit_run(ws, pefs, n_components=N_COMPONENTS, n_iters=n_iters, device="cpu")
    full = load_decomposition(ws, run)
    r, b = min(args.components, full.n_components), min(args.baseline_components, args.components)
    dec = type(full)(W=np.asarray(full.W)[:, :r], G=np.asarray(full.G)[:r], kept=full.kept,
                     n_parameters=full.n_parameters, losses=full.losses, relative_error=full.relative_error)
    common = dict(device="cpu", batch_size=32, top_n=top_n, baseline_n=baseline_n)

    olds, news, deviation = [], [], 0.0
    for _ in range(args.rounds):
        old_s, old = cold(lambda: baseline_perturb_all(model, dataset, dec, MAGNITUDE, components=range(b), **common))
        new_s, new = cold(lambda: perturb_all(model, dataset, dec, MAGNITUDE, **common))
        olds.append(old_s * r / b)
        news.append(new_s)
        for column in ("kl_ratio_pos", "kl_ratio_neg"):
            a, o = new[column].to_numpy()[:b], old[column].to_numpy()
            deviation = max(deviation, float(np.max(np.abs(a - o) / np.abs(o))))
    one_s, _ = cold(lambda: perturb_all(model, dataset, dec, MAGNITUDE, signs=1, **common))
    old_med, new_med = statistics.median(olds), statistics.median(news)
    ratio = statistics.median(o / n for o, n in zip(olds, news))
    met = "met" if new_med < GOAL_S and r >= N_COMPONENTS else ("not met" if new_med >= GOAL_S else "not measured")
    body = f"""
### Perturb all components ({NAMES[kind]})

{len(dataset)} examples, LRM-NPEFF decomposition with {r} components (fit run {run.id}, {n_values} values per
example, {n_iters} iterations), magnitude ε = {MAGNITUDE}, both signs, top_n = {top_n}, baseline_n = {baseline_n},
batch size 32, device cpu, {args.threads} torch threads on both sides, M = {full.n_parameters:,} parameters in scope.
{args.rounds} interleaved rounds (baseline, then new), each call with the unperturbed-probability cache cleared.
The baseline (the pre-#14 loop, benchmarks/baseline_perturb_all.py) is timed on {b} components and scaled by
{r}/{b}: its cost per component is constant.

| implementation | median (s) | min (s) |
|---|---|---|
| baseline, per component and sign a full forward pass (scaled to {r} components) | {old_med:.1f} | {min(olds):.1f} |
| perturb_all: pooled examples, frozen layers replayed | {new_med:.1f} | {min(news):.1f} |
| perturb_all, one sign (signs=1) | {one_s:.1f} | |

Baseline / new, median of the per-round ratios = **{ratio:.1f}x**. Goal: {r} components in < {GOAL_S:.0f} s:
**{met}**. Largest relative difference of the KL ratios (new vs baseline, first {b} components): {deviation:.1e}.
"""
    ws.close()
    return body


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
