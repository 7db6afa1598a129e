"""Concurrent writers and readers of one storage: no lost update, no torn read."""

from __future__ import annotations

import concurrent.futures
import hashlib
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from loopaware_persist._errors import StaleCheckpointError
from loopaware_persist.storage._base import CheckpointKey, Storage

from ._check import _TIMEOUT, _Check

_T = TypeVar("_T")


def _run_threads(c: _Check, count: int, work: Callable[[int], _T]) -> list[_T]:
    barrier = threading.Barrier(count, timeout=_TIMEOUT)

    def start(index: int) -> _T:
        barrier.wait()  # all threads hit the storage at once
        return work(index)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start, i) for i in range(count)]
        results = []
        for future in futures:
            try:
                results.append(future.result(timeout=_TIMEOUT))
            except AssertionError:
                raise
            except Exception as exc:
                c.fail(f"a writer thread raised {type(exc).__name__}: {exc}")
    return results


def _check_concurrent_writers(c: _Check, threads: int, puts: int) -> None:
    s, key = c.storage, c.key("contended")

    def write(index: int) -> list[int]:
        return [s.put(key, f"{index}:{n}".encode()) for n in range(puts)]

    versions = sorted(v for result in _run_threads(c, threads, write) for v in result)
    total = threads * puts
    c.expect_equal(versions, list(range(1, total + 1)), "the versions the puts returned")
    c.expect_equal(c.get(key, "after concurrent puts").version, total, "final version")


def increment_by_compare_and_set(storage: Storage, key: CheckpointKey, times: int) -> int:
    """Add one to the big-endian counter stored at ``key``, ``times`` times, each by a
    read and a compare-and-set put retried until no other writer got there first.

    :returns: how many puts lost to another writer (and were retried)
    """
    losses = 0
    for _ in range(times):
        while True:
            record = storage.get(key)
            (count,) = struct.unpack(">Q", record.data)
            try:
                storage.put(key, struct.pack(">Q", count + 1), expected_version=record.version)
                break
            except StaleCheckpointError:
                losses += 1
    return losses


def _check_concurrent_compare_and_set(c: _Check, threads: int, puts: int) -> None:
    s, key = c.storage, c.key("counter")
    s.put(key, struct.pack(">Q", 0))

    _run_threads(c, threads, lambda _index: increment_by_compare_and_set(s, key, puts))
    record = c.get(key, "after concurrent compare-and-set increments")
    total = threads * puts
    c.expect_equal(struct.unpack(">Q", record.data)[0], total, "counter (lost updates?)")
    c.expect_equal(record.version, total + 1, "final version")


def _self_checking_payload(n: int) -> bytes:
    body = hashlib.sha256(str(n).encode()).digest() * (1000 + 997 * (n % 5))
    return struct.pack(">Q", n) + body + hashlib.sha256(body).digest()


def _payload_ok(data: bytes) -> bool:
    if len(data) < 40:
        return False
    (n,) = struct.unpack_from(">Q", data)
    return data == _self_checking_payload(n)


def _check_no_torn_reads(c: _Check, puts: int) -> None:
    s, key = c.storage, c.key("torn")
    s.put(key, _self_checking_payload(0))
    done = threading.Event()

    def writer() -> None:
        try:
            for n in range(1, puts + 1):
                s.put(key, _self_checking_payload(n))
        finally:
            done.set()

    def reader() -> int:
        reads, last = 0, 0
        while True:
            finished = done.is_set()  # read once more after the writer is done
            record = s.get(key)
            if not _payload_ok(record.data):
                c.fail(f"read a torn or mixed record at version {record.version}")
            if record.version < last:
                c.fail(f"version went back from {last} to {record.version}")
            last = record.version
            if key not in {info.key for info in s.list(key.pid)}:
                c.fail("list() lost the record while it was being rewritten")
            reads += 1
            if finished:
                return reads

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        reading = pool.submit(reader)
        writing = pool.submit(writer)
        writing.result(timeout=_TIMEOUT)
        reading.result(timeout=_TIMEOUT)
    c.expect_equal(c.get(key, "after rewrites").version, puts + 1, "final version")
