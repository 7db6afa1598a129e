"""Fencing: checkpoint every transition, compare-and-set by version, stop the loser.

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
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Hashable, Iterable
from typing import Any

import plumpy
from plumpy.base.state_machine import StateEventHook

from ._arguments import (
    check_allow,
    check_flag,
    check_instance,
    check_optional_loop,
    check_process,
)
from ._errors import (
    BackendUnavailableError,
    CorruptCheckpointError,
    FencedError,
    ShutdownFencedError,
    StaleCheckpointError,
    StaleFencedError,
    UnavailableFencedError,
)
from ._loop import LoopContext
from ._persister import LoopAwarePersister
from ._relink import RelinkHook
from .codecs import check_codec_name
from .storage import CheckpointKey, open_storage

__all__ = ("FencingPersister", "open_fencing_persister")

_LOGGER = logging.getLogger(__name__)

#: Stale-fence marks a persister keeps before it empties its table (see stale_mark()).
_STALE_MARKS_KEPT = 4096


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
        claim: bool = True,
        **extra: Any,
    ) -> plumpy.Process:
        """Load a process, claim it by saving it at the next version, and watch it.

        :param pid: the process id
        :param tag: optional tag (a tagged load is not watched)
        :param loop: the target loop
        :param relink: see :meth:`LoopAwarePersister.load_process`
        :param claim: ``False`` only reads it, as :meth:`LoopAwarePersister.load_process`
            does: nothing is saved and it is not watched (a worker reads the outcome
            of a process another worker finished this way)
        :param extra: more ``LoadSaveContext`` entries
        :raises FencedError: if another worker saved it between our read and our claim,
            or the store went down in between
        :raises CorruptCheckpointError: if the checkpoint holds something other than a process
        :raises ArgumentTypeError: if ``loop`` is neither an event loop nor ``None``, or
            ``claim`` not a bool
        :return: the process
        """
        check_flag(claim, call="load_process()", argument="claim")
        if not claim:
            return super().load_process(pid, tag, loop=loop, relink=relink, **extra)
        check_optional_loop(loop, call="load_process()")
        key = CheckpointKey(pid=pid, tag=tag)  # type: ignore[arg-type]
        record = self.storage.get(key)
        process = self._load_record(record.data, key, LoopContext(loop=loop), **extra)
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
