"""Stores left as found: read-only opening, foreign databases, rows of the wrong types."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from loopaware_persist import CorruptStoredRecordError, StorageError
from loopaware_persist.storage import CheckpointKey, local_path, open_storage

KEY = CheckpointKey("p", "t")


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def tamper(path: Path, sql: str) -> None:
    """Change a store's database behind its back, as another program would."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


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


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_create_false_refuses_a_missing_store_and_creates_nothing(
    tmp_path: Path, kind: str
) -> None:
    missing = tmp_path / "sub" / ("none.db" if kind == "sqlite" else "none")
    url = f"sqlite:///{missing}" if kind == "sqlite" else missing.as_uri()
    with pytest.raises(StorageError, match=r"does not exist\. Nothing was created"):
        open_storage(url, create=False)
    assert list(tmp_path.iterdir()) == []
    # An existing store opens for writing as usual.
    open_storage(url).close()
    with open_storage(url, create=False) as storage:
        storage.put(KEY, b"x")


def test_each_storage_names_its_own_local_path(tmp_path: Path) -> None:
    assert local_path(f"sqlite:///{tmp_path}/a.db") == f"{tmp_path}/a.db"
    assert local_path(tmp_path.as_uri()) == str(tmp_path)
    assert local_path("memory://") is None
    assert local_path("postgresql://user:secret@host/db") is None
    with pytest.raises(StorageError, match="no scheme"):
        local_path("checkpoints.db")


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
    tamper(tmp_path / "store.db", "UPDATE loopaware_schema SET version = 99")
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
    tamper(tmp_path / "store.db", WRONG_TYPES[damage] + " WHERE pid = 's:p'")
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


# -- file:// ------------------------------------------------------------------------------


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "writable"])
def test_file_refuses_a_directory_that_is_not_a_store_unchanged(
    tmp_path: Path, read_only: bool
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    (home / "photo.jpg").write_bytes(b"\xff\xd8")
    before = snapshot(home)
    names = sorted(p.name for p in home.iterdir())
    with pytest.raises(StorageError, match="is not a loopaware checkpoint store") as caught:
        open_storage(home.as_uri(), read_only=read_only)
    assert "notes.txt" in str(caught.value)
    assert snapshot(home) == before
    assert sorted(p.name for p in home.iterdir()) == names  # no lock file either


def test_file_read_only_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    with pytest.raises(StorageError, match="No checkpoint store at"):
        open_storage(missing.as_uri(), read_only=True)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with open_storage(empty.as_uri(), read_only=True) as storage:
        assert storage.list() == []
        assert storage.list_key_tokens() == []
    assert list(empty.iterdir()) == []  # no .loopaware-writers.lock


def test_file_read_only_reads_and_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with open_storage(store.as_uri()) as storage:
        storage.put(KEY, b"data")
    (store / ".tmp-orphan").write_bytes(b"half")  # a crashed writer's leftover
    before = snapshot(store)
    with open_storage(store.as_uri(), read_only=True) as storage:
        assert [info.key for info in storage.list()] == [KEY]
        assert storage.get(KEY).data == b"data"
        with pytest.raises(StorageError, match="opened read-only"):
            storage.put(KEY, b"new")
        with pytest.raises(StorageError, match="opened read-only"):
            storage.delete(KEY)
    assert snapshot(store) == before  # nothing swept, locked or written


# A FIFO named like a checkpoint once blocked list() and get() forever (a
# read-only open of a FIFO waits for a writer). Run in a child under a timeout,
# so the failure is a failed test rather than a hung suite.
_FIFO_SCRIPT = """
import os, sys
from loopaware_persist import CorruptStoredRecordError
from loopaware_persist.storage import CheckpointKey, local_path, open_storage
root = sys.argv[1]
with open_storage("file://" + root) as storage:
    storage.put(CheckpointKey("healthy"), b"data")
os.mkfifo(os.path.join(root, "i:7.ckpt"))         # a name the storage writes
os.mkfifo(os.path.join(root, "odd name.ckpt"))    # a name it does not
for read_only in (False, True):
    with open_storage("file://" + root, read_only=read_only) as storage:
        assert [i.key for i in storage.list()] == [CheckpointKey("healthy")]
        assert ("i:7", None) in storage.list_key_tokens()
        damaged = storage.find_damaged()
        assert len(damaged) == 2, damaged
        assert all("a FIFO" in str(e) for e in damaged), damaged
        for call in (storage.get, lambda k: storage.read_prefix(k, 4)):
            try:
                call(CheckpointKey(7))
            except CorruptStoredRecordError as exc:
                assert "a FIFO" in str(exc)
            else:
                raise AssertionError("read a FIFO")
print("ok")
"""


def test_file_fifo_named_like_a_checkpoint_is_skipped_not_opened(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-c", _FIFO_SCRIPT, str(store)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("kind", ["directory", "symlink-to-directory"])
def test_file_directory_named_like_a_checkpoint_is_skipped(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    with open_storage(store.as_uri()) as storage:
        storage.put(KEY, b"data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("i:9.ckpt", "backup.ckpt"):
        if kind == "directory":
            (store / name).mkdir()
        else:
            (store / name).symlink_to(elsewhere, target_is_directory=True)
    for read_only in (False, True):
        with open_storage(store.as_uri(), read_only=read_only) as storage:
            assert [info.key for info in storage.list()] == [KEY]
            assert "a directory, not a regular file" in caplog.text
            damaged = storage.find_damaged()
            assert len(damaged) == 2
            assert all(isinstance(e, CorruptStoredRecordError) for e in damaged)
            with pytest.raises(CorruptStoredRecordError, match="a directory"):
                storage.get(CheckpointKey(9))


# -- the conformance check third-party storages can run -----------------------------------


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_builtin_storages_keep_the_read_only_contract(tmp_path: Path, kind: str) -> None:
    from loopaware_persist.testing import check_read_only

    if kind == "file":
        check_read_only((tmp_path / "s").as_uri(), missing_url=(tmp_path / "none").as_uri())
    else:
        check_read_only(f"sqlite:///{tmp_path}/s.db", missing_url=f"sqlite:///{tmp_path}/n.db")
    assert sorted(p.name for p in tmp_path.iterdir()) in (["s"], ["s.db"])


def test_postgresql_keeps_the_read_only_contract() -> None:
    import os
    import urllib.parse
    import uuid

    base = os.environ.get("LOOPAWARE_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("LOOPAWARE_TEST_POSTGRES_URL is not set")
    import psycopg

    from loopaware_persist.testing import check_read_only

    schemas = [f"lap_ro_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    parts = urllib.parse.urlsplit(base)

    def url(schema: str) -> str:
        query = [*urllib.parse.parse_qsl(parts.query), ("schema", schema)]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    try:
        check_read_only(url(schemas[0]), missing_url=url(schemas[1]))
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


def test_sqlite_store_that_lost_its_checkpoints_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    open_storage(url).close()
    tamper(tmp_path / "store.db", "DROP TABLE checkpoints")
    with pytest.raises(StorageError, match="lost its checkpoints table"):
        open_storage(url, read_only=True)
    with open_storage(url) as storage:  # a writable open recreates it
        assert storage.list() == []


def test_a_plugin_factory_without_read_only_is_not_asked_to_open_read_only() -> None:
    import loopaware_persist.storage as storage_package
    from loopaware_persist.storage.memory import MemoryStorage

    opened: list[str] = []

    def old_factory(url: str, *, durability: str) -> MemoryStorage:
        opened.append(url)
        return MemoryStorage(url)

    with pytest.raises(StorageError, match="cannot be opened read-only"):
        storage_package._open_read_only(old_factory, "plug://x?password=secret", "normal")  # type: ignore[arg-type]
    assert opened == []  # never called: it might have created or migrated the store


def test_sqlite_store_whose_schema_table_is_empty_says_so_and_stays_unchanged(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    open_storage(url).close()
    conn = sqlite3.connect(tmp_path / "store.db")
    conn.execute("DELETE FROM loopaware_schema")
    conn.commit()
    conn.close()
    before = (tmp_path / "store.db").read_bytes()
    with pytest.raises(StorageError, match="loopaware_schema table holds no version") as info:
        open_storage(url, read_only=True)
    assert "lost its checkpoints table" not in str(info.value)
    assert (tmp_path / "store.db").read_bytes() == before
