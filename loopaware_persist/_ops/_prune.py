"""Deleting and pruning: choose the checkpoints a prune deletes, delete exactly those."""

from __future__ import annotations

from collections.abc import Iterable

from .._persister import LoopAwarePersister
from ..storage import CheckpointInfo, CheckpointKey, pid_token


def plan_prune(
    infos: Iterable[CheckpointInfo],
    *,
    keep: int | None = None,
    older_than: float | None = None,
    now: float,
    include_untagged: bool = False,
) -> list[CheckpointInfo]:
    """Choose the checkpoints a prune deletes.

    Per pid, candidates are the tagged checkpoints (and the untagged one, the checkpoint a
    restart continues from, only with ``include_untagged``), newest first by ``saved_at``.
    A candidate is deleted if it is beyond the newest ``keep`` *and* older than
    ``older_than`` seconds; a criterion not given always holds.

    :param infos: the listing to prune from
    :param keep: how many candidates to keep per pid
    :param older_than: only delete candidates saved longer ago than this, in seconds
    :param now: the current time (Unix)
    :param include_untagged: let untagged checkpoints be pruned too
    :raises ValueError: if neither criterion is given, or ``keep`` is negative
    :return: the infos to delete, in listing order
    """
    if keep is None and older_than is None:
        msg = "Say what to prune: keep=N (newest per pid) and/or older_than=SECONDS."
        raise ValueError(msg)
    if keep is not None and keep < 0:
        msg = f"keep must be >= 0, got {keep}."
        raise ValueError(msg)
    by_pid: dict[str, list[CheckpointInfo]] = {}
    ordered = list(infos)
    for info in ordered:
        if info.key.tag is None and not include_untagged:
            continue
        by_pid.setdefault(pid_token(info.key.pid), []).append(info)
    doomed: set[CheckpointKey] = set()
    for group in by_pid.values():
        group.sort(key=lambda e: (e.saved_at, e.key.tag or ""), reverse=True)
        for rank, info in enumerate(group):
            beyond = keep is None or rank >= keep
            old = older_than is None or info.saved_at < now - older_than
            if beyond and old:
                doomed.add(info.key)
    return [info for info in ordered if info.key in doomed]


def delete_keys(persister: LoopAwarePersister, keys: Iterable[CheckpointKey]) -> int:
    """Delete exactly these checkpoints (not whatever a pid gained since they were listed).

    :param persister: the store
    :param keys: what to delete
    :return: how many existed and were deleted
    """
    return sum(1 for key in keys if persister.storage.delete(key))
