"""The whole Rotten Tomatoes corpus end to end from the command line: PEFs over all MiniLM parameters, then LRM-NPEFF.

Goal (issue #16): the 12,808 fresh/rotten snippets of data/rotten_tomatoes_corpus_full.csv.bz2 over all 22.7M
parameters of the text demo (MiniLM-L6) with 16,384 values per example, LRM-NPEFF with 128 components, PEFs + fit
in under 30 minutes on 2 cores with peak RSS under 8 GB; then component views under 100 ms of Python time.

Each stage is the CLI run as a user runs it (`python -m analysis.cli pefs ...`, then `fit ...`), in a fresh
child process: its wall time, and its peak RSS from the kernel's accounting of that child (os.wait4's
ru_maxrss). The stage's compute time (from its first progress report to its end) comes from its job row in
the workspace, so start-up, the PEF time estimate and the fit's set-up show as the rest. The component view is
pages/panels/component.py's fragment run in an AppTest on the stored result, timed around the call (wall and
the script thread's CPU time), caches warm, over several components. `--examples 1000 2000` runs each size in
its own workspace and extrapolates to the whole corpus by a line through the measurements.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.demos import RT_CSV, RT_LABELS, demo_folder
from analysis.jobs import Job, list_jobs
from analysis.npeff.pef_matrix import read_rows
from analysis.store import DEFAULT_WORKSPACE, Workspace
from benchmarks.results import add_common_args, command_line, write_section

ROOT = Path(__file__).resolve().parent.parent
CORPUS_SIZE = 12_808  # fresh and rotten snippets of RT_CSV (the 'plot' rows have no label)
GOAL_S, GOAL_RSS = 30 * 60, 8 * 10**9
GIB = 2**30
X_BYTES = 8  # per stored value in the fit's X: float32 value + int32 row
COPIES = 2  # [m, r] float32 arrays at the fit's peak: G and its step direction
QUICK = dict(examples=[32], components=8, iters=3, g_only_iters=2, views=2)  # 64 examples: 144 s at load 6


@dataclass(frozen=True)
class Stage:
    """One CLI command as a child process."""

    seconds: float  # wall clock, start to exit
    peak_rss: int  # bytes, the child's maximum resident set
    compute_seconds: float  # from the job's first progress report to its end
    steps: int  # what the compute time covers: examples (PEFs) or iterations (fit)
    run_id: str


@dataclass(frozen=True)
class Measurement:
    """Both stages and the component views at one corpus size."""

    n: int
    pefs: Stage
    fit: Stage
    nnz: int  # stored PEF values
    m: int  # kept parameters (columns of the fit)
    alpha: float  # kept parameters grow as N^alpha (from the first half of the examples to all)
    view_wall_ms: list[float]  # per view, the first (cold) one excluded
    view_cpu_ms: list[float]
    first_view_ms: float

    @property
    def total_seconds(self) -> float:
        return self.pefs.seconds + self.fit.seconds

    @property
    def peak_rss(self) -> int:
        return max(self.pefs.peak_rss, self.fit.peak_rss)


def corpus_csv(n: int, folder: Path) -> Path:
    """The first n fresh/rotten snippets of the shipped corpus, in file order, as the CSV a user would pass."""
    frame = pd.read_csv(RT_CSV)
    frame = frame[frame["category"].isin(RT_LABELS)][["text", "category"]]
    if not 1 <= n <= len(frame):
        raise ValueError(f"--examples must be in [1, {len(frame)}] (the corpus' fresh and rotten snippets), got {n}")
    path = folder / f"rotten_tomatoes_first_{n}.csv"
    frame.head(n).to_csv(path, index=False)
    return path


def _job_of(ws: Workspace, run_id: str) -> Job:
    jobs = [job for job in list_jobs(ws) if job.result == run_id and job.status == "complete"]
    if not jobs:
        raise RuntimeError(f"{ws.root}: no complete job produced run {run_id}")
    return jobs[0]


def _compute_seconds(job: Job) -> float:
    """Seconds from the job's current stage start (its first progress report) to its end."""
    return job.finished - (job.now - job.stage_elapsed)


def run_stage(argv: list[str], workspace: Path, log: Path, run_pattern: str) -> Stage:
    """Run one CLI command in a child process; its wall time, peak RSS, compute time and the run it made."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "analysis.cli", "--workspace", str(workspace), *argv],
                                 cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage: ru_maxrss in KiB on Linux
        seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    stdout = log.with_suffix(".out").read_text()
    if child.returncode != 0:
        raise RuntimeError(f"`analysis.cli {' '.join(argv)}` exited with {child.returncode}: "
                           f"{log.with_suffix('.err').read_text()[-2000:]}")
    found = re.search(run_pattern + r" run ([0-9a-f]+)", stdout)
    if found is None:
        raise RuntimeError(f"`analysis.cli {' '.join(argv)}` printed no '{run_pattern} run ID': {stdout[-500:]}")
    ws = Workspace(workspace)
    job = _job_of(ws, found[1])
    ws.close()
    return Stage(seconds, usage.ru_maxrss * 1024, _compute_seconds(job), job.step, found[1])


def view_app(root: str, model_source: str, data: str, run_id: str) -> None:
    """An AppTest script: the Components page's context and its component view, the view timed alone."""
    import time

    import streamlit as st

    from analysis.loading import DatasetSpec, ModelSpec, paired_dataset_spec
    from analysis.models import ParamScope
    from pages.common import activate, freeze_startup_heap, model_for, workspace
    from pages.panels.browse import browse_context, restore_component
    from pages.panels.component import component_view

    model_spec = ModelSpec(source=model_source, scope=ParamScope("all"))
    dataset_spec = paired_dataset_spec(model_for(model_spec),
                                       DatasetSpec(source=data, text_columns=("text",), label_column="category"))
    model, dataset = activate(model_spec, dataset_spec)
    ctx = browse_context(model, dataset, workspace(), run_id)
    restore_component(ctx.n_components)
    wall, cpu = time.perf_counter(), time.thread_time()
    component_view(ctx)
    st.session_state["view_ms"] = (1e3 * (time.perf_counter() - wall), 1e3 * (time.thread_time() - cpu))
    freeze_startup_heap()  # as app.py does after each run (the first run's objects leave the collector's passes)


def time_views(workspace: Path, model_source: Path, data: Path, run_id: str, components: list[int]
               ) -> tuple[float, list[float], list[float]]:
    """(first view's wall ms, then wall ms and CPU ms of each further view) of the component view on the run."""
    from streamlit.testing.v1 import AppTest

    from pages.panels.browse import COMPONENT_KEY

    os.environ["NPEFF_WORKSPACE"] = str(workspace)
    os.environ["NPEFF_ALLOWED_ROOTS"] = os.pathsep.join([str(workspace), str(model_source)])
    at = AppTest.from_function(view_app, args=(str(workspace), str(model_source), str(data), run_id),
                               default_timeout=600)
    at.run()
    if at.exception:
        raise RuntimeError(f"component view failed: {at.exception[0].value}")
    first = at.session_state["view_ms"][0]
    wall, cpu = [], []
    for k in components:
        at.session_state[COMPONENT_KEY] = k
        at.run()
        if at.exception:
            raise RuntimeError(f"component view {k} failed: {at.exception[0].value}")
        wall.append(at.session_state["view_ms"][0])
        cpu.append(at.session_state["view_ms"][1])
    return first, wall, cpu


def measure(n: int, args: argparse.Namespace, model_source: Path, workspace: Path) -> Measurement:
    """PEFs then the fit of the first n snippets through the CLI in `workspace`, then the component views."""
    workspace.mkdir(parents=True, exist_ok=True)
    data = corpus_csv(n, workspace)
    pefs = run_stage(["pefs", "--model", str(model_source), "--data", str(data), "--text-column", "text",
                      "--label-column", "category", "--scope", "all", "--values-per-example", str(args.values),
                      "--batch-size", str(args.batch_size)], workspace, workspace / f"pefs_{n}", "PEF")
    fit = run_stage(["fit", "--pefs", pefs.run_id, "--components", str(args.components), "--iters", str(args.iters),
                     "--g-only-iters", str(args.g_only_iters)], workspace, workspace / f"fit_{n}", "NPEFF")
    ws = Workspace(workspace)
    values = ws.load_array(pefs.run_id, "values")
    nnz, m = int(np.count_nonzero(values)), len(ws.load_array(fit.run_id, "kept"))
    n_parameters = int(ws.get_run(pefs.run_id).summary["n_parameters"])
    alpha = kept_growth(ws.load_array(pefs.run_id, "indices"), values, n_parameters)
    ws.close()
    components = [int(k) for k in np.linspace(0, args.components - 1, args.views).round()]
    first, wall, cpu = time_views(workspace, model_source, data, fit.run_id, components)
    return Measurement(n, pefs, fit, nnz, m, alpha, wall, cpu, first)


def kept_growth(indices: np.ndarray, values: np.ndarray, n_parameters: int, block: int = 256) -> float:
    """alpha in kept(N) ∝ N^alpha: log2 of the parameters holding a stored value in all n examples over those in
    the first n/2 (indices, values [n, k], read a block of examples at a time)."""
    n = len(indices)
    seen = np.zeros(n_parameters, dtype=bool)  # [M]
    counts = []
    for lo, hi in ((0, n // 2), (n // 2, n)):
        for start in range(lo, hi, block):
            rows = slice(start, min(start + block, hi))
            seen[read_rows(indices, rows)[read_rows(values, rows) != 0]] = True
        counts.append(int(seen.sum()))
    return float(np.log2(counts[1] / counts[0])) if counts[0] else 1.0


def extrapolate(sizes: list[int], values: list[float], n: int) -> float:
    """values at size n: the least-squares line through (size, value) for 2+ sizes, else proportional to size."""
    if len(set(sizes)) < 2:
        return values[0] * n / sizes[0]
    slope, intercept = np.polyfit(sizes, values, 1)
    return float(slope * n + intercept)


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def report(results: list[Measurement], loads: list[tuple[str, str]], args: argparse.Namespace) -> str:
    """The markdown body: one row per size, the extrapolation to the whole corpus and the goals."""
    rows = []
    for r, (before, after) in zip(results, loads):
        setup = r.fit.seconds - r.fit.compute_seconds
        rows.append(f"| {r.n:,} | {before} → {after} | {r.pefs.seconds:.0f} | {r.n / r.pefs.compute_seconds:.1f} | "
                    f"{r.pefs.peak_rss / GIB:.2f} | {r.fit.seconds:.0f} | {setup:.0f} | "
                    f"{r.fit.compute_seconds / r.fit.steps:.2f} | {r.fit.peak_rss / GIB:.2f} | "
                    f"{r.total_seconds / 60:.1f} | {r.nnz / 1e6:.1f}M | {r.m / 1e6:.2f}M | "
                    f"{statistics.median(r.view_wall_ms):.0f} ({statistics.median(r.view_cpu_ms):.0f}) |")
    sizes = [r.n for r in results]
    total, iters = CORPUS_SIZE, args.iters + args.g_only_iters
    # per stage: start-up and estimate (constant) + per-example or per-iteration cost (linear in the size)
    pef_rest = statistics.mean(r.pefs.seconds - r.pefs.compute_seconds for r in results)
    pef_s = pef_rest + extrapolate(sizes, [r.pefs.compute_seconds for r in results], total)
    per_iter = extrapolate(sizes, [r.fit.compute_seconds / r.fit.steps for r in results], total)
    setup_s = extrapolate(sizes, [r.fit.seconds - r.fit.compute_seconds for r in results], total)
    fit_s = setup_s + per_iter * iters
    pef_rss = max(r.pefs.peak_rss for r in results)  # a batch at a time: no growth with the size
    # the fit's peak: what does not grow, + X (X_BYTES per value) + COPIES × [m, r], m growing as N^alpha
    last = results[-1]
    big = lambda nnz, m: X_BYTES * nnz + COPIES * 4 * m * args.components  # noqa: E731
    m_total = last.m * (total / last.n) ** last.alpha
    fit_rss = last.fit.peak_rss - big(last.nnz, last.m) + big(last.nnz * total / last.n, m_total)
    budget_iters = int((GOAL_S - pef_s - setup_s) / per_iter) if per_iter > 0 else 0
    met = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    views = [ms for r in results for ms in r.view_cpu_ms]
    how = ("measured whole: nothing extrapolated" if set(sizes) == {total}
           else "a line through the sizes measured" if len(set(sizes)) > 1
           else "proportional to the size (one size measured)")
    return f"""
The first N fresh/rotten snippets of the corpus (file order) as a CSV; `analysis.cli pefs --model <text demo>
--scope all --values-per-example {args.values} --batch-size {args.batch_size}` (all 22,713,986 parameters, LRM,
2 classes), then `analysis.cli fit --components {args.components} --iters {args.iters} --g-only-iters
{args.g_only_iters}`, each in a fresh child process with the default torch threads. Wall: the command from start
to exit; compute: its job's stage from the first progress report to the end (the rest is start-up, the PEF time
estimate's calibration batches and the fit's set-up: reading the PEFs and building X). Peak RSS: the child's
ru_maxrss (os.wait4). Views: the Components page's component-view fragment in an AppTest on the stored result,
median over {args.views} components after the first (warm caches; the first run's objects frozen out of the
garbage collector's passes, as app.py does), wall ms (the script thread's CPU ms). The
machine is shared: load average (1 / 5 / 15 min) before → after each size.

| N | load | PEF wall s | PEF examples/s (compute) | PEF peak GiB | fit wall s | fit set-up s | s / iteration | fit peak GiB | total min | values | kept params | view ms wall (CPU) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Whole corpus ({total:,} snippets), extrapolated ({how}): PEFs {pef_s / 60:.1f} min, fit set-up
{setup_s / 60:.1f} min + {iters} iterations × {per_iter:.1f} s = {fit_s / 60:.1f} min, **total {(pef_s + fit_s) / 60:.1f}
min** (goal < 30: {met(pef_s + fit_s < GOAL_S)}; {max(budget_iters, 0)} iterations fit in the 30 minutes); times scale
with the load they were measured under, and an iteration's time is scaled with the stored values, an upper bound
(its dense r²m products grow with the kept parameters only). Peak RSS: PEFs {pef_rss / GIB:.2f} GiB (a batch at a
time); fit {fit_rss / GIB:.2f} GiB = the measured peak with X ({X_BYTES} B per value) scaled to
{last.nnz * total / last.n / 1e6:.0f}M values and {COPIES:g} arrays of [m, r] float32 to m = {m_total / 1e6:.2f}M kept
parameters (kept parameters grow as N^{last.alpha:.2f}: all N vs the first N/2) (goal < 8 GB:
{met(max(pef_rss, fit_rss) < GOAL_RSS)}).
Component view: median {statistics.median(views):.0f} ms CPU, slowest {max(views):.0f} ms (goal < 100 ms:
{met(max(views) < 100)}).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, nargs="+", default=[CORPUS_SIZE],
                        help="corpus sizes: the first N snippets (several: one run each, extrapolated by a line)")
    parser.add_argument("--values", type=int, default=16384, help="values kept per example")
    parser.add_argument("--components", type=int, default=128)
    parser.add_argument("--iters", type=int, default=50, help="joint iterations of the fit")
    parser.add_argument("--g-only-iters", type=int, default=20, help="G-only warm-up iterations of the fit")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--views", type=int, default=8, help="components whose view is timed")
    parser.add_argument("--demo-root", type=Path, default=DEFAULT_WORKSPACE,
                        help="a workspace holding the text demo (built there with `analysis.cli demo text` if missing)")
    parser.add_argument("--workspace", type=Path,
                        help="where the runs go, one folder per size, kept for the dashboard (default: a temporary "
                             "folder, removed)")
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.examples, args.components, args.iters, args.g_only_iters, args.views = QUICK.values()
    model_source = demo_folder("text", args.demo_root)
    if not model_source.exists():
        subprocess.run([sys.executable, "-m", "analysis.cli", "--workspace", str(args.demo_root), "demo", "text"],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    with tempfile.TemporaryDirectory(prefix="bench_corpus_") as tmp:
        base = args.workspace or Path(tmp)
        results, loads = [], []
        for n in args.examples:
            before = load_line()
            results.append(measure(n, args, model_source, base / f"corpus_{n}"))
            loads.append((before, load_line()))
            print(f"N={n}: PEFs {results[-1].pefs.seconds:.0f} s, fit {results[-1].fit.seconds:.0f} s", flush=True)
    body = report(results, loads, args)
    write_section("Whole corpus", command_line(), body, path=args.results)
    print(body)


if __name__ == "__main__":
    main()
