"""The listing: what a listing shows of one checkpoint, without reading its payload."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loopaware_persist._errors import ArgumentTypeError
from loopaware_persist.storage._keys import CheckpointKey, Pid, pid_token

if TYPE_CHECKING:
    from loopaware_persist._envelope import Header

__all__ = ("CheckpointInfo", "RecordInfo")


def _finite_time(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@attrs.frozen(init=False)
class CheckpointInfo:
    """What a listing shows of one checkpoint, without reading its payload.

    A storage's :meth:`~loopaware_persist.storage.Storage.list` fills the key, version,
    size and ``stored_at``; the persister's ``list_info`` adds the envelope header
    (process class, state, codec, and ``saved_at``, when the process was bundled), or why
    it could not be read.

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
        """Itself: what ``info.record`` was when the storage's part of a listing was a
        separate ``RecordInfo``.

        :returns: ``self``
        """
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
