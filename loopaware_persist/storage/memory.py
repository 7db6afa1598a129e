"""``memory://``: records in a dict, for tests and short-lived processes.

``memory://`` opens a new, empty store every time. ``memory://name`` opens the
store called ``name``, shared by every storage opened with that URL in this
process until it exits, so a test can reopen "the same" store. Nothing survives
the process, whatever the durability.
"""

from __future__ import annotations

import builtins
import threading
import time
import urllib.parse

import attrs

from loopaware_persist._errors import StorageError
from loopaware_persist.storage._base import (
    CheckpointKey,
    Durability,
    KeyToken,
    Pid,
    RecordInfo,
    Storage,
    StoredRecord,
    pid_token,
)

__all__ = ("MemoryStorage", "open_storage")


@attrs.frozen(kw_only=True)
class _Entry:
    data: bytes
    version: int
    saved_at: float


class _Store:
    """The records, shared by the storages opened on one ``memory://name``."""

    def __init__(self) -> None:
        # One lock for every operation: a dict is not safe to iterate (list())
        # while another thread writes it, and put must read-compare-write the
        # version as one step.
        self.lock = threading.Lock()
        self.entries: dict[CheckpointKey, _Entry] = {}


_named_stores: dict[str, _Store] = {}
_named_stores_lock = threading.Lock()


class MemoryStorage(Storage):
    """Records kept in this process's memory; thread-safe.

    :param url: ``memory://`` or ``memory://name``
    :param durability: accepted for interface parity; memory is never durable
    """

    def __init__(
        self, url: str = "memory://", *, durability: Durability = "normal", read_only: bool = False
    ) -> None:
        super().__init__(url=url, durability=durability)
        self.read_only = bool(read_only)
        name = _parse_url(url)
        if name:
            with _named_stores_lock:
                self._store = _named_stores.setdefault(name, _Store())
        else:
            self._store = _Store()

    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        store = self._store
        with store.lock:
            old = store.entries.get(key)
            current = 0 if old is None else old.version
            if expected_version is not None and expected_version != current:
                raise self._stale(key, expected=expected_version, actual=current)
            # bytes are immutable and the base class copied any mutable buffer,
            # so holding the object itself is already a private copy.
            store.entries[key] = _Entry(data=data, version=current + 1, saved_at=time.time())
            return current + 1

    def _lookup(self, key: CheckpointKey) -> _Entry:
        with self._store.lock:
            entry = self._store.entries.get(key)
        if entry is None:
            raise self._not_found(key)
        return entry

    def _get(self, key: CheckpointKey) -> StoredRecord:
        entry = self._lookup(key)
        return StoredRecord(key=key, data=entry.data, version=entry.version)

    def _read_prefix(self, key: CheckpointKey, size: int) -> bytes:
        return self._lookup(key).data[:size]

    def _delete(self, key: CheckpointKey) -> bool:
        with self._store.lock:
            return self._store.entries.pop(key, None) is not None

    def _delete_pid(self, pid: Pid) -> int:
        token = pid_token(pid)
        with self._store.lock:
            doomed = [key for key in self._store.entries if key.token == token]
            for key in doomed:
                del self._store.entries[key]
        return len(doomed)

    def _list(self, pid: Pid | None) -> builtins.list[RecordInfo]:
        # Tokens, not ==, select a pid, as in every backend: 1 and "1" differ.
        token = None if pid is None else pid_token(pid)
        with self._store.lock:
            items = list(self._store.entries.items())
        return [
            RecordInfo(key=key, version=e.version, size=len(e.data), saved_at=e.saved_at)
            for key, e in items
            if token is None or key.token == token
        ]

    def _list_key_tokens(self, pid: Pid | None) -> builtins.list[KeyToken]:
        with self._store.lock:
            keys = list(self._store.entries)
        if pid is None:
            return [(key.token, key.tag) for key in keys]
        token = pid_token(pid)
        return [(token, key.tag) for key in keys if key.token == token]

    def _close(self) -> None:
        # A named store outlives its handles (that is its point); an anonymous
        # one is dropped with this object.
        pass


def _parse_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if (
        parts.scheme.lower() != "memory"
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        msg = f"Invalid memory storage URL {url!r}. Use 'memory://' or 'memory://name'."
        raise StorageError(msg)
    return urllib.parse.unquote(parts.netloc)


def open_storage(
    url: str, *, durability: Durability = "normal", read_only: bool = False
) -> MemoryStorage:
    """Open a ``memory://`` storage.

    :param url: ``memory://`` (a new store) or ``memory://name`` (a shared one)
    :param durability: ``"normal"`` or ``"full"``; memory is never durable
    :param read_only: refuse every write
    :raises StorageError: if the URL is not a memory URL
    :return: the storage
    """
    return MemoryStorage(url, durability=durability, read_only=read_only)
