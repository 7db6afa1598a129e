"""The storage contract: the :class:`Storage` base class and what it returns.

Keys are defined in :mod:`._keys` and the listing in :mod:`._listing`; both are
re-exported here, where backends import them.

A storage keeps opaque ``bytes`` under a :class:`CheckpointKey` (a process id
plus an optional tag) and gives each key a version that starts at 1 and grows
by one on every :meth:`Storage.put`. It never looks inside the bytes: encoding
and checksums belong to the envelope layer above it.

Backends subclass :class:`Storage` and implement the underscore hooks
(``_put``, ``_get``...). The public methods validate arguments and the
open/closed state once, here, so every backend rejects bad input the same way
and :func:`loopaware_persist.testing.check_storage` can hold them all to one
contract.
"""

from __future__ import annotations

import abc
import builtins
import os
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal, Protocol, TypeAlias, TypeVar

import attrs

from loopaware_persist._errors import (
    ArgumentTypeError,
    CheckpointNotFoundError,
    ConfigurationError,
    CorruptStoredRecordError,
    EncodeError,
    StaleCheckpointError,
    StorageError,
)
from loopaware_persist.storage._keys import (
    CheckpointKey as CheckpointKey,
    KeyToken as KeyToken,
    Pid as Pid,
    pid_from_token as pid_from_token,
    pid_token as pid_token,
)
from loopaware_persist.storage._listing import (
    CheckpointInfo as CheckpointInfo,
    RecordInfo as RecordInfo,
)

__all__ = (
    "CheckpointInfo",
    "CheckpointKey",
    "CorruptStoredRecordError",
    "Durability",
    "KeyToken",
    "Pid",
    "RecordInfo",
    "Storage",
    "StorageFactory",
    "StoredRecord",
    "pid_from_token",
    "pid_token",
)


#: ``"normal"`` survives a process crash; ``"full"`` also survives power loss
#: (fsync before :meth:`Storage.put` returns).
Durability: TypeAlias = Literal["normal", "full"]

_S = TypeVar("_S", bound="Storage")

_DURABILITIES: tuple[Durability, ...] = ("normal", "full")


@attrs.frozen(kw_only=True)
class StoredRecord:
    """A record read back by :meth:`Storage.get`.

    :param key: where it is stored
    :param data: the stored bytes, exactly as put
    :param version: its version, 1 for the first put of the key
    """

    key: CheckpointKey
    data: bytes
    version: int


class StorageFactory(Protocol):
    """How a backend is opened; the value an entry point in
    ``loopaware_persist.storages`` must name.

    A factory that can open its store read-only also takes a keyword
    ``read_only: bool = False`` (create, migrate, lock and write nothing; refuse
    a missing store); ``open_storage(url, read_only=True)`` refuses a factory
    without it rather than risk a write. A factory whose store can be missing
    (a file, a directory) also takes ``create: bool = True``: with ``False`` it
    refuses a missing store instead of creating it.

    A backend module may also define ``local_path(url) -> str | None``: the file or
    directory its store lives in, for :func:`loopaware_persist.storage.local_path`.
    """

    def __call__(self, url: str, /, *, durability: Durability) -> Storage:
        """Open the storage at ``url``.

        :param url: the storage URL, whose scheme chose this factory
        :param durability: ``"normal"`` or ``"full"``
        :return: an open storage
        """
        ...


def check_durability(durability: object) -> Durability:
    """Validate a ``durability=`` argument.

    :param durability: the value given
    :raises ArgumentTypeError: if it is not a str
    :raises ConfigurationError: if it is not ``"normal"`` or ``"full"`` (as an unknown
        codec, compression or scheme is)
    :return: the value, typed
    """
    if not isinstance(durability, str):
        msg = (
            f"open_storage() takes 'normal' or 'full' as durability, got "
            f"{type(durability).__qualname__} ({durability!r:.60}). Pass durability='full' to "
            "fsync every save."
        )
        raise ArgumentTypeError(msg, argument="durability")
    for known in _DURABILITIES:
        if durability == known:
            return known
    msg = f"Unknown durability {durability!r}. Use 'normal' or 'full'."
    raise ConfigurationError(msg, option="durability", value=durability)


class Storage(abc.ABC):
    """Where checkpoint records live.

    The contract every backend keeps, and
    :func:`loopaware_persist.testing.check_storage` checks:

    * :meth:`put` is atomic: a concurrent reader sees the old record or the new
      one, never a mix, and a failed put leaves the old record untouched.
    * Versions start at 1 and every put adds one, so with ``expected_version``
      a put is a compare-and-set. A deleted key is absent again (version 0).
    * With ``durability="full"`` a record is on stable storage when
      :meth:`put` returns.
    * It is safe under concurrent writers from several threads (sharing one
      storage object) and several processes (each opening the same URL).
    * :meth:`list` never reads record data. :meth:`list_key_tokens` reports
      the same keys as :meth:`list`, in the same order, unless a record was
      damaged outside the storage.
    * Every failure of the backend is a :class:`StorageError`; after
      :meth:`close` every operation raises one.

    :ivar url: the URL it was opened with
    :ivar durability: ``"normal"`` or ``"full"``
    """

    url: str
    durability: Durability
    #: Whether it was opened read-only (writes raise :class:`StorageError`).
    read_only: bool = False

    def __init__(self, *, url: str, durability: Durability) -> None:
        """:param url: the URL it was opened with
        :param durability: ``"normal"`` or ``"full"``
        :raises StorageError: if ``durability`` is neither
        """
        self.url = url
        self.durability = check_durability(durability)
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self.url!r} durability={self.durability!r}{state}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- public API: validation lives here, backends implement the hooks ------

    def put(
        self,
        key: CheckpointKey,
        data: bytes | bytearray | memoryview,
        *,
        expected_version: int | None = None,
    ) -> int:
        """Store ``data`` under ``key``, replacing any record there, atomically.

        :param key: where to store it
        :param data: the bytes (any bytes-like object; a copy is stored)
        :param expected_version: if given, store only if the current version
            is this one (0 when the key is absent)
        :raises EncodeError: if an argument has the wrong type
        :raises ValueError: if ``expected_version`` is negative
        :raises StaleCheckpointError: if ``expected_version`` is given and is not
            the current version; nothing is stored
        :raises DurabilityError: if the write failed; the old record is intact
        :raises StorageError: if the storage failed otherwise, is closed or read-only
        :return: the new version
        """
        self._check_open("put")
        self._check_writable("put")
        key = _check_key(key)
        payload = _check_data(data)
        expected = _check_expected_version(expected_version)
        return self._put(key, payload, expected_version=expected)

    def get(self, key: CheckpointKey) -> StoredRecord:
        """Read the record stored under ``key``.

        :param key: where it is stored
        :raises CheckpointNotFoundError: if nothing is stored there
        :raises StorageError: if the storage failed or is closed
        :return: the record
        """
        self._check_open("get")
        return self._get(_check_key(key))

    def read_prefix(self, key: CheckpointKey, size: int) -> bytes:
        """Read the first ``size`` bytes of a record's data, not the rest.

        Enough to inspect an envelope header without loading a large payload.

        :param key: where it is stored
        :param size: how many bytes at most
        :raises CheckpointNotFoundError: if nothing is stored there
        :raises EncodeError: if ``size`` is not an int
        :raises ValueError: if ``size`` is negative
        :raises StorageError: if the storage failed or is closed
        :return: ``data[:size]``
        """
        self._check_open("read_prefix")
        key = _check_key(key)
        if isinstance(size, bool) or not isinstance(size, int):
            msg = f"read_prefix size must be an int, got {type(size)!r} ({size!r})."
            raise EncodeError(msg)
        if size < 0:
            msg = f"read_prefix size must be >= 0, got {size}."
            raise ValueError(msg)
        return self._read_prefix(key, size)

    def delete(self, key: CheckpointKey) -> bool:
        """Delete the record under ``key``, if there is one.

        :param key: where it is stored
        :raises DurabilityError: if the removal failed
        :raises StorageError: if the storage failed otherwise or is closed
        :return: whether a record was deleted
        """
        self._check_open("delete")
        self._check_writable("delete")
        return self._delete(_check_key(key))

    def delete_pid(self, pid: Pid) -> int:
        """Delete every record of a process, whatever its tag.

        :param pid: the process id
        :raises EncodeError: if ``pid`` has an unsupported type
        :raises DurabilityError: if a removal failed
        :raises StorageError: if the storage failed otherwise or is closed
        :return: how many records were deleted
        """
        self._check_open("delete_pid")
        self._check_writable("delete_pid")
        return self._delete_pid(CheckpointKey(pid).pid)

    def list(self, pid: Pid | None = None) -> builtins.list[RecordInfo]:
        """Describe the stored records without reading their data.

        :param pid: only this process's records; ``None`` for all
        :raises EncodeError: if ``pid`` has an unsupported type
        :raises StorageError: if the storage failed or is closed
        :return: the records, sorted by :meth:`CheckpointKey.sort_key`
        """
        self._check_open("list")
        if pid is not None:
            pid = CheckpointKey(pid).pid
        infos = self._list(pid)
        infos.sort(key=lambda info: info.key.sort_key())
        return infos

    def list_key_tokens(self, pid: Pid | None = None) -> builtins.list[KeyToken]:
        """List the stored keys only, as ``(pid token, tag)`` pairs: the cheap listing.

        The keys :meth:`list` reports, in the same order, but without
        versions, sizes and times, and without building a
        :class:`CheckpointKey` (nor parsing a pid) per record: the built-in
        backends answer from an index (SQL ``SELECT pid, tag``, file names)
        and read no record. Turn a token into its pid with
        :func:`pid_from_token`, once per distinct token; like :meth:`list`, it
        raises :class:`StorageError` for a token damaged in storage.

        Where :meth:`list` reads each record's header (``file:``), a record
        damaged inside is skipped there but listed here; :meth:`get` reports
        the damage.

        :param pid: only this process's keys; ``None`` for all
        :raises EncodeError: if ``pid`` has an unsupported type
        :raises StorageError: if the storage failed or is closed
        :return: the keys, sorted by pid token, then tag with ``None`` first
            (the order of :meth:`CheckpointKey.sort_key`)
        """
        self._check_open("list_key_tokens")
        if pid is not None:
            pid = CheckpointKey(pid).pid
        tokens = self._list_key_tokens(pid)
        try:
            # Tuples compare in C; for a sorted answer (an SQL index order) this is
            # one pass. It only fails when one pid has both a None and a str tag.
            tokens.sort()
        except TypeError:
            tokens.sort(key=_key_token_order)
        return tokens

    def find_damaged(self, pid: Pid | None = None) -> builtins.list[CorruptStoredRecordError]:
        """The damaged records :meth:`list` skips, each as the error reading it raises.

        A listing goes on past a record damaged outside the storage (a file
        whose header is torn, a SQL row whose columns hold the wrong types, a
        FIFO named like a checkpoint) and logs a warning; an operator's
        ``verify`` asks here to report every one of them.

        :param pid: only this process's records; ``None`` for all
        :raises EncodeError: if ``pid`` has an unsupported type
        :raises StorageError: if the storage failed or is closed
        :return: one :class:`CorruptStoredRecordError` per damaged record, saying where
        """
        self._check_open("find_damaged")
        if pid is not None:
            pid = CheckpointKey(pid).pid
        return self._find_damaged(pid)

    def close(self) -> None:
        """Release the storage's resources. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- hooks for backends ---------------------------------------------------

    @abc.abstractmethod
    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        """Implement :meth:`put`; arguments are validated, ``data`` is ``bytes``."""

    @abc.abstractmethod
    def _get(self, key: CheckpointKey) -> StoredRecord:
        """Implement :meth:`get`."""

    @abc.abstractmethod
    def _read_prefix(self, key: CheckpointKey, size: int) -> bytes:
        """Implement :meth:`read_prefix`; ``size`` is a non-negative int."""

    @abc.abstractmethod
    def _delete(self, key: CheckpointKey) -> bool:
        """Implement :meth:`delete`."""

    @abc.abstractmethod
    def _delete_pid(self, pid: Pid) -> int:
        """Implement :meth:`delete_pid`; ``pid`` is valid."""

    @abc.abstractmethod
    def _list(self, pid: Pid | None) -> builtins.list[RecordInfo]:
        """Implement :meth:`list`, in any order (the caller sorts)."""

    def _list_key_tokens(self, pid: Pid | None) -> builtins.list[KeyToken]:
        """Implement :meth:`list_key_tokens`, in any order (the caller sorts).

        The default derives the keys from :meth:`list`, so every storage has
        the method; a backend that can list keys without building
        :class:`RecordInfo` objects overrides it.

        :param pid: a valid pid, or ``None`` for all
        :return: ``(pid token, tag)`` for each stored record
        """
        return [(info.key.token, info.key.tag) for info in self.list(pid)]

    def _find_damaged(self, pid: Pid | None) -> builtins.list[CorruptStoredRecordError]:
        """Implement :meth:`find_damaged`; the default: a storage that never skips.

        :param pid: a valid pid, or ``None`` for all
        :return: the damaged records :meth:`_list` skipped
        """
        return []

    @abc.abstractmethod
    def _close(self) -> None:
        """Implement :meth:`close`; called once."""

    # -- helpers for backends -------------------------------------------------

    def _check_open(self, operation: str) -> None:
        if self._closed:
            msg = (
                f"Cannot {operation}: the storage {self.url!r} is closed. "
                f"Open it again with open_storage({self.url!r})."
            )
            raise StorageError(msg)

    def _check_writable(self, operation: str) -> None:
        if self.read_only:
            msg = (
                f"Cannot {operation}: {self.url!r} was opened read-only. Open it without "
                f"read_only=True to change it."
            )
            raise StorageError(msg)

    def _not_found(self, key: CheckpointKey) -> CheckpointNotFoundError:
        """Build the error for a missing record.

        :param key: the key asked for
        :return: the error, to raise
        """
        msg = (
            f"No checkpoint for pid {key.pid!r} with tag {key.tag!r} in {self.url!r}. "
            f"Check the pid and tag, or call list() to see what is stored."
        )
        return CheckpointNotFoundError(msg, pid=key.pid, tag=key.tag)

    def _stale(self, key: CheckpointKey, *, expected: int, actual: int) -> StaleCheckpointError:
        """Build the error for a lost compare-and-set.

        :param key: the key written
        :param expected: the version the writer expected
        :param actual: the version stored (0 when absent)
        :return: the error, to raise
        """
        msg = (
            f"Checkpoint for pid {key.pid!r} with tag {key.tag!r} in {self.url!r} is at "
            f"version {actual}, not the expected {expected}: another writer saved first. "
            f"Nothing was stored; reload the checkpoint and retry."
        )
        return StaleCheckpointError(msg, expected=expected, actual=actual)


def _key_token_order(pair: KeyToken) -> tuple[str, bool, str]:
    # CheckpointKey.sort_key for a (token, tag) pair: None sorts before every tag.
    token, tag = pair
    return (token, tag is not None, tag or "")


def _check_key(key: object) -> CheckpointKey:
    if not isinstance(key, CheckpointKey):
        msg = f"Expected a CheckpointKey, got {type(key)!r} ({key!r}). Use CheckpointKey(pid, tag)."
        raise EncodeError(msg)
    return key


def _check_data(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        # Copy now: the caller may mutate its buffer while a backend writes it.
        return bytes(data)
    msg = f"Storage data must be bytes, got {type(data)!r}. Encode it first (see get_codec())."
    raise EncodeError(msg)


def _check_expected_version(expected: object) -> int | None:
    if expected is None:
        return None
    if isinstance(expected, bool) or not isinstance(expected, int):
        msg = f"expected_version must be None or an int, got {type(expected)!r} ({expected!r})."
        raise EncodeError(msg)
    if expected < 0:
        msg = f"expected_version must be >= 0 (0 meaning 'absent'), got {expected}."
        raise ValueError(msg)
    return expected


def check_store_exists(url: str, path: str, *, directory: bool, reading: bool = True) -> None:
    """Refuse to open a store that is not there, for reading or with ``create=False``.

    :param url: the store's URL, for the message
    :param path: where the store's directory (or file) should be
    :param directory: whether the store is a directory (else a file)
    :param reading: whether the store is opened read-only (else for writing, without
        creating it); it only changes the message
    :raises StorageError: if ``path`` does not exist or is not of that kind
    """
    if os.path.isdir(path) if directory else os.path.isfile(path):
        return
    kind = "a directory" if directory else "a file"
    what = "does not exist" if not os.path.exists(path) else f"is not {kind}"
    msg = (
        f"No checkpoint store at {url!r}: {path} {what}. "
        f"{'Reading creates nothing' if reading else 'Nothing was created'}; check the URL "
        f"(--store, LOOPAWARE_PERSIST_STORE)."
    )
    raise StorageError(msg)


def read_rows(
    rows: Iterable[Any], row_info: Callable[[Any], RecordInfo]
) -> tuple[builtins.list[RecordInfo], builtins.list[CorruptStoredRecordError]]:
    """Read each stored row on its own: one damaged row must not hide the healthy ones.

    :param rows: a database's rows
    :param row_info: what a row says, or :class:`CorruptStoredRecordError`
    :return: the rows that read, and the errors of those that did not
    """
    infos, damaged = [], []
    for row in rows:
        try:
            infos.append(row_info(row))
        except CorruptStoredRecordError as exc:
            damaged.append(exc)
    return infos, damaged
