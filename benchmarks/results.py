"""Write one benchmark's section of benchmarks/RESULTS.md, leaving the other sections untouched."""
from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is rewritten by the script named in it; ratios are measured in one run.\n"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo) and architecture: an Intel Xeon and an AMD EPYC of the same core count
    gave the LRM baseline's sparse products 2.8x apart."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]}, {platform.machine()}" if names else platform.processor() or platform.machine()


def machine_line() -> str:
    """One line naming the machine, so numbers from different hosts are never compared blindly."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (f"{date.today().isoformat()}, {cpu_model()}, "
            f"{torch.get_num_threads()} torch threads, {device}, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def write_section(name: str, command: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section `name` with the command that produced it and `body` (markdown)."""
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    section = (f"{start}\n## {name}\n\nCommand: `{command}`\n\nMachine: {machine_line()}\n\n"
               f"{body.strip()}\n{end}")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


def command_line() -> str:
    """The command that ran this benchmark (as `python -m benchmarks.NAME ...`), for the section header."""
    script = Path(sys.argv[0]).resolve()
    module = ".".join(script.relative_to(RESULTS.parent.parent).with_suffix("").parts)
    return " ".join(["python -m", module, *sys.argv[1:]])


def best_time(f: Callable[[], object], repeats: int, *, warmup: bool = False) -> float:
    """The fastest of `repeats` wall-clock timings in seconds (the least disturbed by other jobs)."""
    if warmup:
        f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--quick (tiny sizes, seconds: CI runs it so that no benchmark rots) and --results (where to write)."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds: checks that the script runs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the markdown file whose section is rewritten")


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds of one measured callable over interleaved rounds."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)


def interleaved(callables: dict[str, Callable[[], object]], rounds: int, *, warmup: bool = True) -> dict[str, Timings]:
    """Time every callable once per round, in turn (so that load from other jobs hits all of them alike)."""
    if warmup:
        for f in callables.values():
            f()
    seconds: dict[str, list[float]] = {name: [] for name in callables}
    for _ in range(rounds):
        for name, f in callables.items():
            start = time.perf_counter()
            f()
            seconds[name].append(time.perf_counter() - start)
    return {name: Timings(times) for name, times in seconds.items()}
