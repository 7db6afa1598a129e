"""Listing: the checkpoints of a store as their headers describe them, filtered."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from .._persister import LoopAwarePersister
from ..storage import CheckpointInfo
from ._common import pid_matches


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


def list_checkpoints(
    persister: LoopAwarePersister,
    *,
    pids: Sequence[str] = (),
    states: Sequence[str] = (),
    classes: Sequence[str] = (),
) -> list[CheckpointInfo]:
    """List checkpoints from their headers, filtered.

    Within one filter any value matches; across filters all must.

    :param persister: the store
    :param pids: pids as typed (``str(pid)`` or a token such as ``i:7``)
    :param states: state labels (``waiting``, ``excepted``...; ``damaged`` for unreadable headers)
    :param classes: process classes: ``module:Name``, ``Name``, or a glob (``myapp.*``)
    :return: the infos, in key order
    """
    wanted_states = {state.lower() for state in states}
    infos = []
    for info in persister.list_info():
        if pids and not any(pid_matches(info.key.pid, text) for text in pids):
            continue
        if wanted_states and (info.state or "").lower() not in wanted_states:
            continue
        if classes and not _class_matches(info.process_class, classes):
            continue
        infos.append(info)
    return infos
