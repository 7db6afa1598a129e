"""The client that sends workers launch, create and continue tasks over RabbitMQ."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import plumpy
from plumpy.process_comms import CONTINUE_TASK, CREATE_TASK, LAUNCH_TASK

from ._arguments import check_allow, check_instance, check_pid, describe
from ._broker import (
    DEFAULT_MESSAGE_EXCHANGE,
    DEFAULT_TASK_EXCHANGE,
    DEFAULT_TASK_QUEUE,
    check_broker_url,
    probe_broker,
)
from ._errors import ArgumentTypeError
from ._messages import MessageCodec
from ._outcome import copy_outcome
from ._registry import class_name
from ._tasks import ProcessTask
from .storage import CheckpointKey

__all__ = ("WorkerClient",)


def _flatten(future: concurrent.futures.Future[Any], into: concurrent.futures.Future[Any]) -> None:
    """Resolve ``into`` with the end of a chain of futures.

    kiwipy resolves a task's future with another future when the worker sends a
    "pending" reply first, as it does for every task whose subscriber returns one.
    """

    def done(inner: concurrent.futures.Future[Any]) -> None:
        if into.done():
            return
        if not inner.cancelled() and inner.exception() is None:
            result = inner.result()
            if isinstance(result, concurrent.futures.Future):
                result.add_done_callback(done)
                return
            if isinstance(result, asyncio.Future):
                # kiwipy's pending reply on its own loop: wait for it there.
                result.add_done_callback(lambda r: done(_to_concurrent(r)))
                return
        # The caller may cancel ``into`` from its thread meanwhile: copy_outcome allows it.
        copy_outcome(inner, into)

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

        check_broker_url(broker_url, "WorkerClient()")
        self.messages = MessageCodec(allow=check_allow(allow, call="WorkerClient()"))
        # As the worker does: an unreachable broker is one typed error naming it, not
        # aio-pika's log line and a bare ConnectionRefusedError.
        probe_broker(broker_url)
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

    def _init_task(
        self,
        kind: str,
        call: str,
        process_class: type[plumpy.Process] | str,
        inputs: Mapping[str, Any] | None,
        pid: Hashable,
    ) -> tuple[dict[str, Any], Hashable]:
        """The body of a launch or create task, and the pid it names."""
        name, inputs, pid = self._task_args(call, process_class, inputs, pid)
        body = ProcessTask(
            kind=kind, process_class=name, persist=True, init_kwargs={"inputs": inputs, "pid": pid}
        ).to_dict()
        return body, pid

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
        body, pid = self._init_task(LAUNCH_TASK, "launch()", process_class, inputs, pid)
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
        body, pid = self._init_task(CREATE_TASK, "create()", process_class, inputs, pid)
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
        body = ProcessTask(kind=CONTINUE_TASK, pid=pid, tag=tag).to_dict()
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
