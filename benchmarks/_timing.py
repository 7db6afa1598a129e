"""Clocks, statistics and the progress bar the benchmark sections share.

By default every sample is taken with the cyclic garbage collector off (as
:mod:`timeit` does) so that a collection triggered by one variant is not billed
to the next; the collector runs between samples instead. Reference counting
still frees what a sample allocates, inside the sample. ``gc_on=True`` leaves
the collector running during the sample, as it runs in a user's process, so
that the collections a variant's allocations trigger are billed to it (issue 15
reports both).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = (
    "Progress",
    "calibrate",
    "interleaved",
    "on_loop",
    "percentile",
    "summarise",
    "time_batch",
    "time_each",
)

clock = time.perf_counter


def time_batch(fn: Callable[[], Any], number: int, *, gc_on: bool = False) -> float:
    """Call ``fn`` ``number`` times with the collector off (or on).

    :param fn: what to time
    :param number: how many calls make one sample
    :param gc_on: leave the cyclic collector enabled during the calls
    :return: seconds per call
    """
    enabled = gc.isenabled()
    if gc_on:
        gc.enable()
    else:
        gc.disable()
    try:
        start = clock()
        for _ in range(number):
            fn()
        elapsed = clock() - start
    finally:
        if enabled:
            gc.enable()
        else:
            gc.disable()
    return elapsed / number


def time_each(fn: Callable[[], Any], count: int, *, gc_on: bool = False) -> list[float]:
    """Time ``count`` single calls of ``fn`` (for percentiles), collector off (or on).

    :param fn: what to time
    :param count: how many calls
    :param gc_on: leave the cyclic collector enabled during the calls
    :return: seconds of each call
    """
    samples = []
    enabled = gc.isenabled()
    if gc_on:
        gc.enable()
    else:
        gc.disable()
    try:
        for _ in range(count):
            start = clock()
            fn()
            samples.append(clock() - start)
    finally:
        if enabled:
            gc.enable()
        else:
            gc.disable()
    return samples


def calibrate(fn: Callable[[], Any], target_s: float, *, cap: int = 100_000) -> int:
    """How many calls of ``fn`` fill about ``target_s`` seconds (warming it up on the way).

    :param fn: what will be timed
    :param target_s: the wanted duration of one sample
    :param cap: never more calls than this per sample
    :return: calls per sample, at least 1
    """
    one = time_batch(fn, 1)  # the warm-up call
    if one >= target_s:
        return 1
    probe = max(1, min(cap, int(target_s / max(one, 1e-7) / 10)))
    per_call = time_batch(fn, probe)
    return max(1, min(cap, math.ceil(target_s / max(per_call, 1e-9))))


def on_loop(loop: asyncio.AbstractEventLoop) -> Callable[[Callable[[], float]], float]:
    """:param loop: an idle loop
    :return: ``inside(fn)``: call ``fn`` from a coroutine running on ``loop`` (a launcher's
        position), then let whatever it scheduled run, untimed
    """

    def inside(fn: Callable[[], float]) -> float:
        async def sample() -> float:
            return fn()

        result = loop.run_until_complete(sample())
        loop.run_until_complete(asyncio.sleep(0))
        return result

    return inside


def interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    sample_s: float,
    progress: Progress,
    label: str,
    inside: Callable[[Callable[[], float]], float],
    outside: frozenset[str] = frozenset(),
    gc_on: frozenset[str] = frozenset(),
) -> dict[str, list[float]]:
    """Time every function once per round, in an order rotated every round.

    Each sample repeats a call enough times to last about ``sample_s`` (calibrated first);
    the collector runs between samples.

    :param fns: what to time, by name
    :param rounds: how many rounds
    :param sample_s: the wanted duration of one sample
    :param progress: advanced once per round
    :param label: what the progress bar shows
    :param inside: runs a sample where the loop is running (see :func:`on_loop`)
    :param outside: names sampled on the calling thread instead
    :param gc_on: names sampled with the cyclic collector on
    :return: seconds per call of each sample, by name
    """
    numbers: dict[str, int] = {}
    for name, fn in fns.items():
        how_many = functools.partial(calibrate, fn, sample_s)
        numbers[name] = how_many() if name in outside else int(inside(how_many))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            sample = functools.partial(time_batch, fns[name], numbers[name], gc_on=name in gc_on)
            samples[name].append(sample() if name in outside else inside(sample))
            gc.collect()
        progress.step(f"{label} round {round_index + 1}/{rounds}")
    return samples


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least ``q``% at or below it.

    :param samples: the samples (any order)
    :param q: the percentile, 0 < q <= 100
    :return: the percentile
    """
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise(samples: Sequence[float]) -> dict[str, float | int]:
    """:param samples: seconds
    :return: ``min_s``, ``median_s``, ``p50_s``, ``p99_s``, ``max_s``, ``mean_s`` and ``n``
    """
    return {
        "min_s": min(samples),
        "median_s": statistics.median(samples),
        "p50_s": percentile(samples, 50),
        "p99_s": percentile(samples, 99),
        "max_s": max(samples),
        "mean_s": statistics.fmean(samples),
        "n": len(samples),
    }


class Progress:
    """A one-line progress bar on a terminal; silent anywhere else.

    :param total: how many steps the run has
    :param enabled: draw at all (it is drawn only if ``stream`` is also a TTY)
    :param stream: where to draw (stderr, so stdout keeps only the report)
    """

    def __init__(self, total: int, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.total = max(total, 1)
        self.done = 0
        self.started = clock()

    def step(self, label: str, advance: int = 1) -> None:
        """Count ``advance`` steps done and show ``label`` as what runs now.

        :param label: what is being measured
        :param advance: steps completed since the last call
        """
        self.done = min(self.total, self.done + advance)
        if not self.enabled:
            return
        width = shutil.get_terminal_size((80, 20)).columns
        fraction = self.done / self.total
        elapsed = clock() - self.started
        head = f"{fraction:4.0%} {elapsed:5.0f}s "
        bar_width = max(10, min(30, width - len(head) - 20))
        filled = int(bar_width * fraction)
        bar = "[" + "#" * filled + "-" * (bar_width - filled) + "] "
        room = max(0, width - len(head) - len(bar) - 1)
        self.stream.write("\r" + head + bar + label[:room].ljust(room))
        self.stream.flush()

    def close(self) -> None:
        """Erase the bar."""
        if self.enabled:
            width = shutil.get_terminal_size((80, 20)).columns
            self.stream.write("\r" + " " * (width - 1) + "\r")
            self.stream.flush()
