"""A load runs on the caller's thread (design.md, "Loop binding": no helper threads).

A real plumpy process records, from its own ``load_instance_state``, which
thread loads it and what that thread's ``threading.local`` and the caller's
``contextvars.ContextVar`` hold there: a per-thread database session (AiiDA's
SQLAlchemy session) must be the caller's. Around every load the caller's
current and running loop must be what they were, and no loop may be created.

The caller's current loop is read with ``asyncio.get_event_loop()`` only after
the test has set one (or ``None``), so the read can never create a loop either.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any

import plumpy
import pytest

from loopaware_persist import (
    LoopAwarePersister,
    LoopContext,
    check_loop_bound,
    default_registry,
    open_persister,
    unbundle,
)
from tests.loops import in_thread, loop_in_thread, new_loop, run_on
from tests.processes import RESUME_VALUE

#: A per-thread resource, like AiiDA's SQLAlchemy session.
SESSION = threading.local()
#: A context variable of the caller.
REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="unset")
#: What each :class:`Probe` saw while plumpy loaded it.
SEEN: list[dict[str, Any]] = []


class Probe(plumpy.Process):
    """Waits once; records where and with what it is loaded."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.outputs.dynamic = True

    def load_instance_state(
        self, saved_state: Any, load_context: plumpy.LoadSaveContext | None
    ) -> None:
        super().load_instance_state(saved_state, load_context)
        SEEN.append(
            {
                "thread": threading.current_thread(),
                "session": getattr(SESSION, "value", None),
                "request": REQUEST.get(),
                "running": _running(),
                "event_loop": asyncio.get_event_loop(),
            }
        )

    def run(self) -> plumpy.Wait:
        return plumpy.Wait(self.resumed, "waiting for a signal")

    def resumed(self, value: Any = None) -> None:
        self.out("after", value)


@pytest.fixture(scope="module")
def persister() -> Iterator[LoopAwarePersister]:
    with open_persister("memory://", allow=[__name__]) as store:
        yield store


@pytest.fixture
def pid(persister: LoopAwarePersister) -> Any:
    """A WAITING :class:`Probe`, saved from a loop closed since."""
    with new_loop() as origin:
        process = Probe(loop=origin)

        async def to_waiting() -> None:
            while process.state is not plumpy.ProcessState.WAITING:
                await process.step()

        origin.run_until_complete(to_waiting())
        persister.save_checkpoint(process)
    return process.pid


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    SEEN.clear()
    asyncio.set_event_loop(None)  # from here on get_event_loop() raises, never creates
    yield
    asyncio.set_event_loop(None)


def _current() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_event_loop()
    except RuntimeError:
        return None


def _running() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@contextlib.contextmanager
def no_loop_created() -> Iterator[list[Any]]:
    """Count every event loop constructed in the block (any thread, any policy)."""
    made: list[Any] = []
    original = asyncio.BaseEventLoop.__init__

    def counting(self: asyncio.BaseEventLoop) -> None:
        made.append(self)
        original(self)

    asyncio.BaseEventLoop.__init__ = counting  # type: ignore[method-assign]
    try:
        yield made
    finally:
        asyncio.BaseEventLoop.__init__ = original  # type: ignore[method-assign]
    assert made == [], f"{len(made)} event loop(s) were created during the load"


LOADS = ("load_process", "bundle.unbundle", "unbundle")


def _load(persister: LoopAwarePersister, how: str, pid: Any, loop: Any) -> plumpy.Process:
    if how == "load_process":
        return persister.load_process(pid, loop=loop)
    if how == "unbundle":
        return unbundle(persister.load_checkpoint(pid), LoopContext(loop=loop))
    return persister.load_checkpoint(pid).unbundle(plumpy.LoadSaveContext(loop=loop))


def _check_resumes(process: plumpy.Process, loop: asyncio.AbstractEventLoop) -> None:
    assert process.loop is loop
    check_loop_bound(process, loop)

    async def finish() -> Any:
        process.resume(RESUME_VALUE)
        await process.step_until_terminated()
        return process.outputs

    assert run_on(loop, finish()) == {"after": RESUME_VALUE}


def _as_caller(fn: Callable[[], plumpy.Process]) -> tuple[plumpy.Process, dict[str, Any]]:
    """Call ``fn`` with this thread's session and a context variable set, as a caller would."""
    SESSION.value = session = object()
    token = REQUEST.set(f"request-{threading.get_ident()}")
    try:
        before = (_current(), _running())
        with no_loop_created():
            process = fn()
        after = (_current(), _running())
        assert after[0] is before[0], "the caller's current loop changed"
        assert after[1] is before[1], "the caller's running loop changed"
        (seen,) = SEEN
        assert seen["thread"] is threading.current_thread(), "loaded on another thread"
        assert seen["session"] is session, "the caller's thread-local was not visible"
        assert seen["request"] == REQUEST.get(), "the caller's context variable was not visible"
        return process, seen
    finally:
        REQUEST.reset(token)
        del SESSION.value


@pytest.mark.parametrize("how", LOADS)
def test_main_thread_with_another_loop_current(
    persister: LoopAwarePersister, pid: Any, how: str
) -> None:
    with new_loop() as a, new_loop() as b:
        asyncio.set_event_loop(a)
        process, seen = _as_caller(lambda: _load(persister, how, pid, b))
        assert _current() is a
        assert seen["running"] is b
        assert seen["event_loop"] is b
        asyncio.set_event_loop(None)
        _check_resumes(process, b)


@pytest.mark.parametrize("how", LOADS)
def test_main_thread_with_no_loop_set(persister: LoopAwarePersister, pid: Any, how: str) -> None:
    with new_loop() as b:
        process, seen = _as_caller(lambda: _load(persister, how, pid, b))
        assert _current() is None
        assert seen["event_loop"] is b
        _check_resumes(process, b)


@pytest.mark.parametrize("how", LOADS)
def test_worker_thread_with_no_loop(persister: LoopAwarePersister, pid: Any, how: str) -> None:
    with new_loop() as b:

        def in_worker() -> plumpy.Process:
            process, seen = _as_caller(lambda: _load(persister, how, pid, b))
            assert _current() is None, "a loop was left set in the worker"
            assert seen["event_loop"] is b
            return process

        _check_resumes(in_thread(in_worker, name="worker"), b)


@pytest.mark.parametrize("how", LOADS)
def test_coroutine_on_another_loop(persister: LoopAwarePersister, pid: Any, how: str) -> None:
    with new_loop() as a, new_loop() as b:

        async def on_a() -> plumpy.Process:
            process, seen = _as_caller(lambda: _load(persister, how, pid, b))
            assert asyncio.get_running_loop() is a
            assert seen["running"] is b  # swapped for the synchronous stretch only
            # The calling loop still works: its tasks run, its futures resolve.
            assert await asyncio.sleep(0, "still a") == "still a"
            return process

        process = a.run_until_complete(on_a())
        _check_resumes(process, b)


@pytest.mark.parametrize("how", LOADS)
def test_coroutine_on_the_target_loop(persister: LoopAwarePersister, pid: Any, how: str) -> None:
    with new_loop() as b:

        async def on_b() -> Any:
            process, seen = _as_caller(lambda: _load(persister, how, pid, b))
            assert seen["running"] is b
            process.resume(RESUME_VALUE)
            await process.step_until_terminated()
            return process.outputs

        assert b.run_until_complete(on_b()) == {"after": RESUME_VALUE}


@pytest.mark.parametrize("how", LOADS)
def test_target_running_in_another_thread_hops_there_with_the_context(
    persister: LoopAwarePersister, pid: Any, how: str
) -> None:
    """The one position that cannot load on the caller's thread: B's futures are B's."""
    with loop_in_thread("target") as b:
        token = REQUEST.set("from the caller")
        try:
            with no_loop_created():
                process = _load(persister, how, pid, b)
        finally:
            REQUEST.reset(token)
        (seen,) = SEEN
        assert seen["thread"].name == "target"
        assert seen["request"] == "from the caller"  # the caller's context goes along
        assert _current() is None
        _check_resumes(process, b)


def test_an_error_in_the_load_restores_the_callers_loops(
    persister: LoopAwarePersister, pid: Any
) -> None:
    bundle = persister.load_checkpoint(pid)
    bundle["_state"]["!!meta"]["class_name"] = "os:system"
    with new_loop() as a, new_loop() as b:

        async def on_a() -> None:
            with pytest.raises(plumpy.PersistenceError), no_loop_created():
                bundle.unbundle(plumpy.LoadSaveContext(loop=b))
            assert asyncio.get_running_loop() is a

        a.run_until_complete(on_a())
        assert _running() is None
        assert _current() is None


def test_nested_runs_restore_each_level() -> None:
    """A load inside a load (a nested savable onto another loop) unwinds exactly."""
    with new_loop() as a, new_loop() as b, new_loop() as c:
        ctx_b, ctx_c = LoopContext(b), LoopContext(c)

        def inner() -> Any:
            return asyncio.get_running_loop(), ctx_b.run(asyncio.get_running_loop)

        def outer() -> Any:
            return asyncio.get_running_loop(), ctx_c.run(inner), asyncio.get_running_loop()

        async def on_a() -> Any:
            got = ctx_b.run(outer)
            return got, asyncio.get_running_loop()

        with no_loop_created():
            got, after = a.run_until_complete(on_a())
        assert got == (b, (c, b), b)
        assert after is a
        assert _running() is None


def test_run_back_onto_a_displaced_loop_does_not_wait_for_itself() -> None:
    """A coroutine on B loads onto C, which loads onto B again: B runs on this very thread
    (displaced), so hopping to "B's thread" would wait forever; it is installed again."""
    with new_loop() as b, new_loop() as c:
        ctx_b, ctx_c = LoopContext(b), LoopContext(c)

        async def on_b() -> Any:
            return ctx_c.run(lambda: ctx_b.run(asyncio.get_running_loop))

        assert b.run_until_complete(asyncio.wait_for(on_b(), 30)) is b


class Row:
    """Stands for an ORM row: its decode hook looks it up in the per-thread session."""

    def __init__(self, key: str) -> None:
        self.key = key


def test_aload_process_decodes_on_the_calling_thread() -> None:
    """Only the storage read goes to a thread: the decode hooks (which may query the
    caller's per-thread database session) and the load run on the loop's own thread."""
    decoded_on: list[threading.Thread] = []
    registry = default_registry.copy()

    def decode(fields: list[Any]) -> Row:
        decoded_on.append(threading.current_thread())
        assert getattr(SESSION, "value", None) is not None, "not the caller's session"
        return Row(fields[0])

    registry.register(Row, tag="tests.row", encode=lambda row: [row.key], decode=decode)
    with open_persister("memory://", registry=registry, allow=[__name__]) as store:
        with new_loop() as origin:
            process = Probe(loop=origin)
            process.out("row", Row("r1"))
            store.save_checkpoint(process)

        async def on_b() -> plumpy.Process:
            SESSION.value = object()
            try:
                return await store.aload_process(process.pid)
            finally:
                del SESSION.value

        with new_loop() as b:
            restored = b.run_until_complete(on_b())
            assert restored.loop is b
    assert isinstance(restored.outputs["row"], Row)
    assert decoded_on == [threading.current_thread()]


def test_a_runner_in_the_load_context_gives_the_loop(
    persister: LoopAwarePersister, pid: Any
) -> None:
    """AiiDA's load contexts carry ``runner`` (which owns ``loop``) rather than ``loop``."""

    class Runner:
        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop

    with new_loop() as b:
        runner = Runner(b)
        with no_loop_created():
            process = persister.load_checkpoint(pid).unbundle(plumpy.LoadSaveContext(runner=runner))
        _check_resumes(process, b)
