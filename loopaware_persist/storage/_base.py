"""The storage contract: keys, records and the :class:`Storage` base class.

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
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, TypeVar

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
from loopaware_persist._uuid import uuid_from_int

if TYPE_CHECKING:
    from loopaware_persist._envelope import Header

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


#: What a process id may be: plumpy uses UUIDs, AiiDA uses ints, tests use strings.
Pid: TypeAlias = int | str | uuid.UUID

#: A stored key as :meth:`Storage.list_key_tokens` reports it: ``(pid token, tag)``,
#: the token being :func:`pid_token` of the pid (turn it back with
#: :func:`pid_from_token`) and the tag ``None`` for the untagged checkpoint.
KeyToken: TypeAlias = tuple[str, str | None]

#: ``"normal"`` survives a process crash; ``"full"`` also survives power loss
#: (fsync before :meth:`Storage.put` returns).
Durability: TypeAlias = Literal["normal", "full"]

_S = TypeVar("_S", bound="Storage")

_DURABILITIES: tuple[Durability, ...] = ("normal", "full")

# Canonical decimal only, so that every int has exactly one token ("i:012",
# "i:+1" and "i:1_0" would otherwise all decode to ints that have another one).
_INT_TOKEN = re.compile(r"-?[1-9][0-9]*|0", re.ASCII)
_UUID_TOKEN = re.compile(r"[0-9a-f]{32}", re.ASCII)


def _describe_accepted() -> str:
    return "Use an int (not a bool), a str or a uuid.UUID"


def _check_text(value: str, *, what: str) -> None:
    # Backends store keys as UTF-8 (file names, SQLite TEXT, PostgreSQL text);
    # a lone surrogate cannot be encoded there, so refuse it up front, the same
    # way for every backend, instead of failing halfway through a write.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = (
            f"The checkpoint {what} {value!r} is not valid Unicode (it contains a lone "
            f"surrogate at index {exc.start}), so no storage can keep it. "
            f"Decode it with errors='replace' or use another {what}."
        )
        raise EncodeError(msg) from None


def _validate_pid(_instance: object, _attribute: object, pid: Any) -> None:
    if isinstance(pid, bool) or not isinstance(pid, (int, str, uuid.UUID)):
        msg = (
            f"Unsupported checkpoint pid type {type(pid)!r} ({pid!r}). "
            f"{_describe_accepted()} as the process id."
        )
        raise EncodeError(msg)
    if isinstance(pid, str):
        _check_text(pid, what="pid")


def _validate_tag(_instance: object, _attribute: object, tag: Any) -> None:
    if tag is not None and not isinstance(tag, str):
        msg = f"Unsupported checkpoint tag type {type(tag)!r} ({tag!r}). Use a str or None."
        raise EncodeError(msg)
    if tag is not None:
        _check_text(tag, what="tag")


@attrs.frozen
class CheckpointKey:
    """Where a checkpoint lives: a process id and an optional tag.

    ``CheckpointKey(12)``, ``CheckpointKey("12")`` and ``CheckpointKey(12, "")``
    are three different keys: pids keep their type and ``None`` is not ``""``.

    :param pid: the process id; an ``int`` (``bool`` is refused), ``str`` or
        :class:`uuid.UUID`
    :param tag: the checkpoint tag, ``None`` for the untagged checkpoint
    :raises EncodeError: if the pid or tag has an unsupported type or is not
        valid Unicode
    """

    pid: Pid = attrs.field(validator=_validate_pid)
    tag: str | None = attrs.field(default=None, validator=_validate_tag)
    # Every backend needs the token (file names, SQL parameters, sorting), so
    # it is computed once; it is a function of pid, hence left out of eq/hash.
    _token: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_token", pid_token(self.pid))

    @classmethod
    def _from_storage(cls, token: str, tag: str | None) -> CheckpointKey:
        """Rebuild a key read back from a backend, skipping validation.

        Listing thousands of records builds thousands of keys; those read back
        are valid by construction (``pid_from_token`` checked the token, and
        text decoded from UTF-8 holds no lone surrogate).

        :param token: a pid token as stored
        :param tag: the tag as stored
        :raises StorageError: if ``token`` is malformed
        :return: the key
        """
        key = object.__new__(cls)
        object.__setattr__(key, "pid", pid_from_token(token))
        object.__setattr__(key, "tag", tag)
        object.__setattr__(key, "_token", token)
        return key

    @property
    def token(self) -> str:
        """The pid's typed text token, see :func:`pid_token`."""
        return self._token

    def sort_key(self) -> tuple[str, int, str]:
        """The order every :meth:`Storage.list` returns: pid token, then tag, ``None`` first.

        :return: a tuple that sorts keys deterministically across pid types
        """
        tag = self.tag
        return (self._token, 0 if tag is None else 1, tag or "")


def pid_token(pid: Pid) -> str:
    """Turn a pid into a typed text token: ``"i:12"``, ``"u:<32 hex>"`` or ``"s:<text>"``.

    The mapping is injective (``12`` and ``"12"`` differ) and reversed by
    :func:`pid_from_token`, so listings give back pids with their original type.

    :param pid: an ``int``, ``str`` or :class:`uuid.UUID`
    :raises EncodeError: if ``pid`` has another type (``bool`` included)
    :return: the token
    """
    if isinstance(pid, bool):
        pass  # falls through to the error below: True is not the pid 1
    elif isinstance(pid, int):
        try:
            # int() first: an IntEnum's str() would be its name, not its value.
            return f"i:{int(pid)}"
        except ValueError as exc:  # beyond sys.get_int_max_str_digits()
            msg = f"The int pid is too large to store ({exc}). Use a str or uuid.UUID pid."
            raise EncodeError(msg) from None
    elif isinstance(pid, str):
        return f"s:{pid}"
    elif isinstance(pid, uuid.UUID):
        return f"u:{pid.hex}"
    msg = f"Unsupported checkpoint pid type {type(pid)!r} ({pid!r}). {_describe_accepted()}."
    raise EncodeError(msg)


def pid_from_token(token: str) -> Pid:
    """Reverse :func:`pid_token`.

    :param token: a token written by :func:`pid_token`
    :raises StorageError: if ``token`` is not one (stored keys are damaged or
        were written by something else)
    :return: the pid, with its original type
    """
    kind, sep, rest = token.partition(":")
    if sep:
        if kind == "s":
            return rest
        if kind == "i" and _INT_TOKEN.fullmatch(rest):
            return int(rest)
        if kind == "u" and _UUID_TOKEN.fullmatch(rest):
            return uuid_from_int(int(rest, 16))  # UUID(hex=) would re-parse what we checked
    msg = (
        f"Malformed pid token {token!r} in storage: expected 'i:<int>', 'u:<32 hex digits>' "
        f"or 's:<text>'. The stored key was damaged or written by another program; "
        f"remove that record."
    )
    raise StorageError(msg)


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


def _finite_time(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@attrs.frozen(init=False)
class CheckpointInfo:
    """What a listing shows of one checkpoint, without reading its payload.

    A storage's :meth:`Storage.list` fills the key, version, size and ``stored_at``;
    the persister's ``list_info`` adds the envelope header (process class, state,
    codec, and ``saved_at``, when the process was bundled), or why it could not be read.

    :param key: where it is stored
    :param version: its version, 1 for the first put of the key
    :param size: the length of its record in bytes
    :param stored_at: when the store wrote the record, as a Unix timestamp (the writer's
        clock; the database server's for a remote store)
    :param header: its envelope header; ``None`` from a storage, or if it is damaged
    :param error: why the header could not be read, if it could not
    :param saved_at: the former name of ``stored_at`` (``RecordInfo(saved_at=...)``),
        still accepted
    """

    key: CheckpointKey
    version: int
    size: int
    stored_at: float
    header: Header | None = None
    error: str | None = None

    def __init__(
        self,
        *,
        key: CheckpointKey,
        version: int,
        size: int,
        stored_at: float | None = None,
        header: Header | None = None,
        error: str | None = None,
        saved_at: float | None = None,
    ) -> None:
        when = stored_at if saved_at is None else saved_at
        if when is None or (stored_at is not None and saved_at is not None):
            msg = (
                "CheckpointInfo() takes stored_at (or its former name saved_at), once: "
                "when the store wrote the record, as a Unix timestamp."
            )
            raise ArgumentTypeError(msg, argument="stored_at")
        self.__attrs_init__(
            key=key, version=version, size=size, stored_at=when, header=header, error=error
        )

    @property
    def pid(self) -> Pid:
        """:return: the process id"""
        return self.key.pid

    @property
    def tag(self) -> str | None:
        """:return: the checkpoint tag"""
        return self.key.tag

    @property
    def record(self) -> CheckpointInfo:
        """:return: itself: what ``info.record`` was when the storage's part of a listing
        was a separate ``RecordInfo``"""
        return self

    @property
    def meta(self) -> Mapping[str, Any]:
        """:return: the header meta (empty without a header)"""
        return self.header.meta if self.header is not None else {}

    @property
    def process_class(self) -> str | None:
        """:return: ``module:qualname`` of the process, as its header says"""
        value = self.meta.get("process_class")
        return value if isinstance(value, str) else None

    @property
    def state(self) -> str | None:
        """:return: the process state label, ``"damaged"`` if the header is unreadable"""
        if self.error is not None:
            return "damaged"
        value = self.meta.get("state")
        return value if isinstance(value, str) else None

    @property
    def saved_at(self) -> float:
        """When the process was bundled: the header's ``saved_at``, which survives a
        convert; without one (a storage's listing, a damaged header), ``stored_at``.

        :return: a Unix timestamp
        """
        found = _finite_time(self.meta.get("saved_at"))
        return self.stored_at if found is None else found

    def as_dict(self) -> dict[str, Any]:
        """:return: a JSON-ready summary; ``saved_at`` and ``stored_at`` as above"""
        return {
            "pid": str(self.pid),
            "tag": self.tag,
            "process_class": self.meta.get("process_class"),
            "state": self.state,
            "size": self.size,
            "codec": self.header.codec if self.header is not None else None,
            "compression": self.header.compression if self.header is not None else None,
            "version": self.version,
            "saved_at": self.saved_at,
            "error": self.error,
            "pid_token": pid_token(self.pid),
            "stored_at": self.stored_at,
        }


#: The storage's part of a listing; the same class as :class:`CheckpointInfo`.
RecordInfo = CheckpointInfo


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
