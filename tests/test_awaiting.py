"""WorkChains waiting on futures and child processes (``ToContext``) are checkpointable.

Each test saves a real plumpy WorkChain while it is WAITING into a real SQLite
file, then loads it in a fresh Python process (``python -m
tests.awaiting_processes``) and runs it there to the end. On plumpy 0.26.1 alone
the save fails ("cannot pickle 'SavableFuture'"): plumpy deep-copies the
Waiting state's ``{future: key}`` members.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import plumpy
import pytest
from hypothesis import given, strategies as st

import loopaware_persist as lp
from tests import awaiting_processes as ap
from tests.awaiting_processes import drive_to_waiting, save_child_chain
from tests.axes import CODECS
from tests.loops import close_loop
from tests.strategies import EXCEPTION_TYPES, assert_same, exceptions, scalars

ROOT = Path(__file__).resolve().parent.parent
WAITING = plumpy.ProcessState.WAITING


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A real SQLite file store."""
    return f"sqlite:///{tmp_path / 'checkpoints.db'}"


@pytest.fixture
def persister(url: str, codec_name: str) -> Iterator[lp.LoopAwarePersister]:
    """A persister on ``url``, per codec, that also checkpoints ChildChain's children at
    creation. The fresh process reads each record with the codec its header names."""
    with lp.open_persister(url, codec=codec_name, allow=["tests.awaiting_processes"]) as opened:
        ap.SAVE_CHILDREN_WITH[:] = [opened]
        yield opened
    ap.SAVE_CHILDREN_WITH.clear()
    ap.CHILD_INPUTS.clear()
    ap.CHILD_INPUTS.update(ap.DEFAULT_CHILD_INPUTS)
    ap.PLAIN_FUTURES.clear()
    ap.LAUNCHED.clear()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh loop; the children left pending on it are cancelled before it closes."""
    new = asyncio.new_event_loop()
    yield new
    close_loop(new)


def fresh(spec: dict[str, Any]) -> dict[str, Any]:
    """Load and run in a new Python process; what it reports."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.awaiting_processes", json.dumps(spec, default=str)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


EXPECTED_CTX = {"a": {"y": 10}, "b": {"y": 20}}


@pytest.mark.parametrize(
    ("parent_first", "resave", "fencing"),
    [
        (True, False, False),
        (False, False, False),
        (False, True, False),
        (True, False, True),
        (False, False, True),
    ],
    ids=[
        "parent-first",
        "children-first",
        "children-first-parent-resaved",
        "worker-persister-parent-first",
        "worker-persister-children-first",
    ],
)
def test_children_continued_by_load_process_complete_the_parent(
    loop: asyncio.AbstractEventLoop,
    persister: lp.LoopAwarePersister,
    url: str,
    parent_first: bool,
    resave: bool,
    fencing: bool,
) -> None:
    parent = save_child_chain(loop, persister)
    children = [child.pid for child in ap.LAUNCHED]
    spec = {"url": url, "parent": parent.pid, "children": children, "fencing": fencing}
    report = fresh({**spec, "parent_first": parent_first, "resave": resave})
    assert report == {"state": "finished", "outputs": {"total": 30}, "ctx": EXPECTED_CTX}


@contextlib.contextmanager
def waiting_parent(url: str, pid: Any) -> Iterator[Callable[[], dict[str, Any]]]:
    """A fresh process that has loaded the parent and waits, polling the store for its
    children; yields what to call for its report once they are dealt with."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    spec = {"url": url, "parent": pid, "announce": True, "poll": 0.05}
    with subprocess.Popen(
        [sys.executable, "-m", "tests.awaiting_processes", json.dumps(spec, default=str)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as waiting:
        try:
            assert waiting.stdout is not None
            line = waiting.stdout.readline()
            assert line == "loaded\n", waiting.stderr.read() if waiting.stderr else line

            def report() -> dict[str, Any]:
                out, err = waiting.communicate(timeout=120)
                assert waiting.returncode == 0, err
                result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
                return result

            yield report
        finally:
            if waiting.poll() is None:
                waiting.kill()


def test_children_continued_in_another_process_complete_the_parent_from_the_store(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str
) -> None:
    """As with two workers: the parent waits in one process, its children run in another
    (a worker's persister, which checkpoints every transition), and the parent finds
    them terminated in the store."""
    parent = save_child_chain(loop, persister)
    children = [child.pid for child in ap.LAUNCHED]
    with waiting_parent(url, parent.pid) as report:
        # Only now do the children run, so the parent cannot have found them done.
        spec = {"url": url, "parent": children[0], "children": children[1:]}
        ran = fresh({**spec, "fencing": True, "any_state": True})
        assert ran["state"] == "finished", ran
        assert report() == {"state": "finished", "outputs": {"total": 30}, "ctx": EXPECTED_CTX}


def test_a_child_checkpoint_deleted_while_the_parent_waits_fails_the_parent(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str
) -> None:
    parent = save_child_chain(loop, persister)
    gone = ap.LAUNCHED[1].pid
    with waiting_parent(url, parent.pid) as report:
        persister.delete_checkpoint(gone)
        outcome = report()
    assert outcome["state"] == "excepted"
    assert outcome["error"].startswith(
        f"UnlinkedAwaitableError: The checkpoint of child process {gone}"
    )


@pytest.mark.parametrize("via", ["launcher", "plumpy-launcher"])
def test_children_continued_by_the_same_launcher_complete_the_parent(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str, via: str
) -> None:
    """``LoopAwareLauncher`` on a loop in a worker thread, or plumpy's own
    ``ProcessLauncher``, which unbundles the ``LoopAwareBundle`` itself."""
    parent = save_child_chain(loop, persister)
    children = [child.pid for child in ap.LAUNCHED]
    report = fresh({"url": url, "parent": parent.pid, "children": children, "via": via})
    assert report == {"state": "finished", "outputs": {"total": 30}}


@pytest.mark.parametrize("via", ["load_process", "bundle"])
def test_terminated_children_complete_the_parent_from_their_checkpoints(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str, via: str
) -> None:
    """``via='bundle'``: ``bundle.unbundle()`` as plumpy's ProcessLauncher and AiiDA
    call it, then ``relink_awaited(process, persister)`` for the store checks."""
    parent = save_child_chain(loop, persister)
    # Here the original run goes on: the children finish and are checkpointed
    # FINISHED; the parent's checkpoint still has them pending.
    loop.run_until_complete(parent.step_until_terminated())
    for child in ap.LAUNCHED:
        assert child.state is plumpy.ProcessState.FINISHED
        persister.save_checkpoint(child)
    report = fresh({"url": url, "parent": parent.pid, "via": via})
    assert report == {"state": "finished", "outputs": {"total": 30}, "ctx": EXPECTED_CTX}


def test_a_failed_child_checkpoint_fails_the_parent_as_it_did_live(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str
) -> None:
    ap.CHILD_INPUTS["b"] = -2
    parent = save_child_chain(loop, persister)
    loop.run_until_complete(parent.step_until_terminated())
    assert parent.state is plumpy.ProcessState.EXCEPTED
    assert [child.state for child in ap.LAUNCHED] == [
        plumpy.ProcessState.FINISHED,
        plumpy.ProcessState.EXCEPTED,
    ]
    for child in ap.LAUNCHED:
        persister.save_checkpoint(child)
    report = fresh({"url": url, "parent": parent.pid})
    assert report == {"state": "excepted", "error": "ValueError: negative x -2"}


def save_future_chain(
    loop: asyncio.AbstractEventLoop,
    persister: lp.LoopAwarePersister,
    settle: Callable[[asyncio.Future[Any]], Any] | None = None,
) -> Any:
    """Run a FutureChain until it waits, settle its future (or not) and save at once.

    Saving in the same loop turn as the settling, the saved Waiting state still
    holds the future: plumpy's done-callback has not run yet.
    """
    parent = ap.FutureChain(loop=loop)

    def save() -> None:
        (future,) = ap.PLAIN_FUTURES
        assert ap.awaited(parent) == {"value": future}
        if settle is not None:
            settle(future)
        # Pending, it belongs to no process: verify=True refuses it (see below).
        persister.save_checkpoint(parent, verify=settle is not None)

    drive_to_waiting(loop, parent, save)
    return parent


def test_a_finished_snapshot_resolves_at_once_on_load(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str
) -> None:
    parent = save_future_chain(loop, persister, lambda future: future.set_result({"n": 41}))
    report = fresh({"url": url, "parent": parent.pid})
    assert report == {
        "state": "finished",
        "outputs": {"value": {"n": 41}},
        "ctx": {"value": {"n": 41}},
    }


def test_a_cancelled_snapshot_leaves_the_workchain_waiting_as_it_would_live(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister
) -> None:
    """Pins the README's known limitation: plumpy's ``Waiting._awaitable_done`` catches
    ``Exception`` only, so a cancelled awaited future (``CancelledError`` is a
    ``BaseException``) leaves the WorkChain WAITING, live and restored alike. A plumpy
    fix makes this test fail: then the README entry goes."""
    parent = save_future_chain(loop, persister, lambda future: future.cancel())
    target = asyncio.new_event_loop()
    try:
        loaded = persister.load_process(parent.pid, loop=target)
        for process, its_loop in ((parent, loop), (loaded, target)):
            task = its_loop.create_task(process.step_until_terminated())
            for _ in range(20):  # turns enough for every callback the cancel scheduled
                its_loop.run_until_complete(asyncio.sleep(0))
            assert process.state is WAITING
            task.cancel()
            its_loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        target.close()


def test_a_failed_snapshot_fails_the_workchain_on_load(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str
) -> None:
    parent = save_future_chain(
        loop, persister, lambda future: future.set_exception(ValueError("no value"))
    )
    # Here, too, the original run goes on and fails (so no failure goes unobserved).
    loop.run_until_complete(parent.step_until_terminated())
    assert parent.state is plumpy.ProcessState.EXCEPTED
    report = fresh({"url": url, "parent": parent.pid})
    assert report == {"state": "excepted", "error": "ValueError: no value"}


def test_verify_refuses_a_pending_future_that_no_process_owns(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister
) -> None:
    parent = ap.FutureChain(loop=loop)
    refused: list[lp.EncodeError] = []

    def save() -> None:
        with pytest.raises(lp.EncodeError) as raised:
            persister.save_checkpoint(parent, verify=True)
        refused.append(raised.value)
        with pytest.raises(lp.EncodeError):
            persister.check_save(parent)

    drive_to_waiting(loop, parent, save)
    assert refused[0].path == "_state._awaiting['value']"
    assert "relink" in str(refused[0])
    with pytest.raises(lp.CheckpointNotFoundError):
        persister.load_checkpoint(parent.pid)


def test_a_pending_plain_future_is_an_unlinked_awaitable_error(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str
) -> None:
    parent = save_future_chain(loop, persister)
    report = fresh({"url": url, "parent": parent.pid})
    assert report == {"error": "UnlinkedAwaitableError", "key": "value", "owner": None}


def test_a_relink_hook_supplies_the_pending_plain_future(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str
) -> None:
    parent = save_future_chain(loop, persister)
    report = fresh({"url": url, "parent": parent.pid, "relink_value": 99})
    assert report == {"state": "finished", "outputs": {"value": 99}, "ctx": {"value": 99}}


def test_a_child_whose_checkpoint_is_missing_is_an_unlinked_awaitable_error(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, url: str
) -> None:
    parent = save_child_chain(loop, persister)
    first = ap.LAUNCHED[0]
    persister.delete_checkpoint(first.pid)
    report = fresh({"url": url, "parent": parent.pid})
    assert report == {"error": "UnlinkedAwaitableError", "key": "a", "owner": str(first.pid)}


def _bundle_and_loop(
    loop: asyncio.AbstractEventLoop,
    persister: lp.LoopAwarePersister,
    settle: Callable[[asyncio.Future[Any]], Any] | None,
) -> tuple[Any, lp.LoopAwareBundle, asyncio.AbstractEventLoop]:
    parent = save_future_chain(loop, persister, settle)
    return parent, persister.load_checkpoint(parent.pid), asyncio.new_event_loop()


def test_a_bare_bundle_unbundle_continues_on_a_finished_snapshot(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister
) -> None:
    _, bundle, target = _bundle_and_loop(loop, persister, lambda f: f.set_result(7))
    try:
        # What plumpy's ProcessLauncher and AiiDA do: unbundle the bundle themselves.
        loaded = bundle.unbundle(plumpy.LoadSaveContext(loop=target))
        assert isinstance(loaded, ap.FutureChain)
        assert loaded.state is WAITING
        assert ap.awaited(loaded)["value"].get_loop() is target
        target.run_until_complete(loaded.step_until_terminated())
        assert loaded.outputs == {"value": 7}
    finally:
        target.close()


def test_a_bare_bundle_unbundle_refuses_a_pending_plain_future(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister
) -> None:
    parent, bundle, target = _bundle_and_loop(loop, persister, None)
    try:
        with pytest.raises(lp.UnlinkedAwaitableError) as raised:
            bundle.unbundle(plumpy.LoadSaveContext(loop=target))
        error = raised.value
        assert (error.pid, error.key, error.owner) == (parent.pid, "value", None)
        assert "relink" in str(error)
    finally:
        target.close()


@pytest.mark.parametrize(
    ("hook", "expected"),
    [(None, None), (lambda process, key, owner: 42, None), ("future", 5)],
    ids=["no-hook", "hook-returns-no-future", "hook-returns-a-future"],
)
def test_relink_awaited_after_unbundle(
    loop: asyncio.AbstractEventLoop,
    persister: lp.LoopAwarePersister,
    hook: Any,
    expected: int | None,
) -> None:
    parent, bundle, target = _bundle_and_loop(loop, persister, None)
    if hook == "future":
        replacement = target.create_future()
        target.call_soon(replacement.set_result, 5)

        def hook(process: plumpy.Process, key: Any, owner: Any) -> asyncio.Future[Any]:
            assert (process.pid, key, owner) == (parent.pid, "value", None)
            return replacement

    try:
        loaded = lp.unbundle(bundle, lp.LoopContext(loop=target), registry=persister.registry)
        assert isinstance(loaded, plumpy.Process)
        if expected is None:
            with pytest.raises(lp.UnlinkedAwaitableError):
                lp.relink_awaited(loaded, persister, relink=hook)
            loaded.close()
            return
        lp.relink_awaited(loaded, persister, relink=hook)
        target.run_until_complete(loaded.step_until_terminated())
        assert loaded.outputs == {"value": expected}
    finally:
        target.close()


# plumpy's Waiting._awaitable_done catches Exception only: a future failed with a
# BaseException (or cancelled) leaves a WorkChain waiting forever, live as restored.
# asyncio refuses StopIteration as a future's exception.
_ERRORS = exceptions(
    types=tuple(
        t for t in EXCEPTION_TYPES if issubclass(t, Exception) and not issubclass(t, StopIteration)
    )
)
_SETTLED = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.one_of(
        st.builds(lp.FutureSnapshot.finished, scalars),
        st.builds(lp.FutureSnapshot.failed, _ERRORS),
    ),
    min_size=1,
    max_size=4,
)


def _outcome(process: plumpy.Process) -> tuple[plumpy.ProcessState, Any]:
    if process.state is plumpy.ProcessState.EXCEPTED:
        return process.state, process.exception()
    return process.state, {key: process.ctx[key] for key in ap.FUTURE_KEYS}


@pytest.mark.parametrize("codec", CODECS)
@given(outcomes=_SETTLED)
def test_settled_futures_reach_the_context_as_they_would_live(
    codec: str, outcomes: dict[str, lp.FutureSnapshot]
) -> None:
    """Whatever the awaited futures held when saved, the loaded WorkChain ends exactly
    as the original run ends: the same context, or the same failure."""
    ap.FUTURE_KEYS[:] = list(outcomes)
    loop, target = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        with lp.open_persister(
            "memory://", codec=codec, allow=["tests.awaiting_processes"]
        ) as persister:
            parent = ap.ManyFutureChain(loop=loop)

            def save() -> None:
                for key, future in ap.awaited(parent).items():
                    snapshot = outcomes[key]
                    if snapshot.exception is not None:
                        future.set_exception(snapshot.exception)
                    else:
                        future.set_result(snapshot.result)
                persister.save_checkpoint(parent, verify=True)

            drive_to_waiting(loop, parent, save)
            loaded = persister.load_process(parent.pid, loop=target)
            target.run_until_complete(loaded.step_until_terminated())
            loop.run_until_complete(parent.step_until_terminated())
            assert_same(_outcome(loaded), _outcome(parent))
    finally:
        ap.FUTURE_KEYS.clear()
        loop.close()
        target.close()


def test_saving_leaves_the_live_workchain_untouched(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister
) -> None:
    """The stand-ins live only for the save: the running WorkChain keeps its own dicts
    and callbacks, and finishes as if it had not been saved."""
    parent = ap.FutureChain(loop=loop)
    members: dict[str, Any] = {}

    def save() -> None:
        state = parent._state
        members.update(awaiting=state._awaiting, data=state.data)
        persister.save_checkpoint(parent)
        assert state._awaiting is members["awaiting"]
        assert state.data is members["data"]
        ap.PLAIN_FUTURES[0].set_result("live")

    drive_to_waiting(loop, parent, save)
    loop.run_until_complete(parent.step_until_terminated())
    assert parent.outputs == {"value": "live"}


@pytest.mark.parametrize("one_done", [False, True], ids=["equal", "data-holds-more"])
def test_the_waiting_states_data_comes_back_with_the_same_futures(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister, one_done: bool
) -> None:
    """plumpy's Waiting keeps the awaitables twice: ``data`` (all of them) and
    ``_awaiting`` (those not done yet). Both come back, sharing their futures."""
    ap.FUTURE_KEYS[:] = ["a", "b"]
    parent = ap.ManyFutureChain(loop=loop)
    drive_to_waiting(loop, parent, lambda: None)
    futures = ap.awaited(parent)
    if one_done:
        futures["a"].set_result(1)
        loop.run_until_complete(asyncio.sleep(0))  # plumpy's callback pops it
    state = parent._state
    saved_keys = (sorted(state.data.values()), sorted(state._awaiting.values()))
    persister.save_checkpoint(parent)
    target = asyncio.new_event_loop()
    try:

        def relink(process: plumpy.Process, key: Any, owner: Any) -> asyncio.Future[Any]:
            future = target.create_future()
            future.set_result({"a": 1, "b": 2}[key])
            return future

        loaded = persister.load_process(parent.pid, loop=target, relink=relink)
        loaded_state = loaded._state
        assert (sorted(loaded_state.data.values()), sorted(loaded_state._awaiting.values())) == (
            saved_keys
        )
        assert loaded_state.data is not loaded_state._awaiting
        for future, key in loaded_state._awaiting.items():
            assert {f: k for f, k in loaded_state.data.items() if k == key} == {future: key}
        target.run_until_complete(loaded.step_until_terminated())
        assert {key: loaded.ctx[key] for key in ("a", "b")} == {"a": 1, "b": 2}
    finally:
        ap.FUTURE_KEYS.clear()
        target.close()


def test_aload_process_takes_the_relink_hook(
    loop: asyncio.AbstractEventLoop, persister: lp.LoopAwarePersister
) -> None:
    parent = save_future_chain(loop, persister)
    target = asyncio.new_event_loop()

    def relink(process: plumpy.Process, key: Any, owner: Any) -> concurrent.futures.Future[Any]:
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        done.set_result(("from", key))  # a thread-safe future works as well
        return done

    async def load_and_run() -> Any:
        with pytest.raises(lp.UnlinkedAwaitableError):
            await persister.aload_process(parent.pid)
        loaded = await persister.aload_process(parent.pid, relink=relink)
        await loaded.step_until_terminated()
        return loaded.outputs

    try:
        assert target.run_until_complete(load_and_run()) == {"value": ("from", "value")}
    finally:
        target.close()


class _CancelledAfterTheCheck(concurrent.futures.Future[Any]):
    """A future another thread cancels between copy_outcome's done() check and its set."""

    def done(self) -> bool:
        return False


@pytest.mark.parametrize("outcome", ["result", "exception", "cancelled"])
def test_copy_outcome_lets_a_cancel_from_another_thread_win(outcome: str) -> None:
    from loopaware_persist._outcome import copy_outcome

    source: concurrent.futures.Future[Any] = concurrent.futures.Future()
    if outcome == "result":
        source.set_result(1)
    elif outcome == "exception":
        source.set_exception(ValueError("boom"))
    else:
        source.cancel()
    target = _CancelledAfterTheCheck()
    assert target.cancel()
    copy_outcome(source, target)  # no InvalidStateError: the cancel stands
    assert target.cancelled()


def test_a_process_saved_again_still_completes_a_parent_that_waits_for_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # A second save of the same process object takes note_process's shortcut; a parent
    # that started waiting for that pid in between must still be chained to it.
    from loopaware_persist._owners import _LOCK, _WANTED, note_process

    child = plumpy.Process(loop=loop)
    note_process(child)
    note_process(child)  # nothing changed: the shortcut
    waiter: asyncio.Future[Any] = loop.create_future()
    with _LOCK:
        _WANTED.setdefault(child.pid, weakref.WeakSet()).add(waiter)
    note_process(child)
    assert child.pid not in _WANTED
    child.future().set_result({"done": True})
    loop.run_until_complete(asyncio.sleep(0))
    assert waiter.result() == {"done": True}
