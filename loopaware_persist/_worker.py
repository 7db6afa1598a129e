"""Daemon workers over RabbitMQ: a launcher, a fencing persister and a clean shutdown.

A worker is what an AiiDA daemon worker is: a :class:`LoopAwareLauncher` on
its own event loop, subscribed to a kiwipy task queue on RabbitMQ
(``RmqThreadCommunicator``), with checkpoints in a shared store (PostgreSQL).
Every message goes through :class:`MessageCodec` (msgpack + allow-list), never
kiwipy's YAML.

A worker's checkpoints go through a :class:`FencingPersister` (``_fencing.py``),
so two workers that run the same pid after a redelivery cannot both write it;
:class:`WorkerClient` (``_client.py``) sends workers their tasks.

Shutdown
--------
On SIGTERM/SIGINT (or ``stop_event``) a worker stops consuming, lets in-flight
processes run for ``grace`` seconds, then fences what is left (their last
checkpoint is already stored: every transition saves one), closes the
communicator — RabbitMQ requeues their unacknowledged tasks for other workers —
and closes the persister.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

import kiwipy
from plumpy.process_comms import (
    CONTINUE_TASK,
    LAUNCH_TASK,
)

from ._arguments import check_allow, describe
from ._bridge import LoopBridge
from ._broker import (
    DEFAULT_MESSAGE_EXCHANGE,
    DEFAULT_TASK_EXCHANGE,
    DEFAULT_TASK_QUEUE,
    check_broker_url,
    probe_broker,
)
from ._errors import (
    ArgumentTypeError,
    BackendUnavailableError,
    FencedError,
    StaleFencedError,
    UnsafeCheckpointError,
)
from ._fencing import open_fencing_persister
from ._launcher import LoopAwareLauncher
from ._messages import MessageCodec, RefusedMessage
from ._outcome import copy_outcome
from ._tasks import ProcessTask

if TYPE_CHECKING:
    from kiwipy.rmq import RmqThreadCommunicator

__all__ = ("DEFAULT_TASK_QUEUE", "Worker", "run_worker")

_LOGGER = logging.getLogger(__name__)

#: How long a worker waits before handing back a task it could not run because the
#: store was unavailable, so a down server is not hammered by a requeue loop.
_UNAVAILABLE_BACKOFF = 1.0

_TERMINAL_STATES = frozenset({"finished", "excepted", "killed"})


class _Subscriber:
    """The task subscriber a worker registers: the launcher plus fencing and refusals.

    Called on kiwipy's communication thread; returns the launcher's future, chained.
    """

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self.__name__ = self.__qualname__ = "loopaware_worker"

    def __call__(self, communicator: Any, task: Any) -> concurrent.futures.Future[Any]:
        worker = self._worker
        if isinstance(task, RefusedMessage):
            # kiwipy acknowledges a task whose subscriber raises, so the message is
            # dropped instead of being redelivered forever; no reply (no_reply=True).
            msg = f"Refused a task message; nothing was run. {task.reason}"
            raise UnsafeCheckpointError(msg)
        outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if worker.stopping:
            return outcome  # never resolved: requeued by RabbitMQ when the connection closes
        parsed = ProcessTask.parse(task)  # what the launcher refuses, refused now
        if parsed.kind == LAUNCH_TASK and self._was_launched(parsed.process_pid):
            # A redelivered launch continues the checkpoint its first delivery saved.
            _LOGGER.info(
                "launch of %s was redelivered: continuing its checkpoint", parsed.process_pid
            )
            parsed = ProcessTask(kind=CONTINUE_TASK, pid=parsed.process_pid, nowait=parsed.nowait)
            task = parsed.to_dict()
        pid = parsed.waited_pid
        stale = worker.persister.stale_mark(pid) if pid is not None else 0
        inner = worker.launcher(communicator, task)
        worker._track(inner)
        inner.add_done_callback(lambda done: self._settle(done, outcome, pid, stale))
        return outcome

    def _was_launched(self, pid: Any) -> bool:
        """Whether a launch of ``pid`` already saved its checkpoint.

        The client names the pid of every launch, so a worker that dies after the
        first save does not leave a second process with a fresh pid behind: the
        redelivered launch continues it instead.
        """
        if pid is None:
            return False
        try:
            return any(info.key.tag is None for info in self._worker.persister.storage.list(pid))
        except BackendUnavailableError:
            return False  # the launch's own save fails the same way and is requeued

    def _settle(
        self,
        done: concurrent.futures.Future[Any],
        outcome: concurrent.futures.Future[Any],
        pid: Hashable = None,
        stale: int = 0,
    ) -> None:
        if done.cancelled():
            # Only the worker's shutdown cancels a task: hand it back to the queue.
            outcome.set_exception(kiwipy.TaskRejected("the worker is shutting down"))
            return
        error = done.exception()
        if (
            pid is not None
            and not isinstance(error, (FencedError, BackendUnavailableError))
            and self._worker.persister.stale_mark(pid) != stale
        ):
            # A copy of this pid was fenced meanwhile, possibly this task's own while
            # entering its terminal state: then its outcome is not the stored one, which
            # is what the owner's task replies. Follow that.
            self._worker.follow(pid, outcome)
            return
        if error is None:
            outcome.set_result(done.result())
            return
        if isinstance(error, StaleFencedError):
            # Another copy owns the process now. Requeueing would let a redelivery claim
            # it back mid-step, and two copies could fence each other forever; this
            # task instead follows the owner and replies with the final outcome.
            self._worker.follow(error.pid, outcome)
            return
        if isinstance(error, (FencedError, BackendUnavailableError)):
            # kiwipy requeues a task that every subscriber rejected (nack requeue=True);
            # after a pause, so a server that is down is not hammered by redeliveries.
            rejected = kiwipy.TaskRejected(str(error))
            self._worker.call_later(_UNAVAILABLE_BACKOFF, outcome.set_exception, rejected)
            return
        outcome.set_exception(error)


class Worker:
    """A daemon worker: a launcher on its own loop behind a RabbitMQ task queue.

    Use :func:`run_worker` to run one until SIGTERM/SIGINT; this class is for
    embedding (tests, a supervisor running several in threads).

    :param broker_url: the AMQP URL (``amqp://user:pass@host:5672/vhost``)
    :param store_url: the checkpoint store's URL (``postgresql://...``)
    :param allow: modules/classes a checkpoint or message may revive: the
        modules of your process classes
    :param codec: the checkpoint codec
    :param prefetch: how many tasks RabbitMQ hands this worker at once (its
        concurrency); 0 means unlimited, which one worker would then hoard
    :param grace: seconds in-flight processes may keep running after a stop request
    :param task_queue: the kiwipy task queue name
    :param process_rpc: give processes the communicator, so they answer
        pause/play/kill/status RPCs (one RabbitMQ queue per live process)
    :param follow_timeout: how long a task whose process was fenced (another worker
        owns it) waits for that owner to finish before it is requeued
    """

    def __init__(
        self,
        *,
        broker_url: str,
        store_url: str,
        allow: Iterable[str | type] = (),
        codec: str = "msgpack",
        prefetch: int = 8,
        grace: float = 30.0,
        task_queue: str = DEFAULT_TASK_QUEUE,
        process_rpc: bool = True,
        follow_timeout: float = 24 * 3600.0,
    ) -> None:
        check_broker_url(broker_url, "Worker()")
        if not isinstance(prefetch, int) or isinstance(prefetch, bool):
            msg = f"Worker() takes an int as prefetch, got {describe(prefetch)}. Pass e.g. 8."
            raise ArgumentTypeError(msg, argument="prefetch")
        if prefetch < 0:
            msg = f"prefetch must be 0 (unlimited) or more, got {prefetch}."
            raise ValueError(msg)
        allow = check_allow(allow, call="Worker()")
        self.broker_url = broker_url
        self.store_url = store_url
        self.prefetch = prefetch
        self.grace = grace
        self.task_queue = task_queue
        self.process_rpc = process_rpc
        self.follow_timeout = follow_timeout
        self.messages = MessageCodec(allow=allow)
        self.persister = open_fencing_persister(store_url, codec=codec, allow=allow)
        self.loop = asyncio.new_event_loop()
        self.launcher: LoopAwareLauncher
        self._communicator: RmqThreadCommunicator | None = None
        self._subscriber_id: str | None = None
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        self._inflight_lock = threading.Lock()
        self._stop: asyncio.Event | None = None
        #: Set when shutdown begins: tasks delivered from then on are not started.
        self.stopping = False

    def __repr__(self) -> str:
        return f"<Worker {os.getpid()} queue={self.task_queue!r} store={self.persister!r}>"

    def _track(self, future: concurrent.futures.Future[Any]) -> None:
        with self._inflight_lock:
            self._inflight.add(future)

        def untrack(done: concurrent.futures.Future[Any]) -> None:
            with self._inflight_lock:
                self._inflight.discard(done)

        future.add_done_callback(untrack)

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` after ``delay`` seconds on the worker's loop (from any thread).

        :param delay: seconds
        :param fn: the callable
        :param args: its arguments
        """
        with contextlib.suppress(RuntimeError):  # a closed loop: shutting down anyway
            self.loop.call_soon_threadsafe(self.loop.call_later, delay, fn, *args)

    def follow(self, pid: Hashable, outcome: concurrent.futures.Future[Any]) -> None:
        """Resolve ``outcome`` with ``pid``'s final outcome once another copy finishes it.

        Called from any thread. Polls the checkpoint's header (not its payload) with a
        back-off until its state is terminal, then reads the outputs from it; after
        ``follow_timeout`` seconds the task is handed back to the queue instead.

        :param pid: the process another worker owns
        :param outcome: the task's outcome
        """

        def start() -> None:
            self.loop.create_task(self._follow(pid, outcome), name=f"follow {pid}")

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed: shutting down
            outcome.set_exception(kiwipy.TaskRejected("the worker is shutting down"))

    async def _follow(self, pid: Hashable, outcome: concurrent.futures.Future[Any]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.follow_timeout
        delay = 0.05
        try:
            while not outcome.done():
                try:
                    states = [
                        info.as_dict().get("state")
                        for info in self.persister.list_info(pid)  # type: ignore[arg-type]
                        if info.tag is None
                    ]
                except BackendUnavailableError:
                    states = []
                if states and states[0] in _TERMINAL_STATES:
                    # A terminated process is read, not claimed.
                    process = self.persister.load_process(pid, loop=self.loop, claim=False)
                    copy_outcome(process.future(), outcome)
                    return
                if loop.time() > deadline:
                    msg = f"{pid} did not finish within {self.follow_timeout}s on its owner"
                    outcome.set_exception(kiwipy.TaskRejected(msg))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        except asyncio.CancelledError:
            if not outcome.done():
                outcome.set_exception(kiwipy.TaskRejected("the worker is shutting down"))
            raise
        except Exception as error:
            if not outcome.done():
                outcome.set_exception(error)

    def request_stop(self) -> None:
        """Ask the worker to shut down (thread-safe, idempotent)."""
        stop = self._stop
        if stop is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(stop.set)

    def run(self, *, stop_event: threading.Event | None = None, signals: bool = True) -> None:
        """Serve tasks until a stop request, then shut down cleanly. Blocks.

        :param stop_event: a ``threading.Event`` another thread sets to stop the worker
        :param signals: stop on SIGTERM/SIGINT (only in the main thread)
        """
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve(stop_event, signals))
        finally:
            self._close()

    async def _serve(self, stop_event: threading.Event | None, signals: bool) -> None:
        self._stop = stop = asyncio.Event()
        if signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self._on_signal, sig)
        if stop_event is not None:

            def watch(event: threading.Event = stop_event) -> None:
                event.wait()
                self.request_stop()

            # A daemon thread: it may wait forever if the worker stops for another reason.
            threading.Thread(target=watch, name="loopaware-worker-stop", daemon=True).start()
        self._connect()
        _LOGGER.info("worker %s ready on %s", os.getpid(), self.task_queue)
        await stop.wait()
        await self._drain()

    def _on_signal(self, sig: signal.Signals) -> None:
        _LOGGER.info("worker %s: %s, shutting down", os.getpid(), sig.name)
        assert self._stop is not None
        self._stop.set()

    def _connect(self) -> None:
        # The decoder turns a refused message into a RefusedMessage instead of raising:
        # kiwipy decodes a task before its processing() context (kiwipy.rmq.tasks
        # RmqIncomingTask), so a raise there leaves the message unacknowledged on the
        # channel for good.
        from kiwipy.rmq import RmqThreadCommunicator  # aio-pika: imported only by workers

        # Reach the broker first: when aio-pika's connect fails, kiwipy leaves its
        # half-made connection to a loop nobody closes, and collecting it at exit
        # prints a traceback ("Event loop is closed") after the error.
        probe_broker(self.broker_url)
        communicator = RmqThreadCommunicator.connect(
            connection_params=self.broker_url,
            message_exchange=DEFAULT_MESSAGE_EXCHANGE,
            task_exchange=DEFAULT_TASK_EXCHANGE,
            task_queue=self.task_queue,
            encoder=self.messages.worker_encoder,
            decoder=self.messages.worker_decoder,
            task_prefetch_count=self.prefetch,
        )
        self._communicator = communicator
        extra: dict[str, Any] = {}
        if self.process_rpc:
            extra["communicator"] = LoopBridge(communicator, loop=self.loop)
        self.launcher = LoopAwareLauncher(self.persister, loop=self.loop, load_context_extra=extra)
        self._subscriber_id = communicator.add_task_subscriber(_Subscriber(self))

    async def _drain(self) -> None:
        # New deliveries are held, unacknowledged, until the connection closes, when
        # RabbitMQ requeues them. The subscriber is deliberately not removed: kiwipy's
        # RmqTaskSubscriber._on_task iterates its subscriber dict while it awaits a
        # task's outcome, so removing one with tasks in flight raises "dictionary
        # changed size during iteration" there, and kiwipy then acknowledges those
        # tasks as failed: they would be lost.
        self.stopping = True
        with self._inflight_lock:
            pending = [asyncio.wrap_future(f, loop=self.loop) for f in self._inflight]
        if pending:
            _LOGGER.info("waiting up to %ss for %d in-flight tasks", self.grace, len(pending))
            _done, left = await asyncio.wait(pending, timeout=self.grace)
            if left:
                _LOGGER.warning(
                    "%d tasks still running after %ss: stopping them at their last "
                    "checkpoint; RabbitMQ redelivers them",
                    len(left),
                    self.grace,
                )
        # Whatever still runs is stopped without saving again: its last checkpoint is
        # stored, and its task was never acknowledged. Fenced first, so that the
        # transitions cancellation causes are not checkpointed.
        for process in self.persister.watched():
            self.persister.fence(process)
        for task in asyncio.all_tasks(self.loop):
            if task is not asyncio.current_task():
                task.cancel()

    def _close(self) -> None:
        communicator, self._communicator = self._communicator, None
        if communicator is not None:
            try:
                communicator.close()
            except Exception:
                _LOGGER.exception("closing the communicator failed")
        loop = self.loop
        with contextlib.suppress(Exception):
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=5))
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        self.persister.close()
        if communicator is not None:
            # Only a worker that started stops: one that never reached its broker
            # has said so in its error, which should be the one line it prints.
            _LOGGER.info("worker %s stopped", os.getpid())


def run_worker(
    *,
    broker_url: str,
    store_url: str,
    allow: Iterable[str | type] = (),
    codec: str = "msgpack",
    prefetch: int = 8,
    grace: float = 30.0,
    task_queue: str = DEFAULT_TASK_QUEUE,
    stop_event: threading.Event | None = None,
) -> None:
    """Run a worker in this thread until SIGTERM/SIGINT or ``stop_event``.

    :param broker_url: the AMQP URL
    :param store_url: the checkpoint store's URL
    :param allow: the modules of your process classes (and of what they store)
    :param codec: the checkpoint codec
    :param prefetch: tasks in flight at once
    :param grace: seconds in-flight processes may finish after a stop request
    :param task_queue: the task queue name
    :param stop_event: set it from another thread to stop the worker
    """
    Worker(
        broker_url=broker_url,
        store_url=store_url,
        allow=allow,
        codec=codec,
        prefetch=prefetch,
        grace=grace,
        task_queue=task_queue,
    ).run(stop_event=stop_event)
