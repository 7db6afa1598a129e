"""The storage contract, one check at a time: :func:`check_storage`."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

from loopaware_persist._errors import (
    CheckpointNotFoundError,
    EncodeError,
    StaleCheckpointError,
    StorageError,
)
from loopaware_persist.storage._base import (
    CheckpointKey,
    KeyToken,
    Pid,
    RecordInfo,
    Storage,
    pid_from_token,
)

__all__ = ("check_storage",)

from ._check import _Check, _short
from ._check_concurrency import (
    _check_concurrent_compare_and_set,
    _check_concurrent_writers,
    _check_no_torn_reads,
)

MIB = 1024 * 1024
# stored_at is the writer's clock (a database server's, for remote storages), so
# it is only checked to be a plausible "now", not compared tightly.
_CLOCK_SLACK = 600.0


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


def _expect_lost_put(c: _Check, key: CheckpointKey, expected: int, actual: int, what: str) -> None:
    """Expect a put at ``key`` expecting version ``expected`` to lose: a
    :class:`StaleCheckpointError` that names ``expected`` and the ``actual`` version."""
    err = c.raises(
        StaleCheckpointError, lambda: c.storage.put(key, b"lost", expected_version=expected), what
    )
    c.expect_equal(
        (err.expected, err.actual), (expected, actual), "StaleCheckpointError (expected, actual)"
    )


def _check_compare_and_set(c: _Check) -> None:
    s, key = c.storage, c.key("cas")
    c.expect_equal(s.put(key, b"v1", expected_version=0), 1, "put expecting 0 on absent key")
    _expect_lost_put(c, key, 0, 1, "put expecting 0 on a key at version 1")
    c.expect_equal(s.put(key, b"v2", expected_version=1), 2, "put expecting the current 1")
    _expect_lost_put(c, key, 5, 2, "put expecting 5 on a key at version 2")
    record = c.get(key, "after lost compare-and-sets")
    c.expect_equal((record.data, record.version), (b"v2", 2), "a lost CAS stores nothing")
    absent = c.key("cas-absent")
    _expect_lost_put(c, absent, 3, 0, "put expecting 3 on an absent key")
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
                isinstance(info.stored_at, float)
                and before - _CLOCK_SLACK <= info.stored_at <= after + _CLOCK_SLACK,
                f"stored_at {info.stored_at!r} of {info.key!r} is not a Unix time near now",
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
