"""Listing: the checkpoints of a store as their headers describe them, filtered."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .._persister import CheckpointInfo, LoopAwarePersister
from ..storage import CheckpointKey, pid_token
from ._common import pid_matches


@attrs.frozen(kw_only=True)
class Entry:
    """One checkpoint as a listing shows it (header only, no payload read).

    :param info: the persister's listing entry
    """

    info: CheckpointInfo

    @property
    def key(self) -> CheckpointKey:
        """:return: where it is stored"""
        return self.info.record.key

    @property
    def meta(self) -> Mapping[str, Any]:
        """:return: the header meta (empty if the header is damaged)"""
        return self.info.header.meta if self.info.header is not None else {}

    @property
    def process_class(self) -> str | None:
        """:return: ``module:qualname`` of the process, as its header says"""
        value = self.meta.get("process_class")
        return value if isinstance(value, str) else None

    @property
    def state(self) -> str | None:
        """:return: the process state label, ``"damaged"`` if the header is unreadable"""
        if self.info.error is not None:
            return "damaged"
        value = self.meta.get("state")
        return value if isinstance(value, str) else None

    @property
    def saved_at(self) -> float:
        """When the process was checkpointed: the header's ``saved_at``, which survives a
        convert, else when the storage stored the record.

        :return: a Unix timestamp
        """
        value = self.meta.get("saved_at")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return self.info.record.saved_at

    def as_dict(self) -> dict[str, Any]:
        """:return: a JSON-ready summary (``saved_at`` as above, ``stored_at`` the storage's)"""
        out = self.info.as_dict()
        out["pid_token"] = pid_token(self.key.pid)
        out["state"] = self.state
        out["stored_at"] = self.info.record.saved_at
        out["saved_at"] = self.saved_at
        return out


def _class_matches(name: str | None, patterns: Sequence[str]) -> bool:
    if name is None:
        return False
    short = name.rpartition(":")[2]
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(short, pattern):
                return True
        elif pattern in (name, short):
            return True
    return False


def list_entries(
    persister: LoopAwarePersister,
    *,
    pids: Sequence[str] = (),
    states: Sequence[str] = (),
    classes: Sequence[str] = (),
) -> list[Entry]:
    """List checkpoints from their headers, filtered.

    Within one filter any value matches; across filters all must.

    :param persister: the store
    :param pids: pids as typed (``str(pid)`` or a token such as ``i:7``)
    :param states: state labels (``waiting``, ``excepted``...; ``damaged`` for unreadable headers)
    :param classes: process classes: ``module:Name``, ``Name``, or a glob (``myapp.*``)
    :return: the entries, in key order
    """
    wanted_states = {state.lower() for state in states}
    entries = []
    for info in persister.list_info():
        entry = Entry(info=info)
        if pids and not any(pid_matches(entry.key.pid, text) for text in pids):
            continue
        if wanted_states and (entry.state or "").lower() not in wanted_states:
            continue
        if classes and not _class_matches(entry.process_class, classes):
            continue
        entries.append(entry)
    return entries
