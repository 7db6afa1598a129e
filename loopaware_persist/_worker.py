"""Daemon workers over RabbitMQ, and the client that sends them work.

A worker is what an AiiDA daemon worker is: a :class:`LoopAwareLauncher` on
its own event loop, subscribed to a kiwipy task queue on RabbitMQ
(``RmqThreadCommunicator``), with checkpoints in a shared store (PostgreSQL).
Every message goes through :class:`MessageCodec` (msgpack + allow-list), never
kiwipy's YAML.

Fencing
-------
RabbitMQ redelivers a task whose worker died, and also one whose
``consumer_timeout`` expired while the worker was still running it (the limit
AiiDA ran into, aiidateam/aiida-core#5105); then two workers run the same pid.
Each worker's :class:`FencingPersister` remembers,
per process object, the store version it loaded or last wrote, checkpoints the
process on every state it enters (as aiida-core's ``Process.on_entered`` does)
with ``expected_version=`` that version, and so:

* the first writer of version ``v + 1`` wins;
* the other one's save raises :class:`StaleCheckpointError`: nothing is written,
  the process is *fenced* — it never saves again and stops at once (the error
  fails the transition, plumpy moves it to EXCEPTED, whose checkpoint is
  skipped) — and its task *follows* the winner: it waits (polling the
  checkpoint's header with a back-off) until the process is terminal and
  replies with the stored outcome. It is not requeued: a redelivery would claim
  the process back mid-step and two copies could fence each other forever.

A worker *claims* a process it loads by saving it straight away at the next
version, so a copy built from a stale read is fenced before it runs any step;
at most the one step a fenced copy was running when the owner changed is
wasted (its side effects happened, its checkpoint never lands).

A save that fails because the store is down (:class:`BackendUnavailableError`)
is handled the same way, after a short back-off: the process stops without
claiming anything, the task is requeued, and a worker continues from the last
checkpoint that *was* acknowledged once the store is back.

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
import enum
import itertools
import logging
import os
import signal
import threading
import uuid
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import kiwipy
import plumpy
from plumpy.base.state_machine import StateEventHook
from plumpy.process_comms import (
    ARGS_KEY,
    CONTINUE_TASK,
    CREATE_TASK,
    KWARGS_KEY,
    LAUNCH_TASK,
    NOWAIT_KEY,
    PERSIST_KEY,
    PID_KEY,
    PROCESS_CLASS_KEY,
    TAG_KEY,
    TASK_ARGS,
    TASK_KEY,
)

from ._arguments import (
    check_allow,
    check_instance,
    check_optional_loop,
    check_pid,
    check_process,
    describe,
)
from ._awaiting import RelinkHook, copy_outcome
from ._bridge import LoopBridge
from ._errors import (
    ArgumentTypeError,
    BackendUnavailableError,
    CorruptCheckpointError,
    StaleCheckpointError,
    StorageError,
    UnsafeCheckpointError,
)
from ._launcher import LoopAwareLauncher
from ._loop import LoopContext
from ._messages import MessageCodec, RefusedMessage
from ._persister import LoopAwarePersister
from ._registry import class_name
from ._unbundle import unbundle
from .codecs import check_codec_name
from .storage import CheckpointKey, open_storage

if TYPE_CHECKING:
    from kiwipy.rmq import RmqThreadCommunicator

__all__ = (
    "DEFAULT_TASK_QUEUE",
    "FenceReason",
    "FencedError",
    "FencingPersister",
    "ShutdownFencedError",
    "StaleFencedError",
    "UnavailableFencedError",
    "Worker",
    "WorkerClient",
    "run_worker",
)

_LOGGER = logging.getLogger(__name__)

#: kiwipy's names, prefixed so a worker never takes tasks meant for plumpy's
#: ``ProcessLauncher`` or AiiDA (whose bodies another launcher may decode unsafely).
DEFAULT_TASK_QUEUE = "loopaware.tasks"
DEFAULT_TASK_EXCHANGE = "loopaware.tasks"
DEFAULT_MESSAGE_EXCHANGE = "loopaware.messages"

#: How long a worker waits before handing back a task it could not run because the
#: store was unavailable, so a down server is not hammered by a requeue loop.
_UNAVAILABLE_BACKOFF = 1.0


class FenceReason(enum.StrEnum):
    """Why a :class:`FencedError` stopped a process."""

    #: another worker saved the process's checkpoint after this one loaded it
    STALE = "stale"
    #: the store could not be reached, so the process could not checkpoint
    UNAVAILABLE = "unavailable"
    #: the worker is shutting down
    SHUTDOWN = "shutdown"


def _check_broker_url(url: object, call: str) -> None:
    check_instance(
        url,
        str,
        call=call,
        argument="broker_url",
        wanted="an AMQP URL (str)",
        hint="Pass e.g. 'amqp://guest:guest@127.0.0.1:5672/'.",
    )


class FencedError(StorageError):
    """A process stopped without saving: another worker owns its checkpoint, the store
    was down, or the worker is shutting down. Its task goes back to the queue.

    Each reason is its own subclass, so that a caller catching
    :class:`StaleCheckpointError` gets only :class:`StaleFencedError`, one catching
    :class:`BackendUnavailableError` only :class:`UnavailableFencedError`, and a
    shutdown (:class:`ShutdownFencedError`) is neither. ``reason`` says the same.

    :param msg: the message
    :param pid: the process
    :ivar reason: a :class:`FenceReason`
    """

    reason: FenceReason

    def __init__(self, msg: str, *, pid: Hashable = None) -> None:
        super().__init__(msg)
        self.pid = pid


class StaleFencedError(FencedError, StaleCheckpointError):
    """Fenced because another worker saved the process's checkpoint first."""

    reason = FenceReason.STALE


class UnavailableFencedError(FencedError, BackendUnavailableError):
    """Fenced because the store was unavailable when the process had to checkpoint."""

    reason = FenceReason.UNAVAILABLE


class ShutdownFencedError(FencedError):
    """Fenced because the worker is shutting down; the process is not stale."""

    reason = FenceReason.SHUTDOWN


_TERMINAL_STATES = frozenset({"finished", "excepted", "killed"})
#: Stale-fence marks a persister keeps before it empties its table (see stale_mark()).
_STALE_MARKS_KEPT = 4096


# region fencing


class _Fence:
    """The checkpoint version one process object owns, and whether it was fenced.

    Touched only on the process's loop thread (plumpy transitions run there).
    """

    __slots__ = ("__weakref__", "fenced", "persister", "version")

    def __init__(self, persister: FencingPersister, version: int) -> None:
        self.persister = persister
        self.version = version
        self.fenced: FencedError | None = None

    def __call__(self, process: Any, _hook: Hashable, _from_state: Any) -> None:
        # The ENTERED_STATE callback: checkpoint every state entered.
        if self.fenced is not None:
            return  # entering EXCEPTED after our own raise: never write again
        terminal = bool(process.has_terminated())
        try:
            self.persister.save_checkpoint(process)
            if terminal:
                self.persister.forget(process)
        except (StaleCheckpointError, BackendUnavailableError) as error:
            fenced = self.persister.fence(process, error)
            if terminal:
                # Raising while entering a terminal state would make plumpy retry
                # the transition; the process stops here anyway. Its own outcome is
                # already set: its task follows the owner's (stale_mark()).
                return
            raise fenced from error
        except Exception:
            if terminal:
                _LOGGER.exception("Could not checkpoint %s in its final state", process.pid)
                return
            raise


class FencingPersister(LoopAwarePersister):
    """A :class:`LoopAwarePersister` that checkpoints on every transition, fenced by version.

    A process it loads, or saves for the first time, is watched: on every state it
    enters it is saved with ``expected_version=`` the version this persister last
    read or wrote for it. A stale save fences it (see the module docstring).

    Takes the arguments of :class:`LoopAwarePersister`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fences: weakref.WeakKeyDictionary[plumpy.Process, _Fence] = (
            weakref.WeakKeyDictionary()
        )
        # The latest stale fence per pid, as a serial number: see stale_mark().
        self._stale: dict[Hashable, int] = {}
        self._stale_serial = itertools.count(1)

    def _watch(self, process: plumpy.Process, version: int) -> _Fence:
        fence = self._fences.get(process)
        if fence is None:
            fence = self._fences[process] = _Fence(self, version)
            process.add_state_event_callback(StateEventHook.ENTERED_STATE, fence)
        else:
            fence.version = version
        return fence

    def forget(self, process: plumpy.Process) -> None:
        """Stop tracking a process that has terminated (its last checkpoint is stored).

        :param process: the process
        """
        self._fences.pop(process, None)

    def watched(self) -> list[plumpy.Process]:
        """:return: the live processes this persister checkpoints"""
        return [p for p in list(self._fences) if not p.has_terminated()]

    def fenced(self, process: plumpy.Process) -> FencedError | None:
        """:return: why ``process`` was fenced, or ``None`` if it was not"""
        fence = self._fences.get(process)
        return None if fence is None else fence.fenced

    def stale_mark(self, pid: Hashable) -> int:
        """A number that changes whenever this persister fences a copy of ``pid`` because
        another worker saved it.

        A copy fenced while entering a terminal state ends "normally": plumpy set its
        own, never saved, outcome before the checkpoint was refused. A worker compares
        the mark before and after a task, and when it changed replies with the owner's
        stored outcome instead of the task's own. Marks are serial numbers that never
        repeat, so the table can be emptied when it grows (a mark that changes for that
        reason only makes a task read the stored outcome, which is then its own).

        :param pid: the process id
        :return: the mark (0 if none is kept)
        """
        return self._stale.get(pid, 0)

    def fence(self, process: plumpy.Process, cause: BaseException | None = None) -> FencedError:
        """Stop ``process`` from saving again (idempotent).

        :param process: the process
        :param cause: why: a stale save, an unavailable store, or ``None`` for shutdown
        :return: the error that stops it
        :raises ArgumentTypeError: if ``process`` is not a ``plumpy.Process``
        """
        check_process(process, call="FencingPersister.fence()")
        fence = self._fences.get(process) or self._watch(process, -1)
        if fence.fenced is not None:
            return fence.fenced
        kind: type[FencedError]
        if isinstance(cause, StaleCheckpointError):
            kind = StaleFencedError
            if len(self._stale) >= _STALE_MARKS_KEPT:
                self._stale.clear()
            self._stale[process.pid] = next(self._stale_serial)
            msg = (
                f"Process {process.pid} fenced: another worker saved its checkpoint after this "
                f"one loaded version {fence.version} ({cause}). Stopped without writing; the "
                "task goes back to the queue."
            )
            _LOGGER.warning("fenced %s: stale checkpoint version %s", process.pid, fence.version)
        elif isinstance(cause, BackendUnavailableError):
            kind = UnavailableFencedError
            msg = (
                f"Process {process.pid} stopped: the store is unavailable ({cause}). Its last "
                "acknowledged checkpoint stays; the task goes back to the queue."
            )
            _LOGGER.warning("fenced %s: store unavailable", process.pid)
        else:
            kind = ShutdownFencedError
            msg = f"Process {process.pid} stopped by the worker's shutdown; the task is requeued."
            _LOGGER.info("fenced %s: shutdown", process.pid)
        fence.fenced = kind(msg, pid=process.pid)
        return fence.fenced

    # Same override as LoopAwarePersister's (extra keywords, returns the version).
    def save_checkpoint(  # type: ignore[override]
        self,
        process: plumpy.Process,
        tag: str | None = None,
        *,
        expected_version: int | None = None,
        verify: bool = False,
    ) -> int:
        """Save ``process``; untagged saves are compare-and-set against the owned version.

        :param process: the process (on its loop's thread)
        :param tag: a tag: tagged checkpoints are not fenced
        :param expected_version: override the owned version
        :param verify: see :meth:`LoopAwarePersister.save_checkpoint`
        :raises FencedError: if the process was already fenced
        :raises StaleCheckpointError: if another writer got there first
        :return: the stored version
        """
        if tag is not None:
            return super().save_checkpoint(
                process, tag, expected_version=expected_version, verify=verify
            )
        fence = self._fences.get(process)
        if fence is not None and fence.fenced is not None:
            raise fence.fenced
        if expected_version is None:
            # A process this persister never loaded is new: its pid must not exist yet.
            expected_version = fence.version if fence is not None else 0
        try:
            version = super().save_checkpoint(
                process, expected_version=expected_version, verify=verify
            )
        except (StaleCheckpointError, BackendUnavailableError):
            if fence is None:
                # A new process whose first checkpoint failed never runs (its launch
                # fails and is requeued). Release its RPC/broadcast subscriptions, keyed
                # by pid, as load_process() does for a failed claim: left behind, the
                # retried launch's copy collides with them in this worker.
                process.close()
            raise
        self._watch(process, version)
        return version

    def load_process(
        self,
        pid: Hashable,
        tag: str | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        relink: RelinkHook | None = None,
        **extra: Any,
    ) -> plumpy.Process:
        """Load a process, claim it by saving it at the next version, and watch it.

        :param pid: the process id
        :param tag: optional tag (a tagged load is not watched)
        :param loop: the target loop
        :param relink: see :meth:`LoopAwarePersister.load_process`
        :param extra: more ``LoadSaveContext`` entries
        :raises FencedError: if another worker saved it between our read and our claim,
            or the store went down in between
        :raises CorruptCheckpointError: if the checkpoint holds something other than a process
        :raises ArgumentTypeError: if ``loop`` is neither an event loop nor ``None``
        :return: the process
        """
        check_optional_loop(loop, call="load_process()")
        key = CheckpointKey(pid=pid, tag=tag)  # type: ignore[arg-type]
        record = self.storage.get(key)
        process = unbundle(
            self.loads(record.data, key=key),
            LoopContext(loop=loop),
            registry=self.registry,
            trusted=self.trusted,
            copy=False,
            **extra,
        )
        if not isinstance(process, plumpy.Process):
            msg = (
                f"The checkpoint of {pid!r} holds a {type(process).__name__}, not a process: "
                "it was not written by save_checkpoint(). Delete it or load it with "
                "load_checkpoint()."
            )
            raise CorruptCheckpointError(msg)
        self._relinked(process, relink)  # ToContext futures, before the claim saves it
        if tag is None:
            self._watch(process, record.version)
            # Claim it: a process loaded in some state runs that state's step without
            # a transition, so without this its first save would come only after a
            # whole step. Bumping the version now fences whoever loaded before us at
            # their next save, and fences us here, before any step, if someone saved
            # after our read.
            try:
                self.save_checkpoint(process)
            except (StaleCheckpointError, BackendUnavailableError) as error:
                fenced = self.fence(process, error)
                # Unsubscribes its RPC/broadcast subscribers (identified by pid): left
                # behind, the next load of this pid in this worker would collide with them.
                process.close()
                raise fenced from error
        return process


def open_fencing_persister(
    url: str, *, codec: str = "msgpack", allow: Iterable[str | type] = ()
) -> FencingPersister:
    """Open a :class:`FencingPersister` on the storage at ``url``.

    :param url: a storage URL (``postgresql://...`` for several machines)
    :param codec: ``"msgpack"`` or ``"pickle"``
    :param allow: modules/classes a load may revive, besides plumpy's
    :raises ArgumentTypeError: if an argument has the wrong type
    :raises ConfigurationError: if the codec or URL scheme is not available here
    :return: the persister
    """
    check_instance(
        url,
        str,
        call="open_fencing_persister()",
        argument="url",
        wanted="a storage URL (str)",
        hint="Pass e.g. 'postgresql://user@host/db'.",
    )
    check_codec_name(codec)
    entries = check_allow(allow, call="open_fencing_persister()")
    storage = open_storage(url)
    try:
        return FencingPersister(storage, codec=codec, allow=entries)
    except BaseException:
        storage.close()  # a refused argument must not leave a connection open
        raise


# endregion

# region worker


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
        task = self._idempotent_launch(task)
        pid = _waited_pid(task)
        stale = worker.persister.stale_mark(pid) if pid is not None else 0
        inner = worker.launcher(communicator, task)
        worker._track(inner)
        inner.add_done_callback(lambda done: self._settle(done, outcome, pid, stale))
        return outcome

    def _idempotent_launch(self, task: Any) -> Any:
        """A redelivered launch of a pid that has a checkpoint continues it instead.

        The client names the pid of every launch, so a worker that dies after the
        first save does not leave a second process with a fresh pid behind.
        """
        if not isinstance(task, Mapping) or task.get(TASK_KEY) != LAUNCH_TASK:
            return task
        args = task.get(TASK_ARGS)
        if not isinstance(args, Mapping):
            return task  # the launcher says what is wrong with it
        kwargs = args.get(KWARGS_KEY)
        pid = kwargs.get("pid") if isinstance(kwargs, Mapping) else None
        if pid is None:
            return task
        try:
            stored = any(info.key.tag is None for info in self._worker.persister.storage.list(pid))
        except BackendUnavailableError:
            return task  # the launch's own save fails the same way and is requeued
        if not stored:
            return task
        _LOGGER.info("launch of %s was redelivered: continuing its checkpoint", pid)
        return {
            TASK_KEY: CONTINUE_TASK,
            TASK_ARGS: {PID_KEY: pid, NOWAIT_KEY: bool(args.get(NOWAIT_KEY, False))},
        }

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


def _waited_pid(task: Any) -> Hashable:
    """:return: the pid of a launch or continue task whose reply is the process's
    outcome, or ``None`` (a create, a ``nowait`` task, a launch without a pid)"""
    if not isinstance(task, Mapping) or task.get(TASK_KEY) not in (LAUNCH_TASK, CONTINUE_TASK):
        return None
    args = task.get(TASK_ARGS)
    if not isinstance(args, Mapping) or args.get(NOWAIT_KEY):
        return None
    if task[TASK_KEY] == CONTINUE_TASK:
        pid = args.get(PID_KEY)
    else:
        kwargs = args.get(KWARGS_KEY)
        pid = kwargs.get("pid") if isinstance(kwargs, Mapping) else None
    try:
        hash(pid)
    except TypeError:
        return None  # the launcher says what is wrong with it
    return pid


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
        _check_broker_url(broker_url, "Worker()")
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
                    # The base class's load: a terminated process is read, not claimed.
                    process = LoopAwarePersister.load_process(self.persister, pid, loop=self.loop)
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
        _probe_broker(self.broker_url)
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


def _probe_broker(url: str, timeout: float = 10.0) -> None:
    """Open (and close) a TCP connection to the broker a URL names.

    :raises BackendUnavailableError: if it cannot be reached, saying which and what to do
    """
    import socket
    import urllib.parse

    from .storage._url import redact_url

    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or (5671 if parts.scheme.lower() == "amqps" else 5672)
    except ValueError as exc:
        msg = f"Invalid broker URL {redact_url(url)!r}: {exc}. Use amqp://user:pw@host:5672/vhost."
        raise BackendUnavailableError(msg) from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        msg = (
            f"Cannot reach the RabbitMQ broker at {redact_url(url)} ({host}:{port}): {exc}. "
            "Check --broker (or $LOOPAWARE_BROKER_URL) and that RabbitMQ is running."
        )
        raise BackendUnavailableError(msg) from None


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


# endregion

# region client


def _flatten(future: concurrent.futures.Future[Any], into: concurrent.futures.Future[Any]) -> None:
    """Resolve ``into`` with the end of a chain of futures.

    kiwipy resolves a task's future with another future when the worker sends a
    "pending" reply first, as it does for every task whose subscriber returns one.
    """

    def done(inner: concurrent.futures.Future[Any]) -> None:
        if into.done():
            return
        if inner.cancelled():
            into.cancel()
            return
        error = inner.exception()
        if error is not None:
            into.set_exception(error)
            return
        result = inner.result()
        if isinstance(result, concurrent.futures.Future):
            result.add_done_callback(done)
        elif isinstance(result, asyncio.Future):
            # kiwipy's pending reply on its own loop: wait for it there.
            result.add_done_callback(lambda r: done(_to_concurrent(r)))
        else:
            into.set_result(result)

    future.add_done_callback(done)


def _to_concurrent(future: asyncio.Future[Any]) -> concurrent.futures.Future[Any]:
    out: concurrent.futures.Future[Any] = concurrent.futures.Future()
    copy_outcome(future, out)
    return out


class WorkerClient:
    """Send launch, create and continue tasks to workers and wait for their results.

    :param broker_url: the AMQP URL
    :param allow: modules/classes replies may revive (the outputs' types)
    :param task_queue: the workers' task queue
    """

    def __init__(
        self,
        *,
        broker_url: str,
        allow: Iterable[str | type] = (),
        task_queue: str = DEFAULT_TASK_QUEUE,
    ) -> None:
        from kiwipy.rmq import RmqThreadCommunicator  # aio-pika: imported only when used

        _check_broker_url(broker_url, "WorkerClient()")
        self.messages = MessageCodec(allow=check_allow(allow, call="WorkerClient()"))
        # As the worker does: an unreachable broker is one typed error naming it, not
        # aio-pika's log line and a bare ConnectionRefusedError.
        _probe_broker(broker_url)
        self._communicator = RmqThreadCommunicator.connect(
            connection_params=broker_url,
            message_exchange=DEFAULT_MESSAGE_EXCHANGE,
            task_exchange=DEFAULT_TASK_EXCHANGE,
            task_queue=task_queue,
            encoder=self.messages.encode,
            decoder=self.messages.client_decoder,
        )
        self._futures: dict[Hashable, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (futures not yet resolved never will be)."""
        self._communicator.close()

    def _send(self, body: Mapping[str, Any], pid: Hashable) -> concurrent.futures.Future[Any]:
        sent = self._communicator.task_send(dict(body))
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        _flatten(sent, future)
        with self._lock:
            self._futures[pid] = future
        return future

    @staticmethod
    def _task_args(
        call: str,
        process_class: type[plumpy.Process] | str,
        inputs: Mapping[str, Any] | None,
        pid: Hashable,
    ) -> tuple[str, dict[str, Any], Hashable]:
        """Check a launch's or create's arguments before anything is sent.

        :return: the class name, the inputs and the pid (a new UUID string if ``None``)
        :raises ArgumentTypeError: for a wrong type
        :raises EncodeError: for a pid of a type no store can hold
        """
        if isinstance(process_class, str):
            name = process_class
        elif isinstance(process_class, type) and issubclass(process_class, plumpy.Process):
            name = class_name(process_class)
        else:
            msg = (
                f"{call} takes a plumpy.Process subclass or its 'module:QualName' as "
                f"process_class, got {describe(process_class)}. Pass the class itself."
            )
            raise ArgumentTypeError(msg, argument="process_class")
        if inputs is not None:
            check_instance(
                inputs,
                Mapping,
                call=call,
                argument="inputs",
                wanted="a mapping or None",
                hint="Pass the process's inputs as a dict, e.g. {'x': 1}.",
            )
        pid = str(uuid.uuid4()) if pid is None else pid
        CheckpointKey(pid).token  # type: ignore[arg-type]  # noqa: B018 - refuses a bad pid now
        return name, dict(inputs or {}), pid

    def launch(
        self,
        process_class: type[plumpy.Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: Hashable = None,
    ) -> concurrent.futures.Future[Any]:
        """Launch a process on some worker and get its outputs.

        The pid is chosen here (a UUID string unless given), so a redelivered launch
        continues the same process instead of starting another.

        :param process_class: a ``plumpy.Process`` subclass (or its ``module:QualName``)
        :param inputs: its inputs (plain data)
        :param pid: its pid
        :return: a future of its outputs; a failed process's error arrives as a
            ``kiwipy.RemoteException``. Its ``.pid`` attribute names the process.
        """
        name, inputs, pid = self._task_args("launch()", process_class, inputs, pid)
        body = {
            TASK_KEY: LAUNCH_TASK,
            TASK_ARGS: {
                PROCESS_CLASS_KEY: name,
                PERSIST_KEY: True,
                NOWAIT_KEY: False,
                ARGS_KEY: (),
                KWARGS_KEY: {"inputs": inputs, "pid": pid},
            },
        }
        future = self._send(body, pid)
        future.pid = pid  # type: ignore[attr-defined]
        return future

    def create(
        self,
        process_class: type[plumpy.Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: Hashable = None,
    ) -> concurrent.futures.Future[Any]:
        """Have a worker create and checkpoint a process without running it.

        :param process_class: a ``plumpy.Process`` subclass (or its ``module:QualName``)
        :param inputs: its inputs
        :param pid: its pid (default: a UUID string)
        :return: a future of its pid, once its checkpoint is stored
        """
        name, inputs, pid = self._task_args("create()", process_class, inputs, pid)
        body = {
            TASK_KEY: CREATE_TASK,
            TASK_ARGS: {
                PROCESS_CLASS_KEY: name,
                PERSIST_KEY: True,
                ARGS_KEY: (),
                KWARGS_KEY: {"inputs": inputs, "pid": pid},
            },
        }
        return self._send(body, ("create", pid))

    def continue_(self, pid: Hashable, *, tag: str | None = None) -> concurrent.futures.Future[Any]:
        """Have a worker continue a checkpointed process to its end.

        :param pid: the process id
        :param tag: a checkpoint tag
        :raises ArgumentTypeError: if ``pid`` is ``None``
        :raises EncodeError: for a pid or tag of a type no store can hold
        :return: a future of its outputs
        """
        check_pid(pid, call="continue_()")
        CheckpointKey(pid, tag).token  # type: ignore[arg-type]  # noqa: B018 - refuses it now
        body = {TASK_KEY: CONTINUE_TASK, TASK_ARGS: {PID_KEY: pid, NOWAIT_KEY: False, TAG_KEY: tag}}
        return self._send(body, pid)

    def wait(
        self, target: Hashable | concurrent.futures.Future[Any], timeout: float | None = None
    ) -> Any:
        """Wait for a result.

        :param target: a future this client returned, or the pid of a process it
            launched or continued
        :param timeout: seconds; ``None`` waits forever
        :raises LookupError: if ``target`` is a pid this client sent no task for
        :raises TimeoutError: if the result does not arrive in time
        :raises kiwipy.RemoteException: if the process failed on the worker
        :return: the outputs (or the pid, for :meth:`create`)
        """
        if isinstance(target, concurrent.futures.Future):
            future = target
        else:
            with self._lock:
                found = self._futures.get(target)
            if found is None:
                msg = (
                    f"No task for pid {target!r} was sent by this client; wait on the future "
                    "launch()/continue_() returned, or continue_() the pid first."
                )
                raise LookupError(msg)
            future = found
        return future.result(timeout=timeout)


# endregion
