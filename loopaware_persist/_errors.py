"""The one error tree of loopaware_persist, its one warning, and its one stand-in.

Every error this package raises is a :class:`LoopAwarePersistError`, which is a
:class:`plumpy.PersistenceError`, so plumpy and AiiDA code that already catches
persistence failures keeps working. Each leaf also subclasses the builtin that
callers of the operation would naturally catch::

    plumpy.PersistenceError
    └── LoopAwarePersistError
        ├── ArgumentTypeError (TypeError)      a public call got an argument of the wrong type
        ├── ConfigurationError (ValueError)    an unknown codec, compression or storage scheme
        ├── EncodeError (TypeError)            a value cannot be stored
        ├── DecodeError (ValueError)           stored bytes cannot be turned back
        │   ├── CorruptCheckpointError         damaged, truncated or foreign bytes
        │   │   └── CorruptStoredRecordError   damaged below the envelope (also a StorageError)
        │   ├── UnknownTagError                a type tag no registry here knows
        │   └── UnsafeCheckpointError          names code outside the allow-list
        ├── NoEventLoopError (RuntimeError)    no usable loop to restore onto
        ├── LoopBoundaryError (RuntimeError)   a future bound to the wrong loop
        ├── UnlinkedAwaitableError (LookupError)
        │                                      a loaded WorkChain awaits what nothing completes
        ├── OpsError                           an operator command cannot proceed
        └── StorageError                       the store failed
            ├── CheckpointNotFoundError (LookupError)
            ├── StaleCheckpointError           another writer saved first
            ├── DurabilityError (OSError)      a write/fsync/replace failed
            ├── BackendUnavailableError (ConnectionError)
            └── FencedError                    a worker stopped a process (see FenceReason)
                ├── StaleFencedError           (also a StaleCheckpointError)
                ├── UnavailableFencedError     (also a BackendUnavailableError)
                └── ShutdownFencedError        the worker is stopping

    UserWarning
    └── UnsafeLoadWarning                      a codec or persister that runs what it loads

    Exception
    └── ForeignException                       not raised: the value a stored exception of
                                               a class outside the allow-list loads as

The codecs' internal signals (``codecs._paths``: ``NestingError``, ``SharedValueError``)
are ``EncodeError`` subclasses that never reach a caller: each becomes an
:class:`EncodeError` naming the path before the codec returns.

Context rides on attributes (``path``, ``tag``, ``pid``...) as well as in the
message, which always says what went wrong, where, and what to do about it.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Sequence
from typing import Any

from plumpy import PersistenceError

__all__ = (
    "ArgumentTypeError",
    "BackendUnavailableError",
    "CheckpointNotFoundError",
    "ConfigurationError",
    "CorruptCheckpointError",
    "CorruptStoredRecordError",
    "DecodeError",
    "DurabilityError",
    "EncodeError",
    "FenceReason",
    "FencedError",
    "ForeignException",
    "LoopAwarePersistError",
    "LoopBoundaryError",
    "NoEventLoopError",
    "OpsError",
    "ShutdownFencedError",
    "StaleCheckpointError",
    "StaleFencedError",
    "StorageError",
    "UnavailableFencedError",
    "UnknownTagError",
    "UnlinkedAwaitableError",
    "UnsafeCheckpointError",
    "UnsafeLoadWarning",
)


class LoopAwarePersistError(PersistenceError):
    """Base of every error raised by loopaware_persist."""


class ArgumentTypeError(LoopAwarePersistError, TypeError):
    """A public function or method was called with an argument of the wrong type.

    Raised before anything is read, written or scheduled, so nothing changed.

    :ivar argument: the parameter's name, e.g. ``loop``
    """

    def __init__(self, msg: str, *, argument: str = "") -> None:
        super().__init__(msg)
        self.argument = argument


class ConfigurationError(LoopAwarePersistError, ValueError):
    """An option names something not available here: a codec, a compression or a storage
    URL scheme. Raised when the persister, codec or storage is opened, never at the first
    save.

    :ivar option: which option, e.g. ``compression``
    :ivar value: what it was set to
    """

    def __init__(self, msg: str, *, option: str = "", value: object = None) -> None:
        super().__init__(msg)
        self.option = option
        self.value = value


class EncodeError(LoopAwarePersistError, TypeError):
    """A value in a bundle cannot be encoded.

    :ivar path: where in the bundle the value sits, e.g. ``_state.ctx['x'][3]``
    """

    def __init__(self, msg: str, *, path: str = "") -> None:
        super().__init__(msg)
        self.path = path


class DecodeError(LoopAwarePersistError, ValueError):
    """Stored bytes cannot be decoded back into a bundle."""


class CorruptCheckpointError(DecodeError):
    """A record is damaged: truncated, bit-flipped, spliced, or not a record at all."""


class UnknownTagError(DecodeError):
    """A record carries a type tag that the registry in use does not know.

    :ivar tag: the unknown tag
    """

    def __init__(self, msg: str, *, tag: str = "") -> None:
        super().__init__(msg)
        self.tag = tag


class UnsafeCheckpointError(DecodeError):
    """A record names a class or callable that a safe load may not import or run.

    :ivar name: the ``module:qualname`` (or module) the record asked for
    """

    def __init__(self, msg: str, *, name: str = "") -> None:
        super().__init__(msg)
        self.name = name


class NoEventLoopError(LoopAwarePersistError, RuntimeError):
    """No usable event loop: none was given, none is running, or the one given is closed."""


class LoopBoundaryError(LoopAwarePersistError, RuntimeError):
    """Futures in a restored object graph belong to a loop other than the target.

    :ivar paths: the path of each foreign future in the graph
    """

    def __init__(self, msg: str, *, paths: Sequence[str] = ()) -> None:
        super().__init__(msg)
        self.paths = tuple(paths)


class UnlinkedAwaitableError(LoopAwarePersistError, LookupError):
    """A loaded WorkChain awaits a pending future that nothing here can complete.

    Raised by ``load_process`` when the future belongs to no known process (a plain
    future, or a child that was never saved or loaded through a persister before
    the parent's save) or when its child's checkpoint is not in the store. Without
    this error the WorkChain would wait forever. Pass ``relink=`` to
    ``load_process`` to supply a future to wait for instead.

    :ivar pid: the waiting process's pid
    :ivar key: the context key the future was to fill
    :ivar owner: the pid of the child process it belongs to, or ``None``
    """

    def __init__(
        self, msg: str, *, pid: Hashable = None, key: Any = None, owner: Hashable | None = None
    ) -> None:
        super().__init__(msg)
        self.pid = pid
        self.key = key
        self.owner = owner


class StorageError(LoopAwarePersistError):
    """The storage backend failed to read, write, list or delete a record."""


class CorruptStoredRecordError(CorruptCheckpointError, StorageError):
    """A backend found stored bytes damaged below the envelope (a file's own header, a
    SQLite page): a :class:`CorruptCheckpointError` like every other damaged record, and
    a :class:`StorageError` like every other backend failure."""


class CheckpointNotFoundError(StorageError, LookupError):
    """No checkpoint is stored under the given pid and tag.

    :ivar pid: the process id asked for
    :ivar tag: the checkpoint tag asked for (``None`` for the untagged one)
    """

    def __init__(self, msg: str, *, pid: Hashable = None, tag: str | None = None) -> None:
        super().__init__(msg)
        self.pid = pid
        self.tag = tag


class StaleCheckpointError(StorageError):
    """A compare-and-set save lost: another writer saved a newer version first.

    :ivar expected: the version the writer expected to replace
    :ivar actual: the version actually stored (0 when none is)
    """

    def __init__(self, msg: str, *, expected: int | None = None, actual: int | None = None) -> None:
        super().__init__(msg)
        self.expected = expected
        self.actual = actual


class DurabilityError(StorageError, OSError):
    """A write, flush, fsync or rename failed; the previous record is untouched."""


class BackendUnavailableError(StorageError, ConnectionError):
    """The storage server could not be reached after bounded retries."""


class OpsError(LoopAwarePersistError):
    """An operator command cannot proceed: no such store, an ambiguous pid, a refused source."""


class UnsafeLoadWarning(UserWarning):
    """Emitted when a codec is created that runs whatever a checkpoint says on load."""


class ForeignException(Exception):
    """Stand-in for a stored exception whose class a safe load may not import.

    The original class is never imported; its name and message survive. Not an error
    this package raises: a value, found where the original exception was stored.

    :param type_name: ``module:QualName`` of the original exception class
    :param message: ``str()`` of the original exception
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


class FenceReason(enum.StrEnum):
    """Why a :class:`FencedError` stopped a process."""

    #: another worker saved the process's checkpoint after this one loaded it
    STALE = "stale"
    #: the store could not be reached, so the process could not checkpoint
    UNAVAILABLE = "unavailable"
    #: the worker is shutting down
    SHUTDOWN = "shutdown"


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
