"""Loop binding, the heart of it: whoever loads, from wherever, the process lands on loop B.

Every process state (and a WorkChain mid-outline) is loaded from every caller
position, both through ``persister.load_process(pid, loop=B)`` and through
plumpy's own ``bundle.unbundle(LoadSaveContext(loop=B))``. The result must have
``process.loop is B``, pass :func:`check_loop_bound` and, unless terminal, run
to completion on B with the right outputs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import plumpy
import pytest
from plumpy.utils import AttributesFrozendict

from loopaware_persist import (
    FutureSnapshot,
    LoopAwarePersister,
    LoopBoundaryError,
    LoopContext,
    NoEventLoopError,
    UnsafeCheckpointError,
    check_loop_bound,
    open_persister,
    unbundle,
)
from loopaware_persist._unbundle import _Rebind
from tests.axes import CODECS
from tests.loops import current_loop, in_thread, loop_in_thread, new_loop, run_on
from tests.processes import (
    EXPECTED_OUTPUTS,
    KINDS,
    LIVE_KINDS,
    check_terminal,
    complete,
    drive,
    expected_state,
    listeners_of,
)

POSITIONS = (
    "main-thread-other-loop-current",
    "main-thread-target-loop-current",
    "worker-thread-no-loop",
    "coroutine-on-other-loop",
    "coroutine-on-other-loop-target-running",
    "target-running-in-another-thread",
    "coroutine-on-target-loop",
)
HOWS = ("load_process", "bundle.unbundle")


@pytest.fixture(scope="module")
def persister() -> Iterator[LoopAwarePersister]:
    """One store holding a checkpoint of every kind, saved from a loop closed since."""
    with open_persister("memory://", allow=["tests.processes"]) as store:
        yield store


@pytest.fixture(autouse=True)
def _no_current_loop() -> Iterator[None]:
    yield
    asyncio.set_event_loop(None)


@pytest.fixture
def saved(persister: LoopAwarePersister) -> Callable[[str], Any]:
    """Save a fresh process of a kind (made on its own loop, closed since); return its pid."""

    def save(kind: str) -> Any:
        with new_loop() as origin:
            process = drive(kind, origin)
        persister.save_checkpoint(process)
        return process.pid

    return save


def loader(persister: LoopAwarePersister, how: str) -> Callable[[Any, Any], plumpy.Process]:
    """:return: ``load(pid, loop)`` through our API or through plumpy's ``Bundle.unbundle``"""
    if how == "load_process":
        return lambda pid, loop: persister.load_process(pid, loop=loop)
    return lambda pid, loop: persister.load_checkpoint(pid).unbundle(
        plumpy.LoadSaveContext(loop=loop)
    )


def check_restored(process: plumpy.Process, loop: asyncio.AbstractEventLoop, kind: str) -> None:
    """Bound to ``loop``; non-terminal kinds then run to completion on it."""
    assert process.loop is loop
    assert process.state is expected_state(kind)
    check_loop_bound(process, loop)
    if kind in LIVE_KINDS:
        assert run_on(loop, complete(process)) == EXPECTED_OUTPUTS[kind]
        assert process.state is plumpy.ProcessState.FINISHED
    else:
        check_terminal(process, kind)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_restored_process_is_bound_to_the_target_loop(
    persister: LoopAwarePersister,
    saved: Callable[[str], Any],
    kind: str,
    position: str,
    how: str,
) -> None:
    pid = saved(kind)
    load = loader(persister, how)

    if position == "main-thread-other-loop-current":
        with new_loop() as a, new_loop() as b:
            with current_loop(a):
                process = load(pid, b)
                assert asyncio.get_event_loop() is a  # the caller's loop was left alone
            check_restored(process, b, kind)

    elif position == "main-thread-target-loop-current":
        with new_loop() as b:
            with current_loop(b):
                process = load(pid, b)
                assert asyncio.get_event_loop() is b
            check_restored(process, b, kind)

    elif position == "worker-thread-no-loop":

        def in_worker() -> plumpy.Process:
            restored = load(pid, b)
            with pytest.raises(RuntimeError):
                asyncio.get_event_loop()  # no loop was created or set in this thread
            return restored

        with new_loop() as b:
            check_restored(in_thread(in_worker), b, kind)

    elif position == "coroutine-on-other-loop":

        async def on_a() -> plumpy.Process:
            return load(pid, b)

        with new_loop() as b, loop_in_thread("kiwi-thread") as a:
            check_restored(run_on(a, on_a()), b, kind)

    elif position == "coroutine-on-other-loop-target-running":

        async def on_a_too() -> plumpy.Process:
            return load(pid, b)

        with loop_in_thread("target") as b, loop_in_thread("kiwi-thread") as a:
            check_restored(run_on(a, on_a_too()), b, kind)

    elif position == "target-running-in-another-thread":
        with loop_in_thread("target") as b:
            check_restored(load(pid, b), b, kind)

    elif position == "coroutine-on-target-loop":

        async def on_b() -> Any:
            restored = load(pid, b)
            assert restored.loop is b
            assert restored.state is expected_state(kind)
            check_loop_bound(restored, b)
            if kind in LIVE_KINDS:
                return await complete(restored)
            check_terminal(restored, kind)
            return None

        with new_loop() as b:
            outputs = b.run_until_complete(on_b())
        if kind in LIVE_KINDS:
            assert outputs == EXPECTED_OUTPUTS[kind]
    else:  # pragma: no cover
        pytest.fail(position)


@pytest.mark.parametrize("kind", ["waiting", "paused", "chain"])
def test_bundle_unbundle_without_a_loop_uses_the_running_loop(
    persister: LoopAwarePersister, saved: Callable[[str], Any], kind: str
) -> None:
    pid = saved(kind)

    async def on_b() -> dict[str, Any]:
        running = asyncio.get_running_loop()
        for context in (None, plumpy.LoadSaveContext()):
            restored = persister.load_checkpoint(pid).unbundle(context)
            assert restored.loop is running
            check_loop_bound(restored, running)
        restored = persister.load_process(pid)
        assert restored.loop is running
        return await complete(restored)

    with new_loop() as b:
        assert b.run_until_complete(on_b()) == EXPECTED_OUTPUTS[kind]


def test_unbundle_function_with_a_loop_context(
    persister: LoopAwarePersister, saved: Callable[[str], Any]
) -> None:
    pid = saved("waiting")
    bundle = persister.load_checkpoint(pid)
    with new_loop() as a, new_loop() as b, current_loop(a):
        process = unbundle(bundle, LoopContext(loop=b), registry=persister.registry)
        assert asyncio.get_event_loop() is a
        asyncio.set_event_loop(None)
        check_restored(process, b, "waiting")


@pytest.mark.parametrize("kind", ["waiting", "chain"])
def test_one_bundle_unbundled_onto_two_loops_gives_independent_graphs(
    persister: LoopAwarePersister, saved: Callable[[str], Any], kind: str
) -> None:
    bundle = persister.load_checkpoint(saved(kind))
    with new_loop() as b1, new_loop() as b2:
        first = bundle.unbundle(plumpy.LoadSaveContext(loop=b1))
        second = bundle.unbundle(plumpy.LoadSaveContext(loop=b2))
        assert first is not second
        assert first.loop is b1
        assert second.loop is b2
        check_loop_bound(first, b1)
        check_loop_bound(second, b2)
        assert first.future() is not second.future()
        assert first._state is not second._state
        (listener1,) = listeners_of(first)
        (listener2,) = listeners_of(second)
        assert listener1 is not listener2
        saved_events = list(listener2.events)
        if kind == "chain":
            assert first.ctx is not None
            assert second.ctx is not None
            first.ctx.nested["a"]["b"].append("only in the first")
            assert second.ctx.nested["a"]["b"] == [1.5, 2.25, -0.0]
            first.ctx.nested["a"]["b"].pop()

        assert run_on(b1, complete(first)) == EXPECTED_OUTPUTS[kind]
        # Running the first one must not touch the second one's state.
        assert listener2.events == saved_events
        assert second.state is expected_state(kind)
        assert run_on(b2, complete(second)) == EXPECTED_OUTPUTS[kind]
    # ... nor the bundle: it still loads as it was saved.
    with new_loop() as b3:
        third = bundle.unbundle(plumpy.LoadSaveContext(loop=b3))
        assert listeners_of(third)[0].events == saved_events
        check_restored(third, b3, kind)


# No usable loop.


def test_no_loop_given_and_none_running_is_an_error_and_creates_no_loop(
    persister: LoopAwarePersister, saved: Callable[[str], Any]
) -> None:
    pid = saved("waiting")

    def in_fresh_thread() -> list[str]:
        errors = []
        attempts: tuple[Callable[[], object], ...] = (
            lambda: persister.load_process(pid),
            lambda: persister.load_checkpoint(pid).unbundle(),
            lambda: persister.load_checkpoint(pid).unbundle(plumpy.LoadSaveContext()),
            lambda: unbundle(persister.load_checkpoint(pid), registry=persister.registry),
        )
        for attempt in attempts:
            with pytest.raises(NoEventLoopError) as caught:
                attempt()
            assert isinstance(caught.value, RuntimeError)
            assert isinstance(caught.value, plumpy.PersistenceError)
            errors.append(str(caught.value))
        # Nothing created or set a loop in this thread.
        with pytest.raises(RuntimeError, match="no current event loop"):
            asyncio.get_event_loop()
        return errors

    messages = in_thread(in_fresh_thread, name="fresh")
    assert all("loop=" in message for message in messages)  # says what to pass


def test_closed_target_loop_is_an_error(
    persister: LoopAwarePersister, saved: Callable[[str], Any]
) -> None:
    pid = saved("waiting")
    closed = asyncio.new_event_loop()
    closed.close()
    with pytest.raises(NoEventLoopError, match="closed"):
        persister.load_process(pid, loop=closed)
    with pytest.raises(NoEventLoopError, match="closed"):
        persister.load_checkpoint(pid).unbundle(plumpy.LoadSaveContext(loop=closed))
    with pytest.raises(NoEventLoopError):
        LoopContext(loop=closed)


def test_target_loop_closed_after_running_in_another_thread(
    persister: LoopAwarePersister, saved: Callable[[str], Any]
) -> None:
    pid = saved("chain")
    with loop_in_thread("target") as b:
        process = persister.load_process(pid, loop=b)
        assert process.loop is b
    with pytest.raises(NoEventLoopError):
        persister.load_process(pid, loop=b)


# Check_loop_bound.


def test_check_loop_bound_names_a_foreign_future_planted_in_the_context(
    persister: LoopAwarePersister, saved: Callable[[str], Any]
) -> None:
    pid = saved("chain")
    with new_loop() as a, new_loop() as b:
        process = persister.load_process(pid, loop=b)
        check_loop_bound(process, b)
        assert process.ctx is not None
        foreign = a.create_future()
        process.ctx.pending = {"x": [1, foreign]}
        process.ctx.own = b.create_future()
        with pytest.raises(LoopBoundaryError) as caught:
            check_loop_bound(process, b)
        assert isinstance(caught.value, RuntimeError)
        (path,) = caught.value.paths
        assert "pending" in path
        assert path.endswith("['x'][1]")
        assert path in str(caught.value)
        # Without the planted future the graph is bound to B again.
        del process.ctx.pending
        check_loop_bound(process, b)


def test_check_loop_bound_finds_every_foreign_future() -> None:
    with new_loop() as a, new_loop() as b:
        graph = {"one": a.create_future(), "deep": [{"two": (a.create_future(),)}], "ok": b}
        graph["mine"] = b.create_future()
        with pytest.raises(LoopBoundaryError) as caught:
            check_loop_bound(graph, b)
        assert len(caught.value.paths) == 2
        assert any("one" in path for path in caught.value.paths)
        assert any("two" in path for path in caught.value.paths)


def test_check_loop_bound_looks_at_the_attributes_of_builtin_subclasses() -> None:
    """A user's dict/list/tuple subclass may carry attributes too (``structure.kind``):
    a foreign future there was missed, the items alone were walked."""
    from tests import user_types as ut

    with new_loop() as a, new_loop() as b:
        holders = [ut.Structure(k=1), ut.Steps([1]), ut.Pair((1,)), ut.Tags({1})]
        for holder in holders:
            holder.awaited = a.create_future()
        with pytest.raises(LoopBoundaryError) as caught:
            check_loop_bound({"held": holders}, b)
        assert sorted(caught.value.paths) == [f"['held'][{i}].awaited" for i in range(4)]


# The contrast: plumpy's own loading.


def test_plumpy_alone_leaves_futures_on_the_current_loop() -> None:
    """plumpy 0.26: ``Bundle(process).unbundle(LoadSaveContext(loop=B))`` with loop A current
    puts the WAITING future on A. If plumpy fixes this, this test fails: revisit the README."""
    with new_loop() as a, new_loop() as b:
        process = drive("waiting", a)
        with current_loop(a):
            restored = plumpy.Bundle(process).unbundle(plumpy.LoadSaveContext(loop=b))
        assert restored.loop is b
        assert restored._state._waiting_future.get_loop() is a  # plumpy's bug
        with pytest.raises(LoopBoundaryError) as caught:
            check_loop_bound(restored, b)
        assert caught.value.paths == ("_state._waiting_future",)


def test_plumpy_alone_in_a_worker_thread_cannot_load_a_waiting_process() -> None:
    with new_loop() as a, new_loop() as b:
        process = drive("waiting", a)
        bundle = plumpy.Bundle(process)

        def in_worker() -> None:
            with pytest.raises(RuntimeError, match="no current event loop"):
                bundle.unbundle(plumpy.LoadSaveContext(loop=b))

        in_thread(in_worker)


def test_concurrent_loads_onto_one_running_loop(
    persister: LoopAwarePersister, saved: Callable[[str], Any]
) -> None:
    """Several threads restore at once onto the same running loop; all end up bound to it."""
    pids = [saved("waiting") for _ in range(6)]
    restored: list[plumpy.Process] = []
    lock = threading.Lock()
    with loop_in_thread("target") as b:

        def load(pid: Any) -> None:
            process = persister.load_process(pid, loop=b)
            with lock:
                restored.append(process)

        threads = [threading.Thread(target=load, args=(pid,)) for pid in pids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(restored) == len(pids)
        for process in restored:
            check_restored(process, b, "waiting")


# Futures held in a WorkChain context.


def futures_for_the_context(a: asyncio.AbstractEventLoop) -> dict[str, Any]:
    done = a.create_future()
    done.set_result({"r": (1, 2)})
    failed = a.create_future()
    failed.set_exception(ValueError("bad", 3))
    failed.exception()  # retrieved, so loop A does not log it
    cancelled = a.create_future()
    cancelled.cancel("stop")
    kiwi: concurrent.futures.Future[Any] = concurrent.futures.Future()  # what kiwipy hands back
    kiwi.set_result(5)
    savable = plumpy.SavableFuture(loop=a)
    savable.set_result("s")
    return {
        "pending": a.create_future(),
        "done": done,
        "failed": failed,
        "cancelled": cancelled,
        "kiwi": kiwi,
        "savable": savable,
        "nested": [{"deep": (a.create_future(),)}],
    }


@pytest.mark.parametrize("position", ["worker-thread-no-loop", "coroutine-on-other-loop"])
@pytest.mark.parametrize("codec", CODECS)
def test_futures_in_the_context_are_restored_on_the_target_loop(codec: str, position: str) -> None:
    with open_persister("memory://", codec=codec, allow=["tests.processes"]) as store:
        with new_loop() as a:
            chain = drive("chain", a)
            assert chain.ctx is not None
            chain.ctx.futures = futures_for_the_context(a)
            store.save_checkpoint(chain)
        with new_loop() as b:
            if position == "worker-thread-no-loop":
                restored = in_thread(lambda: store.load_process(chain.pid, loop=b))
            else:

                async def on_other_loop() -> plumpy.Process:
                    return store.load_process(chain.pid, loop=b)

                with loop_in_thread("kiwi-thread") as other:
                    restored = run_on(other, on_other_loop())
            check_loop_bound(restored, b)
            assert restored.ctx is not None
            futures = restored.ctx.futures
            for name, future in [*futures.items(), ("deep", futures["nested"][0]["deep"][0])]:
                if name != "nested":
                    assert isinstance(future, asyncio.Future), name
                    assert future.get_loop() is b, name
            assert not futures["pending"].done()
            assert futures["done"].result() == {"r": (1, 2)}
            assert type(futures["failed"].exception()) is ValueError
            assert futures["failed"].exception().args == ("bad", 3)
            with pytest.raises(asyncio.CancelledError, match="stop"):
                futures["cancelled"].result()
            assert futures["kiwi"].result() == 5
            assert futures["savable"].result() == "s"

            async def await_them() -> Any:
                b.call_soon(futures["pending"].set_result, "later")
                return await futures["pending"], await futures["done"]

            assert b.run_until_complete(await_them()) == ("later", {"r": (1, 2)})
            assert b.run_until_complete(complete(restored)) == EXPECTED_OUTPUTS["chain"]


def test_pickle_keeps_a_future_shared_between_two_places_shared() -> None:
    """README: pickle keeps shared references. A future referenced twice in the context must
    come back as one future, or resolving one place leaves the other waiting forever."""
    with open_persister("memory://", codec="pickle", allow=["tests.processes"]) as store:
        with new_loop() as a:
            chain = drive("chain", a)
            assert chain.ctx is not None
            shared = a.create_future()
            chain.ctx.first = shared
            chain.ctx.others = [shared, {"again": shared}]
            store.save_checkpoint(chain)
        with new_loop() as b:
            ctx = store.load_process(chain.pid, loop=b).ctx
            assert ctx is not None
            assert ctx.first is ctx.others[0]
            assert ctx.first is ctx.others[1]["again"]


# The single walk: audit, copy and rebind together, then the check.


def test_a_live_foreign_future_planted_in_a_bundle_is_caught(
    persister: LoopAwarePersister, saved: Callable[[str], Any]
) -> None:
    """The walk skips what it verified (plain data, futures it made); a live future it did
    not make keeps its containers unverified, so the check still walks to it."""
    pid = saved("chain")
    with new_loop() as a, new_loop() as b:
        bundle = persister.load_checkpoint(pid)
        foreign = a.create_future()
        bundle["_context"]["planted"] = {"deep": [1, 2.0, "three", foreign]}
        with pytest.raises(LoopBoundaryError) as caught:
            unbundle(bundle, LoopContext(loop=b), registry=persister.registry)
        (path,) = caught.value.paths
        assert path == "_context.planted['deep'][3]"


def test_many_frozendicts_each_keep_their_own_items(persister: LoopAwarePersister) -> None:
    """The walk's memo is keyed by id(): no temporary may lend its id to another value."""
    inputs = {f"ns{i}": AttributesFrozendict({"i": i, "tag": f"t{i}"}) for i in range(200)}
    bundle = {"inputs": AttributesFrozendict(inputs), "again": [inputs["ns7"], inputs["ns7"]]}
    with new_loop() as b:
        walk = _Rebind(b, copy=True, registry=None)
        out = walk.run(bundle)
    assert {name: dict(ns) for name, ns in out["inputs"].items()} == {
        name: dict(ns) for name, ns in inputs.items()
    }
    assert out["again"][0] is out["again"][1] is out["inputs"]["ns7"]  # shared stays shared
    assert out["inputs"] is not bundle["inputs"]


def test_a_refused_bundle_leaves_no_unretrieved_future(
    persister: LoopAwarePersister, saved: Callable[[str], Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Futures the walk made before it met the refused class are dropped quietly (a
    restored failure counts as observed, so asyncio logs no "never retrieved")."""
    pid = saved("chain")
    bundle = persister.load_checkpoint(pid)
    # A failed snapshot first (key order is walk order), then a savable naming os:system.
    context = {"early": FutureSnapshot.failed(ValueError("boom"))}
    context.update(bundle["_context"])
    context["late"] = {"!!meta": {"class_name": "os:system"}}
    bundle["_context"] = context
    message = ""
    with new_loop() as b, caplog.at_level(logging.ERROR, logger="asyncio"):
        try:
            unbundle(bundle, LoopContext(loop=b), registry=persister.registry)
        except UnsafeCheckpointError as error:
            message = str(error)  # the error (and the frames holding the futures) go here
        gc.collect()
    assert "'os:system'" in message
    assert "never retrieved" not in caplog.text
