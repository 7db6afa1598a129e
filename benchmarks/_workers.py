"""Worker benchmark: processes per second through N ``loopaware-persist worker`` processes.

Each run starts N real worker processes (the ``worker`` command an operator
runs, as OS processes) on a fresh RabbitMQ task queue, behind one checkpoint
store: an SQLite file (one machine) and, when ``LOOPAWARE_TEST_POSTGRES_URL``
is set, PostgreSQL (many machines). A :class:`~loopaware_persist.WorkerClient`
then launches ``worker_tasks`` processes of :class:`BenchSteps` at once and
waits for every result. Each process runs a few steps, and the worker
checkpoints every state it enters, so one process is several saves and loads
of the store plus two RabbitMQ messages (task and reply).

Reported per run: processes/s over the whole batch (first send to last
reply), checkpoints/s (the stores' record versions count the saves), and the
latency of one process from send to reply (p50/p99, which include queueing
behind the rest of the batch). A short warm-up batch runs first, so imports
and connections are not billed to the timed one. On a machine with fewer cores
than workers plus client the extra workers only share the cores: the machine
section of the report says how many there are.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plumpy

from loopaware_persist import WorkerClient, open_persister

from ._config import Config
from ._storage import POSTGRES_ENV
from ._timing import Progress, summarise

__all__ = ("AMQP_ENV", "WORKER_ALLOW", "BenchSteps", "run_workers", "steps")

#: Where the broker's URL comes from (the test servers' variable, then the CLI's).
AMQP_ENV = "LOOPAWARE_TEST_AMQP_URL"
BROKER_ENV = "LOOPAWARE_BROKER_URL"
#: Steps per process: each is a checkpointed RUNNING state.
STEPS = 3
#: Tasks one worker runs at once (the ``worker`` command's default).
PREFETCH = 8
#: How long a worker may take to start, and the batch to finish, before the run fails.
DEADLINE_S = 300.0
#: What the workers and the client allow: this one class, by name (the ``--allow
#: module:Class`` form), not the default allow-list and not the whole package.
WORKER_ALLOW: tuple[str, ...] = ("benchmarks._workers:BenchSteps",)
#: The checkout the workers import ``benchmarks`` from, whatever their working directory.
_CHECKOUT = Path(__file__).resolve().parent.parent


@plumpy.auto_persist("_i", "_total")
class BenchSteps(plumpy.Process):
    """``n`` steps, each a ``Continue`` the worker checkpoints; outputs ``total``."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        """:param spec: the spec to fill"""
        super().define(spec)
        spec.input("x", valid_type=int, default=1)
        spec.input("n", valid_type=int, default=STEPS)
        spec.outputs.dynamic = True

    def on_create(self) -> None:
        """Start counting (restored from the checkpoint when continued)."""
        super().on_create()
        self._i = 0
        self._total = 0

    def run(self) -> plumpy.Continue:  # type: ignore[override]  # plumpy allows a command
        """:return: the first step"""
        return plumpy.Continue(self.advance)

    def advance(self) -> plumpy.Continue | None:
        """:return: the next step, or ``None`` when all ``n`` ran (then ``total`` is out)"""
        inputs = self.inputs
        assert inputs is not None  # plumpy sets them before run()
        if self._i >= inputs["n"]:
            self.out("total", self._total)
            return None
        self._total += inputs["x"] * self._i
        self._i += 1
        return plumpy.Continue(self.advance)


def broker_url() -> str | None:
    """:return: the RabbitMQ URL from the environment, if any"""
    return os.environ.get(AMQP_ENV) or os.environ.get(BROKER_ENV) or None


def steps(config: Config) -> int:
    """:param config: the run's configuration
    :return: how many progress steps :func:`run_workers` takes (0 without a broker)
    """
    if not config.worker_counts or broker_url() is None:
        return 0
    stores = 1 + (1 if config.postgres and os.environ.get(POSTGRES_ENV) else 0)
    return stores * len(config.worker_counts)


def _worker_env() -> dict[str, str]:
    """:return: this environment, with the checkout first on ``PYTHONPATH`` (so a worker
    can import :class:`BenchSteps` when started from another directory)"""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_CHECKOUT), env.get("PYTHONPATH"))))
    return env


class _Pool:
    """N worker OS processes on one queue; every one is stopped on exit."""

    def __init__(self, broker: str, store: str, queue: str, logs: Path) -> None:
        self.broker = broker
        self.store = store
        self.queue = queue
        self.logs = logs
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, count: int) -> None:
        """Start ``count`` workers and wait until each consumes the queue.

        :param count: how many
        :raises RuntimeError: if one exits or is not ready before the deadline
        """
        for _ in range(count):
            log = self.logs / f"worker-{uuid.uuid4().hex[:8]}.log"
            with log.open("wb") as stderr:
                popen = subprocess.Popen(  # noqa: S603 - our own CLI, by absolute interpreter path
                    [
                        sys.executable,
                        "-m",
                        "loopaware_persist",
                        "worker",
                        "--broker",
                        self.broker,
                        "--store",
                        self.store,
                        "--queue",
                        self.queue,
                        "--prefetch",
                        str(PREFETCH),
                        "--grace",
                        "5",
                        *(arg for name in WORKER_ALLOW for arg in ("--allow", name)),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    env=_worker_env(),
                )
            self.procs.append((popen, log))
        deadline = time.monotonic() + DEADLINE_S
        for popen, log in self.procs:
            while " ready on " not in log.read_text(errors="replace"):
                if popen.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:]
                    msg = f"benchmark worker {popen.pid} did not start:\n{tail}"
                    raise RuntimeError(msg)
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM every worker, wait, SIGKILL one that does not stop."""
        for popen, _log in self.procs:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for popen, _log in self.procs:
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


@contextlib.contextmanager
def _pool(broker: str, store: str, count: int, logs: Path) -> Iterator[_Pool]:
    pool = _Pool(broker, store, f"loopaware.bench.{uuid.uuid4().hex[:12]}", logs)
    try:
        pool.start(count)
        yield pool
    finally:
        pool.stop()


def _batch(client: Any, count: int) -> tuple[float, list[float], list[str]]:
    """Launch ``count`` processes at once; wait for all.

    :return: seconds from the first send to the last reply, each process's latency, the pids
    """
    sent: dict[str, float] = {}
    latencies: list[float] = []
    futures: list[concurrent.futures.Future[Any]] = []

    def done(future: concurrent.futures.Future[Any]) -> None:
        latencies.append(time.perf_counter() - sent[future.pid])  # type: ignore[attr-defined]

    started = time.perf_counter()
    for i in range(count):
        pid = str(uuid.uuid4())
        sent[pid] = time.perf_counter()
        future = client.launch(BenchSteps, {"x": i}, pid=pid)
        future.add_done_callback(done)
        futures.append(future)
    for i, future in enumerate(futures):
        outputs = future.result(timeout=DEADLINE_S)
        expected = sum(i * step for step in range(STEPS))
        if outputs.get("total") != expected:
            msg = f"process {i} returned {outputs!r}, expected total {expected}"
            raise AssertionError(msg)
    elapsed = time.perf_counter() - started
    return elapsed, latencies, list(sent)


def _saves(store: str, pids: list[str]) -> int:
    """:return: how many checkpoints were written for ``pids`` (their records' versions)"""
    wanted = set(pids)
    with open_persister(store) as persister:
        return sum(
            int(info.record.version or 0) for info in persister.list_info() if info.pid in wanted
        )


def _forget(store: str, pids: list[str]) -> None:
    with open_persister(store) as persister:
        for pid in pids:
            with contextlib.suppress(Exception):
                persister.delete_process_checkpoints(pid)


def _one_run(broker: str, store: str, workers: int, config: Config, logs: Path) -> dict[str, Any]:
    pids: list[str] = []
    try:
        with (
            _pool(broker, store, workers, logs) as pool,
            WorkerClient(broker_url=broker, task_queue=pool.queue, allow=WORKER_ALLOW) as client,
        ):
            _e, _l, warm = _batch(client, 2 * workers * PREFETCH)
            pids += warm
            elapsed, latencies, timed = _batch(client, config.worker_tasks)
            pids += timed
        saves = _saves(store, timed)
    finally:
        if store.startswith("postgres"):
            _forget(store, pids)  # a shared server: remove what this run wrote
    return {
        "workers": workers,
        "processes": config.worker_tasks,
        "steps_per_process": STEPS,
        "elapsed_s": elapsed,
        "processes_per_s": config.worker_tasks / elapsed,
        "checkpoints": saves,
        "checkpoints_per_s": saves / elapsed,
        "latency": summarise(latencies),
    }


def run_workers(config: Config, progress: Progress) -> dict[str, Any]:
    """:param config: worker counts and batch size
    :param progress: advanced once per run
    :return: the worker results (JSON-ready); ``skipped`` says why a store or all were left out
    """
    skipped: dict[str, str] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    broker = broker_url()
    if not config.worker_counts:
        skipped["workers"] = f"the {config.name} preset runs no workers"
    elif broker is None:
        skipped["workers"] = f"{AMQP_ENV} (or {BROKER_ENV}) is not set"
    else:
        with tempfile.TemporaryDirectory(prefix="loopaware-bench-workers-") as tmp:
            root = Path(tmp)
            stores = {"sqlite": f"sqlite:///{root / 'workers.db'}"}
            pg_url = os.environ.get(POSTGRES_ENV)
            if config.postgres and pg_url:
                stores["postgresql"] = pg_url
            elif config.postgres:
                skipped["postgresql"] = f"{POSTGRES_ENV} is not set"
            for name, url in stores.items():
                for count in config.worker_counts:
                    runs.setdefault(name, []).append(_one_run(broker, url, count, config, root))
                    progress.step(f"workers: {count} on {name}")
    return {
        "prefetch": PREFETCH,
        "steps_per_process": STEPS,
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "skipped": skipped,
        "note": (
            "processes/s from the first send to the last reply of one batch launched at once; "
            "latency is send to reply of each process, queueing included"
        ),
    }
