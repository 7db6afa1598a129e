"""Shared helpers of the reliability campaign: real plumpy checkpoints, figures, forks.

The processes are the suite's own (:mod:`tests.processes`), named
``tests.processes:<Name>`` in a checkpoint, so persisters that load them are opened
with ``allow=[ALLOW]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import plumpy

from loopaware_persist import LoopAwarePersister, open_persister
from tests.axes import CODECS as CODECS
from tests.loops import new_loop as new_loop
from tests.processes import Finisher, Raiser, Waiter, step_until

#: The allow-list entry for the processes the campaigns save.
ALLOW = "tests.processes"
#: Heavier variants (more kills, more mutations, more saves): LOOPAWARE_HEAVY=1.
#: About 3 minutes on 2 cores, so CI=true alone does not switch them on.
HEAVY = os.environ.get("LOOPAWARE_HEAVY", "") not in ("", "0")
#: Per-test timeout for the modules with heavy variants (pyproject's 120 s is per test).
HEAVY_TIMEOUT = 1200 if HEAVY else 120
#: Seconds a campaign may run before it stops early: it stops after its count *or* this,
#: whichever comes first, so that no test needs pytest-timeout's 120 s to pass on a
#: loaded 2-core machine. A test running several campaigns divides it among them.
#: ``LOOPAWARE_BUDGET_S`` overrides it (e.g. to see every campaign stop on time).
BUDGET_S = float(os.environ.get("LOOPAWARE_BUDGET_S") or (600.0 if HEAVY else 45.0))


@attrs.define
class Budget:
    """A campaign's size: ``count`` iterations or ``seconds``, whichever comes first.

    Iterate over it to run the campaign; then :meth:`report` says how many ran and what
    stopped it (for the ``FIGURE`` line), and :meth:`check` asserts that at least
    ``minimum`` ran, a number a slow, busy machine still reaches in the budget.

    :param count: how many iterations a quiet machine runs
    :param minimum: how many must have run for the figure to mean anything
    :param seconds: the time budget, counted from construction
    """

    count: int
    minimum: int
    seconds: float = BUDGET_S
    ran: int = 0
    started: float = attrs.field(factory=time.monotonic)

    def __iter__(self) -> Iterator[int]:
        deadline = self.started + self.seconds
        while self.ran < self.count and time.monotonic() < deadline:
            yield self.ran
            self.ran += 1

    @property
    def stopped_by(self) -> str:
        """:return: ``"count"`` if every planned iteration ran, else ``"time"``"""
        return "count" if self.ran >= self.count else "time"

    def report(self) -> dict[str, Any]:
        """:return: the campaign's size, for the ``FIGURE`` line"""
        return {
            "ran": self.ran,
            "planned": self.count,
            "minimum": self.minimum,
            "budget_s": self.seconds,
            "stopped_by": self.stopped_by,
            "elapsed_s": round(time.monotonic() - self.started, 1),
        }

    def check(self) -> None:
        """Fail unless at least ``minimum`` iterations ran."""
        assert self.ran >= self.minimum, (
            f"only {self.ran} of {self.count} iterations ran in the {self.seconds} s budget "
            f"(at least {self.minimum} needed): the machine is far slower than a loaded "
            "2-core one, or the campaign got slower"
        )


def figure(name: str, **data: Any) -> dict[str, Any]:
    """Print the one-line JSON summary of a figure (visible with ``pytest -s``)."""
    line = {"figure": name, "heavy": HEAVY, **data}
    print(f"FIGURE {json.dumps(line, sort_keys=False, default=str)}", flush=True)
    return line


def make_process(kind: str, loop: asyncio.AbstractEventLoop, pid: Any, x: int = 1) -> Any:
    """A real plumpy process driven to ``kind``: created, finished, excepted or waiting."""

    async def drive() -> plumpy.Process:
        process: plumpy.Process
        if kind == "created":
            return Finisher(inputs={"x": x}, pid=pid, loop=loop)
        if kind == "finished":
            process = Finisher(inputs={"x": x}, pid=pid, loop=loop)
            await process.step_until_terminated()
        elif kind == "excepted":
            process = Raiser(pid=pid, loop=loop)
            await process.step_until_terminated()
            process.future().exception()  # retrieved: no "never retrieved" log
        elif kind == "waiting":
            process = Waiter(pid=pid, loop=loop)
            await step_until(process, plumpy.ProcessState.WAITING)
        else:
            msg = f"unknown kind {kind!r}"
            raise ValueError(msg)
        return process

    return loop.run_until_complete(drive())


KINDS = ("created", "finished", "excepted", "waiting")


def real_records(
    codec: str, compressions: tuple[str | None, ...] = (None,), pid: Any = "p"
) -> list[tuple[str, bytes]]:
    """Envelope records of real plumpy checkpoints, one per kind and compression."""
    out = []
    with new_loop() as loop:
        for kind in KINDS:
            for compression in compressions:
                per = open_persister(
                    "memory://", codec=codec, allow=[ALLOW], compression=compression
                )
                with per:
                    process = make_process(kind, loop, pid)
                    out.append((f"{kind}/{compression}", per._encode_process(process)))
    return out


def record_for(per: LoopAwarePersister, pid: Any, x: int) -> bytes:
    """The record bytes of a created :class:`Doubler` with input ``x``."""
    with new_loop() as loop:
        return per._encode_process(make_process("created", loop, pid, x))


def canonical(per: LoopAwarePersister, data: bytes) -> bytes:
    """A load's content in comparable form: the loaded bundle's dict, re-encoded."""
    return per.codec.encode(dict(per.loads(data)))


def run_forked(child: Callable[[], int | None]) -> int:
    """Run ``child`` in a forked process and return its exit status (``os._exit`` code).

    The child never returns into pytest: any exception is printed and exits 99.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            code = child() or 0
        except BaseException:
            traceback.print_exc()
            code = 99
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
