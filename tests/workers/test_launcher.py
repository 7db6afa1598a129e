"""LoopAwareLauncher and LoopBridge: every process and subscriber runs on its loop, replies arrive.

The launcher's loop runs forever in its own thread (``worker_loop``), as in a
daemon worker. Tasks reach it from a foreign thread (what kiwipy's
communication thread is), from a coroutine on another running loop, and from
the worker loop's own thread; and through ``kiwipy.LocalCommunicator`` wrapped
in a :class:`LoopBridge`. Nothing sleeps to synchronise: every wait is a future
or an event with a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import kiwipy
import plumpy
import pytest
from kiwipy.rmq import utils as rmq_utils
from kiwipy.rmq.threadcomms import RmqThreadCommunicator
from plumpy import process_comms
from plumpy.futures import unwrap_kiwi_future
from plumpy.workchains import WorkChainSpec

from loopaware_persist import (
    LoopAwarePersister,
    LoopBoundaryError,
    NoEventLoopError,
    UnsafeCheckpointError,
    _launcher as launcher_module,
    check_loop_bound,
    default_registry,
    open_persister,
)
from loopaware_persist._bridge import LoopBridge
from loopaware_persist._launcher import LoopAwareLauncher
from loopaware_persist.storage import open_storage
from tests.loops import loop_in_thread

TIMEOUT = 10.0
WORKER = "launcher-loop"

# Processes (named tests.workers.test_launcher:<Name> in tasks and checkpoints).


def _where() -> dict[str, Any]:
    return {"thread": threading.current_thread().name, "loop": asyncio.get_running_loop()}


class Emit(plumpy.Process):
    """Outputs its input, and where it ran."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("value", valid_type=int, default=1)
        spec.outputs.dynamic = True

    def run(self) -> None:
        self.out("value", self.inputs["value"])  # type: ignore[index]
        self.out("thread", threading.current_thread().name)
        self.out("on_own_loop", asyncio.get_running_loop() is self.loop)


class _Arrivals:
    """Processes that a launcher has loaded or started, by pid (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[Any, concurrent.futures.Future[plumpy.Process]] = {}

    def _future(self, pid: Any) -> concurrent.futures.Future[plumpy.Process]:
        with self._lock:
            return self._futures.setdefault(pid, concurrent.futures.Future())

    def arrived(self, process: plumpy.Process) -> None:
        future = self._future(process.pid)
        if not future.done():
            future.set_result(process)

    def wait(self, pid: Any) -> plumpy.Process:
        return self._future(pid).result(timeout=TIMEOUT)


ARRIVALS = _Arrivals()


class Pause(plumpy.Process):
    """Waits until resumed through an RPC, then outputs twice its input.

    When it has a communicator (a launcher gave it one) it announces itself in
    :data:`ARRIVALS` once its RPC subscriber is registered.
    """

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("value", valid_type=int, default=1)
        spec.outputs.dynamic = True

    def init(self) -> None:
        super().init()
        if self._communicator is not None:
            ARRIVALS.arrived(self)

    def run(self) -> plumpy.Wait:
        return plumpy.Wait(self.finish, "waiting for a resume RPC")

    def finish(self, value: Any = None) -> None:
        self.out("value", 2 * self.inputs["value"])  # type: ignore[index]
        self.out("resumed_with", value)
        self.out("thread", threading.current_thread().name)

    def message_receive(self, comm: kiwipy.Communicator, msg: Any) -> Any:
        if msg.get("intent") == "resume":
            # On the loop thread, before resuming: the whole graph must be on this loop.
            check_loop_bound(self, self.loop)
            reply = {**_where(), "process": self}
            self.resume(msg.get("value"))
            return reply
        return super().message_receive(comm, msg)


class TwoSteps(plumpy.WorkChain):
    """A two-step outline that records the thread of each step."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        assert isinstance(spec, WorkChainSpec)
        spec.input("n", valid_type=int, default=3)
        spec.outputs.dynamic = True
        spec.outline(cls.first, cls.second)  # type: ignore[arg-type]

    def first(self) -> None:
        assert self.ctx is not None
        self.ctx.doubled = 2 * self.inputs["n"]  # type: ignore[index]
        self.ctx.threads = [threading.current_thread().name]

    def second(self) -> None:
        assert self.ctx is not None
        self.out("result", self.ctx.doubled + 1)
        self.out("threads", [*self.ctx.threads, threading.current_thread().name])


class NotAProcess:
    """In an allowed module but not a Process: a launcher must not construct it."""

    def __init__(self, marker: str) -> None:
        Path(marker).touch()


# Fixtures.


@pytest.fixture
def worker_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The launcher's loop, running forever in thread ``launcher-loop``."""
    # Debug mode: a non-thread-safe call on the loop from another thread raises.
    with loop_in_thread(WORKER, debug=True) as loop:
        yield loop


@pytest.fixture
def other_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Another running loop, in its own thread: a caller that is a coroutine elsewhere."""
    with loop_in_thread("other-loop", debug=True) as loop:
        yield loop


@pytest.fixture
def persister() -> Iterator[LoopAwarePersister]:
    with open_persister("memory://", allow=[__name__]) as opened:
        yield opened


@pytest.fixture
def launcher(
    persister: LoopAwarePersister, worker_loop: asyncio.AbstractEventLoop
) -> LoopAwareLauncher:
    return LoopAwareLauncher(persister, loop=worker_loop)


@pytest.fixture
def communicator() -> Iterator[kiwipy.LocalCommunicator]:
    with kiwipy.LocalCommunicator() as local:
        yield local


@pytest.fixture
def bridge(
    communicator: kiwipy.LocalCommunicator, worker_loop: asyncio.AbstractEventLoop
) -> LoopBridge:
    return LoopBridge(communicator, loop=worker_loop)


# Call sites.

SITES = ("foreign-thread", "other-loop", "loop-thread")


def _from_site(
    site: str,
    call: Callable[[], concurrent.futures.Future[Any]],
    worker: asyncio.AbstractEventLoop,
    other: asyncio.AbstractEventLoop,
) -> concurrent.futures.Future[Any]:
    """Make ``call()`` from ``site``; return a future of what its future resolves to."""
    if site == "foreign-thread":
        made: concurrent.futures.Future[concurrent.futures.Future[Any]] = (
            concurrent.futures.Future()
        )

        def in_thread() -> None:
            try:
                made.set_result(call())
            except BaseException as error:
                made.set_exception(error)

        thread = threading.Thread(target=in_thread, name="kiwipy-like")
        thread.start()
        thread.join(TIMEOUT)
        return made.result(timeout=0)

    loop = other if site == "other-loop" else worker

    async def in_coroutine() -> Any:
        assert asyncio.get_running_loop() is loop
        # Awaiting the thread-safe future keeps this loop free while the work runs.
        return await asyncio.wrap_future(call())

    return asyncio.run_coroutine_threadsafe(in_coroutine(), loop)


def _launch_body(cls: type[plumpy.Process], **kwargs: Any) -> dict[str, Any]:
    return process_comms.create_launch_body(cls, **kwargs)


# Launcher.


@pytest.mark.parametrize("site", SITES)
def test_launch_runs_on_the_launcher_loop(
    site: str,
    launcher: LoopAwareLauncher,
    communicator: kiwipy.LocalCommunicator,
    worker_loop: asyncio.AbstractEventLoop,
    other_loop: asyncio.AbstractEventLoop,
) -> None:
    body = _launch_body(Emit, init_kwargs={"inputs": {"value": 7}}, nowait=False)
    outputs = _from_site(
        site, lambda: launcher(communicator, body), worker_loop, other_loop
    ).result(TIMEOUT)
    assert outputs == {"value": 7, "thread": WORKER, "on_own_loop": True}


@pytest.mark.parametrize("site", SITES)
def test_create_then_continue(
    site: str,
    launcher: LoopAwareLauncher,
    persister: LoopAwarePersister,
    communicator: kiwipy.LocalCommunicator,
    worker_loop: asyncio.AbstractEventLoop,
    other_loop: asyncio.AbstractEventLoop,
) -> None:
    create = process_comms.create_create_body(
        Emit, init_kwargs={"inputs": {"value": 3}}, persist=True
    )
    pid = _from_site(site, lambda: launcher(communicator, create), worker_loop, other_loop).result(
        TIMEOUT
    )
    [info] = persister.list_info(pid)
    assert info.as_dict()["state"] == "created"

    resume = process_comms.create_continue_body(pid, nowait=False)
    outputs = _from_site(
        site, lambda: launcher(communicator, resume), worker_loop, other_loop
    ).result(TIMEOUT)
    assert outputs == {"value": 3, "thread": WORKER, "on_own_loop": True}


def test_launch_nowait_persist_returns_the_pid_and_saves(
    launcher: LoopAwareLauncher,
    persister: LoopAwarePersister,
    communicator: kiwipy.LocalCommunicator,
) -> None:
    body = _launch_body(Pause, persist=True, nowait=True)
    pid = launcher(communicator, body).result(TIMEOUT)
    assert persister.get_process_checkpoints(pid)
    # Running detached on the launcher's loop, subscribed through a bridge on it.
    process = ARRIVALS.wait(pid)
    assert process.loop is launcher.loop
    reply = unwrap_kiwi_future(
        communicator.rpc_send(str(pid), process_comms.MessageBuilder.status())
    )
    assert reply.result(TIMEOUT)["state"] in {"ProcessState.CREATED", "ProcessState.WAITING"}


def _saved_waiting(persister: LoopAwarePersister, value: int) -> Any:
    """Drive a Pause to WAITING on a loop of its own, save it, close that loop."""
    origin = asyncio.new_event_loop()
    try:
        process = Pause(inputs={"value": value}, loop=origin)

        async def until_waiting() -> None:
            while process.state != plumpy.ProcessState.WAITING:
                await process.step()

        origin.run_until_complete(until_waiting())
        persister.save_checkpoint(process)
        return process.pid
    finally:
        origin.close()


@pytest.mark.parametrize("site", SITES)
def test_continue_waiting_process_resumes_on_the_launcher_loop(
    site: str,
    launcher: LoopAwareLauncher,
    persister: LoopAwarePersister,
    communicator: kiwipy.LocalCommunicator,
    worker_loop: asyncio.AbstractEventLoop,
    other_loop: asyncio.AbstractEventLoop,
) -> None:
    pid = _saved_waiting(persister, 5)
    body = process_comms.create_continue_body(pid, nowait=False)
    outcome = _from_site(site, lambda: launcher(communicator, body), worker_loop, other_loop)

    ARRIVALS.wait(pid)  # loaded, and its RPC subscriber registered
    resume = {"intent": "resume", "value": "go"}
    reply = unwrap_kiwi_future(communicator.rpc_send(str(pid), resume)).result(TIMEOUT)
    assert reply["thread"] == WORKER
    assert reply["loop"] is worker_loop

    assert outcome.result(TIMEOUT) == {"value": 10, "resumed_with": "go", "thread": WORKER}
    process = reply["process"]
    assert process.loop is worker_loop
    check_loop_bound(process, worker_loop)
    assert process.state == plumpy.ProcessState.FINISHED


def test_continue_uses_the_communicator_named_in_load_context_extra(
    persister: LoopAwarePersister, worker_loop: asyncio.AbstractEventLoop, bridge: LoopBridge
) -> None:
    launcher = LoopAwareLauncher(
        persister, loop=worker_loop, load_context_extra={"communicator": bridge}
    )
    pid = _saved_waiting(persister, 2)
    # Delivered by no communicator at all: the process still gets the one named.
    outcome = launcher(None, process_comms.create_continue_body(pid, nowait=False))
    assert ARRIVALS.wait(pid).loop is worker_loop
    resume = {"intent": "resume", "value": 1}
    reply = unwrap_kiwi_future(bridge.rpc_send(str(pid), resume)).result(TIMEOUT)
    assert reply["loop"] is worker_loop
    assert outcome.result(TIMEOUT)["value"] == 4


def test_workchain_continues_its_second_step_on_the_launcher_loop(
    launcher: LoopAwareLauncher,
    persister: LoopAwarePersister,
    bridge: LoopBridge,
) -> None:
    bridge.add_task_subscriber(launcher)
    body = _launch_body(TwoSteps, init_kwargs={"inputs": {"n": 4}}, nowait=False)
    outputs = unwrap_kiwi_future(bridge.task_send(body)).result(TIMEOUT)
    assert outputs == {"result": 9, "threads": [WORKER, WORKER]}

    origin = asyncio.new_event_loop()
    try:
        chain = TwoSteps(inputs={"n": 4}, loop=origin)

        async def first_step_only() -> None:
            while getattr(chain.ctx, "doubled", None) is None:
                await chain.step()

        origin.run_until_complete(first_step_only())
        persister.save_checkpoint(chain)
    finally:
        origin.close()

    body = process_comms.create_continue_body(chain.pid, nowait=False)
    outputs = unwrap_kiwi_future(bridge.task_send(body)).result(TIMEOUT)
    assert outputs == {"result": 9, "threads": [threading.current_thread().name, WORKER]}


def test_forty_fast_tasks_forty_replies(launcher: LoopAwareLauncher, bridge: LoopBridge) -> None:
    bridge.add_task_subscriber(launcher)
    start = threading.Barrier(4)
    replies: dict[int, concurrent.futures.Future[Any]] = {}
    lock = threading.Lock()

    def sender(offset: int) -> None:
        start.wait(TIMEOUT)
        for value in range(offset, 40, 4):
            body = _launch_body(Emit, init_kwargs={"inputs": {"value": value}}, nowait=False)
            future = unwrap_kiwi_future(bridge.task_send(body))
            with lock:
                replies[value] = future

    senders = [threading.Thread(target=sender, args=(i,), name=f"sender-{i}") for i in range(4)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(TIMEOUT)
    assert sorted(replies) == list(range(40))
    for value, future in replies.items():
        assert future.result(TIMEOUT) == {"value": value, "thread": WORKER, "on_own_loop": True}


@pytest.mark.parametrize(
    ("process_class", "payload"),
    [
        ("builtins:exec", "open({marker!r}, 'w').close()"),
        ("os:system", "touch {marker}"),
        ("subprocess:call", "touch {marker}"),
        (f"{__name__}:NotAProcess", "{marker}"),
        ("builtins:dict", "{marker}"),
    ],
)
@pytest.mark.parametrize("task", [process_comms.LAUNCH_TASK, process_comms.CREATE_TASK])
def test_hostile_process_class_is_refused_and_nothing_runs(
    process_class: str,
    payload: str,
    task: str,
    tmp_path: Path,
    launcher: LoopAwareLauncher,
    bridge: LoopBridge,
) -> None:
    marker = tmp_path / "pwned"
    args: dict[str, Any] = {
        "process_class": process_class,
        "init_args": [payload.format(marker=str(marker))],
        "persist": False,
    }
    if task == process_comms.LAUNCH_TASK:
        args["nowait"] = False
    body = {process_comms.TASK_KEY: task, process_comms.TASK_ARGS: args}

    with pytest.raises(UnsafeCheckpointError, match="nothing was run") as refused:
        launcher(bridge, body)
    assert refused.value.name == process_class

    # Through a communicator the sender gets the refusal, with its message.
    bridge.add_task_subscriber(launcher)
    with pytest.raises(kiwipy.RemoteException, match="Refusing"):
        bridge.task_send(body).result(TIMEOUT)
    assert not marker.exists()


def test_unknown_task_is_left_for_the_next_subscriber(
    launcher: LoopAwareLauncher, bridge: LoopBridge, worker_loop: asyncio.AbstractEventLoop
) -> None:
    with pytest.raises(plumpy.TaskRejected, match="Not a plumpy process task"):
        launcher(bridge, {"task": "reticulate"})
    with pytest.raises(plumpy.TaskRejected):
        launcher(bridge, "not even a mapping")

    bridge.add_task_subscriber(launcher)
    bridge.add_task_subscriber(lambda comm, task: (task["task"], _where()))
    kind, where = unwrap_kiwi_future(bridge.task_send({"task": "reticulate"})).result(TIMEOUT)
    assert kind == "reticulate"
    assert where == {"thread": WORKER, "loop": worker_loop}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"pid": 1, "nowait": False, "tag": None, "extra": 1}, "accepts only"),
        ({"nowait": False}, "needs 'pid'"),
        ({"pid": 1, "nowait": "yes"}, "True or False"),
        ({"pid": 1, "tag": 3}, "string or None"),
    ],
)
def test_malformed_continue_is_an_error(
    args: dict[str, Any], error: str, launcher: LoopAwareLauncher, bridge: LoopBridge
) -> None:
    with pytest.raises(TypeError, match=error):
        launcher(bridge, {"task": "continue", "args": args})


def test_launch_with_a_foreign_loop_is_refused(
    launcher: LoopAwareLauncher, bridge: LoopBridge, other_loop: asyncio.AbstractEventLoop
) -> None:
    body = _launch_body(Emit, init_kwargs={"loop": other_loop}, nowait=False)
    with pytest.raises(ValueError, match="runs every process on"):
        launcher(bridge, body)


def test_failed_and_missing_processes_reach_the_sender(
    launcher: LoopAwareLauncher, communicator: kiwipy.LocalCommunicator
) -> None:
    bad_input = _launch_body(Emit, init_kwargs={"inputs": {"value": "not an int"}}, nowait=False)
    with pytest.raises(ValueError, match="value"):
        launcher(communicator, bad_input).result(TIMEOUT)

    missing = process_comms.create_continue_body("no-such-pid", nowait=False)
    with pytest.raises(LookupError):
        launcher(communicator, missing).result(TIMEOUT)


def test_launcher_arguments_are_checked(
    persister: LoopAwarePersister, worker_loop: asyncio.AbstractEventLoop
) -> None:
    with pytest.raises(ValueError, match="must not contain 'loop'"):
        LoopAwareLauncher(persister, loop=worker_loop, load_context_extra={"loop": worker_loop})
    closed = asyncio.new_event_loop()
    closed.close()
    with pytest.raises(NoEventLoopError):
        LoopAwareLauncher(persister, loop=closed)


def test_a_closed_loop_fails_the_future_instead_of_losing_it(
    persister: LoopAwarePersister, communicator: kiwipy.LocalCommunicator
) -> None:
    loop = asyncio.new_event_loop()
    launcher = LoopAwareLauncher(persister, loop=loop)
    loop.close()
    future = launcher(communicator, _launch_body(Emit, nowait=False))
    with pytest.raises(NoEventLoopError, match="closed"):
        future.result(TIMEOUT)


# Bridge.


def _subscribers(
    worker: asyncio.AbstractEventLoop, report: concurrent.futures.Future[Any] | None = None
) -> dict[str, Callable[..., Any]]:
    """One subscriber of each callable kind; each returns (and reports) where it ran.

    They accept ``(communicator, msg, *rest)``: ``rest`` is empty for tasks and
    RPCs and ``(sender, subject, correlation_id)`` for broadcasts.
    """

    def where(comm: Any, msg: Any, rest: tuple[Any, ...]) -> dict[str, Any]:
        here = _where()
        seen = {
            "msg": msg,
            "rest": rest,
            "comm": comm,
            "thread": here["thread"],
            "on_worker": here["loop"] is worker,
        }
        if report is not None:
            report.set_result(seen)
        return seen

    async def coroutine_function(comm: Any, msg: Any, *rest: Any) -> dict[str, Any]:
        await asyncio.sleep(0)  # a real suspension point, not a synchronisation
        return where(comm, msg, rest)

    def function(comm: Any, msg: Any, *rest: Any) -> dict[str, Any]:
        return where(comm, msg, rest)

    async def coroutine_with_extra(extra: str, comm: Any, msg: Any, *rest: Any) -> dict[str, Any]:
        return where(comm, (extra, msg), rest)

    def function_with_extra(extra: str, comm: Any, msg: Any, *rest: Any) -> dict[str, Any]:
        return where(comm, (extra, msg), rest)

    class CallableInstance:
        def __call__(self, comm: Any, msg: Any, *rest: Any) -> dict[str, Any]:
            return where(comm, msg, rest)

    class AsyncCallableInstance:
        async def __call__(self, comm: Any, msg: Any, *rest: Any) -> dict[str, Any]:
            return where(comm, msg, rest)

    def returns_awaitable(comm: Any, msg: Any, *rest: Any) -> Awaitable[dict[str, Any]]:
        return coroutine_function(comm, msg, *rest)

    def returns_kiwi_future(comm: Any, msg: Any, *rest: Any) -> concurrent.futures.Future[Any]:
        # What plumpy's Process.message_receive returns for play/pause/kill.
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(where(comm, msg, rest))
        return future

    return {
        "async-def": coroutine_function,
        "def": function,
        "partial-async": functools.partial(coroutine_with_extra, "x"),
        "partial-def": functools.partial(function_with_extra, "x"),
        "lambda": lambda comm, msg, *rest: where(comm, msg, rest),
        "callable-instance": CallableInstance(),
        "async-callable-instance": AsyncCallableInstance(),
        "sync-returning-awaitable": returns_awaitable,
        "sync-returning-kiwi-future": returns_kiwi_future,
    }


KINDS = (
    "async-def",
    "def",
    "partial-async",
    "partial-def",
    "lambda",
    "callable-instance",
    "async-callable-instance",
    "sync-returning-awaitable",
    "sync-returning-kiwi-future",
)


def _expected(kind: str, msg: Any, bridge: LoopBridge, *rest: Any) -> dict[str, Any]:
    sent = ("x", msg) if kind.startswith("partial") else msg
    return {"msg": sent, "rest": rest, "comm": bridge, "thread": WORKER, "on_worker": True}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("via", ["task", "rpc"])
def test_every_callable_kind_runs_on_the_loop_and_replies(
    kind: str, via: str, bridge: LoopBridge, worker_loop: asyncio.AbstractEventLoop
) -> None:
    subscriber = _subscribers(worker_loop)[kind]
    if via == "task":
        bridge.add_task_subscriber(subscriber)
        sent = bridge.task_send({"n": 1})
    else:
        bridge.add_rpc_subscriber(subscriber, "recipient")
        sent = bridge.rpc_send("recipient", {"n": 1})
    assert unwrap_kiwi_future(sent).result(TIMEOUT) == _expected(kind, {"n": 1}, bridge)


@pytest.mark.parametrize("kind", KINDS)
def test_every_callable_kind_receives_broadcasts_on_the_loop(
    kind: str, bridge: LoopBridge, worker_loop: asyncio.AbstractEventLoop
) -> None:
    heard: concurrent.futures.Future[Any] = concurrent.futures.Future()
    bridge.add_broadcast_subscriber(_subscribers(worker_loop, heard)[kind])
    # LocalCommunicator passes these as keywords; plumpy's converter indexes args[1].
    assert bridge.broadcast_send({"n": 1}, sender="me", subject="news", correlation_id=7)
    assert heard.result(TIMEOUT) == _expected(kind, {"n": 1}, bridge, "me", "news", 7)


def test_broadcast_filter_is_applied_before_scheduling(
    bridge: LoopBridge, worker_loop: asyncio.AbstractEventLoop
) -> None:
    heard: concurrent.futures.Future[Any] = concurrent.futures.Future()
    calls: list[str] = []

    def receive(comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any) -> None:
        calls.append(subject)
        heard.set_result((body, _where()["loop"] is worker_loop))

    bridge.add_broadcast_subscriber(kiwipy.BroadcastFilter(receive, subject="wanted"))
    bridge.broadcast_send("ignored", subject="state_changed.created.running")
    bridge.broadcast_send("kept", subject="wanted")
    assert heard.result(TIMEOUT) == ("kept", True)
    assert calls == ["wanted"]


def test_subscriber_errors_are_delivered(bridge: LoopBridge) -> None:
    async def fails(comm: Any, msg: Any) -> None:
        raise RuntimeError(f"failed on {msg}")

    bridge.add_rpc_subscriber(fails, "failing")
    with pytest.raises(RuntimeError, match="failed on 3"):
        unwrap_kiwi_future(bridge.rpc_send("failing", 3)).result(TIMEOUT)


def test_cancelling_the_reply_cancels_the_work(bridge: LoopBridge) -> None:
    started = threading.Event()
    cancelled = threading.Event()

    async def forever(comm: Any, msg: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    bridge.add_rpc_subscriber(forever, "forever")
    outer = bridge.rpc_send("forever", None)
    assert started.wait(TIMEOUT)
    inner = outer.result(TIMEOUT)  # LocalCommunicator: the reply is the subscriber's future
    assert inner.cancel()
    assert cancelled.wait(TIMEOUT)


def test_pass_through_and_removal(
    bridge: LoopBridge,
    communicator: kiwipy.LocalCommunicator,
    worker_loop: asyncio.AbstractEventLoop,
) -> None:
    assert bridge.loop is worker_loop
    assert bridge.communicator is communicator
    nested = LoopBridge(bridge, loop=worker_loop)
    assert nested.communicator is communicator
    assert nested._lock is bridge._lock  # bridges over one communicator take turns

    identifier = bridge.add_rpc_subscriber(lambda comm, msg: msg, "echo")
    assert unwrap_kiwi_future(bridge.rpc_send(identifier, "hi")).result(TIMEOUT) == "hi"
    bridge.remove_rpc_subscriber(identifier)
    with pytest.raises(kiwipy.UnroutableError):
        bridge.rpc_send(identifier, "hi")

    task_id = bridge.add_task_subscriber(lambda comm, task: task)
    bridge.remove_task_subscriber(task_id)
    broadcast_id = bridge.add_broadcast_subscriber(lambda *args: None)
    bridge.remove_broadcast_subscriber(broadcast_id)
    assert bridge.task_send("lost", no_reply=True) is None

    assert not bridge.is_closed()
    bridge.close()
    assert bridge.is_closed()
    assert communicator.is_closed()


def test_bridge_arguments_are_checked(
    communicator: kiwipy.LocalCommunicator, bridge: LoopBridge
) -> None:
    with pytest.raises(TypeError, match="LoopCommunicator"):
        LoopBridge(plumpy.wrap_communicator(communicator, loop=bridge.loop), loop=bridge.loop)
    closed = asyncio.new_event_loop()
    closed.close()
    with pytest.raises(NoEventLoopError):
        LoopBridge(communicator, loop=closed)
    with pytest.raises(TypeError, match="callable"):
        bridge.add_task_subscriber("not callable")  # type: ignore[arg-type]


class _Capture(kiwipy.LocalCommunicator):  # type: ignore[misc]
    """Records the callable that the bridge registers, to drive it as kiwipy's RMQ code does."""

    registered: Callable[..., Any]

    def add_task_subscriber(self, subscriber: Callable[..., Any], identifier: Any = None) -> Any:
        self.registered = subscriber
        return super().add_task_subscriber(subscriber, identifier)


@pytest.mark.parametrize("direct", [True, False], ids=["launcher", "bridged-coroutine"])
def test_forty_replies_through_kiwipy_rmq_thread_wrapping(
    direct: bool,
    launcher: LoopAwareLauncher,
    worker_loop: asyncio.AbstractEventLoop,
    other_loop: asyncio.AbstractEventLoop,
) -> None:
    """kiwipy's RmqThreadCommunicator path without a broker.

    ``other_loop`` plays kiwipy's communication thread. The subscriber is wrapped
    by ``RmqThreadCommunicator._wrap_subscriber`` and driven the way
    ``RmqTaskSubscriber._on_task`` drives it (``ensure_coroutine``, then awaiting
    the chain of futures), which is where plumpy's wrapper lost every reply.
    """
    with _Capture() as capture:
        bridge = LoopBridge(capture, loop=worker_loop)

        async def emit(comm: Any, task: Any) -> Any:
            assert comm is bridge
            return {"value": task["args"]["init_kwargs"]["inputs"]["value"], **_where()}

        bridge.add_task_subscriber(launcher if direct else emit)
        rmq = RmqThreadCommunicator.__new__(RmqThreadCommunicator)
        rmq._loop = other_loop  # all _wrap_future needs of it
        subscriber = rmq._wrap_subscriber(capture.registered)

        async def on_task(body: Any) -> Any:
            result = await rmq_utils.ensure_coroutine(subscriber)(object(), body)
            while asyncio.isfuture(result):
                result = await result
            return result

        async def deliver_all() -> list[Any]:
            bodies = [
                _launch_body(Emit, init_kwargs={"inputs": {"value": i}}, nowait=False)
                for i in range(40)
            ]
            return await asyncio.gather(*(on_task(body) for body in bodies))

        replies = asyncio.run_coroutine_threadsafe(deliver_all(), other_loop).result(TIMEOUT)
    assert [reply["value"] for reply in replies] == list(range(40))
    if direct:
        assert all(reply["thread"] == WORKER and reply["on_own_loop"] for reply in replies)
    else:
        assert all(reply["thread"] == WORKER and reply["loop"] is worker_loop for reply in replies)


# The launcher's own loop check.


class _Planting(LoopAwarePersister):
    """A persister class of the user's: loads through unbundle, then adds a future."""

    foreign: asyncio.AbstractEventLoop

    def load_process(self, *args: Any, **kwargs: Any) -> Any:
        process = super().load_process(*args, **kwargs)
        process.planted = {"late": [self.foreign.create_future()]}
        return process


@pytest.mark.parametrize("planting", [False, True])
def test_the_launcher_walks_what_its_persister_class_may_have_touched(
    planting: bool,
    worker_loop: asyncio.AbstractEventLoop,
    other_loop: asyncio.AbstractEventLoop,
    communicator: kiwipy.LocalCommunicator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This package's load_process walked the graph in unbundle: the launcher does not walk
    it again. A user's persister class may change the process after that: it does."""
    walks: list[Any] = []
    original = launcher_module.check_loop_bound

    def counted(obj: Any, loop: asyncio.AbstractEventLoop) -> None:
        walks.append(obj)
        original(obj, loop)

    monkeypatch.setattr(launcher_module, "check_loop_bound", counted)
    cls = _Planting if planting else LoopAwarePersister
    with cls(open_storage("memory://"), allow=[__name__]) as persister:
        if planting:
            persister.foreign = other_loop  # type: ignore[attr-defined]
        pid = _saved_waiting(persister, 5)
        launcher = LoopAwareLauncher(persister, loop=worker_loop)
        body = process_comms.create_continue_body(pid, nowait=True)
        outcome = _from_site(
            "foreign-thread", lambda: launcher(communicator, body), worker_loop, other_loop
        )
        if planting:
            with pytest.raises(LoopBoundaryError, match="planted"):
                outcome.result(TIMEOUT)
            assert len(walks) == 1
        else:
            assert outcome.result(TIMEOUT) == pid
            assert walks == []


@pytest.mark.parametrize(
    "process_class",
    [
        "benchmarks._workers:BenchSteps",
        "benchmarks._cases:BenchChain",
        "loopaware_persist._demo:DemoWorkChain",
        "loopaware_persist._demo:WaitingDemo",
    ],
)
def test_a_default_launcher_refuses_the_demo_and_benchmark_processes(
    process_class: str, worker_loop: asyncio.AbstractEventLoop
) -> None:
    """The default allow-list names this package's public module only: a task message must
    not make any worker run the demo's or the benchmark's processes, which only the demo
    command and the benchmark runner allow (for themselves)."""
    with open_persister("memory://") as persister:
        launcher = LoopAwareLauncher(persister, loop=worker_loop)
        body = _launch_body(plumpy.Process)
        body[process_comms.TASK_ARGS]["process_class"] = process_class
        with pytest.raises(UnsafeCheckpointError, match="nothing was run") as refused:
            launcher(None, body)
        assert refused.value.name == process_class
        module = process_class.partition(":")[0]
        assert not default_registry.may_import(module, process_class.partition(":")[2])
    # Where they run, the runner allows them itself.
    with open_persister("memory://", allow=[module]) as allowed:
        assert allowed.registry.may_import(module, process_class.partition(":")[2])
