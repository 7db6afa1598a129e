"""Entry point of the worker subprocesses the scenarios start (``python -m``)."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys

from loopaware_persist._worker import run_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefetch", type=int, default=8)
    parser.add_argument("--grace", type=float, default=10.0)
    args = parser.parse_args(argv)
    # `kill -USR1` dumps every thread's stack: how a hung worker is diagnosed.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    run_worker(
        broker_url=args.broker,
        store_url=args.store,
        allow=["tests.integration.processes", "tests.awaiting_processes"],
        prefetch=args.prefetch,
        grace=args.grace,
        task_queue=args.queue,
    )


if __name__ == "__main__":
    main()
