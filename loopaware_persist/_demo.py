"""The main job, end to end on the embedded SQLite default.

``loopaware-persist demo`` (``make demo``):

1. runs a real plumpy WorkChain in a *child* Python process that checkpoints
   every step into the SQLite store, as AiiDA does on each state change, and
   kills that child (``os._exit``) part-way, as a crash or a daemon restart would;
2. in this process, builds a fresh event loop running in a worker thread and
   continues the WorkChain from its last checkpoint through
   :class:`LoopAwareLauncher`, called from the main thread like kiwipy's
   communication thread would;
3. prints each step, the store, and where every future of the restored process
   lives;
4. round-trips a WAITING process through each codec onto a new loop in a worker
   thread.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plumpy
from plumpy.utils import AttributesDict
from plumpy.workchains import WorkChainSpec

# The public names, as a user's script would import them (the demo is imported only
# when the command runs, after the package itself).
from loopaware_persist import (
    LoopAwareLauncher,
    LoopAwarePersister,
    check_loop_bound,
    open_persister,
)

from .storage._url import redact_url

__all__ = ("ALLOW", "DemoWorkChain", "WaitingDemo", "main")

#: What the demo's persisters allow: this module's process classes. The default
#: allow-list leaves them out, so no task message can make a worker run them; the demo
#: stays in the package (rather than an ``examples/`` module) because
#: ``loopaware-persist demo`` is a command of the installed package, wheel included.
ALLOW: tuple[str, ...] = ("loopaware_persist._demo",)

#: The persister the running demo checkpoints into (set per Python process).
_PERSISTER: LoopAwarePersister | None = None
#: In the child: crash right after this step has been checkpointed.
_CRASH_AFTER: str | None = None

_say: Callable[[str], None] = print


class DemoWorkChain(plumpy.WorkChain):
    """Three steps that build up a context, checkpointed on every state change."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        """:param spec: the spec to fill"""
        super().define(spec)
        assert isinstance(spec, WorkChainSpec)
        spec.input("n", valid_type=int, default=3)
        spec.outputs.dynamic = True
        spec.outline(cls.prepare, cls.compute, cls.summarise)  # type: ignore[arg-type]

    @property
    def context(self) -> AttributesDict:
        """:return: the WorkChain context (never ``None`` once the process exists)"""
        assert self.ctx is not None
        return self.ctx

    def on_entered(self, from_state: Any) -> None:
        """Checkpoint on every state change, as AiiDA does."""
        super().on_entered(from_state)
        if _PERSISTER is not None:
            version = _PERSISTER.save_checkpoint(self)
            _say(
                f"  checkpoint v{version}: state={_label(self)}, "
                f"ctx keys={sorted(vars(self.context))}"
            )
            if _CRASH_AFTER is not None and _CRASH_AFTER in getattr(self.context, "seen", ()):
                _crash()

    def _step(self, name: str) -> None:
        _say(f"  step {name!r} on thread {threading.current_thread().name!r} (pid {os.getpid()})")

    def prepare(self) -> None:
        """Step 1."""
        self._step("prepare")
        n = self.inputs["n"]  # type: ignore[index]  # plumpy types inputs as Optional
        self.context.values = tuple(float(i) ** 0.5 for i in range(n))
        self.context.run_id = uuid.uuid4()
        self.context.seen = {"prepare"}

    def compute(self) -> None:
        """Step 2: after this one is checkpointed, the child process dies."""
        self._step("compute")
        self.context.total = sum(self.context.values)
        self.context.seen = self.context.seen | {"compute"}

    def summarise(self) -> None:
        """Step 3: runs in the second process, from the checkpoint."""
        self._step("summarise")
        self.context.seen = self.context.seen | {"summarise"}
        self.out("total", self.context.total)
        self.out("steps", sorted(self.context.seen))


def _label(process: plumpy.Process) -> str:
    return str(getattr(process.state, "value", process.state))


_CRASH_STATUS = 75


def _crash() -> None:
    _say("  child: simulating a crash (os._exit) before the last step")
    sys.stdout.flush()
    os._exit(_CRASH_STATUS)


class WaitingDemo(plumpy.Process):
    """A process that stops in WAITING until resumed, then finishes."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        """:param spec: the spec to fill"""
        super().define(spec)
        spec.outputs.dynamic = True

    def run(self) -> Any:
        """Emit one output and wait."""
        self.out("before", 1)
        return plumpy.Wait(self.resumed, "waiting for a signal")

    def resumed(self, value: Any = None) -> None:
        """Finish after the wait."""
        self.out("after", 2)


def _child(store: str) -> None:
    global _PERSISTER, _CRASH_AFTER
    _CRASH_AFTER = "compute"
    _PERSISTER = open_persister(store, allow=ALLOW)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the child is plain plumpy usage: one loop, current
    workchain = DemoWorkChain(inputs={"n": 5}, loop=loop)
    print(f"PID {workchain.pid}", flush=True)
    loop.run_until_complete(workchain.step_until_terminated())
    _say("  child: finished without crashing (unexpected)")


def _run_loop_in_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    loop.call_soon(started.set)
    thread = threading.Thread(target=loop.run_forever, name="worker-loop", daemon=True)
    thread.start()
    started.wait()
    return loop, thread


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def _describe_futures(process: plumpy.Process, loop: asyncio.AbstractEventLoop) -> None:
    check_loop_bound(process, loop)
    futures = {"process.future()": process.future()}
    waiting = getattr(process._state, "_waiting_future", None)
    if waiting is not None:
        futures["state._waiting_future"] = waiting
    for name, future in futures.items():
        where = (
            "the worker loop"
            if future.get_loop() is loop
            else f"ANOTHER loop {future.get_loop()!r}"
        )
        _say(f"  {name} lives on {where}")
    _say("  check_loop_bound: every future in the process graph is on the worker loop")


def _continue(store: str, pid: str) -> None:
    global _PERSISTER
    persister = open_persister(store, allow=ALLOW)
    _PERSISTER = persister
    loop, thread = _run_loop_in_thread()
    try:
        pid_value = uuid.UUID(pid)
        infos = [i for i in persister.list_info() if i.pid == pid_value]
        for info in infos:
            data = info.as_dict()
            _say(
                f"  stored: pid={data['pid']} state={data['state']} class={data['process_class']} "
                f"v{data['version']} {data['size']} bytes codec={data['codec']}"
            )
        launcher = LoopAwareLauncher(persister, loop=loop)
        _say("  continuing through LoopAwareLauncher from the main thread onto the worker loop")
        task = {
            plumpy.process_comms.TASK_KEY: plumpy.process_comms.CONTINUE_TASK,
            plumpy.process_comms.TASK_ARGS: {"pid": pid_value, "nowait": False, "tag": None},
        }
        result = launcher(None, task).result(timeout=60)
        _say(f"  result: {dict(result)}")
        process = persister.load_process(pid_value, loop=loop)
        _say(f"  reloaded final checkpoint: state={_label(process)}")
        _describe_futures(process, loop)
    finally:
        _stop(loop, thread)
        persister.close()


def _codec_roundtrip(codec: str, directory: Path) -> None:
    persister = open_persister(
        f"sqlite:///{directory / f'codec-{codec}.db'}",
        codec=codec,
        allow=ALLOW,
    )
    loop_a = asyncio.new_event_loop()
    process = WaitingDemo(loop=loop_a)

    async def until_waiting() -> asyncio.Task[Any]:
        task = asyncio.ensure_future(process.step_until_terminated())
        while process.state is not plumpy.ProcessState.WAITING:
            await asyncio.sleep(0)
        return task

    pending = loop_a.run_until_complete(until_waiting())
    persister.save_checkpoint(process)
    loop_b, thread = _run_loop_in_thread()
    try:
        restored: dict[str, plumpy.Process] = {}

        def load_in_worker() -> None:
            restored["p"] = persister.load_process(process.pid, loop=loop_b)

        worker = threading.Thread(target=load_in_worker, name="loader")
        worker.start()
        worker.join()
        proc = restored["p"]
        _say(
            f"  {codec}: restored a {_label(proc)} process in a thread with no loop, "
            f"onto the worker loop: {proc.loop is loop_b}"
        )

        async def finish() -> dict[str, Any]:
            state = proc._state
            assert isinstance(state, plumpy.process_states.Waiting)
            state.resume()
            await proc.step_until_terminated()
            return dict(proc.outputs)

        outputs = asyncio.run_coroutine_threadsafe(finish(), loop_b).result(timeout=30)
        _say(f"  {codec}: resumed on the worker loop and finished with {outputs}")
    finally:
        _stop(loop_b, thread)
        pending.cancel()
        loop_a.run_until_complete(asyncio.sleep(0))
        loop_a.close()
        persister.close()


_CHILD = "import sys; from loopaware_persist._demo import _child; _child(sys.argv[1])"


def main(store: str | None = None) -> int:
    """Run the demo.

    :param store: the store URL (default: ``sqlite:///loopaware-demo.db`` in the current directory)
    :return: the exit status
    """
    store = store or "sqlite:///loopaware-demo.db"
    # Open the store here first, so that a bad URL or another application's
    # database is refused in this process as one typed error (the CLI prints
    # it as one line), not as the child's traceback.
    open_persister(store, allow=ALLOW).close()
    _say(f"store: {redact_url(store)}")
    _say("1) a child process runs DemoWorkChain, checkpointing each step, and dies part-way:")
    env = dict(os.environ)
    child = subprocess.run(  # noqa: S603 - our own module, no shell
        [sys.executable, "-c", _CHILD, store],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    pid = None
    for line in child.stdout.splitlines():
        if line.startswith("PID "):
            pid = line[4:]
        else:
            _say(line)
    if pid is None:
        _say(child.stderr)
        return 1
    if child.returncode != _CRASH_STATUS:
        _say(
            f"  child exited with status {child.returncode}, not the crash; stderr:\n{child.stderr}"
        )
        return 1
    _say(f"  child died (status {child.returncode}); process {pid} is left mid-outline")
    _say("2) this process continues it on a fresh loop in a worker thread:")
    _continue(store, pid)
    _say("3) a WAITING process through each codec, restored on a new loop from a worker thread:")
    with tempfile.TemporaryDirectory(prefix="loopaware-demo-") as directory:
        for codec in ("msgpack", "pickle"):
            _codec_roundtrip(codec, Path(directory))
    return 0
