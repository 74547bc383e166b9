"""Time estimates against measured times: the PEF estimate (calibrated batches) and the fit's (calibrated on the
stored PEFs, and from the size with the coefficient that calibration measured).

Run from the repo root: `python -m benchmarks.bench_estimates [--text-examples 256] [--iters 200]`. It builds
the demos under a temporary workspace when --workspace is not given (`--quick`: a slice of the image demo and short
fits, seconds; the text case runs the same one_case on another model). Goal: every ratio estimate / measured
within 0.5 .. 2 (the Compute page showed 1,337 s for a run of 305 s, a ratio of 4.4).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from analysis.datasets import dataset_slice
from analysis.demos import load_demo
from analysis.estimates import (estimate_pefs, fit_seconds_from_size, measure_fit_seconds,
                                measure_seconds_per_example)
from analysis.runs import fit_config, load_pefs, pefs_run
from analysis.store import Workspace
from analysis.variants import get_variant
from benchmarks.results import add_common_args, command_line, write_section

BATCH_SIZE = 16  # the Compute page's default
VALUES = {"image": 200, "text": 2048}  # values kept per example (the Compute page's defaults for each demo)


def one_case(ws: Workspace, demo: str, n_examples: int | None, iters: int, components: int) -> list[str]:
    """Rows of the results table for one demo: PEFs and the fit, estimate vs measured (a fresh run each)."""
    model, dataset, _ = load_demo(demo, ws.root)
    if n_examples is not None and n_examples < len(dataset):
        dataset = dataset_slice(dataset, 0, n_examples)
    k = VALUES[demo]
    seconds_each = measure_seconds_per_example(ws.root, model, dataset, kind="lrm", top_k_classes=None,
                                               n_values_per_example=k, batch_size=BATCH_SIZE)
    estimate = estimate_pefs(model, dataset, kind="lrm", n_values_per_example=k, top_k_classes=None,
                             n_components=components, batch_size=BATCH_SIZE, seconds_each=seconds_each)
    start = time.perf_counter()
    pefs = pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=k, batch_size=BATCH_SIZE)
    pef_s = time.perf_counter() - start

    config = fit_config(get_variant("lrm"), {"n_components": components, "n_iters": iters})
    stored = load_pefs(ws, pefs)
    calibrated = measure_fit_seconds(ws.root, stored, config)
    from_size = fit_seconds_from_size(ws.root, config, len(dataset) * estimate.values_per_example)
    start = time.perf_counter()
    get_variant("lrm").fit(stored, config)
    fit_s = time.perf_counter() - start
    name = f"{demo} demo, {len(dataset):,} examples"
    return [f"| {name} | PEFs (batches of {BATCH_SIZE}, {k} values) | {estimate.pef_seconds:.1f} s | {pef_s:.1f} s "
            f"| {estimate.pef_seconds / pef_s:.2f} |",
            f"| {name} | fit, calibrated on the stored PEFs ({components} components, {config.total_iters} "
            f"iterations) | {calibrated:.1f} s | {fit_s:.1f} s | {calibrated / fit_s:.2f} |",
            f"| {name} | fit, from the size | {from_size:.1f} s | {fit_s:.1f} s | {from_size / fit_s:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="a workspace holding both demos (else built in a temp dir)")
    parser.add_argument("--text-examples", type=int, default=256, help="text demo examples timed (a slice)")
    parser.add_argument("--iters", type=int, default=200, help="joint iterations of each fit")
    parser.add_argument("--image-examples", type=int, help="image demo examples timed (a slice; default all)")
    parser.add_argument("--components", type=int, default=16)
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.image_examples, args.iters, args.components = 64, 5, 4
    cases = [("image", args.image_examples)] + ([] if args.quick else [("text", args.text_examples)])

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        if args.workspace is not None:  # the demos only: the runs are computed afresh in the temp workspace
            for demo in ("image-demo", "text-demo"):
                (root / "demos").mkdir(parents=True, exist_ok=True)
                (root / "demos" / demo).symlink_to((args.workspace / "demos" / demo).resolve())
        ws = Workspace(root)
        rows = [row for demo, n in cases for row in one_case(ws, demo, n, args.iters, args.components)]
        ws.close()
    body = """
Each estimate is made the way the Compute page makes it, then the same work is run and timed (wall clock,
one run each, in a fresh workspace). PEFs: a warm-up batch, then 3 batches spread over the first chunk in
length order, median seconds per example × examples. Fit: the real fit for its G-only warm-up plus 5 joint
iterations, median seconds per iteration of each phase × iterations; "from the size" scales the measured
seconds per (stored value × component) to the whole fit. Goal: ratios within 0.5 .. 2.

| case | what | estimate | measured | ratio |
|---|---|---|---|---|
""" + "\n".join(rows)
    write_section("Time estimates", command_line(), body, path=args.results)
    print(body)


if __name__ == "__main__":
    main()
