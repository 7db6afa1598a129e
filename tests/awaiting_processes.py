"""Real plumpy WorkChains that wait (``ToContext``) on child processes and plain futures.

Checkpoints name these classes ``tests.awaiting_processes:<Name>``; a persister
that loads them is opened with ``allow=["tests.awaiting_processes"]``.

Run as ``python -m tests.awaiting_processes '<json>'`` it is the *fresh process*
of the tests: it loads a saved WorkChain (and its children) from a store, runs
them to the end on a new loop, and prints what happened as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

import plumpy
from plumpy.process_comms import create_continue_body
from plumpy.workchains import ToContext, WorkChainSpec

import loopaware_persist as lp
from loopaware_persist.storage import open_storage
from tests.loops import running_in_thread
from tests.processes import step_until

#: The persister a :class:`ChildChain` checkpoints its children with, at their creation
#: (as AiiDA and ``ProcessLauncher(persist=True)`` do); ``None``: not checkpointed.
SAVE_CHILDREN_WITH: list[lp.LoopAwarePersister] = []
#: Every plain future a :class:`FutureChain` waits on, in order.
PLAIN_FUTURES: list[asyncio.Future[Any]] = []
#: Every child a :class:`ChildChain` launched, in order.
LAUNCHED: list[plumpy.Process] = []
#: The inputs of the children a :class:`ChildChain` launches, by context key.
CHILD_INPUTS = {"a": 1, "b": 2}
DEFAULT_CHILD_INPUTS = dict(CHILD_INPUTS)


class Child(plumpy.Process):
    """A child that finishes as soon as it runs: ``y = 10 * x``; a negative ``x`` fails it."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int)
        spec.output("y", valid_type=int)

    async def run(self) -> None:
        if self.inputs.x < 0:
            msg = f"negative x {self.inputs.x}"
            raise ValueError(msg)
        self.out("y", 10 * self.inputs.x)


class ChildChain(plumpy.WorkChain):
    """Launches two children on its loop and waits for both with ``ToContext``."""

    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.outline(cls.launch_children, cls.collect)
        spec.output("total", valid_type=int)

    def launch_children(self) -> ToContext[str, Any]:
        children = {}
        for key, x in CHILD_INPUTS.items():
            child = self.launch(Child, inputs={"x": x})
            for persister in SAVE_CHILDREN_WITH:
                persister.save_checkpoint(child)
            children[key] = child
            LAUNCHED.append(child)
        return ToContext(**children)

    def collect(self) -> None:
        self.out("total", self.ctx.a["y"] + self.ctx.b["y"])


class FutureChain(plumpy.WorkChain):
    """Waits with ``ToContext`` on a plain future of its loop, then outputs its result."""

    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.outline(cls.wait, cls.finish)
        spec.output("value")

    def wait(self) -> ToContext[str, Any]:
        future = self.loop.create_future()
        PLAIN_FUTURES.append(future)
        return ToContext(value=future)

    def finish(self) -> None:
        self.out("value", self.ctx.value)


#: The context keys a :class:`ManyFutureChain` waits on, one plain future each.
FUTURE_KEYS: list[str] = []


class ManyFutureChain(plumpy.WorkChain):
    """Waits with ``ToContext`` on one plain future per key of :data:`FUTURE_KEYS`."""

    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.outline(cls.wait, cls.finish)

    def wait(self) -> ToContext[str, Any]:
        return ToContext(**{key: self.loop.create_future() for key in FUTURE_KEYS})

    def finish(self) -> None:
        pass


def awaited(process: plumpy.Process) -> dict[str, asyncio.Future[Any]]:
    """:return: what a WorkChain in WAITING awaits, by context key"""
    state = process._state
    assert isinstance(state, plumpy.workchains.Waiting), state
    return {key: future for future, key in state._awaiting.items()}


# Driving (the test side)


def drive_to_waiting(
    loop: asyncio.AbstractEventLoop, process: plumpy.Process, then: Callable[[], Any]
) -> None:
    """Step ``process`` until it waits, then call ``then`` in the same loop turn."""

    async def go() -> None:
        await step_until(process, plumpy.ProcessState.WAITING)
        then()

    loop.run_until_complete(go())


def save_child_chain(loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister) -> Any:
    """Run a ChildChain until it waits on its two children, and checkpoint it there."""
    parent = ChildChain(loop=loop)

    def save() -> None:
        pending = awaited(parent)
        assert sorted(pending) == ["a", "b"]
        assert not any(future.done() for future in pending.values())
        persister.save_checkpoint(parent, verify=True)

    drive_to_waiting(loop, parent, save)
    return parent


def _describe(process: plumpy.Process) -> dict[str, Any]:
    outcome: dict[str, Any] = {"state": process.state.value}
    if process.state is plumpy.ProcessState.FINISHED:
        outcome["outputs"] = dict(process.outputs)
        if isinstance(process, plumpy.WorkChain):
            outcome["ctx"] = {
                key: dict(value) if isinstance(value, dict) else value
                for key, value in vars(process.ctx).items()
            }
    elif process.state is plumpy.ProcessState.EXCEPTED:
        error = process.exception()
        outcome["error"] = f"{type(error).__name__}: {error}"
    return outcome


def _continue(spec: dict[str, Any]) -> dict[str, Any]:
    """The fresh process: load, re-link, run to the end, report."""
    loop = asyncio.new_event_loop()
    allow = ["tests.awaiting_processes"]
    # The tests write with either codec; a store accepts only the codecs it is opened for.
    accept = ("msgpack", "pickle")
    persister = (
        # A worker's persister: it claims what it loads and saves every transition.
        lp.FencingPersister(open_storage(spec["url"]), allow=allow, accept=accept)
        if spec.get("fencing")
        else lp.open_persister(spec["url"], allow=allow, accept=accept)
    )
    if "poll" in spec:
        persister.child_poll_interval = spec["poll"]
    # JSON carries pids as text; plumpy's are UUIDs.
    parent_pid = uuid.UUID(spec["parent"])
    children = [uuid.UUID(pid) for pid in spec.get("children", ())]
    relink = None
    if "relink_value" in spec:

        def relink(process: plumpy.Process, key: Any, owner: Any) -> asyncio.Future[Any]:
            future = loop.create_future()
            future.set_result(spec["relink_value"])
            return future

    try:
        if spec.get("via") == "launcher":
            # As in a worker: the loop runs in its own thread, tasks arrive from another.
            launcher = lp.LoopAwareLauncher(persister, loop=loop)
            with running_in_thread(loop, "worker-loop"):
                # The parent first: it waits for children the launcher has not loaded yet.
                replies = [
                    launcher(None, create_continue_body(pid)) for pid in [parent_pid, *children]
                ]
                outputs = [reply.result(timeout=60) for reply in replies]
            return {"state": "finished", "outputs": dict(outputs[0])}
        if spec.get("via") == "plumpy-launcher":
            # plumpy's own launcher unbundles the LoopAwareBundle itself.
            plumpy_launcher = plumpy.ProcessLauncher(
                loop=loop, persister=persister, load_context=plumpy.LoadSaveContext(loop=loop)
            )

            async def through_plumpy() -> Any:
                return await asyncio.gather(
                    *(
                        plumpy_launcher(None, create_continue_body(pid))  # type: ignore[arg-type]
                        for pid in [parent_pid, *children]
                    )
                )

            outputs = loop.run_until_complete(through_plumpy())
            return {"state": "finished", "outputs": dict(outputs[0])}
        order = (
            [parent_pid, *children] if spec.get("parent_first", True) else [*children, parent_pid]
        )
        try:
            loaded = {pid: persister.load_process(pid, loop=loop, relink=relink) for pid in order}
        except lp.UnlinkedAwaitableError as error:
            return {"error": type(error).__name__, "key": error.key, "owner": error.owner}
        if spec.get("resave"):
            # Checkpoint the loaded parent again and carry on from that checkpoint.
            persister.save_checkpoint(loaded[parent_pid], verify=True)
            loaded[parent_pid] = persister.load_process(parent_pid, loop=loop, relink=relink)
        parent = loaded[parent_pid]
        if parent.state is not plumpy.ProcessState.WAITING and not spec.get("any_state"):
            return {"error": f"loaded in {parent.state.value}, not waiting"}
        if spec.get("announce"):
            print("loaded", flush=True)  # the test starts the children elsewhere now

        async def run_all() -> None:
            await asyncio.gather(*(process.step_until_terminated() for process in loaded.values()))

        loop.run_until_complete(run_all())
        return _describe(parent)
    finally:
        # Watchers of children's checkpoints end with the parent; cancel any straggler.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending))
        persister.close()
        loop.close()


def main(argv: list[str]) -> None:
    """Entry point of the fresh process: one JSON spec in, one JSON line out.

    :param argv: ``[spec]``
    """
    spec = json.loads(argv[0])
    print(json.dumps(_continue(spec), default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
