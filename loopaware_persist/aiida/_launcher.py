"""AiiDA's ``ProcessLauncher`` for our daemon workers: a checkpoint this worker cannot
load *yet* goes back to the broker instead of sealing its process.

aiida-core 2.9.4's ``ProcessLauncher._continue`` (``aiida/engine/processes/launcher.py``)
catches every exception of loading a checkpoint (plumpy's ``_continue``:
``persister.load_checkpoint`` then ``bundle.unbundle``), and its
``handle_continue_exception`` sets the node EXCEPTED and seals it; the exception then
resolves the task, which the broker acknowledges (sealed so that a process that
cannot load is neither stuck unreported nor retried forever: aiida-core #1982). That
suits a checkpoint nobody can ever load. With this persister most load failures are
something an operator fixes while the process waits: a worker started with the wrong
``--allow`` (or without the plugin installed), a process submitted without
``install()`` whose node holds AiiDA's YAML (``loopaware-persist aiida migrate`` moves
it), a record not in the worker's ``--store``, a store that is down. Sealing those
would end the process for good: nothing unseals a node, and ``migrate`` skips sealed
ones.

A storage failure (a :class:`StorageError` other than damage: a record not in the
store yet, a store briefly locked or down) can go away by itself, so the first time
a worker meets one for a process it loads again after 0.25, 0.5, 1 and 2 s
(``RETRY_DELAYS``), each retry a warning in the worker log, before anything below
happens. Refusals (:class:`UnsafeCheckpointError`, :class:`UnknownTagError`,
:class:`ConfigurationError`) come from the worker's own allow-list, registry and
installed code, which do not change while it runs, so they are not retried in it.

:class:`RequeueingProcessLauncher` is AiiDA's launcher with one difference, for the
errors :func:`operator_can_fix` accepts (once the retries are spent): the node is
left as it is (not sealed, its checkpoint untouched), the worker log says what
failed, for which process and what to do (and so does the process's report, ``verdi
process report PK``, once per worker), and the task is handed back:

* RabbitMQ (``requeue=True``): after a pause, :class:`kiwipy.TaskRejected`. kiwipy's
  ``RmqTaskSubscriber._on_task`` takes it as "not handled by this subscriber", and a
  task no subscriber handled is ``nack(requeue=True)``-ed: RabbitMQ delivers it again,
  to this worker or another. The pause (2 s, doubling per attempt of that pid in this
  worker, at most 60 s) keeps a worker that stays misconfigured from spinning: it
  costs one load attempt and one log line per process per pause.
* any other broker (AiiDA 2.9's ZeroMQ one): the task is kept, unanswered. AiiDA's
  ``ZeromqCommunicator._finalize_task`` acknowledges a task once its future is resolved,
  whatever the outcome, ``TaskRejected`` included, so a rejection would delete the
  task; an unanswered one stays assigned to this worker and the broker requeues it
  when the worker disconnects (``_remove_dead_worker``), as it does for a worker that
  crashed. While it holds the task, the worker tries a storage failure again after
  the same pauses as RabbitMQ's (2 s, doubling, at most 60 s), so the process
  continues as soon as the store answers, with no restart; a refusal is held until
  the worker stops: fix the cause, then restart the workers.

What is not operator-fixable keeps AiiDA's behaviour (EXCEPTED, sealed, the error in
the node's exception): a damaged record (:class:`CorruptCheckpointError`: truncated,
checksums that do not match, or a record a newer ``loopaware_persist`` wrote, which
the envelope reports the same way), a bundle the installed code cannot construct, a
loop-binding error, and every exception that is not this package's. Requeueing those
would redeliver a task that can never succeed, and a process that no worker loads
cannot be killed with ``verdi process kill`` (it is an RPC to the live process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import Any

import kiwipy
from aiida.common.log import LOG_LEVEL_REPORT
from aiida.engine.processes.launcher import ProcessLauncher

from .._errors import (
    CheckpointNotFoundError,
    ConfigurationError,
    CorruptCheckpointError,
    StorageError,
    UnknownTagError,
    UnsafeCheckpointError,
)

__all__ = ("RequeueingProcessLauncher", "operator_can_fix")

LOGGER = logging.getLogger(__name__)

#: The pauses before each retry of a load that failed in the store, in this worker,
#: before the failure is reported and the task handed back (3.75 s in all).
RETRY_DELAYS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
#: The pause before a refused task goes back to RabbitMQ, or before a task held under
#: another broker is tried again, doubled per attempt.
FIRST_DELAY = 2.0
#: The longest pause.
MAX_DELAY = 60.0


def operator_can_fix(error: BaseException) -> bool:
    """Whether a failure to load a checkpoint is one an operator can fix while the
    process waits, so the process must not be sealed.

    :param error: what loading the checkpoint raised
    :return: ``True`` for an allow-list refusal or a class that cannot be imported
        (:class:`UnsafeCheckpointError`), a type tag no registry here knows
        (:class:`UnknownTagError`), a codec or compression not installed
        (:class:`ConfigurationError`), and any storage failure: not found, a record
        this store did not write (AiiDA's YAML), a store that is down
        (:class:`StorageError`); ``False`` for a damaged record
        (:class:`CorruptCheckpointError`) and anything else
    """
    if isinstance(error, CorruptCheckpointError):
        return False
    return isinstance(
        error, (UnsafeCheckpointError, UnknownTagError, ConfigurationError, StorageError)
    )


def _store_may_recover(error: BaseException) -> bool:
    """Whether loading again, in this worker, may succeed without anyone doing anything:
    a storage failure (a record not visible yet, a store locked or down), not a
    refusal by this worker's allow-list, registry or installed code."""
    return isinstance(error, StorageError) and operator_can_fix(error)


def _what_to_do(error: BaseException, pid: Hashable, profile: str) -> str:
    if isinstance(error, (UnsafeCheckpointError, UnknownTagError, ConfigurationError)):
        return (
            "Restart the workers with an --allow (allow=) that covers the modules of this "
            "process and of the values its checkpoint holds, and with the code it names "
            "installed."
        )
    if isinstance(error, CheckpointNotFoundError):
        return (
            "Its record is not in this worker's store: submit with "
            "loopaware_persist.aiida.install() and the workers' --store; a process whose "
            "node holds AiiDA's YAML checkpoint is moved with `loopaware-persist aiida "
            f"migrate --profile {profile} --pk {pid}` (workers stopped)."
        )
    return (
        "If the node holds AiiDA's YAML checkpoint (submitted without "
        "loopaware_persist.aiida.install()), stop the workers and run `loopaware-persist "
        f"aiida migrate --profile {profile} --pk {pid}`; if the store is unreachable, "
        "bring it back."
    )


class RequeueingProcessLauncher(ProcessLauncher):
    """AiiDA's ``ProcessLauncher`` that hands a task back instead of sealing its process
    when :func:`operator_can_fix` the load failure (see the module docstring).

    :param requeue: ``True`` to reject the task after a pause so RabbitMQ redelivers
        it; ``False`` to keep it unanswered (brokers that acknowledge a rejected task:
        AiiDA's ZeroMQ one), loading again after each pause for a storage failure,
        until the worker stops for a refusal
    :param profile: the profile's name, for the messages
    :param args: as ``aiida.engine.processes.launcher.ProcessLauncher``
    :param kwargs: as ``aiida.engine.processes.launcher.ProcessLauncher``
    """

    def __init__(self, *args: Any, requeue: bool, profile: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requeue = requeue
        self.profile = profile
        #: Refusals so far, per pid, in this worker.
        self.refusals: dict[Hashable, int] = {}

    @staticmethod
    def handle_continue_exception(node: Any, exception: BaseException, message: str) -> None:
        """AiiDA's: mark the node EXCEPTED and seal it; nothing for an error an operator
        can fix (:meth:`_continue` hands the task back instead).

        :param node: the ProcessNode
        :param exception: what loading its checkpoint raised
        :param message: AiiDA's log message
        """
        if operator_can_fix(exception):
            return
        ProcessLauncher.handle_continue_exception(node, exception, message)  # type: ignore[no-untyped-call]

    async def _continue(
        self, communicator: Any, pid: Hashable, nowait: bool, tag: str | None = None
    ) -> Any:
        """AiiDA's ``_continue``; a load failure :func:`operator_can_fix` is retried in
        this worker if it is the store's, then hands the task back to the broker, the
        node left unsealed.

        :param communicator: the communicator that delivered the task
        :param pid: the process's pk
        :param nowait: return once the process runs, not when it ends
        :param tag: the checkpoint tag
        :raises kiwipy.TaskRejected: after a pause, for such a failure, if ``requeue``
        :return: what AiiDA's returns
        """
        # Retried once per process in this worker: a redelivery of a task this worker
        # handed back (RabbitMQ) goes straight to the next pause.
        retries = iter(() if pid in self.refusals else RETRY_DELAYS)
        while True:
            try:
                result = await super()._continue(communicator, pid, nowait, tag)  # type: ignore[no-untyped-call]
            except Exception as error:
                if not operator_can_fix(error):
                    raise
                delay = next(retries, None) if _store_may_recover(error) else None
                if delay is not None:
                    LOGGER.warning(
                        "Process<%s>: its checkpoint could not be loaded (%s: %s); trying "
                        "again in %g s.",
                        pid,
                        type(error).__name__,
                        error,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                rejection = await self._handed_back(pid, error)
                if rejection is None:
                    continue  # held: try the store again
                raise rejection from error
            if pid in self.refusals:
                del self.refusals[pid]
                LOGGER.log(LOG_LEVEL_REPORT, "Process<%s> continued: its checkpoint loaded.", pid)
            return result

    async def _handed_back(self, pid: Hashable, error: Exception) -> kiwipy.TaskRejected | None:
        """Log why ``pid`` is not continued, then wait: the pause (``requeue``, or a
        storage failure under another broker), or until the worker stops.

        :return: the rejection to raise (``requeue``), or ``None`` to load again
        """
        attempt = self.refusals[pid] = self.refusals.get(pid, 0) + 1
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (attempt - 1))
        retry = not self.requeue and _store_may_recover(error)
        if self.requeue:
            then = f"RabbitMQ gets the task back in {delay:g} s and delivers it again"
        elif retry:
            then = (
                "the task stays with this worker, unacknowledged, and the worker tries "
                f"again in {delay:g} s (the pause doubles, up to {MAX_DELAY:g} s) until "
                "the checkpoint loads or the worker stops"
            )
        else:
            then = (
                "the task stays with this worker, unacknowledged, until the worker stops; "
                "the broker then hands it to the next worker"
            )
        message = (
            f"Process<{pid}> not continued, and left unsealed: this worker cannot load its "
            f"checkpoint (attempt {attempt}; {type(error).__name__}: {error}) "
            f"{_what_to_do(error, pid, self.profile)} Meanwhile {then}."
        )
        LOGGER.error(message)
        if attempt == 1:
            self._report(pid, message)
        if not self.requeue and not retry:
            # Never resolved: the worker's shutdown cancels it (see the module docstring).
            await asyncio.get_running_loop().create_future()
        await asyncio.sleep(delay)
        return kiwipy.TaskRejected(message) if self.requeue else None

    @staticmethod
    def _report(pid: Hashable, message: str) -> None:
        """Put ``message`` in the process's report (``verdi process report``) only: the
        node's logger would print it to the worker log a second time."""
        from aiida.common import timezone
        from aiida.orm import Log, load_node

        try:
            node = load_node(pid)
            Log(timezone.now(), LOGGER.name, "ERROR", node.pk, message, node=node).store()
        except Exception:  # a report is a courtesy; the worker log has it
            LOGGER.exception("could not add to the report of Process<%s>", pid)
