"""PEFs under torchrun: `analysis.cli pefs` in one process (2 threads, and 1) vs two gloo ranks (1 thread each) that
share the chunks out, on a slice of the text demo.

Run from the repo root: `python -m benchmarks.bench_pefs_torchrun [--examples 512] [--scope last:1] [--rounds 3]`.
It reads the text demo from --workspace (else builds it in a temporary workspace, ~2 min; `--quick`: 32 examples,
one round, no warm-up). Each timed command is the whole CLI call (process start, model load, PEFs, assembly)
into a fresh workspace seeded with the warm-up run's time estimate, so that none measures it again; the setups
run in turn, round after round (load from other jobs hits them alike). Goal: 2 ranks about 2× faster.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from analysis.demos import DEMOS, build_demo, demo_folder
from analysis.estimates import TIMINGS
from analysis.jobs import list_jobs
from analysis.store import Workspace
from benchmarks.results import Timings, add_common_args, command_line, interleaved, write_section

ROOT = Path(__file__).resolve().parents[1]
CHUNK_SIZE = 64  # 512 examples: 8 chunks, 4 per rank
CLI = [sys.executable, "-m", "analysis.cli"]
SETUP_ONE, SETUP_SINGLE, SETUP_RANKS = "1 process, 2 threads", "1 process, 1 thread", "2 gloo ranks, 1 thread each"
SETUPS = {  # name -> (launcher, threads per process)
    SETUP_ONE: (CLI, 2),
    SETUP_SINGLE: (CLI, 1),  # what each rank does alone: the speed-up of sharing the chunks out, without threads
    SETUP_RANKS: ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                   "analysis.cli"], 1),
}


def slice_csv(n_examples: int, path: Path) -> Path:
    """The text demo's first n examples as a CSV the CLI reads (--data, --label-column label)."""
    data = DEMOS["text"].dataset()
    n = min(n_examples, len(data))
    pd.DataFrame({"text": [t[0] for t in data.texts[:n]],
                  "label": [data.label_names[y] for y in data.labels[:n]]}).to_csv(path, index=False)
    return path


def pefs_command(launcher: list[str], workspace: Path, model: Path, data: Path, scope: str) -> list[str]:
    return [*launcher, "--workspace", str(workspace), "pefs", "--model", str(model), "--data", str(data),
            "--label-column", "label", "--scope", scope, "--chunk-size", str(CHUNK_SIZE), "--yes"]


def run_pefs(setup: str, tmp: Path, model: Path, data: Path, scope: str, seed_timings: Path | None) -> Path:
    """One `pefs` command of a setup into a fresh workspace (seeded with the timings file when given); the
    workspace."""
    launcher, threads = SETUPS[setup]
    workspace = Path(tempfile.mkdtemp(dir=tmp))
    if seed_timings is not None:
        shutil.copy(seed_timings, workspace / TIMINGS)
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(pefs_command(launcher, workspace, model, data, scope), cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{setup}: pefs exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return workspace


def job_seconds(workspace: Path) -> float:
    """How long the command's pefs job ran (the PEFs and their assembly, after start-up and model load)."""
    ws = Workspace(workspace)
    (job,) = list_jobs(ws)
    ws.close()
    return job.elapsed


def load_average() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="a workspace holding the text demo (else built in a temp dir)")
    parser.add_argument("--examples", type=int, default=512, help="text demo examples (its first ones)")
    parser.add_argument("--scope", default="last:1", help="parameters in scope (default: the demo's, last:1)")
    parser.add_argument("--rounds", type=int, default=3)
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.examples, args.rounds = 32, 1

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        root = args.workspace or tmp / "demo-ws"
        if args.workspace is None:
            build_demo("text", root)
        model, data = demo_folder("text", root), slice_csv(args.examples, tmp / "slice.csv")
        # the warm-up run measures the time estimate once; every timed run starts from its timings file (--quick:
        # no warm-up, each run measures it)
        seed = None if args.quick else run_pefs(SETUP_ONE, tmp, model, data, args.scope, None) / TIMINGS
        # --quick: the 1-thread process runs the 2-thread one's code; left out, it only costs CI time
        setups = [setup for setup in SETUPS if not (args.quick and setup == SETUP_SINGLE)]
        jobs: dict[str, list[float]] = {setup: [] for setup in setups}

        def timed(setup: str) -> None:
            jobs[setup].append(job_seconds(run_pefs(setup, tmp, model, data, args.scope, seed)))

        load_before = load_average()
        timings = interleaved({setup: (lambda s=setup: timed(s)) for setup in setups}, args.rounds,
                              warmup=not args.quick)
        load_after = load_average()

    computing = {setup: Timings(seconds[-args.rounds:]) for setup, seconds in jobs.items()}  # the timed rounds
    rows = [f"| {setup} | {t.median:.1f} s | {t.min:.1f} s | {computing[setup].median:.1f} s | "
            f"{args.examples / computing[setup].median:.0f} |" for setup, t in timings.items()]

    def speedup(baseline: str) -> str:
        return (f"**{computing[baseline].median / computing[SETUP_RANKS].median:.2f}×** for the PEFs, "
                f"{timings[baseline].median / timings[SETUP_RANKS].median:.2f}× for the whole command")

    body = f"""
`analysis.cli pefs` on the text demo's first {args.examples} reviews (scope {args.scope}, chunks of {CHUNK_SIZE},
batches of 16): one process with OMP_NUM_THREADS=2 or 1 against `torchrun --nproc_per_node 2` (gloo,
OMP_NUM_THREADS=1 per rank: rank r computes chunks r, r+2, ...). Wall clock of the whole command (start-up, model
load, PEFs, assembly) and of its PEF job (computing the chunks and assembling the run, as the Jobs page times it),
into a fresh workspace each time, the time estimate taken from a warm-up run; {args.rounds} interleaved round(s),
median and fastest. Load average (1, 5, 15 min) {load_before} before and {load_after} after, on {os.cpu_count()}
cores.

| setup | command, median | command, fastest | PEF job, median | examples/s in the job |
|---|---|---|---|---|
""" + "\n".join(rows) + f"""

Speed-up of 2 ranks (medians):
""" + ";\n".join(f"- over {setup}: {speedup(setup)}" for setup in setups if setup != SETUP_RANKS) + """.

The start-up (Python, torch and transformers imports, model load, on every rank) is not shared out.
"""
    write_section("PEFs under torchrun", command_line(), body, path=args.results)
    print(body)


if __name__ == "__main__":
    main()
