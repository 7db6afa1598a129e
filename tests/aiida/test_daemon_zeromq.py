"""A worker starting makes AiiDA's ZeroMQ broker find a dead worker it missed, so the
dead worker's task goes to a live one (``aiida/_daemon.py``, ``_reprobe_zeromq_workers``).

Driven against aiida-core's own broker server (``ZeromqBrokerServer``), stepped in this
thread. The race that makes it miss a death (its disconnect event can come before its
ROUTER socket has dropped the dead peer, so the probe's ping still succeeds) cannot be
forced from outside; the test leaves the broker in the state that race leaves instead:
the worker gone, its disconnect event taken off the broker's monitor socket unhandled.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from aiida.brokers.zeromq.protocol import (
    MessageType,
    encode_message,
    make_subscribe_message,
    make_task_message,
)
from aiida.brokers.zeromq.server import ZeromqBrokerServer
from zmq.utils.monitor import recv_monitor_message

from loopaware_persist.aiida._daemon import _reprobe_zeromq_workers


@pytest.fixture
def server() -> Iterator[ZeromqBrokerServer]:
    # Short: an ipc:// path is at most 107 bytes, and pytest's tmp_path can be longer.
    root = Path(tempfile.mkdtemp(prefix="lp-zmq-"))
    broker = ZeromqBrokerServer(root / "storage", root / "sockets")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def _step(server: ZeromqBrokerServer, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"broker state not reached in {timeout}s: {server.get_status()}")
        server.run_once(0.05)


def _in_flight(server: ZeromqBrokerServer) -> int:
    status: dict[str, Any] = server.get_status()
    return int(status["in_flight_tasks"])


def test_a_starting_worker_makes_the_broker_requeue_a_dead_workers_task(
    server: ZeromqBrokerServer,
) -> None:
    context = zmq.Context()
    try:
        worker = context.socket(zmq.DEALER)
        worker.setsockopt_string(zmq.IDENTITY, "client-dead")
        worker.connect(server.router_endpoint)
        subscribe = make_subscribe_message(MessageType.SUBSCRIBE_TASK, "client-dead", "dead", 1)
        worker.send_multipart([b"", encode_message(subscribe)])
        producer = context.socket(zmq.DEALER)
        producer.connect(server.router_endpoint)
        task = make_task_message({"task": "continue", "pid": 1}, "producer", no_reply=True)
        producer.send_multipart([b"", encode_message(task)])
        _step(server, lambda: _in_flight(server) == 1)
        assert worker.poll(30_000), "the broker did not deliver the task"
        worker.close(linger=0)  # the worker dies holding the task

        # Its disconnect event, handled without finding it dead: what the race leaves.
        monitor = server._monitor
        assert monitor is not None
        assert monitor.poll(30_000), "no disconnect event"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            server.run_once(0.05)
        assert _in_flight(server) == 1  # stuck with the dead worker: nothing more comes

        _reprobe_zeromq_workers(server.router_endpoint)  # a worker starting
        _step(server, lambda: _in_flight(server) == 0)
        status = server.get_status()
        assert status["pending_tasks"] == 1, status  # back in the queue for a live worker
    finally:
        context.destroy(linger=0)
