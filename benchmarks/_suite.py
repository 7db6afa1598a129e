"""One benchmark run: build the cases, run the sections, write the report."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from . import _aiida, _loading, _rematerialise, _storage, _workers
from ._cases import CASES, build_cases
from ._chart import write_chart
from ._codecs import VARIANTS, run_codecs
from ._config import Config
from ._machine import machine_info
from ._output import write_json, write_text
from ._report import markdown
from ._targets import evaluate
from ._timing import Progress

__all__ = ("JSON_NAME", "MARKDOWN_NAME", "PNG_NAME", "run_suite")

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"
PNG_NAME = "results.png"
SCHEMA = 1


def run_suite(
    config: Config,
    out_dir: Path,
    *,
    progress: bool = True,
    profile: bool = False,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Run every section and write ``results.json``, ``results.md`` and ``results.png``.

    :param config: sizes and repetitions
    :param out_dir: where the outputs go (created if missing)
    :param progress: draw a progress bar on stderr (only if it is a terminal)
    :param profile: profile every missed target with pyinstrument into ``out_dir``
    :param stream: where the Markdown report is printed (stdout by default; ``None`` output
        is never silenced, pass ``io.StringIO()`` for that)
    :return: the results, as written to ``results.json``
    """
    stream = stream if stream is not None else sys.stdout
    out_dir.mkdir(parents=True, exist_ok=True)
    started_wall = time.time()
    started = time.perf_counter()
    machine = machine_info()
    loop = asyncio.new_event_loop()
    bar: Progress | None = None
    try:
        cases = build_cases(config, loop, tuple(CASES))
        total = (
            len(cases) * config.rounds
            + _storage.steps(config, _storage.listing_store_count(config))
            + _rematerialise.steps(config, cases)
            + _loading.steps(config)
            + _workers.steps(config)
            + _aiida.steps(config)
        )
        bar = Progress(total, enabled=progress)
        results: dict[str, Any] = {
            "schema": SCHEMA,
            "suite": "loopaware_persist benchmarks (issues 4, 14 and 15)",
            "started_at": started_wall,
            "config": config.as_dict(),
            "machine": machine,
            "gc_during_samples": (
                "disabled (as timeit); collected between samples; issue 15's measurements "
                "are also taken with it enabled (GC on)"
            ),
            "cases": {
                name: {"title": case.title, "detail": case.detail, "pickle_size": case.pickle_size}
                for name, case in cases.items()
            },
        }
        results["codecs"] = run_codecs(cases, config, bar)
        gc.collect()
        results["storage"] = _storage.run_storage(cases, config, bar)
        gc.collect()
        results["loop"] = _rematerialise.run_loop(cases, config, loop, bar)
        gc.collect()
        results["loading"] = _loading.run_loading(cases, config, loop, bar)
        gc.collect()
        results["workers"] = _workers.run_workers(config, bar)
        gc.collect()
        results["aiida"] = _aiida.run_aiida(config, bar)
        bar.close()
        bar = None
        results["duration_s"] = time.perf_counter() - started
        results["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        results["targets"] = evaluate(results, config)
        if profile:
            from ._profile import profile_missed

            results["profiles"] = profile_missed(results["targets"], cases, loop, out_dir)
    finally:
        if bar is not None:
            bar.close()
        loop.close()
    report = markdown(results)
    write_json(out_dir / JSON_NAME, results)
    write_text(out_dir / MARKDOWN_NAME, report + "\n")
    results["chart"] = PNG_NAME if write_chart(out_dir / PNG_NAME, results) else None
    stream.write(report + "\n")
    stream.write(f"Wrote {out_dir / JSON_NAME}, {out_dir / MARKDOWN_NAME}")
    stream.write(
        f", {out_dir / PNG_NAME}\n" if results["chart"] else " (no chart: pip install matplotlib)\n"
    )
    return results


_ = VARIANTS
