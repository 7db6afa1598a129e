"""The keys-only listing: ``Storage.list_key_tokens`` and the persister's
``get_checkpoints``/``get_process_checkpoints`` built on it.

It must give back exactly what the full listing (``Storage.list``) gives, pids
with their types and tags with ``None`` apart from ``""``, in the same order,
without reading records; damaged keys fail or are skipped as the full listing
does. The PostgreSQL cases need ``LOOPAWARE_TEST_POSTGRES_URL``; they skip without it.
"""

from __future__ import annotations

import builtins
import enum
import logging
import os
import pathlib
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from plumpy.persistence import PersistedCheckpoint

from loopaware_persist import (
    CorruptStoredRecordError,
    EncodeError,
    LoopAwarePersister,
    StorageError,
)
from loopaware_persist.storage import (
    CheckpointKey,
    KeyToken,
    Pid,
    RecordInfo,
    Storage,
    open_storage,
    pid_token,
)
from loopaware_persist.storage.file import FileIO, FileStorage, checkpoint_filename
from loopaware_persist.storage.memory import MemoryStorage
from loopaware_persist.testing import check_storage
from tests import axes

# Every pid type, and text that needs escaping in a file name or sorts awkwardly.
PIDS: tuple[Pid, ...] = (
    0,
    -12,
    2**70,
    "12",
    "",
    "a.b",
    "A/ü\x00",
    "s:x",
    "x" * 300,
    uuid.UUID(int=0),
    uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100"),
)
TAGS: tuple[str | None, ...] = (None, "", "t", "x.y", "日本", "z" * 300)


def _pg_url(schema: str) -> str:
    return axes.postgres_schema_url(axes.postgres_url(), schema)


def _pg_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(axes.postgres_url(), autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    pytest.importorskip("psycopg")
    with axes.postgres_schema(axes.postgres_url(), "lap_lst") as name:
        yield name


@pytest.fixture(params=axes.STORAGES)
def url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[str]:
    with axes.store_url(request.param, tmp_path, "listing") as store:
        yield store


@pytest.fixture
def storage(url: str) -> Iterator[Storage]:
    with open_storage(url) as opened:
        yield opened


def _pairs(infos: list[RecordInfo]) -> list[KeyToken]:
    return [(info.key.token, info.key.tag) for info in infos]


def _fill(storage: Storage, pids: tuple[Pid, ...] = PIDS) -> set[CheckpointKey]:
    keys = {CheckpointKey(pid, tag) for pid in pids for tag in TAGS}
    for key in sorted(keys, key=lambda k: repr(k), reverse=True):  # not in listing order
        storage.put(key, b"record")
    return keys


def test_key_tokens_are_the_full_listing_without_metadata(storage: Storage) -> None:
    keys = _fill(storage)
    listed = storage.list_key_tokens()
    assert listed == _pairs(storage.list())
    assert set(listed) == {(key.token, key.tag) for key in keys}
    for pid in PIDS:
        assert storage.list_key_tokens(pid) == _pairs(storage.list(pid))
        assert [tag for _, tag in storage.list_key_tokens(pid)] == [
            None,
            "",
            "t",
            "x.y",
            "z" * 300,
            "日本",
        ]
    assert storage.list_key_tokens("nobody") == []


def test_persister_listing_matches_the_full_listing(storage: Storage) -> None:
    keys = _fill(storage)
    persister = LoopAwarePersister(storage)
    expected = [PersistedCheckpoint(i.key.pid, i.key.tag) for i in storage.list()]
    for _ in range(2):  # the second call answers from the pid memo
        listed = persister.get_checkpoints()
        assert listed == expected
        assert [type(c.pid) for c in listed] == [type(c.pid) for c in expected]
        assert all(type(c) is PersistedCheckpoint for c in listed)
    assert set(listed) == {PersistedCheckpoint(key.pid, key.tag) for key in keys}
    for pid in PIDS:
        mine = persister.get_process_checkpoints(pid)
        assert mine == [PersistedCheckpoint(i.key.pid, i.key.tag) for i in storage.list(pid)]
        assert {type(c.pid) for c in mine} == {type(pid)}
    # 12 and "12" are two processes; so are 0 and uuid.UUID(int=0).
    assert {c.tag for c in persister.get_process_checkpoints(12)} == set()
    assert len(persister.get_process_checkpoints("12")) == len(TAGS)


def test_listing_after_deletes(storage: Storage) -> None:
    _fill(storage)
    persister = LoopAwarePersister(storage)
    persister.get_checkpoints()
    storage.delete(CheckpointKey(0, ""))
    storage.delete_pid("a.b")
    listed = persister.get_checkpoints()
    assert listed == [PersistedCheckpoint(i.key.pid, i.key.tag) for i in storage.list()]
    assert PersistedCheckpoint(0, "") not in listed
    assert not [c for c in listed if c.pid == "a.b"]
    assert persister.get_process_checkpoints("a.b") == []


class Number(enum.IntEnum):
    SEVEN = 7


def test_an_int_subclass_pid_lists_as_a_plain_int() -> None:
    with LoopAwarePersister(MemoryStorage()) as persister:
        persister.storage.put(CheckpointKey(Number.SEVEN), b"x")
        ((pid, tag),) = persister.get_process_checkpoints(Number.SEVEN)
        assert (type(pid), pid, tag) == (int, 7, None)
        ((pid, _),) = persister.get_checkpoints()
        assert type(pid) is int


def test_the_pid_memo_is_shared_and_bounded() -> None:
    storage = MemoryStorage()
    persister = LoopAwarePersister(storage)
    pids = [uuid.uuid4() for _ in range(1500)]
    for pid in pids:
        storage.put(CheckpointKey(pid), b"x")
    first = persister.get_checkpoints()
    second = persister.get_checkpoints()
    assert all(a.pid is b.pid for a, b in zip(first, second, strict=True))
    # One process's listing leaves the memo of the full listing alone.
    persister.get_process_checkpoints(uuid.uuid4())
    assert len(persister._pids) == len(pids)
    for pid in pids[:-1]:
        storage.delete_pid(pid)
    assert persister.get_checkpoints() == [PersistedCheckpoint(pids[-1], None)]
    assert len(persister._pids) == 1  # mostly deleted: the memo was rebuilt


class _DefaultKeys(MemoryStorage):
    """A storage written before list_key_tokens existed: only the ABC's default."""

    _list_key_tokens = Storage._list_key_tokens


class _ListOverridden(MemoryStorage):
    """A storage overriding the public list() only (it hides one pid)."""

    _list_key_tokens = Storage._list_key_tokens

    def list(self, pid: Any = None) -> builtins.list[RecordInfo]:
        return [info for info in super().list(pid) if info.key.pid != "hidden"]


def test_a_storage_with_only_the_abc_default_keeps_working() -> None:
    check_storage(_DefaultKeys, threads=2, puts_per_thread=5)
    storage = _DefaultKeys()
    keys = _fill(storage)
    assert storage.list_key_tokens() == _pairs(storage.list())
    persister = LoopAwarePersister(storage)
    assert set(persister.get_checkpoints()) == {PersistedCheckpoint(k.pid, k.tag) for k in keys}


def test_the_default_derives_from_the_public_list() -> None:
    storage = _ListOverridden()
    storage.put(CheckpointKey("hidden"), b"x")
    storage.put(CheckpointKey("shown"), b"x")
    assert storage.list_key_tokens() == [(pid_token("shown"), None)]


class _Reversed(MemoryStorage):
    def _list_key_tokens(self, pid: Pid | None) -> builtins.list[KeyToken]:
        pairs = super()._list_key_tokens(pid)
        pairs.sort(key=lambda p: (p[0], p[1] is not None, p[1] or ""), reverse=True)
        return pairs


def test_an_unsorted_answer_is_sorted_even_with_none_and_str_tags_for_one_pid() -> None:
    storage = _Reversed()
    keys = _fill(storage)
    assert storage.list_key_tokens() == _pairs(storage.list())
    assert len(storage.list_key_tokens()) == len(keys)


def test_closed_and_bad_arguments(storage: Storage) -> None:
    with pytest.raises(EncodeError):
        storage.list_key_tokens(1.5)  # type: ignore[arg-type]
    storage.close()
    with pytest.raises(StorageError, match=r"Cannot list_key_tokens: the storage .* is closed"):
        storage.list_key_tokens()


# -- file: names, not files -----------------------------------------------------------


class CountingIO(FileIO):
    def __init__(self) -> None:
        self.opened: list[str] = []

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        self.opened.append(os.path.basename(path))
        return super().open(path, flags, mode)


def test_file_listing_opens_no_file_but_hashed_ones(tmp_path: pathlib.Path) -> None:
    io = CountingIO()
    with FileStorage(tmp_path.as_uri(), io=io) as storage:
        keys = _fill(storage)
        hashed = {checkpoint_filename(k) for k in keys if "~" in checkpoint_filename(k)}
        assert hashed  # the long pid and tag make some
        io.opened.clear()
        listed = storage.list_key_tokens()
        assert set(io.opened) == hashed
        assert listed == _pairs(storage.list())
        for pid in PIDS:
            assert storage.list_key_tokens(pid) == _pairs(storage.list(pid))
        # A pid without hashed names lists without opening a file.
        short = CheckpointKey(uuid.UUID(int=9), "t")
        storage.put(short, b"x")
        io.opened.clear()
        assert storage.list_key_tokens(short.pid) == [(short.token, "t")]
        assert io.opened == []


def test_file_listing_ignores_what_list_ignores(tmp_path: pathlib.Path) -> None:
    with open_storage(tmp_path.as_uri()) as storage:
        key = CheckpointKey(uuid.UUID(int=5), "t")
        storage.put(key, b"x")
        source = tmp_path / checkpoint_filename(key)
        # Temp files, lock files, foreign files, a dot-file shaped like a checkpoint.
        for name in (".tmp-0123456789abcdef", ".s:x.ckpt", "README", "s:x.ckpt.bak", "s:x"):
            shutil.copy(source, tmp_path / name)
        (tmp_path / "notes.ckpt").write_bytes(b"not a checkpoint")  # foreign, damaged
        assert storage.list_key_tokens() == [(key.token, "t")] == _pairs(storage.list())


@pytest.mark.parametrize(
    "name",
    [
        "s:%61.ckpt",  # "a" escaped needlessly
        "s:A.ckpt",  # upper case is never written
        "s:%2E.ckpt",  # upper-case hex
        "s:%ff.ckpt",  # not UTF-8
        "x:1.ckpt",  # no such pid kind
        "i:01.ckpt",  # not canonical
        "u:" + "0" * 31 + ".ckpt",  # too short for a UUID
        "s:a.tb.tc.ckpt",  # two tags
        "s:" + "a" * 200 + ".ckpt",  # too long: written hashed
    ],
)
def test_a_name_outside_the_scheme_is_listed_by_its_header_as_list_does(
    tmp_path: pathlib.Path, name: str
) -> None:
    """A record copied in under a name this storage never writes: listed as its header
    says (both listings agree), never as the name would suggest."""
    with open_storage(tmp_path.as_uri()) as storage:
        key = CheckpointKey("real", "tag")
        storage.put(key, b"x")
        os.replace(tmp_path / checkpoint_filename(key), tmp_path / name)
        assert storage.list_key_tokens() == [(key.token, "tag")] == _pairs(storage.list())
        # Filtered by pid, such a file is skipped by its name, as list() skips it.
        for pid in ("real", "a"):
            assert storage.list_key_tokens(pid) == _pairs(storage.list(pid))


def test_a_damaged_file_outside_the_scheme_is_skipped_with_a_warning(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_storage(tmp_path.as_uri()) as storage:
        (tmp_path / "s:%61.ckpt").write_bytes(b"LAPCKPT1 garbage")
        with caplog.at_level(logging.WARNING, logger="loopaware_persist.storage.file"):
            assert storage.list_key_tokens() == [] == storage.list()
        assert "skipping a damaged checkpoint file" in caplog.text
        assert "s:%61.ckpt" in caplog.text


def test_a_record_damaged_inside_is_listed_by_its_name(tmp_path: pathlib.Path) -> None:
    """Names are the keys: only get() reads (and reports) what a file holds."""
    with open_storage(tmp_path.as_uri()) as storage:
        key = CheckpointKey("p")
        storage.put(key, b"x")
        (tmp_path / checkpoint_filename(key)).write_bytes(b"garbage")
        assert storage.list_key_tokens() == [(key.token, None)]
        assert storage.list() == []  # reads the header: skips it
        with pytest.raises(StorageError, match="damaged"):
            storage.get(key)


def test_an_unreadable_directory_is_a_storage_error(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "files"
    with open_storage(root.as_uri()) as storage:
        storage.put(CheckpointKey(1), b"x")
        shutil.rmtree(root)
        with pytest.raises(StorageError, match="Cannot read the directory"):
            storage.list_key_tokens()


# -- rows another program wrote ---------------------------------------------------------


def _damage_sqlite(tmp_path: pathlib.Path, statement: str) -> None:
    conn = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        conn.execute(statement)
    finally:
        conn.close()


DAMAGE = [
    ("tag", "no-colon", "Malformed tag column value 'no-colon'"),
    ("pid", "x:1", "Malformed pid token 'x:1'"),
]


@pytest.mark.parametrize(("column", "value", "message"), DAMAGE)
def test_a_damaged_sqlite_row_is_skipped_by_listings_and_reported(
    tmp_path: pathlib.Path,
    column: str,
    value: str,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with open_storage(f"sqlite:///{tmp_path}/store.db") as storage:
        storage.put(CheckpointKey("p", "t"), b"data")
        storage.put(CheckpointKey("healthy"), b"data")
        _damage_sqlite(tmp_path, f"UPDATE checkpoints SET {column} = '{value}' WHERE pid = 's:p'")
        persister = LoopAwarePersister(storage)
        # One damaged row hides nothing else: the listings go on past it.
        assert [info.key for info in storage.list()] == [CheckpointKey("healthy")]
        assert [info.record.key for info in persister.list_info()] == [CheckpointKey("healthy")]
        assert message in caplog.text
        (damaged,) = storage.find_damaged()
        assert isinstance(damaged, CorruptStoredRecordError)
        assert message in str(damaged)
        if column == "tag":
            assert storage.list_key_tokens() == [("s:healthy", None)]
            assert storage.list("p") == []


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        *DAMAGE,
        ("pid", "\\xff", r"Malformed pid column value b'\\xff': not UTF-8"),
        ("tag", "\\x3aff", "Malformed tag column value"),  # ':' then not UTF-8
    ],
)
@pytest.mark.integration
def test_a_damaged_postgresql_row_is_skipped_by_listings_and_reported(
    pg_schema: str, column: str, value: str, message: str
) -> None:
    literal = f"'{value}'::bytea" if value.startswith("\\x") else f"convert_to('{value}', 'UTF8')"
    with open_storage(_pg_url(pg_schema)) as storage:
        storage.put(CheckpointKey("p", "t"), b"data")
        storage.put(CheckpointKey("healthy"), b"data")
        _pg_sql(
            f'UPDATE "{pg_schema}".checkpoints SET {column} = {literal} '
            "WHERE pid = convert_to('s:p', 'UTF8')"
        )
        persister = LoopAwarePersister(storage)
        # One damaged row hides nothing else: the listings go on past it.
        assert [info.key for info in storage.list()] == [CheckpointKey("healthy")]
        assert [i.record.key for i in persister.list_info()] == [CheckpointKey("healthy")]
        (damaged,) = storage.find_damaged()
        assert isinstance(damaged, CorruptStoredRecordError)
        assert re.search(message, str(damaged))


def test_one_listing_class_with_saved_at_from_the_header_and_stored_at_from_the_store() -> None:
    from loopaware_persist import CheckpointInfo, open_persister

    assert RecordInfo is CheckpointInfo
    key = CheckpointKey("p", "t")
    # A storage written before stored_at existed still builds its rows with saved_at=.
    assert RecordInfo(key=key, version=1, size=3, saved_at=5.0) == CheckpointInfo(
        key=key, version=1, size=3, stored_at=5.0
    )
    with pytest.raises(TypeError, match="stored_at"):
        CheckpointInfo(key=key, version=1, size=3)
    with pytest.raises(TypeError, match="once"):
        CheckpointInfo(key=key, version=1, size=3, stored_at=1.0, saved_at=1.0)
    with open_persister("memory://") as persister:
        persister.storage.put(key, persister.dumps({"x": 1}, meta={"saved_at": 10.0}))
        persister.storage.put(CheckpointKey("bad"), b"not an envelope")
        (bad, info) = persister.list_info()
        (row,) = persister.storage.list("p")
    assert row.header is None  # a storage knows no header ...
    assert row.saved_at == row.stored_at
    assert info.key == key
    assert info.record is info  # ``info.record.key`` still works
    assert info.saved_at == 10.0  # when the process was bundled ...
    assert info.stored_at == row.stored_at > 10.0  # ... and when the store wrote it
    summary = info.as_dict()
    assert (summary["saved_at"], summary["stored_at"]) == (10.0, row.stored_at)
    assert (summary["pid_token"], summary["state"], summary["error"]) == ("s:p", None, None)
    assert bad.state == "damaged"
    assert bad.error
    assert bad.saved_at == bad.stored_at
