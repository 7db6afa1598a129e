"""Fixtures for the scenarios against real RabbitMQ and PostgreSQL servers.

The servers' addresses come from ``LOOPAWARE_TEST_AMQP_URL`` and
``LOOPAWARE_TEST_POSTGRES_URL``. Unset locally, the scenarios skip and say how
to start the servers; under CI (``CI`` set) an unset address is a failure,
because a skipped scenario there would pass a build that tested nothing.

Workers are real OS processes (``python -m tests.integration._run_worker``),
each logging to its own file; readiness and events are read from those logs
with a deadline, never waited for with a fixed sleep.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import msgpack
import pytest

from loopaware_persist._broker import DEFAULT_TASK_EXCHANGE
from loopaware_persist._client import WorkerClient
from loopaware_persist._messages import MESSAGE_MAGIC, MessageCodec
from tests.axes import POSTGRES_ENV, postgres_schema, postgres_schema_url, server_url

pytestmark = pytest.mark.integration

ALLOW = ["tests.integration.processes"]
ROOT = Path(__file__).resolve().parents[2]
HOW_TO_START = (
    "bash .ci/servers/start-postgres.sh && bash .ci/servers/start-rabbitmq.sh && "
    "source .ci/servers/postgres.env && source .ci/servers/rabbitmq.env"
)
#: The longest any scenario waits for one condition (a result, a log line).
DEADLINE = 90.0


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """:return: the RabbitMQ broker's URL"""
    return server_url("LOOPAWARE_TEST_AMQP_URL", HOW_TO_START)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """:return: the PostgreSQL database's URL"""
    return server_url(POSTGRES_ENV, HOW_TO_START)


@pytest.fixture
def queue() -> str:
    """:return: a task queue of its own for this test, so no test sees another's tasks"""
    return f"loopaware.test.{uuid.uuid4().hex[:12]}"


def wait_for(condition: Callable[[], object], what: str, *, deadline: float = DEADLINE) -> object:
    """Poll ``condition`` until it returns something truthy.

    :param condition: what to check
    :param what: described in the failure
    :param deadline: seconds before failing
    :return: the truthy value
    """
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline}s waiting for {what}")
        time.sleep(0.05)


class WorkerProcess:
    """One worker OS process and its log file."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        """:return: the OS pid"""
        return self.popen.pid

    def text(self) -> str:
        """:return: the log so far"""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        """:return: whether it is still running"""
        return self.popen.poll() is None


class Workers:
    """Starts worker processes and guarantees none outlives the test."""

    def __init__(self, tmp_path: Path, amqp_url: str, queue: str) -> None:
        self._tmp = tmp_path
        self._amqp = amqp_url
        self._queue = queue
        self.procs: list[WorkerProcess] = []

    def start(
        self, n: int, *, store: str, prefetch: int = 8, grace: float = 10.0
    ) -> list[WorkerProcess]:
        """Start ``n`` workers and wait until each consumes the queue.

        :param n: how many
        :param store: the checkpoint store URL
        :param prefetch: tasks in flight per worker
        :param grace: seconds a stopping worker lets in-flight processes run
        :return: the new workers
        """
        started = []
        for _ in range(n):
            log = self._tmp / f"worker-{len(self.procs)}.log"
            with log.open("wb") as stderr:
                popen = self._spawn(store, prefetch, grace, stderr)
            proc = WorkerProcess(popen, log)
            self.procs.append(proc)
            started.append(proc)
        for proc in started:
            wait_for(
                lambda p=proc: self._ready(p),  # type: ignore[misc]
                f"worker {proc.pid} to consume {self._queue}",
            )
        return started

    def _spawn(
        self, store: str, prefetch: int, grace: float, stderr: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration._run_worker",
                "--broker",
                self._amqp,
                "--store",
                store,
                "--queue",
                self._queue,
                "--prefetch",
                str(prefetch),
                "--grace",
                str(grace),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )

    @staticmethod
    def _ready(proc: WorkerProcess) -> bool:
        if not proc.alive():
            pytest.fail(f"worker {proc.pid} exited early:\n{proc.text()[-3000:]}")
        return " ready on " in proc.text()

    def by_pid(self, pid: int) -> WorkerProcess:
        """:return: the worker with OS pid ``pid``"""
        for proc in self.procs:
            if proc.pid == pid:
                return proc
        raise LookupError(pid)

    def logs(self) -> str:
        """:return: every worker's log, concatenated"""
        return "\n".join(p.text() for p in self.procs)

    def stop(self) -> None:
        """SIGTERM every live worker and wait; SIGKILL one that does not stop."""
        for proc in self.procs:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()


@pytest.fixture
def workers(tmp_path: Path, amqp_url: str, queue: str) -> Iterator[Workers]:
    """:return: a worker starter; every worker is stopped after the test"""
    started = Workers(tmp_path, amqp_url, queue)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def client(amqp_url: str, queue: str) -> Iterator[WorkerClient]:
    """:return: a client of the test's queue"""
    with WorkerClient(broker_url=amqp_url, allow=ALLOW, task_queue=queue) as new:
        yield new


def side_lines(path: Path) -> list[tuple[str, int, str, int, str]]:
    """:return: the side file's ``(pid, step, event, os_pid, copy)`` records"""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, step, event, os_pid, copy = line.split()
        out.append((pid, int(step), event, int(os_pid), copy))
    return out


def fenced_in(log: str, pid: str, reason: str) -> bool:
    """:return: whether ``log`` says process ``pid`` was fenced for ``reason``"""
    return re.search(rf"fenced {re.escape(pid)}: {reason}", log) is not None


# In-process helpers (test_worker_inprocess)


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[str]:
    """:return: a PostgreSQL store URL in a schema of this test's own, dropped afterwards"""
    # The postgres extra: a missing psycopg fails here, it does not skip.
    with postgres_schema(postgres_url, "lap_it") as schema:
        yield postgres_schema_url(postgres_url, schema)


async def _publish(amqp_url: str, queue: str, bodies: list[bytes]) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(DEFAULT_TASK_EXCHANGE)
        for body in bodies:
            await exchange.publish(aio_pika.Message(body=body), routing_key=queue)


def publish_raw(amqp_url: str, queue: str, bodies: list[bytes]) -> None:
    """Publish raw message bodies to the task queue, as any client of the broker could.

    :param amqp_url: the broker
    :param queue: the task queue
    :param bodies: the message bodies, sent as they are (no encoder, no reply address)
    """
    asyncio.run(_publish(amqp_url, queue, bodies))


async def _ready_count(amqp_url: str, queue: str) -> int:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)


def ready_count(amqp_url: str, queue: str) -> int:
    """:return: how many messages of ``queue`` wait for delivery (unacknowledged ones
    held by a consumer are not counted)"""
    return asyncio.run(_ready_count(amqp_url, queue))


def hostile_gadget_message(marker: Path) -> bytes:
    """:param marker: the file a successful gadget would create
    :return: a message in our format whose body is a tuple holding an ``object`` value
        naming ``os:system`` (as the msgpack codec writes values: ext code 2,
        ``[tag, *fields]``)
    """
    gadget = msgpack.ExtType(2, msgpack.packb(["object", "os:system", f"touch {marker}"]))
    body = msgpack.ExtType(2, msgpack.packb(["tuple", gadget, True], use_bin_type=True))
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return MESSAGE_MAGIC + packed


def hostile_task_messages(marker: Path) -> list[bytes]:
    """:param marker: the file any of the messages would create, were it run
    :return: three task messages a worker must refuse without running anything: kiwipy's
        own (YAML) encoding, as AiiDA's unsafe loader would run it; our format naming a
        callable outside the allow-list; a well-formed launch task whose
        ``process_class`` is not a Process
    """
    launch = {
        "process_class": "os:system",
        "persist": False,
        "nowait": False,
        "init_args": [f"touch {marker}"],
        "init_kwargs": {},
    }
    return [
        f'!!python/object/apply:os.system ["touch {marker}"]'.encode(),
        hostile_gadget_message(marker),
        MessageCodec(allow=ALLOW).encode(({"task": "launch", "args": launch}, True)),
    ]
