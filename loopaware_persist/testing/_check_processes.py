"""Writers in several processes: :func:`check_storage_processes`."""

from __future__ import annotations

import multiprocessing
import os
import traceback
import uuid
from typing import Any

from loopaware_persist.storage._base import (
    CheckpointKey,
    Durability,
)

__all__ = ("check_storage_processes",)

from ._check import _TIMEOUT


def _process_writer(
    url: str,
    durability: Durability,
    key: CheckpointKey,
    puts: int,
    barrier: Any,
    results: Any,
) -> None:
    from loopaware_persist.storage import open_storage

    try:
        with open_storage(url, durability=durability) as storage:
            barrier.wait(_TIMEOUT)
            versions = [storage.put(key, f"{os.getpid()}:{n}".encode()) for n in range(puts)]
        results.put(("ok", versions))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def check_storage_processes(
    url: str,
    *,
    durability: Durability = "normal",
    processes: int = 4,
    puts_per_process: int = 50,
    start_method: str = "spawn",
) -> None:
    """Check that writers in several processes never lose or repeat a version.

    Each process opens ``url`` itself and puts to one key; together they must
    get back versions ``1..processes * puts_per_process``, each exactly once.

    :param url: a storage URL every process can open (not ``memory://``)
    :param durability: passed to :func:`~loopaware_persist.storage.open_storage`
    :param processes: how many processes write at once
    :param puts_per_process: puts each makes
    :param start_method: ``"spawn"`` or ``"forkserver"`` (``"fork"`` works but
        copies the parent's threads' state)
    :raises AssertionError: if versions were lost or repeated, or a writer failed
    """
    from loopaware_persist.storage import open_storage

    # Any: typeshed types get_context(str) as BaseContext, which lacks Process.
    context: Any = multiprocessing.get_context(start_method)
    key = CheckpointKey(uuid.uuid4(), "processes")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(
            target=_process_writer,
            args=(url, durability, key, puts_per_process, barrier, results),
            daemon=True,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=_TIMEOUT) for _ in workers]
    finally:
        for worker in workers:
            worker.join(_TIMEOUT)
            if worker.is_alive():
                worker.kill()
                worker.join()
        results.close()
        results.join_thread()
    for worker in workers:
        worker.close()
    where = f"check_storage_processes on {url!r}"
    errors = [detail for status, detail in outcomes if status != "ok"]
    if errors:
        msg = f"{where}: a writer process failed:\n{errors[0]}"
        raise AssertionError(msg)
    versions = sorted(v for _, detail in outcomes for v in detail)
    total = processes * puts_per_process
    if versions != list(range(1, total + 1)):
        missing = sorted(set(range(1, total + 1)) - set(versions))
        msg = f"{where}: puts returned lost or repeated versions; missing {missing[:10]}"
        raise AssertionError(msg)
    with open_storage(url, durability=durability) as storage:
        final = storage.get(key).version
        storage.delete(key)
    if final != total:
        msg = f"{where}: final version {final}, expected {total}"
        raise AssertionError(msg)
