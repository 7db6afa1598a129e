"""LoopContext: which loop a restore targets, and running code where that loop is current."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import plumpy
import pytest
from plumpy.persistence import SavableFuture

from loopaware_persist import FutureSnapshot, LoopContext, NoEventLoopError, restore_future
from tests.strategies import Caller, caller, current_event_loop

CALLERS = pytest.mark.parametrize("kind", list(Caller), ids=lambda c: c.name)


def _current_loop() -> asyncio.AbstractEventLoop | None:
    """The calling thread's current loop, by public API only (see ``current_event_loop``)."""
    return current_event_loop()


@pytest.fixture(autouse=True)
def _no_current_loop() -> Iterator[None]:
    asyncio.set_event_loop(None)
    yield
    asyncio.set_event_loop(None)


def _in_fresh_thread(fn: Callable[[], Any]) -> Any:
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _thread_has_no_loop() -> bool:
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        return True
    return False


@pytest.fixture
def other_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A second loop (A), not running, closed afterwards with its default executor."""
    new = asyncio.new_event_loop()
    yield new
    new.run_until_complete(new.shutdown_default_executor())
    new.close()


# Resolving the loop.


def test_no_running_loop_is_no_event_loop_error() -> None:
    before = _current_loop()
    with pytest.raises(NoEventLoopError) as info:
        LoopContext()
    message = str(info.value)
    assert "loop=" in message  # says what to pass
    assert "get_running_loop" in message  # and what it tried
    assert "tried" in message
    assert isinstance(info.value, RuntimeError)
    assert _current_loop() == before  # no loop was created or set in the main thread


def test_current_without_running_loop_is_no_event_loop_error() -> None:
    before = _current_loop()
    with pytest.raises(NoEventLoopError, match="loop="):
        LoopContext.current()
    assert _current_loop() == before


def test_no_loop_in_worker_thread_creates_none() -> None:
    def attempt() -> tuple[str, bool]:
        try:
            LoopContext()
        except NoEventLoopError as error:
            return str(error), _thread_has_no_loop()
        return "no error", _thread_has_no_loop()

    message, still_none = _in_fresh_thread(attempt)
    assert "loop=" in message
    assert still_none, "LoopContext() set a loop in the calling thread"
    assert _in_fresh_thread(_thread_has_no_loop)


def test_current_loop_is_not_used_only_the_running_one(loop: asyncio.AbstractEventLoop) -> None:
    """A loop that is merely *set* current (plumpy's fallback) is not a running loop."""
    before = _current_loop()
    asyncio.set_event_loop(loop)
    try:
        with pytest.raises(NoEventLoopError):
            LoopContext()
    finally:
        asyncio.set_event_loop(before)


def test_closed_loop_is_no_event_loop_error() -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    with pytest.raises(NoEventLoopError, match="closed") as info:
        LoopContext(closed)
    assert "loop=" in str(info.value)


def test_loop_closed_after_context_is_no_event_loop_error() -> None:
    target = asyncio.new_event_loop()
    ctx = LoopContext(target)
    target.close()
    with pytest.raises(NoEventLoopError, match="closed"):
        ctx.run(lambda: None)
    with pytest.raises(NoEventLoopError):
        restore_future(FutureSnapshot.pending(), ctx)


def test_current_inside_coroutine(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[LoopContext, LoopContext]:
        return LoopContext.current(), LoopContext()

    current, implicit = loop.run_until_complete(main())
    assert current.loop is loop
    assert implicit.loop is loop


def test_explicit_loop_wins_over_running_one(
    loop: asyncio.AbstractEventLoop, other_loop: asyncio.AbstractEventLoop
) -> None:
    async def main() -> LoopContext:
        return LoopContext(loop=other_loop)

    assert loop.run_until_complete(main()).loop is other_loop


def test_context_is_frozen(loop: asyncio.AbstractEventLoop) -> None:
    ctx = LoopContext(loop)
    with pytest.raises(AttributeError):
        ctx.loop = None  # type: ignore[misc]


# Load_context.


def test_load_context_carries_loop_and_extras(loop: asyncio.AbstractEventLoop) -> None:
    communicator, logger = object(), object()
    ctx = LoopContext(loop)
    load = ctx.load_context(communicator=communicator, logger=logger)
    assert isinstance(load, plumpy.LoadSaveContext)
    assert load.loop is loop
    assert load.communicator is communicator
    assert load.logger is logger
    # plumpy's copyextend keeps the loop for nested savables
    nested = load.copyextend(extra=1)
    assert nested.loop is loop
    assert nested.extra == 1


def test_load_context_without_extras(loop: asyncio.AbstractEventLoop) -> None:
    load = LoopContext(loop).load_context()
    assert isinstance(load, plumpy.LoadSaveContext)
    assert load.loop is loop


def test_load_context_never_carries_a_foreign_loop(
    loop: asyncio.AbstractEventLoop, other_loop: asyncio.AbstractEventLoop
) -> None:
    """Docs promise ``loop`` set to *this* context's loop; a conflicting one is refused."""
    ctx = LoopContext(loop)
    try:
        load = ctx.load_context(loop=other_loop)
    except ValueError:
        return
    assert load.loop is loop, "load_context(loop=A) returned a context for A, not the target B"


def test_savable_future_recreated_from_load_context_lands_on_target(
    loop: asyncio.AbstractEventLoop,
) -> None:
    saved = {"_state": "PENDING", "_result": None}
    fut = SavableFuture.recreate_from(
        {"!!meta": {"class_name": "plumpy.persistence:SavableFuture"}, **saved},
        LoopContext(loop).load_context(),
    )
    assert fut.get_loop() is loop


# Run / arun from every caller position.


def _where() -> dict[str, Any]:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    return {
        "event_loop": asyncio.get_event_loop(),
        "running": running,
        "thread": threading.current_thread().name,
        "loopless_future": asyncio.Future(),
        "plumpy_future": SavableFuture(),
    }


@CALLERS
def test_run_executes_where_target_is_current(kind: Caller) -> None:
    with caller(kind) as setup:
        ctx = LoopContext(setup.target)
        where = setup.call(ctx.run, _where)
        assert where["event_loop"] is setup.target
        assert where["loopless_future"].get_loop() is setup.target
        assert where["plumpy_future"].get_loop() is setup.target
        if kind is Caller.TARGET_RUNS_ELSEWHERE:
            assert where["thread"] == "target-loop"  # on B's own thread
            assert where["running"] is setup.target
        if kind is Caller.COROUTINE_ON_TARGET:
            assert where["running"] is setup.target  # inline
            assert where["thread"] == threading.current_thread().name
        if kind is Caller.MAIN_OTHER_CURRENT:
            # the caller's thread was not touched: A is still its current loop
            assert setup.seen_current == [setup.other]
        if kind is Caller.WORKER_NO_LOOP:
            assert where["thread"] == "caller-worker"  # no helper thread
        elif kind is not Caller.TARGET_RUNS_ELSEWHERE:
            assert where["thread"] == threading.current_thread().name


@CALLERS
def test_run_returns_value_and_passes_args(kind: Caller) -> None:
    with caller(kind) as setup:
        marker = object()
        assert setup.call(LoopContext(setup.target).run, lambda a, b: (a, b), marker, 2) == (
            marker,
            2,
        )


class _Abort(BaseException):
    """A BaseException that is not an Exception: must propagate too."""


@CALLERS
@pytest.mark.parametrize("error_type", [ValueError, _Abort])
def test_run_propagates_exceptions(kind: Caller, error_type: type[BaseException]) -> None:
    error = error_type("boom")

    def fail() -> None:
        raise error

    with caller(kind) as setup:
        ctx = LoopContext(setup.target)
        with pytest.raises(error_type) as info:
            setup.call(ctx.run, fail)
        assert info.value is error
        # and the context is still usable afterwards
        assert setup.call(ctx.run, lambda: 7) == 7


@CALLERS
def test_nested_run_inside_run(kind: Caller) -> None:
    with caller(kind) as setup:
        ctx = LoopContext(setup.target)

        def outer() -> tuple[Any, Any]:
            inner = ctx.run(asyncio.get_event_loop)
            fut = restore_future(FutureSnapshot.finished(1), ctx)
            return inner, fut.get_loop()

        assert setup.call(ctx.run, outer) == (setup.target, setup.target)


@CALLERS
def test_nested_run_for_another_loop(kind: Caller) -> None:
    third = asyncio.new_event_loop()
    try:
        with caller(kind) as setup:
            ctx, ctx_c = LoopContext(setup.target), LoopContext(third)

            def outer() -> tuple[Any, Any]:
                return ctx_c.run(asyncio.get_event_loop), asyncio.get_event_loop()

            assert setup.call(ctx.run, outer) == (third, setup.target)
    finally:
        third.close()


def test_run_from_worker_leaves_worker_without_loop(loop: asyncio.AbstractEventLoop) -> None:
    ctx = LoopContext(loop)

    def in_worker() -> tuple[Any, bool]:
        got = ctx.run(asyncio.get_event_loop)
        return got, _thread_has_no_loop()

    got, still_none = _in_fresh_thread(in_worker)
    assert got is loop
    assert still_none, "LoopContext.run set a loop in the calling worker thread"


def test_run_from_main_leaves_policy_untouched(loop: asyncio.AbstractEventLoop) -> None:
    before = _current_loop()
    assert LoopContext(loop).run(asyncio.get_event_loop) is loop
    restore_future(FutureSnapshot.pending(), LoopContext(loop))
    assert _current_loop() == before
    assert _in_fresh_thread(_thread_has_no_loop)


def test_run_does_not_make_target_current_in_caller(
    loop: asyncio.AbstractEventLoop, other_loop: asyncio.AbstractEventLoop
) -> None:
    """Run from a coroutine on A: inside fn B is current, afterwards A still runs the caller."""

    async def main() -> tuple[Any, Any]:
        inside = LoopContext(loop).run(asyncio.get_event_loop)
        return inside, asyncio.get_event_loop()

    inside, after = other_loop.run_until_complete(main())
    assert inside is loop
    assert after is other_loop


def test_run_from_coroutine_on_a_onto_b_running_elsewhere(
    running_loop: asyncio.AbstractEventLoop, other_loop: asyncio.AbstractEventLoop
) -> None:
    async def main() -> dict[str, Any]:
        return LoopContext(running_loop).run(_where)

    where = other_loop.run_until_complete(main())
    assert where["running"] is running_loop
    assert where["thread"] == "running-loop"
    assert where["loopless_future"].get_loop() is running_loop


# Arun.


def test_arun_from_another_loop(
    loop: asyncio.AbstractEventLoop, other_loop: asyncio.AbstractEventLoop
) -> None:
    ctx = LoopContext(loop)

    async def main() -> dict[str, Any]:
        return await ctx.arun(_where)

    where = other_loop.run_until_complete(main())
    assert where["event_loop"] is loop
    assert where["loopless_future"].get_loop() is loop
    assert where["thread"] == threading.current_thread().name


def test_arun_onto_loop_running_elsewhere(
    running_loop: asyncio.AbstractEventLoop, other_loop: asyncio.AbstractEventLoop
) -> None:
    ctx = LoopContext(running_loop)

    async def main() -> dict[str, Any]:
        return await ctx.arun(_where)

    where = other_loop.run_until_complete(main())
    assert where["running"] is running_loop
    assert where["thread"] == "running-loop"


def test_arun_on_target_itself_is_inline(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[dict[str, Any], str]:
        ctx = LoopContext.current()
        return await ctx.arun(_where), threading.current_thread().name

    where, thread = loop.run_until_complete(main())
    assert where["running"] is loop
    assert where["thread"] == thread


def test_arun_keeps_calling_loop_responsive(
    running_loop: asyncio.AbstractEventLoop, other_loop: asyncio.AbstractEventLoop
) -> None:
    """B runs elsewhere; fn waits there for a callback of the *calling* loop A: if arun
    blocked A while B works, this could never finish."""
    released = threading.Event()

    def fn() -> Any:
        assert released.wait(timeout=30), "the calling loop was blocked by arun"
        return asyncio.get_running_loop()

    async def main() -> Any:
        asyncio.get_running_loop().call_soon(released.set)
        return await LoopContext(running_loop).arun(fn)

    assert other_loop.run_until_complete(main()) is running_loop


def test_arun_onto_an_idle_loop_runs_on_the_calling_thread(
    loop: asyncio.AbstractEventLoop, other_loop: asyncio.AbstractEventLoop
) -> None:
    """No helper thread: the caller's thread-locals are what fn sees."""
    local = threading.local()
    local.value = "caller's"

    async def main() -> tuple[Any, Any, Any]:
        seen = await LoopContext(loop).arun(
            lambda: (getattr(local, "value", None), asyncio.get_running_loop())
        )
        return (*seen, asyncio.get_running_loop())

    assert other_loop.run_until_complete(main()) == ("caller's", loop, other_loop)


def test_arun_propagates_exceptions(
    loop: asyncio.AbstractEventLoop, other_loop: asyncio.AbstractEventLoop
) -> None:
    error = KeyError("nope")

    def fail() -> None:
        raise error

    async def main() -> None:
        await LoopContext(loop).arun(fail)

    with pytest.raises(KeyError) as info:
        other_loop.run_until_complete(main())
    assert info.value is error


def test_arun_onto_closed_loop(other_loop: asyncio.AbstractEventLoop) -> None:
    target = asyncio.new_event_loop()
    ctx = LoopContext(target)
    target.close()

    async def main() -> None:
        await ctx.arun(lambda: None)

    with pytest.raises(NoEventLoopError):
        other_loop.run_until_complete(main())
