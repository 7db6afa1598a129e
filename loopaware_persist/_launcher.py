"""Run plumpy processes on *their* event loop, whatever thread delivers the task.

:class:`LoopAwareLauncher` is a kiwipy task subscriber that accepts plumpy's
launch/continue/create task bodies, like ``plumpy.ProcessLauncher``, and runs
every process on its own loop; its processes talk to kiwipy through a
:class:`~loopaware_persist.LoopBridge` (``_bridge.py``) on that loop.

Why not plumpy's own (measured on plumpy 0.26.1, kiwipy 0.9.0):

* ``ProcessLauncher.__call__`` is a coroutine that kiwipy awaits on its
  communication loop, so processes are created, loaded and stepped there, not
  on the worker's loop.
* ``ProcessLauncher`` resolves ``process_class`` with the unrestricted
  ``DefaultObjectLoader`` and calls whatever it finds: a task naming
  ``builtins:exec`` gets ``exec`` called with the task's arguments.
* plumpy's ``wrap_communicator`` loses replies across threads (see ``_bridge.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

import attrs
import kiwipy
import plumpy
from plumpy.process_comms import CONTINUE_TASK, CREATE_TASK

from ._arguments import check_instance, check_loop
from ._bridge import LoopBridge, _LoopRunner
from ._errors import LoopBoundaryError, NoEventLoopError, UnsafeCheckpointError
from ._loop_check import check_loop_bound
from ._persister import LoopAwarePersister
from ._tasks import ProcessTask
from ._unbundle import verified_on

__all__ = ("LoopAwareLauncher",)


@attrs.frozen(kw_only=True)
class _Request:
    """A task, validated on the receiving thread before anything is scheduled.

    :ivar task: the task body as parsed
    :ivar process_class: its ``process_class`` resolved through the allow-list
        (``None`` for a continue)
    """

    task: ProcessTask
    process_class: type[plumpy.Process] | None = None


def _check_launcher_arguments(persister: object, loop: object, extra: object) -> None:
    call = "LoopAwareLauncher()"
    check_instance(
        persister,
        LoopAwarePersister,
        call=call,
        argument="persister",
        wanted="a LoopAwarePersister",
        hint="Open one with open_persister(url, allow=[...]).",
    )
    check_loop(loop, call=call)
    if extra is not None:
        check_instance(
            extra,
            Mapping,
            call=call,
            argument="load_context_extra",
            wanted="a mapping or None",
            hint="Pass e.g. {'communicator': communicator}.",
        )


class LoopAwareLauncher:
    """A kiwipy task subscriber that launches, continues and creates plumpy processes.

    It accepts the task bodies that plumpy's ``create_launch_body``,
    ``create_continue_body`` and ``create_create_body`` build (the ``TASK_ARGS``
    keys of ``plumpy.ProcessLauncher``), from any thread: kiwipy's communication
    thread, a coroutine on another loop, or ``loop``'s own thread. Every process
    is constructed, loaded, saved and stepped on ``loop``.

    Add it with ``communicator.add_task_subscriber(launcher)``, or through a
    :class:`LoopBridge`. Processes receive a communicator for RPC and broadcasts
    (pause, play, kill, status): ``load_context_extra["communicator"]`` if given,
    else the communicator that delivered the task, wrapped in a :class:`LoopBridge`
    on ``loop`` (the same bridge if it delivered it) so their subscribers run on
    ``loop`` too. A created (not launched) process gets none: it is only a template
    to checkpoint, and registering its pid would collide with the process that a
    later continue task loads.

    What is refused happens synchronously, before anything is imported or scheduled:

    * a body that is not a plumpy launcher task, or an unknown task type:
      ``kiwipy.TaskRejected`` (``plumpy.TaskRejected``), so another subscriber
      may take it, as with ``plumpy.ProcessLauncher``;
    * a ``process_class`` that ``persister.registry`` does not allow, or that is
      not a ``plumpy.Process`` subclass: :class:`UnsafeCheckpointError`. Not
      ``TaskRejected``: over RabbitMQ a task that every subscriber rejects is
      requeued (``nack(requeue=True)``) and redelivered forever, a poison message,
      and the sender never learns why. An error is acknowledged and reaches the
      sender with this message;
    * malformed arguments: :class:`ArgumentTypeError` (a :class:`TypeError`), or
      :class:`ValueError` for another ``loop``.

    :param persister: where checkpoints are saved and loaded; its registry's
        allow-list decides which process classes may be launched
    :param loop: the loop every process runs on
    :param load_context_extra: more ``LoadSaveContext`` entries for continued
        processes (``communicator``, ``logger``...); never ``loop``
    :raises ValueError: if ``load_context_extra`` names a loop
    :raises NoEventLoopError: if ``loop`` is closed
    :raises ArgumentTypeError: if ``persister`` is not a LoopAwarePersister, ``loop`` not
        an event loop or ``load_context_extra`` not a mapping
    """

    #: :class:`LoopBridge` registers it as it is (see ``DIRECT_TASK_SUBSCRIBER``).
    _loopaware_direct_task_subscriber: ClassVar[bool] = True

    def __init__(
        self,
        persister: LoopAwarePersister,
        *,
        loop: asyncio.AbstractEventLoop,
        load_context_extra: Mapping[str, Any] | None = None,
    ) -> None:
        _check_launcher_arguments(persister, loop, load_context_extra)
        extra = dict(load_context_extra or {})
        if "loop" in extra:
            msg = (
                "load_context_extra must not contain 'loop': every process runs on the "
                "launcher's loop. Pass it as LoopAwareLauncher(persister, loop=...)."
            )
            raise ValueError(msg)
        if loop.is_closed():
            msg = f"LoopAwareLauncher needs an open event loop; {loop!r} is closed."
            raise NoEventLoopError(msg)
        self._persister = persister
        self._extra = extra
        self._runner = _LoopRunner(loop)

    def __repr__(self) -> str:
        return f"<LoopAwareLauncher {self._persister!r} on {self._runner.loop!r}>"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """:return: the loop every process runs on"""
        return self._runner.loop

    @property
    def persister(self) -> LoopAwarePersister:
        """:return: the persister checkpoints go through"""
        return self._persister

    def __call__(self, communicator: Any, task: Any) -> concurrent.futures.Future[Any]:
        """Receive a task from kiwipy (or anyone), on any thread.

        :param communicator: the communicator that delivered the task
        :param task: a plumpy task body (``{'task': 'launch', 'args': {...}}``)
        :raises kiwipy.TaskRejected: if the body is not a launch/continue/create task
        :raises UnsafeCheckpointError: if ``process_class`` is not an allowed
            ``plumpy.Process`` subclass; nothing is run
        :raises ArgumentTypeError: if the task's arguments are malformed (a TypeError)
        :raises ValueError: if a launch or create passes another ``loop``
        :return: a future resolved on the loop thread: the pid (``create``, or
            ``nowait``) or the process's outputs once it has terminated (a failed
            process's exception, ``plumpy.KilledError`` if it was killed)
        """
        request = self._parse(task)
        kind = request.task.kind
        what = request.task.pid if kind == CONTINUE_TASK else request.process_class
        return self._runner.submit(lambda: self._run(request, communicator), name=f"{kind} {what}")

    def _parse(self, body: Any) -> _Request:
        task = ProcessTask.parse(body)
        if task.kind == CONTINUE_TASK:
            return _Request(task=task)
        if task.init_kwargs.get("loop", self.loop) is not self.loop:
            msg = (
                f"The {task.kind!r} task passes loop={task.init_kwargs['loop']!r}, but this "
                f"launcher runs every process on {self.loop!r}. Leave 'loop' out of init_kwargs."
            )
            raise ValueError(msg)
        assert task.process_class is not None  # parse() requires it for launch and create
        return _Request(task=task, process_class=self._process_class(task.process_class, task.kind))

    def _process_class(self, name: str, kind: str) -> type[plumpy.Process]:
        """Resolve ``process_class`` through the allow-list; never plumpy's loader.

        plumpy's ``DefaultObjectLoader`` imports any module and returns any object,
        which ``ProcessLauncher`` then calls. The registry refuses a name outside
        the allow-list before importing it, and only a ``plumpy.Process`` subclass
        is accepted, so a task cannot make the worker call ``exec`` or ``os.system``.
        """
        try:
            cls = self._persister.registry.resolve(name, "class")
        except UnsafeCheckpointError as error:
            msg = f"Refusing the {kind!r} task for process_class {name!r}; nothing was run. {error}"
            raise UnsafeCheckpointError(msg, name=name) from error
        if not issubclass(cls, plumpy.Process):
            msg = (
                f"Refusing the {kind!r} task for process_class {name!r}; nothing was run: "
                f"{cls!r} is not a plumpy.Process subclass, and the launcher constructs "
                "nothing else."
            )
            raise UnsafeCheckpointError(msg, name=name)
        return cls

    def _bridge(self, communicator: Any) -> Any:
        if "communicator" in self._extra:
            return self._extra["communicator"]
        if isinstance(communicator, LoopBridge) and communicator.loop is self.loop:
            return communicator
        if isinstance(communicator, kiwipy.Communicator):
            # Never the raw communicator: kiwipy would call the process's RPC and
            # broadcast subscribers on its own thread.
            return LoopBridge(communicator, loop=self.loop)
        # kiwipy's RabbitMQ task queue hands subscribers its queue object, which
        # cannot subscribe RPCs; name a communicator in load_context_extra then.
        return None

    async def _run(self, request: _Request, delivered_by: Any) -> Any:
        task = request.task
        communicator = None if task.kind == CREATE_TASK else self._bridge(delivered_by)
        if task.kind == CONTINUE_TASK:
            process = self._load(task.pid, task.tag, communicator)
        else:
            assert request.process_class is not None
            kwargs = dict(task.init_kwargs)
            kwargs["loop"] = self.loop
            if communicator is not None:
                kwargs.setdefault("communicator", communicator)
            process = request.process_class(*task.init_args, **kwargs)
            if task.persist:
                # On the loop thread: plumpy bundles live process state.
                self._persister.save_checkpoint(process)
            if task.kind == CREATE_TASK:
                return process.pid
        if task.nowait:
            self._runner.spawn(process.step_until_terminated, name=f"process {process.pid}")
            return process.pid
        await process.step_until_terminated()
        return process.future().result()

    def _load(self, pid: Hashable, tag: str | None, communicator: Any) -> plumpy.Process:
        extra = dict(self._extra)
        if communicator is not None:
            extra.setdefault("communicator", communicator)
        # On the loop thread, so LoopContext.run loads inline where the loop is current.
        process = self._persister.load_process(pid, tag, loop=self.loop, **extra)
        # The launcher's promise. The walk is skipped only when this package's own
        # load_process returned what unbundle() loaded onto this loop (and walked just
        # now); another persister class may load, or touch the process, differently.
        own = type(self._persister).load_process.__module__.startswith("loopaware_persist.")
        if not (own and verified_on(process, self.loop)):
            check_loop_bound(process, self.loop)
        if process.loop is not self.loop:
            msg = (
                f"Process {pid} was loaded onto {process.loop!r}, not the launcher's loop "
                f"{self.loop!r}. Load through LoopAwarePersister.load_process(loop=...)."
            )
            raise LoopBoundaryError(msg, paths=["_loop"])
        return process
