"""The read-only contract: :func:`check_read_only`."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from loopaware_persist._errors import StorageError
from loopaware_persist.storage._base import CheckpointKey

__all__ = ("check_read_only",)


def check_read_only(url: str, *, missing_url: str | None = None) -> None:
    """Check the read-only contract of the storage at ``url``.

    Writes a record through a writable open, then opens the URL with
    ``read_only=True``: it must list and read the record, refuse ``put``,
    ``delete`` and ``delete_pid`` with :class:`StorageError`, and leave the
    record as it was. With ``missing_url`` (a URL naming no store), a
    read-only open of it must raise :class:`StorageError` and create nothing
    that a second read-only open would find.

    :param url: a URL that ``open_storage`` opens for writing (not ``memory://``)
    :param missing_url: a URL where no store is, or ``None`` to skip that check
    :raises AssertionError: naming the first broken promise
    """
    from loopaware_persist.storage import open_storage

    key = CheckpointKey(f"read-only-check-{uuid.uuid4().hex}")
    with open_storage(url) as writable:
        version = writable.put(key, b"written")
    with open_storage(url, read_only=True) as store:
        if not store.read_only:
            msg = f"{store!r}: read_only is False after open_storage(read_only=True)"
            raise AssertionError(msg)
        if store.get(key).data != b"written":
            msg = f"{store!r}: a read-only open does not read what was written"
            raise AssertionError(msg)
        if key not in [info.key for info in store.list(key.pid)]:
            msg = f"{store!r}: a read-only open does not list what was written"
            raise AssertionError(msg)
        writes: tuple[tuple[str, Callable[[], object]], ...] = (
            ("put", lambda: store.put(key, b"changed")),
            ("delete", lambda: store.delete(key)),
            ("delete_pid", lambda: store.delete_pid(key.pid)),
        )
        for name, write in writes:
            try:
                write()
            except StorageError:
                continue
            msg = f"{store!r}: {name} on a read-only open did not raise StorageError"
            raise AssertionError(msg)
    with open_storage(url) as writable:
        record = writable.get(key)
        if (record.data, record.version) != (b"written", version):
            msg = f"{url!r}: the record changed while the store was open read-only"
            raise AssertionError(msg)
        writable.delete(key)
    if missing_url is None:
        return
    for attempt in ("first", "second"):
        try:
            open_storage(missing_url, read_only=True).close()
        except StorageError:
            continue
        msg = f"the {attempt} read-only open of {missing_url!r}, where no store is, did not raise"
        raise AssertionError(msg)
