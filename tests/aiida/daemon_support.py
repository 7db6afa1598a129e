"""Profiles with a broker, and daemon workers in subprocesses, for the daemon tests.

The profiles live in the throwaway ``AIIDA_PATH`` that ``conftest.py`` sets up, beside
its broker-less one: ``loopaware-rmq`` (RabbitMQ from ``LOOPAWARE_TEST_AMQP_URL``) and
``loopaware-zmq`` (AiiDA 2.9's ZeroMQ broker, as ``verdi presto --use-zeromq`` makes it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiida
import pytest
from aiida import orm
from aiida.manage import get_manager
from aiida.manage.configuration import get_config

ROOT = Path(__file__).resolve().parents[2]
ALLOW = ("tests.aiida",)
RMQ = "loopaware-rmq"
ZMQ = "loopaware-zmq"
VERDI = [sys.executable, "-c", "from aiida.cmdline.commands.cmd_verdi import verdi; verdi()"]


def verdi(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``verdi`` in a subprocess (the same AIIDA_PATH) and return what it printed."""
    return subprocess.run(
        [*VERDI, *args], capture_output=True, text=True, env=_env(), timeout=120, check=False
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}


def make_rabbitmq_profile(name: str) -> None:
    """A SQLite profile whose broker is the test RabbitMQ server."""
    url = os.environ.get("LOOPAWARE_TEST_AMQP_URL")
    if not url:
        pytest.skip("LOOPAWARE_TEST_AMQP_URL is not set: no RabbitMQ to test against; NOT RUN")
    parts = urllib.parse.urlsplit(url)
    _check(verdi("presto", "--no-broker", "--profile-name", name))
    _check(
        verdi(
            "profile",
            "configure-broker",
            "core.rabbitmq",
            name,
            "-n",
            "--broker-protocol",
            parts.scheme,
            "--broker-username",
            urllib.parse.unquote(parts.username or "guest"),
            "--broker-password",
            urllib.parse.unquote(parts.password or "guest"),
            "--broker-host",
            parts.hostname or "127.0.0.1",
            "--broker-port",
            str(parts.port or 5672),
            "--broker-virtual-host",
            urllib.parse.unquote(parts.path.lstrip("/")),
        )
    )


def make_zeromq_profile(name: str) -> None:
    """A SQLite profile whose broker is AiiDA's ZeroMQ broker (started with the daemon)."""
    _check(verdi("presto", "--use-zeromq", "--profile-name", name))


def python_prints(code: str) -> str:
    """What ``python -c CODE`` (a fresh interpreter, in the repository) prints; fail
    if it fails."""
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout


def our_cli(*args: str) -> list[str]:
    """The command line of ``loopaware-persist aiida ARGS…``, run by this Python."""
    return [sys.executable, "-m", "loopaware_persist", "aiida", *args]


def ensure_profile(name: str, make: Callable[[str], None]) -> None:
    """Make profile ``name`` with ``make`` unless the config has it already."""
    if name not in get_config().profile_names:
        make(name)


def start_daemon(profile: str, *options: str) -> None:
    """``loopaware-persist aiida daemon start -p PROFILE OPTIONS…`` in a subprocess;
    fail with what it printed unless it succeeds."""
    started = subprocess.run(
        our_cli("daemon", "start", "-p", profile, *options),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stdout + started.stderr


def _check(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    # verdi wrote the config file in another process: read it again here.
    from aiida.manage.configuration import reset_config

    reset_config()


@contextlib.contextmanager
def switched_to(name: str) -> Iterator[Any]:
    """Load profile ``name`` in this process, and the previous one again afterwards."""
    manager = get_manager()
    previous = manager.get_profile()
    loaded = aiida.load_profile(name, allow_switch=True)
    try:
        yield loaded
    finally:
        if previous is not None:
            aiida.load_profile(previous.name, allow_switch=True)
        else:
            manager.unload_profile()


class Worker:
    """``tests.aiida.crash_worker`` in a subprocess: our daemon worker, optionally
    SIGKILLing itself right after its ``crash_at``-th checkpoint."""

    def __init__(self, profile: str, tmp: Path, *, crash_at: int = 0, store: str = "") -> None:
        self.saves = tmp / f"saves-{time.monotonic_ns()}.log"
        self.log = tmp / f"worker-{time.monotonic_ns()}.out"
        env = {
            **_env(),
            "LOOPAWARE_CRASH_AT": str(crash_at),
            "LOOPAWARE_SAVES_LOG": str(self.saves),
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.aiida.crash_worker", profile, store],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def checkpoints(self) -> int:
        """How many checkpoints the worker has saved so far."""
        return len(self.saves.read_text().splitlines()) if self.saves.exists() else 0

    def wait_killed(self, timeout: float) -> None:
        """Wait for the worker to SIGKILL itself."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"the worker did not crash within {timeout}s:\n{self.output()}")
        assert code == -signal.SIGKILL, self.output()

    def stop(self) -> int:
        """SIGTERM, as circus and ``verdi daemon stop`` do; SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait_terminated(node: orm.ProcessNode, timeout: float, workers: Sequence[Worker]) -> None:
    """Wait for ``node`` to reach a terminal state; fail with the workers' output if not."""
    deadline = time.monotonic() + timeout
    while not node.is_terminated:
        if time.monotonic() > deadline:
            logs = "\n---\n".join(w.output() for w in workers)
            pytest.fail(f"{node} not terminated within {timeout}s ({node.process_state}):\n{logs}")
        time.sleep(0.2)


def worker_is_running(worker: Worker) -> bool:
    return worker.process.poll() is None
