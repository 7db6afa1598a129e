"""Stores left as found: read-only opening, foreign databases, rows of the wrong types."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from loopaware_persist import CorruptStoredRecordError, StorageError
from loopaware_persist.storage import CheckpointKey, open_storage

KEY = CheckpointKey("p", "t")


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def foreign_database(path: Path, *, checkpoints_table: bool) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        if checkpoints_table:
            # Another application's table of the same name, without our columns.
            conn.execute("CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, taken TEXT)")
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("checkpoints_table", [False, True], ids=["app-tables", "app-checkpoints"])
@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "writable"])
def test_sqlite_refuses_another_applications_database_unchanged(
    tmp_path: Path, checkpoints_table: bool, read_only: bool
) -> None:
    db = tmp_path / "app.db"
    foreign_database(db, checkpoints_table=checkpoints_table)
    before = snapshot(tmp_path)
    with pytest.raises(StorageError, match="is not a loopaware checkpoint store") as caught:
        open_storage(f"sqlite:///{db}", read_only=read_only)
    assert "left unchanged" in str(caught.value)
    assert snapshot(tmp_path) == before  # same files, same bytes: no WAL, no tables
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()


def test_sqlite_read_only_creates_nothing_where_nothing_is(tmp_path: Path) -> None:
    missing = tmp_path / "sub" / "none.db"
    with pytest.raises(StorageError, match="No checkpoint store at"):
        open_storage(f"sqlite:///{missing}", read_only=True)
    assert not (tmp_path / "sub").exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StorageError, match="empty database"):
        open_storage(f"sqlite:///{empty}", read_only=True)
    assert empty.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_sqlite_read_only_reads_and_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    with open_storage(url) as storage:
        storage.put(KEY, b"data")
    before = snapshot(tmp_path)
    with open_storage(url, read_only=True) as storage:
        assert [info.key for info in storage.list()] == [KEY]
        assert storage.get(KEY).data == b"data"
        assert storage.read_prefix(KEY, 2) == b"da"
        for write in (
            lambda: storage.put(KEY, b"new"),
            lambda: storage.delete(KEY),
            lambda: storage.delete_pid("p"),
        ):
            with pytest.raises(StorageError, match="opened read-only"):
                write()
    # Same database bytes. A WAL database's readers share its -shm index, which
    # SQLite creates beside it for a read (the store is in WAL mode by its own
    # writers' choice); nothing else appears.
    after = snapshot(tmp_path)
    assert after["store.db"] == before["store.db"]
    assert set(after) - set(before) <= {"store.db-shm", "store.db-wal"}


def test_sqlite_read_only_refuses_a_newer_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    open_storage(url).close()
    conn = sqlite3.connect(tmp_path / "store.db")
    conn.execute("UPDATE loopaware_schema SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="schema version 99"):
        open_storage(url, read_only=True)


# -- rows of the wrong types (written by another program) ---------------------------------

WRONG_TYPES = {
    "data-text": "UPDATE checkpoints SET data = 'text'",
    "data-real": "UPDATE checkpoints SET data = 1.5",
    "data-huge-int": "UPDATE checkpoints SET data = 9223372036854775807",
    "version-text": "UPDATE checkpoints SET version = 'seven'",
    "version-real": "UPDATE checkpoints SET version = 2.5",
    "version-zero": "UPDATE checkpoints SET version = 0",
    "size-text": "UPDATE checkpoints SET size = 'big'",
    "saved_at-text": "UPDATE checkpoints SET saved_at = 'yesterday'",
    "pid-blob": "UPDATE checkpoints SET pid = x'00ff'",
}
# Damage that only get() sees (list() never reads the data column).
DATA_ONLY = {"data-text", "data-real", "data-huge-int"}


@pytest.mark.parametrize("damage", sorted(WRONG_TYPES))
def test_sqlite_row_of_wrong_types_is_a_typed_error_for_that_record_only(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    healthy = CheckpointKey("healthy")
    with open_storage(url) as storage:
        storage.put(KEY, b"data")
        storage.put(healthy, b"fine")
    conn = sqlite3.connect(tmp_path / "store.db")
    conn.execute(WRONG_TYPES[damage] + " WHERE pid = 's:p'")
    conn.commit()
    conn.close()
    for read_only in (False, True):
        with open_storage(url, read_only=read_only) as storage:
            listed = [info.key for info in storage.list()]
            damaged = storage.find_damaged()
            if damage in DATA_ONLY:
                assert listed == [healthy, KEY]
                assert damaged == []
                with pytest.raises(CorruptStoredRecordError, match="not a BLOB"):
                    storage.get(KEY)
                with pytest.raises(CorruptStoredRecordError, match="not a BLOB"):
                    storage.read_prefix(KEY, 4)
            else:
                assert listed == [healthy]  # skipped, the rest listed
                assert len(damaged) == 1
                assert isinstance(damaged[0], CorruptStoredRecordError)
                assert "skipping a damaged checkpoint row" in caplog.text
                if damage.startswith("version"):
                    with pytest.raises(CorruptStoredRecordError, match="its version is"):
                        storage.get(KEY)
            assert storage.get(healthy).data == b"fine"
    if damage.startswith("version"):
        with open_storage(url) as storage, pytest.raises(CorruptStoredRecordError):
            storage.put(KEY, b"again")
