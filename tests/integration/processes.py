"""Processes the integration scenarios send to real workers.

Workers load them with ``allow=["tests.integration.processes"]``. Each step of
:class:`Steps` appends ``"<pid> <step> <event> <os pid> <copy>"`` to the side file named
in its inputs (``O_APPEND``, one short line per write, so lines of concurrent
workers never interleave), which is how the tests see which worker ran which
step, and how often.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
import uuid
from typing import Any

import plumpy

from loopaware_persist import LoopBoundaryError

#: How long a gated step waits for its gate file before failing the process.
GATE_DEADLINE = 60.0


def _on_loop(process: plumpy.Process, loop: asyncio.AbstractEventLoop) -> None:
    if process.loop is not loop or process.future().get_loop() is not loop:
        msg = f"{process.pid} runs on {loop!r} but belongs to {process.loop!r}"
        raise LoopBoundaryError(msg)


def record(path: str, pid: Any, step: int, event: str, copy: str) -> None:
    """Append one line to the side file.

    :param path: the side file ("" records nothing)
    :param pid: the process id
    :param step: the step number
    :param event: what happened
    :param copy: which in-memory copy of the process (one per load) did it
    """
    if not path:
        return
    line = f"{pid} {step} {event} {os.getpid()} {copy}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def wait_for_gate(gate: str) -> None:
    """Wait for a condition the test sets (the file ``gate``), with a deadline.

    :raises TimeoutError: if the file does not appear within ``GATE_DEADLINE`` seconds
    """
    deadline = time.monotonic() + GATE_DEADLINE
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        await asyncio.sleep(0.02)


class CopyNamed(plumpy.Process):
    """Names each in-memory copy (one per create or load) in ``_copy``.

    Not persisted: so a test can tell which copy did a step, and whether a fenced
    copy's work ever reached the store.
    """

    def on_create(self) -> None:
        super().on_create()
        self._copy = uuid.uuid4().hex[:8]

    def load_instance_state(
        self, saved_state: Any, load_context: plumpy.LoadSaveContext | None
    ) -> None:
        super().load_instance_state(saved_state, load_context)
        self._copy = uuid.uuid4().hex[:8]


@plumpy.auto_persist("_i", "_total", "_trail", "_copies")
class Steps(CopyNamed):
    """``n`` steps, each ending in a checkpoint; step ``gate_step`` waits for a file.

    Each step returns ``plumpy.Continue``, a transition to a new RUNNING state,
    which the worker checkpoints: a process continued from its checkpoint
    resumes at the step after the last one that finished. Outputs ``total``
    (the sum of ``x * i``) and ``trail`` (the OS pid of the worker that ran each
    step, as the checkpoints carried it). Every step checks that the process and
    all its futures belong to the loop it runs on.
    """

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=1)
        spec.input("n", valid_type=int, default=3)
        spec.input("side", valid_type=str, default="")
        spec.input("gate", valid_type=str, default="")
        spec.input("gate_step", valid_type=int, default=-1)
        spec.outputs.dynamic = True

    def on_create(self) -> None:
        super().on_create()
        # Set before the first checkpoint (CREATED), restored by auto_persist.
        self._i = 0
        self._total = 0
        self._trail: list[int] = []
        self._copies: list[str] = []

    def run(self) -> plumpy.Continue:
        return plumpy.Continue(self.advance)

    async def advance(self) -> plumpy.Continue | None:
        loop = asyncio.get_running_loop()
        # Resumed on this worker's loop (the launcher ran check_loop_bound on the
        # whole graph when it loaded the checkpoint; a live process's graph reaches the
        # communicator and the loop itself, too much to walk on every step).
        _on_loop(self, loop)
        i = self._i
        if i >= self.inputs["n"]:
            self.out("total", self._total)
            self.out("trail", list(self._trail))
            self.out("copies", list(self._copies))
            self.out("loop_checked", True)
            return None
        side = self.inputs["side"]
        record(side, self.pid, i, "start", self._copy)
        if i == self.inputs["gate_step"]:
            await wait_for_gate(self.inputs["gate"])
        self._total += self.inputs["x"] * i
        self._trail.append(os.getpid())
        self._copies.append(self._copy)
        self._i = i + 1
        record(side, self.pid, i, "done", self._copy)
        return plumpy.Continue(self.advance)


class Double(plumpy.Process):
    """Doubles ``x`` in one step: the fast task of the throughput scenario."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int)
        spec.output("doubled", valid_type=int)
        spec.output("worker", valid_type=int)

    def run(self) -> None:
        _on_loop(self, asyncio.get_running_loop())
        self.out("doubled", self.inputs["x"] * 2)
        self.out("worker", os.getpid())


# The processes below are for the in-process worker tests (test_worker_inprocess).


class Fail(plumpy.Process):
    """Raises ``ValueError`` in its only step: an EXCEPTED process."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=0)

    def run(self) -> None:
        raise ValueError(f"boom {self.inputs['x']}")


class Gated(CopyNamed):
    """Waits for its gate file, then doubles ``x`` and finishes, in one step.

    Its only step goes straight from RUNNING to FINISHED, so a stale copy meets the
    fence while entering its terminal state. Outputs ``doubled`` and ``copy``, the id
    of the in-memory copy (one per load) that ran the step.
    """

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=1)
        spec.input("side", valid_type=str, default="")
        spec.input("gate", valid_type=str, default="")
        spec.input("fail", valid_type=bool, default=False)
        spec.outputs.dynamic = True

    async def run(self) -> None:
        _on_loop(self, asyncio.get_running_loop())
        side, gate = self.inputs["side"], self.inputs["gate"]
        record(side, self.pid, 0, "start", self._copy)
        if gate:
            await wait_for_gate(gate)
        record(side, self.pid, 0, "done", self._copy)
        if self.inputs["fail"]:
            raise ValueError(f"copy {self._copy} failed")
        self.out("doubled", self.inputs["x"] * 2)
        self.out("copy", self._copy)


@plumpy.auto_persist("_blob")
class Unsavable(plumpy.Process):
    """Puts a value no codec can store into its persisted state mid-run."""

    def on_create(self) -> None:
        super().on_create()
        self._blob: object = None

    def run(self) -> plumpy.Continue:
        self._blob = object()
        return plumpy.Continue(self.after)

    def after(self) -> None:
        pass


class Opaque(plumpy.Process):
    """Finishes with an output no message can carry (a bare ``object()``)."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.outputs.dynamic = True

    def run(self) -> None:
        self.out("thing", object())


class Color(enum.Enum):
    """An enum of this module: a worker allowing the module may send it, others refuse it."""

    RED = "red"


class Palette(plumpy.Process):
    """Outputs a :class:`Color`: its reply needs the module on the receiver's allow-list."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.outputs.dynamic = True

    def run(self) -> None:
        self.out("color", Color.RED)
