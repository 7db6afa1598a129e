"""Figure 8: the typed-error contract, one table per storage.

Each row provokes one failure (missing, corrupt, unsafe, stale, backend down,
disk full, read-only) and checks the exception is the stable subclass the
contract names, a ``LoopAwarePersistError`` and so a ``plumpy.PersistenceError``.

A second table covers the damage the second hostile-input campaign found, on
every storage (PostgreSQL included): foreign files and databases, missing
stores opened read-only, writes to a read-only store, rows of the wrong types
or with malformed keys, non-regular files and torn headers. Each must be typed
*and* must not stop a listing of the healthy records beside it.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import sqlite3
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plumpy
import pytest

from loopaware_persist import (
    BackendUnavailableError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    CorruptStoredRecordError,
    DurabilityError,
    LoopAwarePersister,
    LoopAwarePersistError,
    StaleCheckpointError,
    StorageError,
    UnsafeCheckpointError,
    open_persister,
)
from loopaware_persist._envelope import encode_envelope
from loopaware_persist.storage import CheckpointKey, open_storage
from loopaware_persist.storage.file import FileIO, FileStorage, checkpoint_filename
from loopaware_persist.storage.sqlite import SqliteStorage
from tests.axes import local_store_url, store_url

from ._support import (
    ALLOW,
    figure,
    make_process,
    new_loop,
    run_forked,
)

EXPECTED: dict[str, type[LoopAwarePersistError]] = {
    "missing": CheckpointNotFoundError,
    "corrupt": CorruptCheckpointError,
    "unsafe": UnsafeCheckpointError,
    "stale": StaleCheckpointError,
    "backend_down": StorageError,
    "disk_full": DurabilityError,
    "read_only": DurabilityError,
    "damaged_store": CorruptCheckpointError,
    "closed": StorageError,
}


class FailingIO(FileIO):
    """Raises ``OSError(err)`` from every write-side call (pwrite, or replace/unlink too)."""

    def __init__(self, err: int, *, calls: tuple[str, ...] = ("pwrite",)) -> None:
        self.err = err
        self.failing = calls

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if "pwrite" in self.failing:
            raise OSError(self.err, os.strerror(self.err))
        return super().pwrite(fd, data, offset)

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        if "open" in self.failing and flags & os.O_CREAT and ".tmp-" in path:
            raise OSError(self.err, os.strerror(self.err))
        return super().open(path, flags, mode)

    def unlink(self, path: str) -> None:
        if "unlink" in self.failing:
            raise OSError(self.err, os.strerror(self.err))
        super().unlink(path)


def _url(storage: str, tmp: Path) -> str:
    return local_store_url(storage, tmp, "files" if storage == "file" else "store")


def _saved(per: LoopAwarePersister, pid: str = "p") -> Any:
    with new_loop() as loop:
        process = make_process("created", loop, pid)
        per.save_checkpoint(process)
        return process


def _save_through(io: FailingIO, tmp: Path) -> None:
    """Save a process to a file store under ``tmp`` whose I/O fails as ``io`` says."""
    store = FileStorage((tmp / "files").as_uri(), io=io)
    with LoopAwarePersister(store, allow=[ALLOW]) as per:
        _saved(per)


def _missing(storage: str, tmp: Path) -> None:
    with open_persister(_url(storage, tmp), allow=[ALLOW]) as per:
        per.load_checkpoint("nobody")


def _corrupt(storage: str, tmp: Path) -> None:
    with open_persister(_url(storage, tmp), allow=[ALLOW]) as per:
        _saved(per)
        key = CheckpointKey("p")
        if storage == "file":
            path = Path(per.storage.root) / checkpoint_filename(key)  # type: ignore[attr-defined]
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0x10
            path.write_bytes(bytes(raw))
        else:
            raw = bytearray(per.storage.get(key).data)
            raw[len(raw) // 2] ^= 0x10
            per.storage.put(key, bytes(raw))
        per.load_checkpoint("p")


def _unsafe(storage: str, tmp: Path) -> None:
    import msgpack

    # A class value as the msgpack codec writes it (ext code 2: [tag, *fields]).
    payload = msgpack.packb(msgpack.ExtType(2, msgpack.packb(["class", "os:system"])))
    with open_persister(_url(storage, tmp), allow=[ALLOW]) as per:
        per.storage.put(CheckpointKey("p"), encode_envelope(payload, codec="msgpack"))
        per.load_checkpoint("p")


def _stale(storage: str, tmp: Path) -> None:
    with open_persister(_url(storage, tmp), allow=[ALLOW]) as per:
        process = _saved(per)
        per.save_checkpoint(process, expected_version=0)


def _backend_down(storage: str, tmp: Path) -> None:
    if storage == "file":
        root = tmp / "files"
        with open_persister(root.as_uri(), allow=[ALLOW]) as per:
            _saved(per)
            # The directory disappears under a live storage (unmounted, replaced by a file).
            for name in os.listdir(root):
                os.unlink(root / name)
            root.rmdir()
            root.write_bytes(b"not a directory")
            per.get_checkpoints()
    else:
        url = _url(storage, tmp)
        with open_persister(url, allow=[ALLOW]) as per:
            _saved(per)
        holder = sqlite3.connect(str(tmp / "store.db"), isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            storage_ = SqliteStorage(url, busy_timeout=0.05)
            with LoopAwarePersister(storage_, allow=[ALLOW]) as per:
                _saved(per)
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def _disk_full(storage: str, tmp: Path) -> None:
    if storage == "file":
        _save_through(FailingIO(errno.ENOSPC), tmp)
        return
    url = _url(storage, tmp)
    with open_persister(url, allow=[ALLOW]) as per:
        _saved(per)

    def child() -> int:
        # A real disk-full: the kernel refuses writes beyond RLIMIT_FSIZE (EFBIG).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = os.path.getsize(tmp / "store.db") + 64 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        with open_persister(url, allow=[ALLOW]) as per:
            try:
                per.storage.put(CheckpointKey("big"), os.urandom(4 * 1024 * 1024))
            except DurabilityError:
                return 10
            except LoopAwarePersistError:
                return 11
        return 12

    code = run_forked(child)
    if code == 10:
        msg = "disk full"
        raise DurabilityError(msg)
    msg = f"child exit {code}"
    raise AssertionError(msg)


def _read_only(storage: str, tmp: Path) -> None:
    if storage == "file":
        # Root ignores permission bits, so the read-only file system is simulated.
        _save_through(FailingIO(errno.EROFS, calls=("open", "unlink")), tmp)
        return
    url = _url(storage, tmp)
    with open_persister(url, allow=[ALLOW]) as per:
        _saved(per)
    # Root ignores permission bits: take the SQLITE_READONLY error a real read-only
    # connection raises and check the storage's mapping of it.
    conn = sqlite3.connect(f"file:{tmp}/store.db?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("UPDATE checkpoints SET version = version + 1")
    except sqlite3.Error as exc:
        store = SqliteStorage(url)
        try:
            raise store._error(exc, doing="save", write=True) from exc
        finally:
            store.close()
    finally:
        conn.close()


def _damaged_store(storage: str, tmp: Path) -> None:
    """Damage below the envelope: a file's own header, or the SQLite file itself."""
    if storage == "file":
        root = tmp / "files"
        with open_persister(root.as_uri(), allow=[ALLOW]) as per:
            _saved(per)
            path = root / checkpoint_filename(CheckpointKey("p"))
            raw = bytearray(path.read_bytes())
            raw[3] ^= 0xFF  # the file header's magic
            path.write_bytes(bytes(raw))
            per.load_checkpoint("p")
    else:
        (tmp / "store.db").write_bytes(b"this is not a SQLite database" * 200)
        with open_persister(_url(storage, tmp), allow=[ALLOW]) as per:
            per.load_checkpoint("p")


def _closed(storage: str, tmp: Path) -> None:
    per = open_persister(_url(storage, tmp), allow=[ALLOW])
    per.close()
    per.load_checkpoint("p")


SCENARIOS: dict[str, Callable[[str, Path], None]] = {
    "missing": _missing,
    "corrupt": _corrupt,
    "unsafe": _unsafe,
    "stale": _stale,
    "backend_down": _backend_down,
    "disk_full": _disk_full,
    "read_only": _read_only,
    "damaged_store": _damaged_store,
    "closed": _closed,
}
# An in-process dict has no disk and no server to lose.
NOT_APPLICABLE = {
    ("memory", "disk_full"),
    ("memory", "read_only"),
    ("memory", "backend_down"),
    ("memory", "damaged_store"),
}
SPECIFIC = {("sqlite", "backend_down"): BackendUnavailableError}


def test_typed_error_table(tmp_path: Path, local_storage: str) -> None:
    storage = local_storage
    table: dict[str, str] = {}
    ok = 0
    for name, scenario in SCENARIOS.items():
        if (storage, name) in NOT_APPLICABLE:
            table[name] = "n/a"
            continue
        work = tmp_path / name
        work.mkdir()
        expected = SPECIFIC.get((storage, name), EXPECTED[name])
        with pytest.raises(LoopAwarePersistError) as info:
            scenario(storage, work)
        error = info.value
        table[name] = type(error).__name__
        assert isinstance(error, expected), (name, error)
        assert isinstance(error, plumpy.PersistenceError)
        if name == "damaged_store":  # the storage contract: a backend failure is a StorageError
            assert isinstance(error, StorageError)
        assert str(error), "a typed error says what happened"
        ok += 1
    applicable = len(SCENARIOS) - sum(1 for s, _ in NOT_APPLICABLE if s == storage)
    line = figure("typed_errors", storage=storage, table=table, typed_pct=100.0 * ok / applicable)
    assert line["typed_pct"] == 100.0


# -- the second campaign's damage, on every storage -----------------------------------------


def _sql(url: str, statement: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            conn.execute(statement)
            conn.commit()
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(os.environ["LOOPAWARE_TEST_POSTGRES_URL"], autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def _listing_goes_on(url: str) -> None:
    """The healthy checkpoint beside the damage is still listed and loads."""
    with open_persister(url, allow=[ALLOW]) as per:
        assert "healthy" in [info.record.key.pid for info in per.list_info()]
        per.load_checkpoint("healthy")


def _store_with_healthy(url: str) -> None:
    with open_persister(url, allow=[ALLOW]) as per:
        _saved(per, "healthy")
        _saved(per, "p")


def _foreign_store(storage: str, url: str, schema: str) -> None:
    if storage == "file":
        root = Path(url.removeprefix("file://"))
        root.mkdir()
        (root / "notes.txt").write_text("mine")
    elif storage == "sqlite":
        _sql(url, "CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, taken TEXT)")
    else:
        _sql(url, f'CREATE SCHEMA "{schema}"')
        _sql(url, f'CREATE TABLE "{schema}".checkpoints (id serial PRIMARY KEY)')
    open_storage(url)


def _no_store_read_only(storage: str, url: str, schema: str) -> None:
    open_storage(url, read_only=True)


def _write_read_only(storage: str, url: str, schema: str) -> None:
    if storage != "memory":
        _store_with_healthy(url)
    with open_storage(url, read_only=True) as store:
        store.put(CheckpointKey("p"), b"data")


def _row_wrong_types(storage: str, url: str, schema: str) -> None:
    _store_with_healthy(url)
    _sql(url, "UPDATE checkpoints SET data = 9223372036854775807 WHERE pid = 's:p'")
    _listing_goes_on(url)
    with open_persister(url, allow=[ALLOW]) as per:
        per.load_checkpoint("p")


def _malformed_key_row(storage: str, url: str, schema: str) -> None:
    _store_with_healthy(url)
    if storage == "sqlite":
        _sql(url, "UPDATE checkpoints SET tag = 'no-colon' WHERE pid = 's:p'")
    else:
        _sql(
            url,
            f"UPDATE \"{schema}\".checkpoints SET pid = '\\xff'::bytea "
            "WHERE pid = convert_to('s:p', 'UTF8')",
        )
    _listing_goes_on(url)
    with open_storage(url, read_only=True) as store:
        (damaged,) = store.find_damaged()
        raise damaged


def _non_regular_record(storage: str, url: str, schema: str) -> None:
    _store_with_healthy(url)
    root = Path(url.removeprefix("file://"))
    path = root / checkpoint_filename(CheckpointKey("p"))
    path.unlink()
    os.mkfifo(path)  # opening it for reading would block forever
    _listing_goes_on(url)
    with open_persister(url, allow=[ALLOW]) as per:
        per.load_checkpoint("p")


def _torn_header(storage: str, url: str, schema: str) -> None:
    _store_with_healthy(url)
    path = Path(url.removeprefix("file://")) / checkpoint_filename(CheckpointKey("p"))
    path.write_bytes(path.read_bytes()[:20])
    _listing_goes_on(url)
    with open_storage(url, read_only=True) as store:
        assert len(store.find_damaged()) == 1
    with open_persister(url, allow=[ALLOW]) as per:
        per.load_checkpoint("p")


SCENARIOS_2: dict[str, tuple[Callable[[str, str, str], None], type[LoopAwarePersistError]]] = {
    "foreign_store": (_foreign_store, StorageError),
    "no_store_read_only": (_no_store_read_only, StorageError),
    "write_read_only": (_write_read_only, StorageError),
    "row_wrong_types": (_row_wrong_types, CorruptStoredRecordError),
    "malformed_key_row": (_malformed_key_row, CorruptStoredRecordError),
    "non_regular_record": (_non_regular_record, CorruptStoredRecordError),
    "torn_header": (_torn_header, CorruptStoredRecordError),
}
# Which storage can hold which damage: memory has no files or rows; PostgreSQL's
# typed columns cannot hold a value of the wrong type; only files have headers
# and file types of their own.
APPLICABLE_2 = {
    "foreign_store": {"file", "sqlite", "postgresql"},
    "no_store_read_only": {"file", "sqlite", "postgresql"},
    "write_read_only": {"memory", "file", "sqlite", "postgresql"},
    "row_wrong_types": {"sqlite"},
    "malformed_key_row": {"sqlite", "postgresql"},
    "non_regular_record": {"file"},
    "torn_header": {"file"},
}


def test_typed_error_table_of_store_damage(tmp_path: Path, storage: str) -> None:
    table: dict[str, str] = {}
    ok = applicable = 0
    for name, (scenario, expected) in SCENARIOS_2.items():
        if storage not in APPLICABLE_2[name]:
            table[name] = "n/a"
            continue
        applicable += 1
        work = tmp_path / name
        work.mkdir()
        with store_url(storage, work, "files" if storage == "file" else "tbl") as url:
            query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)
            schema = dict(query).get("schema", "")  # PostgreSQL's, for the SQL damage
            with pytest.raises(LoopAwarePersistError) as info:
                scenario(storage, url, schema)
        error = info.value
        table[name] = type(error).__name__
        assert isinstance(error, expected), (name, error)
        assert isinstance(error, plumpy.PersistenceError)
        assert str(error), "a typed error says what happened"
        ok += 1
    line = figure(
        "typed_errors_store_damage",
        storage=storage,
        table=table,
        typed_pct=100.0 * ok / applicable,
    )
    assert line["typed_pct"] == 100.0
