"""Command line: build demos (and, as the NPEFF issues land, compute PEFs and fit) into a workspace.

Usage: python -m analysis.cli demo text|image [--workspace DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from analysis.demos import DEMOS, build_demo
from analysis.store import DEFAULT_WORKSPACE


def _demo(args: argparse.Namespace) -> int:
    with tqdm(total=100, desc=f"{args.kind} demo", bar_format="{l_bar}{bar}| {postfix}") as bar:
        def progress(frac: float, message: str) -> None:
            bar.n = int(100 * frac)
            bar.set_postfix_str(message[:60])
            bar.refresh()

        folder, metrics = build_demo(args.kind, Path(args.workspace), progress)
    print(f"{args.kind} demo at {folder}: held-out accuracy {metrics.test_accuracy:.1%} on {metrics.n_test} "
          f"examples, built in {metrics.build_seconds:.0f} s ({metrics.trained})")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="npeff", description=__doc__.splitlines()[0])
    p.add_argument("--workspace", default=str(DEFAULT_WORKSPACE), help="workspace folder (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build an offline demo model once (cached in the workspace)")
    demo.add_argument("kind", choices=sorted(DEMOS))
    demo.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
