"""A checkpoint a worker cannot load for a reason an operator can fix leaves its process
unsealed and its task with the broker (``aiida/_launcher.py``); AiiDA's own launcher
seals it.

The first tests drive the launchers directly on the broker-less profile (AiiDA's real
``ProcessLauncher._continue``, no broker); the ``integration`` ones run our worker
against RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kiwipy
import plumpy
import pytest
from aiida import orm
from aiida.engine import submit
from aiida.engine.persistence import AiiDAPersister, get_object_loader
from aiida.engine.processes.launcher import ProcessLauncher
from aiida.manage import get_manager

from loopaware_persist import (
    BackendUnavailableError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    LoopBoundaryError,
    StorageError,
    UnknownTagError,
    UnsafeCheckpointError,
)
from loopaware_persist.aiida import _launcher as launcher_module, installed, make_persister, migrate
from loopaware_persist.aiida._launcher import RequeueingProcessLauncher, operator_can_fix
from loopaware_persist.aiida._storage import RECORD_PREFIX
from tests.aiida.daemon_support import (
    ALLOW,
    RMQ,
    ROOT,
    ZMQ,
    _env,
    ensure_profile,
    make_rabbitmq_profile,
    make_zeromq_profile,
    our_cli,
    start_daemon,
    switched_to,
    verdi,
    wait_terminated,
)
from tests.aiida.daemon_workchains import TracedChain

#: Allowed, importable, and not where the test WorkChains live.
WRONG_ALLOW = "tests.aiida.helpers"


@pytest.mark.parametrize(
    ("error", "fixable"),
    [
        (UnsafeCheckpointError("not allowed"), True),
        (UnknownTagError("no such tag"), True),
        (CheckpointNotFoundError("none"), True),
        (StorageError("AiiDA's YAML"), True),
        (BackendUnavailableError("down"), True),
        (CorruptCheckpointError("checksum"), False),
        (LoopBoundaryError("another loop"), False),
        (ValueError("a process bug"), False),
        (ImportError("AiiDA's own case"), False),
    ],
)
def test_what_an_operator_can_fix(error: Exception, fixable: bool) -> None:
    assert operator_can_fix(error) is fixable


def _saved_node(profile: Any, store: str | None = None) -> tuple[orm.WorkChainNode, Any]:
    """A TracedChain saved (ours; in its node unless ``store``) as ``submit`` saves it,
    with no task; and what its node holds as checkpoint."""
    with installed(profile.name, store, allow=ALLOW) as persister:
        runner = get_manager().get_runner()
        process = runner.instantiate_process(TracedChain, x=orm.Int(2), rounds=orm.Int(1))
        persister.save_checkpoint(process)
        process.close()
    node: orm.WorkChainNode = process.node
    assert store is not None or node.checkpoint.startswith(RECORD_PREFIX)
    return node, node.checkpoint


def _launcher(persister: Any, *, requeue: bool, profile: str) -> tuple[Any, Any]:
    runner = get_manager().create_runner(persister=persister)
    return runner, RequeueingProcessLauncher(
        loop=runner.loop,
        persister=persister,
        load_context=plumpy.LoadSaveContext(runner=runner),
        loader=get_object_loader(),
        requeue=requeue,
        profile=profile,
    )


def _assert_waits_unsealed(node: orm.ProcessNode, record: str) -> None:
    assert not node.is_sealed
    assert not node.is_excepted
    assert node.process_state.value == "created"
    assert node.checkpoint == record


class _Logged(logging.Handler):
    """Every message the launcher logs; ``seen`` is set once one contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.text in message:
            self.seen.set()


@contextlib.contextmanager
def _launcher_log(text: str) -> Iterator[_Logged]:
    logger = logging.getLogger(launcher_module.__name__)
    handler, level = _Logged(text), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _put_back_when(seen: threading.Event, pk: int, record: str) -> threading.Thread:
    """A thread that stores ``record`` in node ``pk`` (its own storage session, as
    another process would) once ``seen`` is set."""

    def put_back() -> None:
        seen.wait()
        try:
            orm.load_node(pk).set_checkpoint(record)
        finally:
            # This thread's session (AiiDA keeps one per thread) gives its connection back.
            get_manager().get_profile_storage().get_session().close()

    thread = threading.Thread(target=put_back, name="put-back")
    thread.start()
    return thread


def test_a_refused_load_is_rejected_after_a_pause_and_the_node_left_unsealed(
    profile: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher_module, "FIRST_DELAY", 0.2)
    node, record = _saved_node(profile)
    persister = make_persister(profile.name, allow=[WRONG_ALLOW])
    runner, launcher = _launcher(persister, requeue=True, profile=profile.name)
    try:
        for attempt, pause in ((1, 0.2), (2, 0.4)):
            started = time.monotonic()
            with pytest.raises(kiwipy.TaskRejected, match=f"attempt {attempt}; Unsafe") as info:
                runner.loop.run_until_complete(launcher._continue(None, node.pk, True))
            assert time.monotonic() - started >= pause
            assert isinstance(info.value.__cause__, UnsafeCheckpointError)
            assert "--allow" in str(info.value)
            _assert_waits_unsealed(node, record)
        # Once: the process's report says why it does not run.
        reports = [log.message for log in orm.Log.collection.get_logs_for(node)]
        assert len([m for m in reports if "left unsealed" in m]) == 1
    finally:
        runner.close()
        persister.close()

    # Fixed (the right allow-list): the same task continues it, to the end.
    with installed(profile.name, allow=ALLOW) as persister:
        runner, launcher = _launcher(persister, requeue=True, profile=profile.name)
        runner.loop.run_until_complete(launcher._continue(None, node.pk, False))
        runner.close()
    assert node.is_finished_ok
    assert node.outputs.total.value == 3


def test_without_requeue_the_task_is_held_until_the_worker_stops(profile: Any) -> None:
    node, record = _saved_node(profile)
    persister = make_persister(profile.name, allow=[WRONG_ALLOW])
    runner, launcher = _launcher(persister, requeue=False, profile=profile.name)
    try:
        with _launcher_log("") as logged:
            held = runner.loop.create_task(launcher._continue(None, node.pk, True))
            done, _ = runner.loop.run_until_complete(asyncio.wait([held], timeout=3.0))
        assert not done  # neither answered (acknowledged) nor rejected
        # A refusal is not retried: the allow-list does not change while the worker runs.
        [message] = logged.messages
        assert "UnsafeCheckpointError" in message
        assert "the task stays with this worker, unacknowledged, until the worker stops" in message
        _assert_waits_unsealed(node, record)
        held.cancel()  # what the worker's shutdown does
        runner.loop.run_until_complete(asyncio.gather(held, return_exceptions=True))
        assert held.cancelled()
    finally:
        runner.close()
        persister.close()
    _assert_waits_unsealed(node, record)


@pytest.mark.parametrize(
    ("requeue", "back_after"),
    [
        pytest.param(False, "trying again", id="zeromq-within-the-retries"),
        pytest.param(False, "left unsealed", id="zeromq-after-the-retries"),
        pytest.param(True, "trying again", id="rabbitmq-within-the-retries"),
    ],
)
def test_a_record_that_appears_late_is_loaded_not_held(
    profile: Any, monkeypatch: pytest.MonkeyPatch, requeue: bool, back_after: str
) -> None:
    """A record the store does not show yet (a fresh worker after a crash, a store
    briefly locked or down) is loaded once it shows: the first failure is retried in
    the worker, and under ZeroMQ the held task is tried again after the retries, so
    the process does not wait for the worker to stop."""
    monkeypatch.setattr(launcher_module, "RETRY_DELAYS", (0.1, 0.2))
    monkeypatch.setattr(launcher_module, "FIRST_DELAY", 0.2)
    node, record = _saved_node(profile)
    node.delete_checkpoint()
    persister = make_persister(profile.name, allow=ALLOW)
    runner, launcher = _launcher(persister, requeue=requeue, profile=profile.name)

    async def delivered() -> Any:
        while True:
            try:
                return await launcher._continue(None, node.pk, False)
            except kiwipy.TaskRejected:
                assert requeue  # RabbitMQ delivers a rejected task again
                continue

    with _launcher_log(back_after) as logged:
        thread = _put_back_when(logged.seen, node.pk, record)
        try:
            task = runner.loop.create_task(delivered())
            done, _ = runner.loop.run_until_complete(asyncio.wait([task], timeout=60))
            if not done:
                task.cancel()  # what the worker's shutdown does
                runner.loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        finally:
            logged.seen.set()  # the thread ends either way
            thread.join()
            runner.close()
            persister.close()
    assert done, f"still held after 60 s; the launcher logged: {logged.messages}"
    task.result()
    assert node.is_finished_ok
    assert node.outputs.total.value == 3
    # A storage failure is retried before it is reported (and before RabbitMQ gets the
    # task back): the first message is the retry's.
    assert "CheckpointNotFoundError" in logged.messages[0]
    assert "trying again" in logged.messages[0]
    if back_after == "left unsealed":
        assert "and the worker tries again in 0.2 s" in "".join(logged.messages)
        assert logged.messages[-1] == f"Process<{node.pk}> continued: its checkpoint loaded."


def test_a_damaged_record_still_excepts_and_seals_as_aiida_does(profile: Any) -> None:
    node, record = _saved_node(profile)
    prefix, payload = record.rsplit(" ", 1)
    node.set_checkpoint(f"{prefix} {payload[:-12]}AAAAAAAAAAAA")  # valid base64, bad bytes
    persister = make_persister(profile.name, allow=ALLOW)
    runner, launcher = _launcher(persister, requeue=True, profile=profile.name)
    try:
        with pytest.raises(CorruptCheckpointError):
            runner.loop.run_until_complete(launcher._continue(None, node.pk, True))
    finally:
        runner.close()
        persister.close()
    assert node.is_excepted
    assert node.is_sealed
    assert node.exception is not None
    assert "CorruptCheckpointError" in node.exception


@pytest.mark.parametrize("where", ["aiida://", "sqlite"])
def test_aiidas_own_launcher_seals_a_process_whose_record_is_ours(
    profile: Any, tmp_path: Path, where: str
) -> None:
    """What ``verdi daemon start`` (AiiDA's workers, ``AiiDAPersister``) does to a
    process submitted with ``install()``: the node is sealed, excepted, for good."""
    store = f"sqlite:///{tmp_path / 'records.db'}" if where == "sqlite" else None
    node, record = _saved_node(profile, store)
    expected: tuple[type[Exception], str] = (
        # AiiDAPersister's YAML loader reads our record as a plain string.
        (AttributeError, "'str' object has no attribute 'unbundle'")
        if store is None
        else (plumpy.PersistenceError, "does not have a saved checkpoint")
    )
    runner = get_manager().create_runner(persister=AiiDAPersister())
    aiidas = ProcessLauncher(
        loop=runner.loop,
        persister=AiiDAPersister(),
        load_context=plumpy.LoadSaveContext(runner=runner),
        loader=get_object_loader(),
    )
    try:
        with pytest.raises(expected[0], match=expected[1]):
            runner.loop.run_until_complete(aiidas._continue(None, node.pk, True))
    finally:
        runner.close()
    assert node.is_excepted
    assert node.is_sealed
    assert node.checkpoint == record  # still there (None: in the store), never loaded
    # migrate leaves a sealed node alone: nothing brings the process back.
    results = migrate(profile.name, store, allow=ALLOW, pks=[node.pk])
    assert [r.status for r in results] in ([], ["skipped"])
    back = migrate(profile.name, store, allow=ALLOW, pks=[node.pk], back=True)
    assert [r.status for r in back] in ([], ["skipped"])
    assert node.is_sealed


# --- our worker against RabbitMQ -------------------------------------------------------


class _Worker:
    """``loopaware-persist aiida worker -p RMQ --allow ALLOW…`` in a subprocess."""

    def __init__(self, tmp: Path, *allow: str) -> None:
        self.log = tmp / f"worker-{time.monotonic_ns()}.out"
        options = [part for module in allow for part in ("--allow", module)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                our_cli("worker", "-p", RMQ, *options),
                cwd=ROOT,
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_logged(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker did not log {text!r}:\n{self.output()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        assert self.process.wait(60) == 0, self.output()[-4000:]


@pytest.fixture
def rabbitmq(profile: Any) -> Iterator[str]:
    ensure_profile(RMQ, make_rabbitmq_profile)
    with switched_to(RMQ):
        yield RMQ


def _stopped(worker: _Worker, check: Callable[[], None]) -> None:
    try:
        check()
    finally:
        worker.stop()


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_worker_with_the_wrong_allow_leaves_the_process_to_a_fixed_one(
    rabbitmq: str, tmp_path: Path
) -> None:
    with installed(rabbitmq, allow=ALLOW):
        node = submit(TracedChain, x=orm.Int(1), rounds=orm.Int(2))
    record = node.checkpoint
    wrong = _Worker(tmp_path, WRONG_ALLOW)

    def refused() -> None:
        wrong.wait_logged(f"Process<{node.pk}> not continued, and left unsealed")
        wrong.wait_logged("attempt 2;")  # redelivered: requeued, not acknowledged
        assert "UnsafeCheckpointError" in wrong.output()
        _assert_waits_unsealed(node, record)

    _stopped(wrong, refused)
    _assert_waits_unsealed(node, record)

    fixed = _Worker(tmp_path, *ALLOW)
    _stopped(fixed, lambda: wait_terminated(node, 180, []))
    assert node.is_finished_ok, fixed.output()[-4000:]
    assert node.outputs.total.value == 3


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_missing_record_leaves_the_process_waiting_until_it_is_back(
    rabbitmq: str, tmp_path: Path
) -> None:
    with installed(rabbitmq, allow=ALLOW):
        node = submit(TracedChain, x=orm.Int(3), rounds=orm.Int(1))
    record = node.checkpoint
    node.delete_checkpoint()
    worker = _Worker(tmp_path, *ALLOW)

    def back_and_finished() -> None:
        worker.wait_logged(f"Process<{node.pk}> not continued, and left unsealed")
        assert "CheckpointNotFoundError" in worker.output()
        assert not node.is_sealed
        node.set_checkpoint(record)  # restored: RabbitMQ's next delivery loads it
        wait_terminated(node, 180, [])

    _stopped(worker, back_and_finished)
    assert node.is_finished_ok, worker.output()[-4000:]
    assert node.outputs.total.value == 4


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_process_submitted_without_install_waits_for_migrate(
    rabbitmq: str, tmp_path: Path
) -> None:
    node = submit(TracedChain, x=orm.Int(5), rounds=orm.Int(1))  # AiiDAPersister: YAML
    assert not node.checkpoint.startswith(RECORD_PREFIX)
    worker = _Worker(tmp_path, *ALLOW)

    def refused() -> None:
        worker.wait_logged(f"Process<{node.pk}> not continued, and left unsealed")
        assert f"loopaware-persist aiida migrate --profile {rabbitmq} --pk {node.pk}" in (
            worker.output()
        )
        assert not node.is_sealed

    _stopped(worker, refused)
    [result] = migrate(rabbitmq, allow=ALLOW, pks=[node.pk])
    assert result.status == "migrated", result
    fixed = _Worker(tmp_path, *ALLOW)
    _stopped(fixed, lambda: wait_terminated(node, 180, []))
    assert node.is_finished_ok, fixed.output()[-4000:]
    assert node.outputs.total.value == 6


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_zeromq_the_daemon_holds_the_task_until_restarted_with_the_right_allow(
    profile: Any,
) -> None:
    ensure_profile(ZMQ, make_zeromq_profile)
    with switched_to(ZMQ):
        start_daemon(ZMQ, "--allow", WRONG_ALLOW, "--timeout", "60")
        try:
            with installed(ZMQ, allow=ALLOW):
                node = submit(TracedChain, x=orm.Int(4), rounds=orm.Int(1))
            record = node.checkpoint
            log = Path(get_manager().get_daemon_client().daemon_log_file)
            needle = f"Process<{node.pk}> not continued, and left unsealed"
            deadline = time.monotonic() + 90
            while needle not in log.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    pytest.fail(f"no refusal logged:\n{log.read_text(errors='replace')[-4000:]}")
                time.sleep(0.2)
            assert "the task stays with this worker" in log.read_text(errors="replace")
            time.sleep(2)  # held: neither sealed nor retried
            _assert_waits_unsealed(node, record)
        finally:
            stopped = verdi("-p", ZMQ, "daemon", "stop")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        _assert_waits_unsealed(node, record)

        start_daemon(ZMQ, "--allow", "tests.aiida", "--timeout", "60")
        try:
            wait_terminated(node, 180, [])
            assert node.is_finished_ok
            assert node.outputs.total.value == 5
        finally:
            stopped = verdi("-p", ZMQ, "daemon", "stop")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
