"""Workers run in threads of the test process, against the real RabbitMQ and a real store.

The subprocess scenarios of ``test_workers`` show what a daemon does; these drive the
same :class:`Worker` in a thread (``run(stop_event=..., signals=False)``), so its
branches are seen by coverage and its state (``stopping``, the persister's fences)
can be inspected directly. Every worker thread is stopped and joined when its test
ends, whatever happened (the ``thread_workers`` fixture).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import kiwipy
import pytest

from loopaware_persist import (
    ArgumentTypeError,
    BackendUnavailableError,
    EncodeError,
    StaleCheckpointError,
    StorageError,
)
from loopaware_persist._client import WorkerClient
from loopaware_persist._errors import FencedError
from loopaware_persist._fencing import open_fencing_persister
from loopaware_persist._messages import MessageCodec
from loopaware_persist._worker import Worker, run_worker
from loopaware_persist.storage import CheckpointKey
from tests.axes import postgres_schema_url

from .conftest import (
    ALLOW,
    DEADLINE,
    hostile_task_messages,
    publish_raw,
    ready_count,
    side_lines,
    wait_for,
)
from .processes import Double, Fail, Gated, Opaque, Palette, Steps, Unsavable

pytestmark = pytest.mark.integration

#: How long a worker thread may take to stop once asked (grace is set per test).
JOIN_DEADLINE = 30.0


class ThreadWorker:
    """One :class:`Worker` running in a thread of the test process.

    :param worker: the worker (not yet running)
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="inprocess-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run(stop_event=self.stop_event, signals=False)
        except BaseException as error:  # reported by ready() and join()
            self.error = error

    def ready(self) -> bool:
        """:return: whether the worker consumes its queue; fails if its thread died"""
        if not self.thread.is_alive():
            pytest.fail(f"worker thread exited early: {self.error!r}")
        return self.worker._subscriber_id is not None

    def stop(self) -> None:
        """Ask the worker to shut down (its grace applies)."""
        self.stop_event.set()

    def join(self) -> None:
        """Wait for the thread to end; fail if it does not, or if ``run`` raised."""
        self.thread.join(JOIN_DEADLINE)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.error is None, repr(self.error)


@pytest.fixture
def thread_workers(amqp_url: str, queue: str) -> Iterator[Callable[..., ThreadWorker]]:
    """:return: ``start(store, **worker_options)``; every worker is stopped and joined
    after the test, even a failed one"""
    started: list[ThreadWorker] = []

    def start(store: str, **options: Any) -> ThreadWorker:
        options.setdefault("allow", ALLOW)
        options.setdefault("grace", 5.0)
        worker = Worker(broker_url=amqp_url, store_url=store, task_queue=queue, **options)
        handle = ThreadWorker(worker)
        started.append(handle)
        handle.thread.start()
        wait_for(handle.ready, f"in-process worker {len(started)} to consume {queue}")
        return handle

    try:
        yield start
    finally:
        for handle in started:
            handle.stop()
        for handle in started:
            handle.thread.join(JOIN_DEADLINE)
        alive = [h for h in started if h.thread.is_alive()]
        assert not alive, f"{len(alive)} worker threads did not stop"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    """:return: an SQLite store URL in this test's temporary directory"""
    return f"sqlite:///{tmp_path}/store.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> str:
    """:return: a store URL of each kind, private to this test"""
    fixture = "sqlite_store" if request.param == "sqlite" else "postgres_store"
    return str(request.getfixturevalue(fixture))


def _states(store_url: str) -> dict[Any, str | None]:
    with open_fencing_persister(store_url, allow=ALLOW) as persister:
        return {info.pid: info.as_dict().get("state") for info in persister.list_info()}


def _total(x: int, n: int) -> int:
    return sum(x * i for i in range(n))


def _messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


# Tasks.


def test_launch_create_continue_and_wait(
    thread_workers: Callable[..., ThreadWorker], client: WorkerClient, store: str, tmp_path: Path
) -> None:
    worker = thread_workers(store)
    side = tmp_path / "side"

    launched = client.launch(Double, {"x": 21})
    pid_of_launch = launched.pid  # type: ignore[attr-defined]
    assert client.wait(pid_of_launch, timeout=DEADLINE) == {"doubled": 42, "worker": os.getpid()}

    pid = client.create(Steps, {"x": 2, "n": 3, "side": str(side)}).result(timeout=DEADLINE)
    assert _states(store)[pid] == "created"
    assert side_lines(side) == []  # created and checkpointed, not run
    with pytest.raises(LookupError, match=r"continue_\(\) the pid first"):
        client.wait(pid, timeout=0)  # a create is not waited for by pid

    continued = client.continue_(pid)
    outputs = client.wait(pid, timeout=DEADLINE)
    assert outputs["total"] == _total(2, 3)
    assert outputs["loop_checked"] is True
    assert client.wait(continued, timeout=0) == outputs  # the same future, already resolved
    assert [(r[1], r[2]) for r in side_lines(side)] == [
        (i, e) for i in range(3) for e in ("start", "done")
    ]
    states = _states(store)
    assert states[pid] == states[pid_of_launch] == "finished"
    # Terminated processes are no longer watched by the worker's persister. (The copy
    # the create task made and dropped is watched weakly: gone once collected.)
    gc.collect()
    assert worker.worker.persister.watched() == []
    assert "queue=" in repr(worker.worker)


def test_failures_reach_the_client_as_remote_exceptions(
    thread_workers: Callable[..., ThreadWorker],
    client: WorkerClient,
    sqlite_store: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    thread_workers(sqlite_store)
    failed = client.launch(Fail, {"x": 7})
    with pytest.raises(kiwipy.RemoteException, match="boom 7"):
        client.wait(failed, timeout=DEADLINE)
    assert _states(sqlite_store)[failed.pid] == "excepted"  # type: ignore[attr-defined]

    # A process whose state cannot be encoded fails at its first checkpoint; its last
    # (terminal) checkpoint fails the same way, and is logged instead of raised.
    unsavable = client.launch(Unsavable)
    with pytest.raises(kiwipy.RemoteException, match="Unsupported type <class 'object'>"):
        client.wait(unsavable, timeout=DEADLINE)
    assert _messages(caplog, "Could not checkpoint")

    # A malformed body reaches the launcher and its TypeError reaches the sender.
    bad = client._send({"task": "launch", "args": "not a mapping"}, "bad")
    with pytest.raises(kiwipy.RemoteException, match="must be a mapping"):
        bad.result(timeout=DEADLINE)


def test_wait_by_pid_unknown_pid_and_timeout(
    thread_workers: Callable[..., ThreadWorker],
    client: WorkerClient,
    sqlite_store: str,
    tmp_path: Path,
) -> None:
    thread_workers(sqlite_store)
    gate = tmp_path / "gate"
    with pytest.raises(LookupError, match="No task for pid 'nobody'"):
        client.wait("nobody")
    future = client.launch(Gated, {"x": 4, "gate": str(gate)})
    pid = future.pid  # type: ignore[attr-defined]
    with pytest.raises(TimeoutError):
        client.wait(pid, timeout=0.2)
    assert not future.done()
    gate.touch()
    outputs = client.wait(pid, timeout=DEADLINE)
    assert outputs["doubled"] == 8


def test_a_redelivered_launch_continues_its_checkpoint(
    thread_workers: Callable[..., ThreadWorker],
    client: WorkerClient,
    store: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    thread_workers(store)
    side = tmp_path / "side"
    pid = f"redelivered-{uuid.uuid4().hex[:8]}"
    inputs = {"x": 3, "n": 3, "side": str(side)}
    # As if a worker died right after the launch's first save: the checkpoint exists.
    assert client.create(Steps, inputs, pid=pid).result(timeout=DEADLINE) == pid

    first = client.launch(Steps, inputs, pid=pid).result(timeout=DEADLINE)
    assert first["total"] == _total(3, 3)
    assert _messages(caplog, f"launch of {pid} was redelivered")
    # The same launch once more, now that the process has finished: its stored outcome,
    # no step run again and no second process.
    again = client.launch(Steps, inputs, pid=pid).result(timeout=DEADLINE)
    assert again == first
    done = [r[1] for r in side_lines(side) if r[2] == "done"]
    assert done == [0, 1, 2]
    with open_fencing_persister(store, allow=ALLOW) as persister:
        assert [i.pid for i in persister.list_info()] == [pid]

    # A launch without a pid (another sender) is launched as it is.
    no_pid = {
        "task": "launch",
        "args": {
            "process_class": "tests.integration.processes:Double",
            "persist": True,
            "nowait": False,
            "init_args": (),
            "init_kwargs": {"inputs": {"x": 5}},
        },
    }
    assert client._send(no_pid, "no-pid").result(timeout=DEADLINE)["doubled"] == 10


# Refusals.


def test_hostile_messages_are_refused_and_nothing_runs(
    thread_workers: Callable[..., ThreadWorker],
    client: WorkerClient,
    sqlite_store: str,
    amqp_url: str,
    queue: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    thread_workers(sqlite_store, prefetch=1)
    marker = tmp_path / "marker"
    publish_raw(amqp_url, queue, hostile_task_messages(marker))
    # With prefetch=1 the next task is delivered only once the hostile ones were
    # acknowledged (dropped), not left unacknowledged on the channel.
    assert client.launch(Double, {"x": 5}).result(timeout=DEADLINE)["doubled"] == 10
    # The same refused launch, sent by a client that waits for the answer.
    refused = client._send({"task": "launch", "args": {"process_class": "os:system"}}, "os")
    with pytest.raises(kiwipy.RemoteException, match="Refusing the 'launch' task"):
        refused.result(timeout=DEADLINE)
    assert not marker.exists()
    assert len(_messages(caplog, "-byte message")) == 2  # the decoder refused two
    logged = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert len([e for e in logged if "Refused a task message; nothing was run" in e]) == 2
    assert len([e for e in logged if "Refusing the 'launch' task" in e]) == 2
    assert ready_count(amqp_url, queue) == 0  # nothing waits to be redelivered


def test_a_client_refuses_a_reply_outside_its_allow_list(
    thread_workers: Callable[..., ThreadWorker],
    client: WorkerClient,
    sqlite_store: str,
    amqp_url: str,
    queue: str,
) -> None:
    thread_workers(sqlite_store)
    # The worker allows the module, so its reply carries the enum...
    assert client.launch(Palette).result(timeout=DEADLINE)["color"].value == "red"
    # ...which a client that does not allow it refuses, failing instead of hanging.
    with (
        WorkerClient(broker_url=amqp_url, task_queue=queue) as strict,
        pytest.raises(kiwipy.RemoteException, match="The reply was refused"),
    ):
        strict.launch(Palette).result(timeout=DEADLINE)


def test_a_reply_that_cannot_be_encoded_fails_the_sender(
    thread_workers: Callable[..., ThreadWorker], client: WorkerClient, sqlite_store: str
) -> None:
    thread_workers(sqlite_store)
    future = client.launch(Opaque)
    # kiwipy encodes the reply after acknowledging the task: a refused one used to be
    # lost, and the sender waited forever.
    expected = "The result could not be sent: Cannot send this message"
    with pytest.raises(kiwipy.RemoteException, match=expected):
        future.result(timeout=DEADLINE)
    # Any other message that cannot be encoded still raises, to its sender.
    with pytest.raises(EncodeError, match="Cannot send this message"):
        MessageCodec(allow=ALLOW).worker_encoder({"body": object()})


def test_prefetch_is_validated_and_zero_means_unlimited(
    thread_workers: Callable[..., ThreadWorker], client: WorkerClient, sqlite_store: str
) -> None:
    with pytest.raises(ValueError, match=r"prefetch must be 0 \(unlimited\) or more, got -1"):
        Worker(broker_url="amqp://unused", store_url=sqlite_store, prefetch=-1)
    worker = thread_workers(sqlite_store, prefetch=0, process_rpc=False)
    futures = [client.launch(Double, {"x": i}) for i in range(10)]
    assert [f.result(timeout=DEADLINE)["doubled"] for f in futures] == [2 * i for i in range(10)]
    assert worker.worker.prefetch == 0


# Shutdown.


def test_stop_event_fences_what_outlives_grace_and_another_worker_resumes_it(
    thread_workers: Callable[..., ThreadWorker],
    client: WorkerClient,
    postgres_store: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    first = thread_workers(postgres_store, grace=0.2, prefetch=1)
    side, gate = tmp_path / "side", tmp_path / "gate"
    inputs = {"x": 5, "n": 3, "side": str(side), "gate": str(gate), "gate_step": 1}
    pid = client.create(Steps, inputs).result(timeout=DEADLINE)
    future = client.continue_(pid)
    wait_for(lambda: [r for r in side_lines(side) if r[1:3] == (1, "start")], "step 1 to start")
    key = CheckpointKey(pid)
    with open_fencing_persister(postgres_store, allow=ALLOW) as persister:
        before = persister.storage.get(key)

    first.stop()
    first.join()
    assert _messages(caplog, f"fenced {pid}: shutdown")
    assert _messages(caplog, "stopping them at their last checkpoint")
    assert not future.done()
    with open_fencing_persister(postgres_store, allow=ALLOW) as persister:
        after = persister.storage.get(key)
        assert (after.version, after.data) == (before.version, before.data)  # nothing saved
        assert persister.load_checkpoint(pid)["_i"] == 1  # step 0 is in the checkpoint
    # A stopped worker ignores further requests, and a follow fails at once.
    first.worker.request_stop()
    orphan: concurrent.futures.Future[Any] = concurrent.futures.Future()
    first.worker.follow(pid, orphan)
    with pytest.raises(kiwipy.TaskRejected, match="shutting down"):
        orphan.result(timeout=0)

    thread_workers(postgres_store, prefetch=1)  # RabbitMQ redelivers the task here
    wait_for(
        lambda: len([r for r in side_lines(side) if r[1:3] == (1, "start")]) == 2,
        "the requeued task to reach step 1 again",
    )
    gate.touch()
    outputs = future.result(timeout=DEADLINE)
    assert outputs["total"] == _total(5, 3)
    done = [r[1] for r in side_lines(side) if r[2] == "done"]
    assert done == [0, 1, 2]  # step 0 was not run again
    assert len(set(outputs["copies"])) == 2  # resumed by another in-memory copy


def test_stop_event_lets_in_flight_work_finish_within_grace_and_starts_nothing_new(
    thread_workers: Callable[..., ThreadWorker],
    client: WorkerClient,
    sqlite_store: str,
    amqp_url: str,
    queue: str,
    tmp_path: Path,
) -> None:
    first = thread_workers(sqlite_store, grace=DEADLINE, prefetch=2)
    side, gate = tmp_path / "side", tmp_path / "gate"
    running = client.launch(Gated, {"x": 4, "gate": str(gate), "side": str(side)})
    wait_for(lambda: side_lines(side), "the gated process to start")
    first.stop()
    wait_for(lambda: first.worker.stopping, "the worker to begin its shutdown")

    held = client.launch(Double, {"x": 3})
    # Delivered to the stopping worker (its only consumer), which does not start it.
    wait_for(lambda: ready_count(amqp_url, queue) == 0, "the new task to be delivered")
    gate.touch()
    assert running.result(timeout=DEADLINE)["doubled"] == 8  # finished within grace
    first.join()
    assert not held.done()
    assert _states(sqlite_store).get(held.pid) is None  # type: ignore[attr-defined]

    thread_workers(sqlite_store)
    assert held.result(timeout=DEADLINE)["doubled"] == 6


def test_run_worker_stops_on_its_event(
    amqp_url: str, queue: str, client: WorkerClient, sqlite_store: str
) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            run_worker(
                broker_url=amqp_url,
                store_url=sqlite_store,
                allow=ALLOW,
                task_queue=queue,
                grace=1.0,
                stop_event=stop,
            )
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=serve, name="run-worker", daemon=True)
    thread.start()
    try:
        # run_worker() in a thread that is not the main one installs no signal handlers.
        assert client.launch(Double, {"x": 8}).result(timeout=DEADLINE)["doubled"] == 16
    finally:
        stop.set()
        thread.join(JOIN_DEADLINE)
    assert not thread.is_alive()
    assert errors == []


def test_sigint_stops_a_worker_running_in_the_main_thread(
    amqp_url: str,
    queue: str,
    client: WorkerClient,
    sqlite_store: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    assert threading.current_thread() is threading.main_thread()
    worker = Worker(
        broker_url=amqp_url, store_url=sqlite_store, allow=ALLOW, task_queue=queue, grace=1.0
    )
    fallback = threading.Event()
    results: list[Any] = []

    def drive() -> None:
        try:
            wait_for(lambda: worker._subscriber_id is not None, "the worker to be ready")
            results.append(client.launch(Double, {"x": 2}).result(timeout=DEADLINE))
            # The handler is installed before the worker consumes, so SIGINT is ours now.
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException as error:
            results.append(error)
            fallback.set()  # stop the worker anyway, so the test cannot hang

    driver = threading.Thread(target=drive, name="sigint-driver", daemon=True)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    driver.start()
    try:
        worker.run(stop_event=fallback, signals=True)
    finally:
        fallback.set()
        driver.join(JOIN_DEADLINE)
        asyncio.set_event_loop(None)  # run() made the worker's (now closed) loop current
        restored = {sig: signal.getsignal(sig) for sig in previous}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert restored == previous  # closing the loop gave the signals back
    assert results == [{"doubled": 4, "worker": os.getpid()}]
    assert _messages(caplog, "SIGINT, shutting down")


# Fencing.


@pytest.fixture
def two_workers(
    thread_workers: Callable[..., ThreadWorker],
    postgres_store: str,
    caplog: pytest.LogCaptureFixture,
) -> str:
    """Two workers with a prefetch of one on one PostgreSQL store, logging at INFO.

    :returns: the store's URL
    """
    caplog.set_level(logging.INFO)
    thread_workers(postgres_store, prefetch=1)
    thread_workers(postgres_store, prefetch=1)
    return postgres_store


def _run_two_copies(
    client: WorkerClient, pid: str, starts: Callable[[], Collection[str]], what: str
) -> tuple[concurrent.futures.Future[Any], concurrent.futures.Future[Any]]:
    """Continue ``pid`` twice, the second while the first copy still runs.

    :param starts: the copies that have started so far, as the side file tells
    :param what: what a copy starts, for the waits' messages
    :returns: the two continue futures, once both copies have started
    """
    first = client.continue_(pid)
    wait_for(lambda: len(starts()) == 1, f"the first copy to start {what}")
    second = client.continue_(pid)
    wait_for(lambda: len(starts()) == 2, f"the second copy to claim the pid and start {what}")
    return first, second


def test_two_workers_given_one_pid_the_stale_copy_follows_the_owner(
    two_workers: str, client: WorkerClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    side, gate = tmp_path / "side", tmp_path / "gate"
    inputs = {"x": 2, "n": 3, "side": str(side), "gate": str(gate), "gate_step": 0}
    pid = client.create(Steps, inputs).result(timeout=DEADLINE)

    def starts() -> set[str]:
        return {r[4] for r in side_lines(side) if r[1:3] == (0, "start")}

    # A redelivery while the first copy still runs: the second copy claims the pid.
    first, second = _run_two_copies(client, pid, starts, "step 0")
    gate.touch()

    results = [first.result(timeout=DEADLINE), second.result(timeout=DEADLINE)]
    assert results[0] == results[1]  # the fenced copy's task replied with the owner's outcome
    assert results[0]["total"] == _total(2, 3)
    assert len(set(results[0]["copies"])) == 1  # one copy wrote the whole stored history
    assert _messages(caplog, f"fenced {pid}: stale")
    with open_fencing_persister(two_workers, allow=ALLOW) as persister:
        stored = persister.load_checkpoint(pid)
    assert stored["_copies"] == results[0]["copies"]


def test_a_copy_fenced_entering_its_final_state_replies_with_the_stored_outcome(
    two_workers: str, client: WorkerClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    side, gate = tmp_path / "side", tmp_path / "gate"
    pid = client.create(Gated, {"x": 3, "side": str(side), "gate": str(gate)}).result(
        timeout=DEADLINE
    )

    def starts() -> list[str]:
        return [r[4] for r in side_lines(side) if r[2] == "start"]

    first, second = _run_two_copies(client, pid, starts, "its step")
    stale, owner = starts()
    gate.touch()
    # The only step goes straight to FINISHED: the stale copy is fenced while entering
    # its terminal state, with its own (unsaved) outputs already set.
    results = [first.result(timeout=DEADLINE), second.result(timeout=DEADLINE)]
    assert _messages(caplog, f"fenced {pid}: stale")
    loop = asyncio.new_event_loop()
    try:
        with open_fencing_persister(two_workers, allow=ALLOW) as persister:
            stored = persister.load_process(pid, loop=loop).future().result()
    finally:
        loop.close()
    assert stored["copy"] == owner
    assert [r["copy"] for r in results] == [owner, owner], f"stale copy was {stale}"


def test_fencing_persister_edges(sqlite_store: str) -> None:
    loop_a, loop_b = asyncio.new_event_loop(), asyncio.new_event_loop()
    # Not "with open_fencing_persister(...) as a": __enter__ is typed as the base class.
    a = open_fencing_persister(sqlite_store, allow=ALLOW)
    b = open_fencing_persister(sqlite_store, allow=ALLOW)
    try:
        with a, b:
            pid = f"edge-{uuid.uuid4().hex[:8]}"
            process = Steps(inputs={"n": 2}, pid=pid, loop=loop_a)
            assert a.fenced(process) is None  # never watched
            assert a.save_checkpoint(process) == 1  # a new pid: must not exist yet
            assert a.save_checkpoint(process, tag="snap") == 1  # tagged: not fenced
            # b claims the pid between a's read and a's claim: a is fenced at once.
            original_get = a.storage.get

            def get_then_race(key: CheckpointKey) -> Any:
                record = original_get(key)
                b.load_process(pid, loop=loop_b)
                return record

            a.storage.get = get_then_race  # type: ignore[method-assign]
            with pytest.raises(FencedError) as info:
                a.load_process(pid, loop=loop_a)
            a.storage.get = original_get  # type: ignore[method-assign]
            error = info.value
            assert isinstance(error, StaleCheckpointError)
            assert (error.pid, error.reason) == (pid, "stale")
            assert isinstance(error.__cause__, StaleCheckpointError)
            assert a.storage.get(CheckpointKey(pid)).version == 2  # b's claim only

            # The first process object: fenced by hand, it never saves again.
            stopped = a.fence(process, BackendUnavailableError("down"))
            assert (stopped.reason, a.fence(process)) == ("unavailable", stopped)  # idempotent
            assert isinstance(stopped, BackendUnavailableError)
            assert not isinstance(stopped, StaleCheckpointError)  # nobody else saved it
            assert a.fenced(process) is stopped
            with pytest.raises(FencedError) as again:
                a.save_checkpoint(process)
            assert again.value is stopped
            assert a.storage.get(CheckpointKey(pid)).version == 2

            shutdown = a.fence(Steps(inputs={"n": 2}, pid=f"{pid}-other", loop=loop_a))
            assert shutdown.reason == "shutdown"
            assert "shutdown" in str(shutdown)
            assert not isinstance(shutdown, (StaleCheckpointError, BackendUnavailableError))
    finally:
        loop_a.close()
        loop_b.close()


# The store unavailable, and follow()


def test_an_unavailable_store_hands_the_task_back_and_a_retry_succeeds(
    thread_workers: Callable[..., ThreadWorker],
    client: WorkerClient,
    sqlite_store: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    worker = thread_workers(sqlite_store, prefetch=1)
    storage = worker.worker.persister.storage
    failures = {"put": 0, "list": 0}
    lock = threading.Lock()
    put, listing = storage.put, storage.list

    def flaky(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                if failures[name] > 0:
                    failures[name] -= 1
                    msg = f"injected: the store is down ({name})"
                    raise BackendUnavailableError(msg)
            return real(*args, **kwargs)

        return call

    storage.put = flaky("put", put)  # type: ignore[method-assign]
    storage.list = flaky("list", listing)  # type: ignore[method-assign]

    # The launch's first save fails: the task is handed back after a pause and retried.
    failures.update(put=1, list=1)
    launched = client.launch(Double, {"x": 9})
    assert launched.result(timeout=DEADLINE)["doubled"] == 18
    assert failures == {"put": 0, "list": 0}

    # A continue whose claim fails: fenced as "unavailable", requeued, then run.
    pid = client.create(Steps, {"x": 1, "n": 2}).result(timeout=DEADLINE)
    failures.update(put=1)
    assert client.continue_(pid).result(timeout=DEADLINE)["total"] == _total(1, 2)
    assert _messages(caplog, f"fenced {pid}: store unavailable")


def test_follow_outcomes(
    thread_workers: Callable[..., ThreadWorker],
    client: WorkerClient,
    sqlite_store: str,
    tmp_path: Path,
) -> None:
    worker = thread_workers(sqlite_store, follow_timeout=0.5).worker
    finished = client.launch(Double, {"x": 1})
    failed = client.launch(Fail, {"x": 3})
    assert finished.result(timeout=DEADLINE)["doubled"] == 2
    with pytest.raises(kiwipy.RemoteException):
        failed.result(timeout=DEADLINE)

    def follow(pid: Any) -> concurrent.futures.Future[Any]:
        outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()
        worker.follow(pid, outcome)
        wait_for(outcome.done, f"following {pid} to end")
        return outcome

    assert follow(finished.pid).result()["doubled"] == 2  # type: ignore[attr-defined]
    error = follow(failed.pid).exception()  # type: ignore[attr-defined]
    assert error is not None
    assert "boom 3" in str(error)
    with pytest.raises(kiwipy.TaskRejected, match=r"did not finish within 0\.5s"):
        follow("never-stored").result()

    # A store that is briefly down while polling is polled again.
    persister = worker.persister
    real_list_info = persister.list_info
    calls = {"n": 0}

    def list_info_down_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            msg = "injected: the store is down"
            raise BackendUnavailableError(msg)
        return real_list_info(*args, **kwargs)

    persister.list_info = list_info_down_once  # type: ignore[method-assign]
    assert follow(finished.pid).result()["doubled"] == 2  # type: ignore[attr-defined]
    assert calls["n"] >= 2
    persister.list_info = real_list_info  # type: ignore[method-assign]

    # An error reading the final checkpoint fails the follower with it.
    real_get = persister.storage.get

    def get_fails(key: CheckpointKey) -> Any:
        msg = "injected: a read error"
        raise StorageError(msg)

    persister.storage.get = get_fails  # type: ignore[method-assign]
    with pytest.raises(StorageError, match="injected"):
        follow(finished.pid).result()  # type: ignore[attr-defined]
    persister.storage.get = real_get  # type: ignore[method-assign]


def test_a_follower_still_waiting_at_shutdown_hands_its_task_back(
    thread_workers: Callable[..., ThreadWorker], client: WorkerClient, sqlite_store: str
) -> None:
    handle = thread_workers(sqlite_store, grace=0.1)
    pid = client.create(Steps, {"n": 1}).result(timeout=DEADLINE)  # never continued
    persister = handle.worker.persister
    polled = threading.Event()
    real_list_info = persister.list_info

    def list_info(*args: Any, **kwargs: Any) -> Any:
        polled.set()
        return real_list_info(*args, **kwargs)

    persister.list_info = list_info  # type: ignore[method-assign]
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()
    handle.worker.follow(pid, outcome)
    assert polled.wait(DEADLINE)  # the follower runs (and keeps polling: not terminal)
    handle.stop()
    handle.join()
    with pytest.raises(kiwipy.TaskRejected, match="shutting down"):
        outcome.result(timeout=0)


def test_postgres_schema_url_keeps_the_query() -> None:
    url = postgres_schema_url("postgresql://u@h:1/db?sslmode=disable", "s1")
    assert url == "postgresql://u@h:1/db?sslmode=disable&schema=s1"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.launch(3), ArgumentTypeError),
        (lambda c: c.launch(int), ArgumentTypeError),  # a class, but not a process
        (lambda c: c.launch(Double, [("x", 1)]), ArgumentTypeError),
        (lambda c: c.create(Double, "x"), ArgumentTypeError),
        (lambda c: c.launch(Double, {"x": 1}, pid=3.5), EncodeError),
        (lambda c: c.continue_(None), ArgumentTypeError),
        (lambda c: c.continue_("p", tag=3), EncodeError),
    ],
    ids=["class-int", "class-not-process", "inputs", "create-inputs", "pid", "none", "tag"],
)
def test_a_client_refuses_wrong_arguments_before_sending(
    client: WorkerClient, call: Callable[[WorkerClient], Any], error: type[Exception]
) -> None:
    """Refused here, typed and a TypeError, instead of a task that fails on some worker
    (continue_(None) would ask a worker to continue the process 'None')."""
    with pytest.raises(error) as info:
        call(client)
    assert isinstance(info.value, TypeError)
    assert client._futures == {}  # nothing was sent
