"""Our daemon workers under both of AiiDA 2.9's brokers, and ``verdi process`` on the
processes they run.

* RabbitMQ (``core.rabbitmq``): a worker started on its own, ``loopaware-persist aiida
  worker``, as a user runs several under systemd or beside ``verdi daemon``;
* ZeroMQ (``core.zeromq``): ``loopaware-persist aiida daemon start``, AiiDA's circus
  daemon with its broker service and our worker (``submit`` to such a profile requires
  a running daemon).

``verdi`` runs in subprocesses, as a user runs it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
from aiida import orm
from aiida.engine import submit
from aiida.manage import get_manager

from loopaware_persist.aiida import installed
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
from tests.aiida.daemon_workchains import SlowChain, TracedChain

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", params=["rabbitmq-worker", "zeromq-daemon"])
def served(request: pytest.FixtureRequest, profile: Any, tmp_path_factory: Any) -> Iterator[str]:
    """A broker profile with one of our workers serving it, loaded here with our
    persister installed (``submit`` saves the first checkpoint)."""
    if request.param == "rabbitmq-worker":
        ensure_profile(RMQ, make_rabbitmq_profile)
        log = tmp_path_factory.mktemp("worker") / "worker.out"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                our_cli("worker", "-p", RMQ, "--allow", "tests.aiida"),
                cwd=ROOT,
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            with switched_to(RMQ), installed(RMQ, allow=ALLOW):
                yield RMQ
        finally:
            worker.terminate()
            assert worker.wait(30) == 0, log.read_text()[-3000:]
    else:
        ensure_profile(ZMQ, make_zeromq_profile)
        start_daemon(ZMQ, "--allow", "tests.aiida", "--timeout", "60")
        try:
            with switched_to(ZMQ), installed(ZMQ, allow=ALLOW):
                yield ZMQ
        finally:
            stopped = verdi("-p", ZMQ, "daemon", "stop")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_submitted_workchain_finishes_on_our_worker(served: str) -> None:
    node = submit(TracedChain, x=orm.Int(1), rounds=orm.Int(2))
    wait_terminated(node, 120, [])
    assert node.is_finished_ok, verdi("-p", served, "process", "report", str(node.pk)).stdout
    assert node.outputs.total.value == 3
    assert node.outputs.child.value == 6
    # Terminated: AiiDA's Process.on_terminated deleted the record from the node.
    assert node.checkpoint is None


@pytest.mark.parametrize("served", ["zeromq-daemon"], indirect=True)
def test_the_daemon_runs_our_workers_and_verdi_daemon_manages_them(served: str) -> None:
    status = verdi("-p", served, "daemon", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    client = get_manager().get_daemon_client()
    assert _worker_commands(client) == [["loopaware_persist", "aiida", "worker"]]
    added = verdi("-p", served, "daemon", "incr", "1")
    assert added.returncode == 0, added.stdout + added.stderr
    _wait(lambda: len(_worker_commands(client)) == 2, "a second worker")
    assert _worker_commands(client) == [["loopaware_persist", "aiida", "worker"]] * 2
    removed = verdi("-p", served, "daemon", "decr", "1")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    _wait(lambda: len(_worker_commands(client)) == 1, "one worker again")


def _worker_commands(client: Any) -> list[list[str]]:
    """What each live worker circus runs is: its module and command.

    While circus stops a worker its stats entry is a message string, not a
    dict, and its pid may already be gone or be a zombie whose command line
    reads empty: such a worker is not counted. A live process started some
    other way is returned whole, so the caller's comparison shows it.
    """
    commands = []
    for worker in client.get_worker_info()["info"].values():
        if not isinstance(worker, dict):
            continue
        try:
            cmdline = psutil.Process(int(worker["pid"])).cmdline()
        except psutil.NoSuchProcess:  # ZombieProcess is one
            continue
        if not cmdline:  # a zombie's, where psutil does not raise
            continue
        if "-m" not in cmdline:
            commands.append(cmdline)
            continue
        module = cmdline.index("-m") + 1
        commands.append(cmdline[module : module + 3])
    return commands


def test_verdi_process_list_show_pause_play_kill(served: str) -> None:
    node = submit(SlowChain, n=orm.Int(1000))
    _wait(lambda: len(node.called) >= 2, "the second round")
    assert not node.is_terminated

    listed = verdi("-p", served, "process", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert str(node.pk) in listed.stdout
    shown = verdi("-p", served, "process", "show", str(node.pk))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "SlowChain" in shown.stdout
    # A live process's record is ours, in the node (aiida://), not AiiDA's YAML.
    assert node.checkpoint.startswith("loopaware-persist:1 ")

    paused = verdi("-p", served, "process", "pause", str(node.pk))
    assert paused.returncode == 0, paused.stdout + paused.stderr
    _wait(lambda: node.paused, "paused")
    played = verdi("-p", served, "process", "play", str(node.pk))
    assert played.returncode == 0, played.stdout + played.stderr
    _wait(lambda: not node.paused, "played")

    killed = verdi("-p", served, "process", "kill", str(node.pk))
    assert killed.returncode == 0, killed.stdout + killed.stderr
    _wait(lambda: node.is_killed, "killed")
    assert node.is_sealed
