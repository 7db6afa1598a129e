"""A conformance suite for storages, for this package's backends and yours.

Run it from a test with a factory that opens your storage::

    from loopaware_persist.testing import check_storage, storage_state_machine

    def test_my_storage(tmp_path):
        check_storage(lambda: open_storage(f"mydb:///{tmp_path}/db"))

    TestMyStorageMachine = storage_state_machine(lambda: ...).TestCase

:func:`check_storage` runs every contract check and raises :class:`AssertionError`
naming the first one that fails. The factory may return a new, empty store each
time (``memory://``) or reopen the same one (a directory, a database): the
checks use fresh pids of their own, so records already there do not matter.
:func:`check_storage_processes` checks concurrent writers in several
processes, which needs a URL every process can open. :func:`check_read_only`
checks that ``open_storage(url, read_only=True)`` reads what was written and
changes nothing.

The checks raise ``AssertionError`` themselves rather than using ``assert``,
so they still check under ``python -O``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import struct
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from loopaware_persist._errors import (
    CheckpointNotFoundError,
    EncodeError,
    StaleCheckpointError,
    StorageError,
)
from loopaware_persist.storage._base import (
    CheckpointKey,
    Durability,
    KeyToken,
    Pid,
    RecordInfo,
    Storage,
    StoredRecord,
    pid_from_token,
)

if TYPE_CHECKING:
    from hypothesis.stateful import RuleBasedStateMachine

__all__ = (
    "check_read_only",
    "check_storage",
    "check_storage_processes",
    "storage_state_machine",
)

_E = TypeVar("_E", bound=BaseException)
_T = TypeVar("_T")

MIB = 1024 * 1024
# saved_at is the writer's clock (a database server's, for remote storages), so
# it is only checked to be a plausible "now", not compared tightly.
_CLOCK_SLACK = 600.0
_TIMEOUT = 120.0  # for barriers and joins: a deadlock fails instead of hanging


class _Check:
    """One check's context: its storage, a namespace for pids, failure reporting."""

    def __init__(self, name: str, storage: Storage, factory: Callable[[], Storage]) -> None:
        self.name = name
        self.storage = storage
        self.factory = factory
        self.namespace = uuid.uuid4().hex[:12]

    def fail(self, detail: str) -> NoReturn:
        msg = f"check_storage: {self.name} failed on {self.storage!r}: {detail}"
        raise AssertionError(msg)

    def expect(self, condition: bool, detail: str) -> None:
        if not condition:
            self.fail(detail)

    def expect_equal(self, actual: object, expected: object, what: str) -> None:
        if actual != expected:
            self.fail(f"{what}: expected {_short(expected)}, got {_short(actual)}")

    def raises(self, exc_type: type[_E], call: Callable[[], object], what: str) -> _E:
        try:
            result = call()
        except exc_type as exc:
            return exc
        except BaseException as exc:
            self.fail(f"{what}: expected {exc_type.__name__}, got {type(exc).__name__}: {exc}")
        self.fail(f"{what}: expected {exc_type.__name__}, but it returned {_short(result)}")

    def str_pid(self, label: str) -> str:
        return f"{self.namespace}-{label}"

    def int_pid(self) -> int:
        # Random 62-bit ints: unique across checks sharing a store, and within
        # the range every SQL database stores as an integer.
        return uuid.uuid4().int >> 66

    def key(self, label: str, tag: str | None = None) -> CheckpointKey:
        return CheckpointKey(self.str_pid(label), tag)

    def get(self, key: CheckpointKey, what: str) -> StoredRecord:
        try:
            record = self.storage.get(key)
        except CheckpointNotFoundError:
            self.fail(f"{what}: get({key!r}) raised CheckpointNotFoundError")
        self.expect(
            isinstance(record, StoredRecord),
            f"{what}: get() returned {type(record)!r}, not a StoredRecord",
        )
        self.expect(
            type(record.data) is bytes, f"{what}: get().data is {type(record.data)!r}, not bytes"
        )
        self.expect_equal(record.key, key, f"{what}: get().key")
        return record


def _short(value: object) -> str:
    text = repr(value)
    if isinstance(value, (bytes, bytearray)) and len(value) > 40:
        digest = hashlib.sha256(value).hexdigest()[:12]
        text = f"<{len(value)} bytes, sha256 {digest}..., starting {bytes(value[:16])!r}>"
    return text if len(text) <= 300 else text[:300] + "..."


# -- the checks ------------------------------------------------------------------


def _check_round_trip(c: _Check) -> None:
    payloads = {
        "empty": b"",
        "nul": b"\x00",
        "all bytes": bytes(range(256)),
        "1 MiB": os.urandom(MIB),
    }
    for label, data in payloads.items():
        key = c.key(label)
        version = c.storage.put(key, data)
        c.expect_equal(version, 1, f"first put of {label} data returns version")
        record = c.get(key, f"{label} data")
        c.expect_equal(record.data, data, f"{label} data read back")
        c.expect_equal(record.version, 1, f"{label} data version")
    # A mutable buffer is copied when put, not referenced.
    buffer = bytearray(b"original")
    key = c.key("bytearray")
    c.storage.put(key, buffer)
    buffer[:] = b"mutated!"
    c.expect_equal(c.get(key, "bytearray data").data, b"original", "bytearray put then mutated")


def _check_overwrite_bumps_version(c: _Check) -> None:
    key, other = c.key("a"), c.key("b")
    for expected in (1, 2, 3):
        data = f"payload {expected}".encode()
        c.expect_equal(c.storage.put(key, data), expected, f"put #{expected} returns version")
    record = c.get(key, "after three puts")
    c.expect_equal((record.data, record.version), (b"payload 3", 3), "(data, version)")
    c.expect_equal(c.storage.put(other, b"x"), 1, "another key's first version")


def _check_versions_survive(c: _Check) -> None:
    key, other = c.key("kept"), c.key("other")
    c.storage.put(key, b"one")
    c.storage.put(key, b"two")
    c.storage.put(other, b"x")
    c.storage.delete(other)
    c.expect_equal(c.get(key, "after other keys changed").version, 2, "version")
    reopened = c.factory()
    try:
        try:
            record = reopened.get(key)
        except CheckpointNotFoundError:
            return  # a new empty store each open (memory://): nothing to survive
        c.expect_equal((record.data, record.version), (b"two", 2), "(data, version) on reopen")
        c.expect_equal(reopened.put(key, b"three"), 3, "put after reopen returns version")
    finally:
        reopened.close()


def _check_compare_and_set(c: _Check) -> None:
    s, key = c.storage, c.key("cas")
    c.expect_equal(s.put(key, b"v1", expected_version=0), 1, "put expecting 0 on absent key")
    err = c.raises(
        StaleCheckpointError,
        lambda: s.put(key, b"lost", expected_version=0),
        "put expecting 0 on a key at version 1",
    )
    c.expect_equal((err.expected, err.actual), (0, 1), "StaleCheckpointError (expected, actual)")
    c.expect_equal(s.put(key, b"v2", expected_version=1), 2, "put expecting the current 1")
    err = c.raises(
        StaleCheckpointError,
        lambda: s.put(key, b"lost", expected_version=5),
        "put expecting 5 on a key at version 2",
    )
    c.expect_equal((err.expected, err.actual), (5, 2), "StaleCheckpointError (expected, actual)")
    record = c.get(key, "after lost compare-and-sets")
    c.expect_equal((record.data, record.version), (b"v2", 2), "a lost CAS stores nothing")
    absent = c.key("cas-absent")
    err = c.raises(
        StaleCheckpointError,
        lambda: s.put(absent, b"lost", expected_version=3),
        "put expecting 3 on an absent key",
    )
    c.expect_equal((err.expected, err.actual), (3, 0), "StaleCheckpointError (expected, actual)")
    c.raises(CheckpointNotFoundError, lambda: s.get(absent), "get after a lost CAS on absent key")
    c.expect(
        all(info.key != absent for info in s.list(absent.pid)),
        "a lost CAS on an absent key must not list it",
    )


def _check_missing(c: _Check) -> None:
    s = c.storage
    key = c.key("missing", "t")
    err = c.raises(CheckpointNotFoundError, lambda: s.get(key), "get of a missing key")
    c.expect(isinstance(err, LookupError), "CheckpointNotFoundError must be a LookupError")
    c.expect(isinstance(err, StorageError), "CheckpointNotFoundError must be a StorageError")
    c.expect_equal((err.pid, err.tag), (key.pid, key.tag), "CheckpointNotFoundError (pid, tag)")
    c.expect(repr(key.pid) in str(err), f"the message {str(err)!r} should name the pid")
    c.raises(CheckpointNotFoundError, lambda: s.read_prefix(key, 4), "read_prefix of missing key")
    s.put(c.key("missing"), b"untagged")
    c.raises(
        CheckpointNotFoundError,
        lambda: s.get(c.key("missing", "other")),
        "get of a tag never stored, when the untagged record exists",
    )
    number = c.int_pid()
    s.put(CheckpointKey(number), b"int pid")
    c.raises(
        CheckpointNotFoundError,
        lambda: s.get(CheckpointKey(str(number))),
        "get with str pid '7' when only int pid 7 is stored",
    )


def _check_delete(c: _Check) -> None:
    s, key = c.storage, c.key("del", "x")
    c.expect_equal(s.delete(key), False, "delete of a missing key")
    s.put(key, b"a")
    s.put(key, b"b")
    c.expect_equal(s.delete(key), True, "delete of a stored key")
    c.raises(CheckpointNotFoundError, lambda: s.get(key), "get after delete")
    c.expect_equal(s.delete(key), False, "second delete")
    c.expect_equal(s.list(key.pid), [], "list after delete")
    c.expect_equal(s.list_key_tokens(key.pid), [], "list_key_tokens after delete")
    c.expect_equal(
        s.put(key, b"again", expected_version=0), 1, "put expecting 0 (absent) after delete"
    )


def _check_delete_pid(c: _Check) -> None:
    s = c.storage
    pid, other = c.str_pid("victim"), c.str_pid("bystander")
    for tag in (None, "", "x"):
        s.put(CheckpointKey(pid, tag), b"doomed")
    s.put(CheckpointKey(other), b"kept")
    c.expect_equal(s.delete_pid(pid), 3, "delete_pid count")
    c.expect_equal(s.list(pid), [], "list of a deleted pid")
    c.expect_equal(s.list_key_tokens(pid), [], "list_key_tokens of a deleted pid")
    c.expect_equal(s.delete_pid(pid), 0, "second delete_pid count")
    c.expect_equal(c.get(CheckpointKey(other), "other pid").data, b"kept", "other pid's data")


def _check_list(c: _Check) -> None:
    s = c.storage
    number = c.int_pid()
    pids: list[Pid] = [number, str(number), uuid.uuid4(), c.str_pid("s")]
    tags = (None, "", "x")
    before = time.time()
    expected: dict[CheckpointKey, tuple[int, int]] = {}
    for i, pid in enumerate(pids):
        for j, tag in enumerate(reversed(tags)):  # stored out of order on purpose
            key = CheckpointKey(pid, tag)
            data = bytes(i * 7 + j)
            version = s.put(key, data)
            if j == 1:
                version = s.put(key, data)
            expected[key] = (version, len(data))
    after = time.time()
    for pid in pids:
        infos = s.list(pid)
        c.expect(all(isinstance(i, RecordInfo) for i in infos), "list() must return RecordInfos")
        c.expect_equal(
            [info.key.tag for info in infos], [None, "", "x"], f"tags listed for pid {pid!r}"
        )
        for info in infos:
            c.expect(
                type(info.key.pid) is type(pid) and info.key.pid == pid,
                f"list({pid!r}) gave back pid {info.key.pid!r} of {type(info.key.pid)!r}",
            )
            c.expect_equal((info.version, info.size), expected[info.key], f"{info.key!r} listed")
            c.expect(
                isinstance(info.saved_at, float)
                and before - _CLOCK_SLACK <= info.saved_at <= after + _CLOCK_SLACK,
                f"saved_at {info.saved_at!r} of {info.key!r} is not a Unix time near now",
            )
    everything = s.list()
    keys = [info.key for info in everything]
    c.expect(len(set(keys)) == len(keys), "list() reported a key twice")
    c.expect(
        keys == sorted(keys, key=CheckpointKey.sort_key),
        "list() must be sorted by (pid token, tag with None first)",
    )
    ours = {info.key: (info.version, info.size) for info in everything if info.key in expected}
    c.expect_equal(ours, expected, "this check's records in list()")
    c.expect_equal(s.list(c.str_pid("nobody")), [], "list of a pid with no records")


def _key_tokens_of(infos: list[RecordInfo]) -> list[KeyToken]:
    return [(info.key.token, info.key.tag) for info in infos]


def _check_list_key_tokens(c: _Check) -> None:
    s = c.storage
    number = c.int_pid()
    # "k.t" and tag "x.y": a file name joins pid and tag with ".t"; "é" needs escaping.
    pids: list[Pid] = [number, str(number), uuid.uuid4(), c.str_pid("k"), c.str_pid("k.t")]
    tags = (None, "", "x", "x.y", "é")
    for pid in pids:
        for tag in reversed(tags):  # stored out of order on purpose
            s.put(CheckpointKey(pid, tag), b"record")
    for pid in pids:
        token = CheckpointKey(pid).token
        listed = s.list_key_tokens(pid)
        c.expect(
            isinstance(listed, list) and all(type(pair) is tuple for pair in listed),
            f"list_key_tokens({pid!r}) must return a list of tuples, got {_short(listed)}",
        )
        c.expect_equal(listed, [(token, tag) for tag in tags], f"list_key_tokens({pid!r})")
        c.expect_equal(listed, _key_tokens_of(s.list(pid)), f"list_key_tokens({pid!r}) vs list")
        back = pid_from_token(listed[0][0])
        c.expect(
            type(back) is type(pid) and back == pid,
            f"the token {listed[0][0]!r} gives back pid {back!r}, not {pid!r}",
        )
    everything = s.list_key_tokens()
    c.expect(len(set(everything)) == len(everything), "list_key_tokens() reported a key twice")
    c.expect(
        everything == sorted(everything, key=lambda p: (p[0], p[1] is not None, p[1] or "")),
        "list_key_tokens() must be sorted by (pid token, tag with None first)",
    )
    ours = {CheckpointKey(pid).token for pid in pids}
    c.expect_equal(
        [pair for pair in everything if pair[0] in ours],
        [pair for pair in _key_tokens_of(s.list()) if pair[0] in ours],
        "this check's keys in list_key_tokens() vs list()",
    )
    c.expect_equal(s.list_key_tokens(c.str_pid("nobody")), [], "list_key_tokens of no records")
    s.delete(CheckpointKey(pids[0], ""))
    c.expect_equal(
        s.list_key_tokens(pids[0]),
        [(CheckpointKey(pids[0]).token, tag) for tag in tags if tag != ""],
        "list_key_tokens after a delete",
    )


def _check_find_damaged(c: _Check) -> None:
    s = c.storage
    key = c.key("healthy")
    s.put(key, b"fine")
    damaged = s.find_damaged()
    c.expect(
        isinstance(damaged, list),
        f"find_damaged() must return a list, got {_short(damaged)}",
    )
    c.expect_equal(damaged, [], "find_damaged() of a store nothing outside damaged")
    c.expect_equal(s.find_damaged(key.pid), [], "find_damaged(pid) of a healthy record")
    c.expect(
        not s.read_only,
        "the storage under check reports read_only=True but accepted a put",
    )


def _check_list_metadata(c: _Check) -> None:
    # list() must not read payloads; a generic check can only hold it to
    # reporting sizes from metadata (backend tests check the I/O itself).
    s = c.storage
    big, empty = c.key("big"), c.key("empty")
    s.put(big, os.urandom(MIB))
    s.put(empty, b"")
    sizes = {info.key: info.size for info in s.list() if info.key in (big, empty)}
    c.expect_equal(sizes, {big: MIB, empty: 0}, "sizes listed")
    c.expect(not hasattr(RecordInfo, "data"), "RecordInfo must not carry data")


def _check_read_prefix(c: _Check) -> None:
    s = c.storage
    data = os.urandom(4096)
    key = c.key("prefix")
    s.put(key, data)
    for size in (0, 1, 3, 100, 4095, 4096, 4097, 10**9):
        c.expect_equal(s.read_prefix(key, size), data[:size], f"read_prefix({size})")
    empty = c.key("prefix-empty")
    s.put(empty, b"")
    c.expect_equal(s.read_prefix(empty, 10), b"", "read_prefix of an empty record")
    c.raises(ValueError, lambda: s.read_prefix(key, -1), "read_prefix(-1)")


def _awkward_keys() -> list[CheckpointKey]:
    # Fixed pids, not namespaced: the point is that a storage takes exactly
    # these. The check deletes them before and after.
    long_text = "é" * 150 + "x" * 150
    pids: list[Pid] = [
        ".",
        "..",
        "../x",
        "a/b",
        "/",
        "a\x00b",
        "\x00",
        "",
        " ",
        "ü/é",
        "日本語",
        "🙂",
        "a.b",
        "a",
        "A",
        "%2e",
        "~",
        "CON",
        long_text,
        long_text + "y",
        "x" * 300,
        "s:x",
        "i:1",
        "u:" + "0" * 32,
        -1,
        0,
        2**70,
        uuid.UUID(int=0),
    ]
    keys = [CheckpointKey(pid) for pid in pids]
    tags: list[str | None] = ["", ".", "..", "/", "a/b", "\x00", "b", "B", "b.", long_text]
    keys += [CheckpointKey("a", tag) for tag in tags]  # ("a", "b") against pid "a.b"
    keys += [CheckpointKey("a.b", ""), CheckpointKey(long_text, "b"), CheckpointKey(0, "0")]
    return keys


def _check_awkward_keys(c: _Check) -> None:
    s = c.storage
    keys = _awkward_keys()
    # Records from earlier runs with the same fixed pids would skew versions.
    for pid in {key.pid for key in keys}:
        s.delete_pid(pid)
    for i, key in enumerate(keys):
        c.expect_equal(s.put(key, f"record {i}".encode()), 1, f"first put of {key!r}")
    for i, key in enumerate(keys):
        data = c.get(key, f"awkward key {key!r}").data
        c.expect_equal(data, f"record {i}".encode(), f"data of {key!r} (keys collided?)")
    listed = {info.key for info in s.list() if info.key in set(keys)}
    c.expect_equal(len(listed), len(keys), "number of awkward keys listed")
    for key in keys[:6]:
        c.expect_equal([info.key for info in s.list(key.pid) if info.key == key], [key], "list")
    wanted = {(key.token, key.tag) for key in keys}
    c.expect_equal(
        [pair for pair in s.list_key_tokens() if pair in wanted],
        sorted(wanted, key=lambda p: (p[0], p[1] is not None, p[1] or "")),
        "awkward keys in list_key_tokens()",
    )
    for pid in {key.pid for key in keys}:
        c.expect_equal(
            s.list_key_tokens(pid),
            _key_tokens_of(s.list(pid)),
            f"list_key_tokens({pid!r}) vs list of an awkward pid",
        )
    c.expect_equal(s.delete(keys[0]), True, f"delete {keys[0]!r}")
    for i, key in enumerate(keys[1:], start=1):
        c.expect_equal(c.get(key, "after one delete").data, f"record {i}".encode(), repr(key))
    for pid in {key.pid for key in keys}:
        s.delete_pid(pid)


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


def _check_concurrent_compare_and_set(c: _Check, threads: int, puts: int) -> None:
    s, key = c.storage, c.key("counter")
    s.put(key, struct.pack(">Q", 0))

    def increment(_index: int) -> int:
        losses = 0
        for _ in range(puts):
            while True:
                record = s.get(key)
                (count,) = struct.unpack(">Q", record.data)
                try:
                    s.put(key, struct.pack(">Q", count + 1), expected_version=record.version)
                    break
                except StaleCheckpointError:
                    losses += 1
        return losses

    _run_threads(c, threads, increment)
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


def _check_input_validation(c: _Check) -> None:
    s, key = c.storage, c.key("validation")
    c.raises(TypeError, lambda: s.put(key, "text"), "put of str data")  # type: ignore[arg-type]
    c.raises(EncodeError, lambda: CheckpointKey(True), "CheckpointKey(True)")
    c.raises(EncodeError, lambda: CheckpointKey(1.5), "CheckpointKey(1.5)")  # type: ignore[arg-type]
    c.raises(EncodeError, lambda: s.list(b"pid"), "list(b'pid')")  # type: ignore[arg-type]
    c.raises(
        EncodeError,
        lambda: s.list_key_tokens(b"pid"),  # type: ignore[arg-type]
        "list_key_tokens(b'pid')",
    )
    c.raises(ValueError, lambda: s.put(key, b"", expected_version=-1), "expected_version=-1")
    c.raises(CheckpointNotFoundError, lambda: s.get(key), "get after rejected puts")


def _check_close(c: _Check) -> None:
    s, key = c.storage, c.key("close")
    s.put(key, b"x")
    c.expect(not s.closed, "a new storage must not be closed")
    s.close()
    c.expect(s.closed, "closed after close()")
    s.close()  # idempotent
    c.raises(StorageError, lambda: s.get(key), "get after close")
    c.raises(StorageError, lambda: s.put(key, b"y"), "put after close")
    c.raises(StorageError, lambda: s.list(), "list after close")
    c.raises(StorageError, lambda: s.list_key_tokens(), "list_key_tokens after close")
    with c.factory() as other:
        c.expect(isinstance(other, Storage), "the factory must return a Storage")
    c.expect(other.closed, "leaving a with block must close the storage")


def check_storage(
    factory: Callable[[], Storage], *, threads: int = 4, puts_per_thread: int = 25
) -> None:
    """Run every storage contract check against storages ``factory`` opens.

    :param factory: opens a storage; called once per check (and a few more
        times), each result is closed by the suite
    :param threads: concurrent writer threads in the concurrency checks
    :param puts_per_thread: puts each of those threads makes
    :raises AssertionError: naming the first check that failed and why
    """
    checks: list[tuple[str, Callable[[_Check], None]]] = [
        ("round trip", _check_round_trip),
        ("overwrite bumps version", _check_overwrite_bumps_version),
        ("versions survive", _check_versions_survive),
        ("compare-and-set", _check_compare_and_set),
        ("missing keys", _check_missing),
        ("delete", _check_delete),
        ("delete_pid", _check_delete_pid),
        ("list", _check_list),
        ("list_key_tokens", _check_list_key_tokens),
        ("find_damaged", _check_find_damaged),
        ("list metadata", _check_list_metadata),
        ("read_prefix", _check_read_prefix),
        ("awkward keys", _check_awkward_keys),
        ("concurrent writers", lambda c: _check_concurrent_writers(c, threads, puts_per_thread)),
        (
            "concurrent compare-and-set",
            lambda c: _check_concurrent_compare_and_set(c, threads, puts_per_thread),
        ),
        ("no torn reads", lambda c: _check_no_torn_reads(c, 4 * puts_per_thread)),
        ("input validation", _check_input_validation),
        ("close", _check_close),
    ]
    for name, check in checks:
        storage = factory()
        try:
            check(_Check(name, storage, factory))
        except (AssertionError, KeyboardInterrupt):
            raise
        except Exception as exc:
            msg = f"check_storage: {name} failed on {storage!r}: {type(exc).__name__}: {exc}"
            raise AssertionError(msg) from exc
        finally:
            storage.close()


# -- several processes -------------------------------------------------------------


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


# -- a hypothesis state machine ------------------------------------------------------


def storage_state_machine(factory: Callable[[], Storage]) -> type[RuleBasedStateMachine]:
    """A hypothesis state machine checking a storage against a dict model.

    Each example opens a storage with ``factory``, clears a fixed set of pids,
    then runs random put / compare-and-set put / get / read_prefix / delete /
    delete_pid / list / list_key_tokens steps, comparing every answer with the
    model. The pids
    it uses are fixed, so no one else may write them to that store meanwhile.
    Needs hypothesis installed.

    :param factory: opens the storage under test
    :return: a ``RuleBasedStateMachine`` subclass; run it with
        ``run_state_machine_as_test`` or expose its ``TestCase`` to pytest
    """
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, rule

    pids: tuple[Pid, ...] = (
        0,
        7,
        "7",
        "..",
        "a/b",
        "a.b",
        "a",
        uuid.UUID(int=7),
        f"machine-{uuid.uuid4().hex}",
    )
    tokens = {CheckpointKey(pid).token for pid in pids}
    keys = st.builds(CheckpointKey, st.sampled_from(pids), st.sampled_from((None, "", "b", "x/y")))
    payloads = st.binary(max_size=64)

    def expect(condition: bool, detail: str) -> None:
        if not condition:
            msg = f"storage_state_machine: {detail}"
            raise AssertionError(msg)

    class StorageMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.storage = factory()
            for pid in pids:
                self.storage.delete_pid(pid)
            self.model: dict[CheckpointKey, tuple[bytes, int]] = {}

        def version(self, key: CheckpointKey) -> int:
            return self.model[key][1] if key in self.model else 0

        @rule(key=keys, data=payloads)
        def put(self, key: CheckpointKey, data: bytes) -> None:
            version = self.storage.put(key, data)
            expect(version == self.version(key) + 1, f"put({key!r}) returned {version}")
            self.model[key] = (data, version)

        @rule(key=keys, data=payloads, expected=st.integers(0, 3))
        def put_if(self, key: CheckpointKey, data: bytes, expected: int) -> None:
            current = self.version(key)
            try:
                version = self.storage.put(key, data, expected_version=expected)
            except StaleCheckpointError as exc:
                expect(expected != current, f"put expecting the current {current} failed")
                expect(exc.actual == current, f"StaleCheckpointError.actual {exc.actual}")
                return
            expect(expected == current, f"put expecting {expected} succeeded at {current}")
            expect(version == current + 1, f"put_if({key!r}) returned {version}")
            self.model[key] = (data, version)

        @rule(key=keys)
        def get(self, key: CheckpointKey) -> None:
            try:
                record = self.storage.get(key)
            except CheckpointNotFoundError:
                expect(key not in self.model, f"get({key!r}) found nothing")
                return
            expect(key in self.model, f"get({key!r}) found a deleted record")
            expect(
                (record.data, record.version) == self.model[key],
                f"get({key!r}) gave {(record.data, record.version)}, not {self.model[key]}",
            )

        @rule(key=keys, size=st.integers(0, 80))
        def read_prefix(self, key: CheckpointKey, size: int) -> None:
            try:
                data = self.storage.read_prefix(key, size)
            except CheckpointNotFoundError:
                expect(key not in self.model, f"read_prefix({key!r}) found nothing")
                return
            expect(key in self.model, f"read_prefix({key!r}) found a deleted record")
            expect(data == self.model[key][0][:size], f"read_prefix({key!r}, {size})")

        @rule(key=keys)
        def delete(self, key: CheckpointKey) -> None:
            deleted = self.storage.delete(key)
            expect(deleted == (key in self.model), f"delete({key!r}) returned {deleted}")
            self.model.pop(key, None)

        @rule(pid=st.sampled_from(pids))
        def delete_pid(self, pid: Pid) -> None:
            doomed = [key for key in self.model if key.token == CheckpointKey(pid).token]
            count = self.storage.delete_pid(pid)
            expect(count == len(doomed), f"delete_pid({pid!r}) returned {count}")
            for key in doomed:
                del self.model[key]

        @rule(pid=st.one_of(st.none(), st.sampled_from(pids)))
        def list_records(self, pid: Pid | None) -> None:
            listed = [
                (info.key, info.version, info.size)
                for info in self.storage.list(pid)
                if info.key.token in tokens
            ]
            wanted = sorted(
                (
                    (key, version, len(data))
                    for key, (data, version) in self.model.items()
                    if pid is None or key.token == CheckpointKey(pid).token
                ),
                key=lambda item: item[0].sort_key(),
            )
            expect(listed == wanted, f"list({pid!r}) gave {listed}, expected {wanted}")

        @rule(pid=st.one_of(st.none(), st.sampled_from(pids)))
        def list_key_tokens(self, pid: Pid | None) -> None:
            listed = [pair for pair in self.storage.list_key_tokens(pid) if pair[0] in tokens]
            wanted = [
                (key.token, key.tag)
                for key in sorted(self.model, key=CheckpointKey.sort_key)
                if pid is None or key.token == CheckpointKey(pid).token
            ]
            expect(listed == wanted, f"list_key_tokens({pid!r}) gave {listed}, expected {wanted}")

        def teardown(self) -> None:
            self.storage.close()

    return StorageMachine


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
