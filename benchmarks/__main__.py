"""``python -m benchmarks [--quick] [--out DIR] [--profile]``: run the suite, print the report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import run


def main(argv: Sequence[str] | None = None) -> int:
    """:param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit status of :func:`benchmarks.run`
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark codecs, storages, loop re-materialisation and workers against "
            "plumpy's own, and our AiiDA persister against AiiDA's. Prints a Markdown "
            "report (with a progress bar on a terminal) and writes results.json, "
            "results.md and results.png. Timings need a quiet machine."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI-sized run: large cases at 1 MB, fewer checkpoints and rounds.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        metavar="DIR",
        help="Directory for the results, created if missing (default: bench-results).",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Profile each missed target with pyinstrument into --out.",
    )
    args = parser.parse_args(argv)
    return run(quick=args.quick, out_dir=args.out, progress=True, profile=args.profile)


if __name__ == "__main__":
    sys.exit(main())
