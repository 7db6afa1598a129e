"""``sqlite:///rel/path.db`` and ``sqlite:////abs/path.db``: the embedded default.

URLs follow SQLAlchemy's convention: what follows ``sqlite:///`` is the path,
relative to the working directory at open time unless it starts with ``/``.
Percent-escapes are decoded (write ``?`` as ``%3F``); there are no query
options. In-memory databases (``sqlite://``, ``sqlite:///:memory:``) are
refused: use ``memory://``.

Schema (version 1, recorded in ``loopaware_schema``)::

    checkpoints(pid TEXT, tag TEXT NOT NULL, version INTEGER, size INTEGER,
                saved_at REAL, data BLOB, PRIMARY KEY (pid, tag))

``pid`` holds :func:`pid_token`; ``tag`` is ``''`` for the untagged checkpoint
and ``':' + tag`` otherwise, so ``None`` and ``''`` stay apart and sort first.

Opened with ``read_only=True`` (what the CLI's ``ls``, ``show`` and ``verify``
do), the file is opened with SQLite's ``mode=ro``: nothing is created,
migrated, switched to WAL or written, and a missing file is an error rather
than a new database. A database that holds tables but no ``loopaware_schema``
(another application's file) is refused, unchanged, in either mode.

A row whose columns hold the wrong types (damage from outside: a ``version``
that is text, ``data`` stored as a number) is skipped by :meth:`list` with a
warning and reported by :meth:`~SqliteStorage.find_damaged`; reading it raises
:class:`CorruptStoredRecordError`.

The database runs in WAL mode: readers never block the writer nor each other.
``durability="normal"`` uses ``synchronous=NORMAL`` (a committed put survives
a process crash), ``"full"`` uses ``synchronous=FULL`` (it also survives power
loss). Each put is one transaction, so the version compare-and-set is atomic
across threads and processes: a single statement that computes the new version
in SQLite, or, when that statement declines (a stale ``expected_version``, a
damaged version column), a ``BEGIN IMMEDIATE`` transaction that reads the
version and says why. Writers wait up to ``busy_timeout`` for each other.
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable

from loopaware_persist._errors import (
    BackendUnavailableError,
    DurabilityError,
    StorageError,
)
from loopaware_persist.storage._base import (
    CheckpointKey,
    CorruptStoredRecordError,
    Durability,
    KeyToken,
    Pid,
    RecordInfo,
    Storage,
    StoredRecord,
    check_store_exists,
    pid_token,
    read_rows,
)

__all__ = ("SCHEMA_VERSION", "SqliteStorage", "local_path", "open_storage", "path_from_url")

_LOG = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_BUSY_TIMEOUT = 30.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS loopaware_schema (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        pid TEXT NOT NULL,
        tag TEXT NOT NULL,  -- '' for no tag, ':' || tag otherwise
        version INTEGER NOT NULL,
        size INTEGER NOT NULL,
        saved_at REAL NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (pid, tag)
    )""",
)

_UPSERT = (
    "INSERT INTO checkpoints (pid, tag, version, size, saved_at, data) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (pid, tag) DO UPDATE SET version = excluded.version, "
    "size = excluded.size, saved_at = excluded.saved_at, data = excluded.data"
)

# A put in one statement, the version computed by SQLite: each is a transaction of its
# own (SQLite's autocommit; a write statement waits for the write lock like BEGIN
# IMMEDIATE, busy_timeout included) and commits with the same synchronous setting. It
# returns no row where the version check says no (another writer's version, a version
# column that is not a positive integer, the last int64): _put then runs the
# transaction below, which says why or stores.
_PUT_NEXT = (
    "INSERT INTO checkpoints (pid, tag, version, size, saved_at, data) "
    "VALUES (?, ?, 1, ?, ?, ?) "
    "ON CONFLICT (pid, tag) DO UPDATE SET version = checkpoints.version + 1, "
    "size = excluded.size, saved_at = excluded.saved_at, data = excluded.data "
    "WHERE typeof(checkpoints.version) = 'integer' "
    "AND checkpoints.version BETWEEN 1 AND 9223372036854775806 RETURNING version"
)
_PUT_FIRST = (
    "INSERT INTO checkpoints (pid, tag, version, size, saved_at, data) "
    "VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (pid, tag) DO NOTHING RETURNING version"
)
_PUT_AFTER = (
    "UPDATE checkpoints SET version = version + 1, size = ?, saved_at = ?, data = ? "
    "WHERE pid = ? AND tag = ? AND version = ? AND typeof(version) = 'integer' "
    "AND version BETWEEN 1 AND 9223372036854775806 RETURNING version"
)
_MAX_VERSION = (1 << 63) - 1

# Primary result codes (the low byte of an extended code).
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

_UNAVAILABLE = frozenset({_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CANTOPEN})
_WRITE_FAILED = frozenset({_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL})
_DAMAGED = frozenset({_SQLITE_CORRUPT, _SQLITE_NOTADB})
# Python < 3.11 has no sqlite_errorcode; fall back on SQLite's fixed messages.
_MESSAGES = (
    ("database is locked", _SQLITE_BUSY),
    ("database table is locked", _SQLITE_LOCKED),
    ("unable to open database", _SQLITE_CANTOPEN),
    ("readonly database", _SQLITE_READONLY),
    ("disk i/o error", _SQLITE_IOERR),
    ("database or disk is full", _SQLITE_FULL),
    ("malformed", _SQLITE_CORRUPT),
    ("not a database", _SQLITE_NOTADB),
)


def _error_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc).lower()
    for fragment, fallback in _MESSAGES:
        if fragment in text:
            return fallback
    return None


def _encode_tag(tag: str | None) -> str:
    return "" if tag is None else ":" + tag


def _decode_tag(value: str) -> str | None:
    if value == "":
        return None
    if value.startswith(":"):
        return value[1:]
    msg = f"Malformed tag column value {value!r}: expected '' or ':<tag>'."
    raise StorageError(msg)


class _Unusual(Exception):
    """A tag column value the fast path of list_key_tokens does not handle."""


def _raise() -> KeyToken:
    raise _Unusual


def _check_version(value: object, bad: Callable[[str], CorruptStoredRecordError]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad(f"its version is {value!r}, not a positive integer")
    return value


def path_from_url(url: str) -> str:
    """The database file a ``sqlite:`` URL names.

    :param url: ``sqlite:///rel/path.db`` or ``sqlite:////abs/path.db``
    :raises StorageError: if the URL is malformed or names an in-memory database
    :return: the absolute path (a relative one is resolved against the working
        directory now)
    """
    hint = "Use 'sqlite:///relative/path.db' or 'sqlite:////absolute/path.db'."
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not sep:
        msg = f"Not a sqlite URL: {url!r}. {hint}"
        raise StorageError(msg)
    if rest in ("", "/", "/:memory:"):
        msg = (
            f"{url!r} names an in-memory or empty SQLite database, which no other connection "
            f"or process could see. Use 'memory://' for an in-memory storage. {hint}"
        )
        raise StorageError(msg)
    if not rest.startswith("/"):
        msg = f"The sqlite URL {url!r} names a host; SQLite databases are local files. {hint}"
        raise StorageError(msg)
    if "?" in rest or "#" in rest:
        msg = (
            f"The sqlite URL {url!r} has a query or fragment, which this storage does not "
            f"take. If '?' or '#' is part of the file name, write it as %3F or %23."
        )
        raise StorageError(msg)
    raw = urllib.parse.unquote_to_bytes(rest[1:])
    if b"\0" in raw:
        msg = f"The sqlite URL {url!r} holds a NUL byte, which no path can contain."
        raise StorageError(msg)
    return os.path.abspath(os.fsdecode(raw))


# Connections inherited through fork are parked here forever instead of being
# closed or garbage collected: closing one in the child would run SQLite's
# close logic (WAL checkpoint, lock release) on state the parent still uses.
_inherited_after_fork: builtins.list[sqlite3.Connection] = []
_pools: weakref.WeakSet[_Pool] = weakref.WeakSet()


class _Pool:
    """Idle connections, handed to one thread at a time.

    Why a pool rather than one connection behind a lock: WAL lets readers run
    alongside a writer only on separate connections, so one locked connection
    would serialise every get() and list() behind a slow put. Why not
    ``threading.local``: a thread's connection would outlive the thread, and
    close() could not reach it. A pool creates connections on demand (as many
    as threads use the storage at once) and close() closes them all.
    Connections are made with ``check_same_thread=False`` because successive
    users may be different threads; SQLite serialises them itself
    (``sqlite3.threadsafety`` is 1 or 3) and the pool never shares one at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: builtins.list[sqlite3.Connection] = []
        self._busy: set[sqlite3.Connection] = set()
        self._pid = os.getpid()
        self._closed = False
        _pools.add(self)

    def take(self) -> sqlite3.Connection | None:
        """An idle connection of this process, or ``None`` (make one)."""
        with self._lock:
            if self._pid != os.getpid():
                self._forget_inherited()
            if self._idle:
                conn = self._idle.pop()
                self._busy.add(conn)
                return conn
            return None

    def adopt(self, conn: sqlite3.Connection) -> None:
        """Count a new connection as in use."""
        with self._lock:
            self._busy.add(conn)

    def give_back(self, conn: sqlite3.Connection, *, healthy: bool) -> None:
        """Return a connection after use; closed if the pool is or it is unhealthy."""
        with self._lock:
            if conn not in self._busy:
                return  # inherited through fork and already parked
            self._busy.discard(conn)
            if healthy and not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close idle connections now; busy ones are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _forget_inherited(self) -> None:
        _inherited_after_fork.extend(self._idle)
        _inherited_after_fork.extend(self._busy)
        self._idle = []
        self._busy = set()
        self._pid = os.getpid()

    def after_fork_in_child(self) -> None:
        # The lock may have been held by a parent thread at fork time; in the
        # child that thread does not exist, so the lock would never be released.
        self._lock = threading.Lock()
        self._forget_inherited()


def _reset_pools_after_fork() -> None:
    for pool in builtins.list(_pools):
        pool.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_after_fork)


class _Lease:
    """A connection of the storage's pool, for the length of a ``with`` block.

    A new one is made if none is idle. Whatever the block leaves open (an error in a
    transaction) is rolled back; a connection that cannot even do that is closed rather
    than handed to the next caller. (A class, not ``contextlib.contextmanager``: every
    operation takes one, and a generator costs a put a tenth of its time.)
    """

    __slots__ = ("_conn", "_storage")

    def __init__(self, storage: SqliteStorage) -> None:
        self._storage = storage
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        storage = self._storage
        conn = storage._pool.take()
        if conn is None:
            conn = storage._connect()
            storage._pool.adopt(conn)
        self._conn = conn
        return conn

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        healthy = exc_type is None and not conn.in_transaction
        try:
            if not healthy:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    healthy = True
                except sqlite3.Error:
                    healthy = False
        finally:
            self._storage._pool.give_back(conn, healthy=healthy)


class SqliteStorage(Storage):
    """Checkpoints in a SQLite database file; see the module docstring.

    :param url: ``sqlite:///rel/path.db`` or ``sqlite:////abs/path.db``
    :param durability: ``"normal"`` (``synchronous=NORMAL``) or ``"full"``
    :param busy_timeout: seconds a put waits for other writers before
        :class:`BackendUnavailableError`
    :param read_only: open with ``mode=ro``: create, migrate and write nothing;
        every write operation raises :class:`StorageError`
    :param create: create the database file if it is missing (else refuse it)
    :raises StorageError: if the URL is invalid, the file is not a SQLite
        database, holds another application's tables, its schema is newer than
        this version supports, or (``read_only``) it does not exist or holds no
        checkpoint store
    :raises BackendUnavailableError: if the database cannot be opened or stays
        locked
    """

    def __init__(
        self,
        url: str,
        *,
        durability: Durability = "normal",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        super().__init__(url=url, durability=durability)
        self.path = path_from_url(url)
        self.busy_timeout = float(busy_timeout)
        self.read_only = bool(read_only)
        self._synchronous = "FULL" if self.durability == "full" else "NORMAL"
        self._pool = _Pool()
        if self.read_only:
            self._open_read_only()
            return
        if not create:
            check_store_exists(url, self.path, directory=False, reading=False)
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError as exc:
            msg = (
                f"Cannot create the directory of the SQLite database {self.path!r} for "
                f"{url!r}: {exc}. Create it yourself or choose a writable location."
            )
            raise DurabilityError(msg) from exc
        self._initialise()

    # -- connections -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so the
        # sqlite3 module never opens a transaction behind our back. timeout=
        # is SQLite's busy_timeout: how long a writer waits for another.
        if self.read_only:
            # mode=ro: SQLite itself refuses every write, creates no file and
            # never changes the journal mode; query_only covers the rest.
            conn = sqlite3.connect(
                f"file:{urllib.parse.quote(self.path)}?mode=ro",
                uri=True,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        try:
            if self.read_only:
                conn.execute("PRAGMA query_only = ON")
            else:
                conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> _Lease:
        """:return: ``with self._connection() as conn``: a pooled connection for one
        operation (see :class:`_Lease`)"""
        return _Lease(self)

    def _error(
        self,
        exc: sqlite3.Error,
        *,
        doing: str,
        key: CheckpointKey | None = None,
        write: bool = False,
    ) -> StorageError:
        code = _error_code(exc)
        where = f"{doing} in {self.url!r} ({self.path})"
        if key is not None:
            where = f"{doing} pid {key.pid!r} with tag {key.tag!r} in {self.url!r} ({self.path})"
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            msg = (
                f"Could not {where}: the database stayed locked by another writer for "
                f"longer than busy_timeout={self.busy_timeout:g} s ({exc}). Retry later, or find "
                f"the process holding a long transaction."
            )
            return BackendUnavailableError(msg)
        if code in _UNAVAILABLE:
            msg = (
                f"Could not {where}: the database file cannot be opened ({exc}). Check that "
                f"its directory exists and is readable and writable."
            )
            return BackendUnavailableError(msg)
        if code in _DAMAGED:
            msg = (
                f"Could not {where}: the file is not a SQLite database or is damaged ({exc}). "
                f"Point the URL at another file, or restore this one from a backup."
            )
            # A CorruptCheckpointError too, like every other damaged record.
            return CorruptStoredRecordError(msg)
        if write and code in _WRITE_FAILED:
            msg = (
                f"Could not {where}: the write failed ({exc}). Nothing was stored. Check that "
                f"the database file and its directory are writable and the disk has space."
            )
            return DurabilityError(msg)
        msg = f"Could not {where}: {type(exc).__name__}: {exc}."
        return StorageError(msg)

    def _foreign(self, what: str) -> StorageError:
        msg = (
            f"{self.path!r} ({self.url!r}) is not a loopaware checkpoint store: {what}. "
            f"It was left unchanged. Point the URL at a checkpoint database, or at a new file "
            f"to create one."
        )
        return StorageError(msg)

    def _check_owner(self, conn: sqlite3.Connection) -> bool:
        """Refuse another application's database before anything is changed.

        :return: whether the database holds a checkpoint store (``False``: it is empty)
        :raises StorageError: if it holds tables but no ``loopaware_schema``
        """
        names = {
            str(row[0])
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        names = {name for name in names if not name.startswith("sqlite_")}
        if "loopaware_schema" in names:
            # Ours, even if its checkpoints table was dropped: a writable open
            # recreates it, as it always has.
            return True
        if names:
            shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            msg = f"it holds other tables ({shown}) and no loopaware_schema table"
            raise self._foreign(msg)
        return False

    def _open_read_only(self) -> None:
        check_store_exists(self.url, self.path, directory=False)
        try:
            with self._connection() as conn:
                if not self._check_owner(conn):
                    msg = (
                        f"No checkpoint store at {self.url!r}: {self.path} is an empty "
                        f"database. Reading creates nothing; check the URL."
                    )
                    raise StorageError(msg)
                found = self._schema_version(conn)
                if found is None:
                    lost = (
                        "its loopaware_schema table holds no version"
                        if self._has_table(conn, "checkpoints")
                        else "has lost its checkpoints table"
                    )
                    msg = (
                        f"The checkpoint store {self.path!r} ({self.url!r}) {lost}; a "
                        f"read-only open does not repair it. Open it for writing once (e.g. "
                        f"open_persister(url)), or restore a backup."
                    )
                    raise StorageError(msg)
        except sqlite3.Error as exc:
            self._pool.close()
            raise self._error(exc, doing="open the database read-only") from exc
        except BaseException:
            self._pool.close()
            raise
        self._check_schema_version(found)

    def _check_schema_version(self, found: int | None) -> None:
        if found is None or found < 1:
            self._pool.close()
            raise self._foreign(f"its loopaware_schema table holds no valid version ({found!r})")
        if found > SCHEMA_VERSION:
            self._pool.close()
            msg = (
                f"The database {self.path!r} ({self.url!r}) has checkpoint schema version "
                f"{found}, newer than the {SCHEMA_VERSION} this loopaware_persist understands. "
                f"Upgrade loopaware_persist to use it."
            )
            raise StorageError(msg)

    def _initialise(self) -> None:
        try:
            with self._connection() as conn:
                # Before anything is changed (the journal mode is a property of
                # the file): another application's database is left as found.
                self._check_owner(conn)
                # WAL is a property of the database file, set once; every later
                # connection (in any process) uses it. A read-only file keeps its
                # mode and stays readable.
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    try:
                        conn.execute("PRAGMA journal_mode = WAL")
                    except sqlite3.OperationalError as exc:
                        if _error_code(exc) != _SQLITE_READONLY:
                            raise
                found = self._schema_version(conn)
                if found is None:
                    # One write transaction, so processes opening a new database
                    # at the same time create the schema exactly once.
                    conn.execute("BEGIN IMMEDIATE")
                    self._check_owner(conn)
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    found = self._schema_version(conn)
                    if found is None:
                        found = SCHEMA_VERSION
                        conn.execute("INSERT INTO loopaware_schema (version) VALUES (?)", (found,))
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._pool.close()
            raise self._error(exc, doing="open the database", write=True) from exc
        except BaseException:
            self._pool.close()
            raise
        self._check_schema_version(found)

    @staticmethod
    def _has_table(conn: sqlite3.Connection, name: str) -> bool:
        query = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
        return bool(conn.execute(query, (name,)).fetchone()[0])

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int | None:
        tables = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('loopaware_schema', 'checkpoints')"
        ).fetchone()[0]
        if tables != 2:
            return None
        found = conn.execute("SELECT max(version) FROM loopaware_schema").fetchone()[0]
        if isinstance(found, bool) or not isinstance(found, int):
            return None if found is None else -1
        return found

    # -- damaged rows ------------------------------------------------------------

    def _bad_row(self, token: object, tag: object, reason: str) -> CorruptStoredRecordError:
        msg = (
            f"The checkpoint row pid={token!r} tag={tag!r} in {self.url!r} ({self.path}) is "
            f"damaged: {reason.rstrip('.')}. Something other than loopaware_persist wrote "
            f"it; delete that row (loopaware-persist rm) or restore the database from a backup."
        )
        return CorruptStoredRecordError(msg)

    def _row_info(self, row: tuple[object, ...]) -> RecordInfo:
        """A listing row as a :class:`RecordInfo`, checking every column's type.

        :raises CorruptStoredRecordError: if a column holds what no put writes
        """
        token, tag, version, size, saved_at = row
        if not isinstance(token, str) or not isinstance(tag, str):
            raise self._bad_row(token, tag, "its pid or tag is not text")
        _check_version(version, lambda why: self._bad_row(token, tag, why))
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise self._bad_row(token, tag, f"its size is {size!r}, not a non-negative integer")
        if (
            isinstance(saved_at, bool)
            or not isinstance(saved_at, (int, float))
            or not math.isfinite(saved_at)
        ):
            raise self._bad_row(token, tag, f"its saved_at is {saved_at!r}, not a timestamp")
        try:
            key = CheckpointKey._from_storage(token, _decode_tag(tag))
        except StorageError as exc:
            raise self._bad_row(token, tag, str(exc)) from None
        return RecordInfo(key=key, version=version, size=size, saved_at=float(saved_at))  # type: ignore[arg-type]

    # -- Storage hooks -----------------------------------------------------------

    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        token, tag = key.token, _encode_tag(key.tag)
        saved_at = time.time()
        try:
            with self._connection() as conn:
                # One statement (see _PUT_NEXT); the transaction below only when it
                # declines.
                if expected_version is None:
                    rows = conn.execute(
                        _PUT_NEXT, (token, tag, len(data), saved_at, data)
                    ).fetchall()
                elif expected_version == 0:
                    rows = conn.execute(
                        _PUT_FIRST, (token, tag, len(data), saved_at, data)
                    ).fetchall()
                elif expected_version < _MAX_VERSION:
                    rows = conn.execute(
                        _PUT_AFTER, (len(data), saved_at, data, token, tag, expected_version)
                    ).fetchall()
                else:
                    rows = []
                if rows:
                    version: int = rows[0][0]
                    return version
                return self._put_checked(conn, key, data, saved_at, expected_version)
        except sqlite3.Error as exc:
            raise self._error(exc, doing="save", key=key, write=True) from exc

    def _put_checked(
        self,
        conn: sqlite3.Connection,
        key: CheckpointKey,
        data: bytes,
        saved_at: float,
        expected_version: int | None,
    ) -> int:
        """A put as one ``BEGIN IMMEDIATE`` transaction that reads the version first, so
        that a stale ``expected_version`` or a damaged version column is reported."""
        token, tag = key.token, _encode_tag(key.tag)
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "SELECT version FROM checkpoints WHERE pid = ? AND tag = ?", (token, tag)
        ).fetchone()
        current = 0
        if row is not None:
            current = _check_version(row[0], lambda why: self._bad_row(token, tag, why))
        if expected_version is not None and expected_version != current:
            conn.execute("ROLLBACK")
            raise self._stale(key, expected=expected_version, actual=current)
        if current >= _MAX_VERSION:
            why = f"its version is {current}, the largest SQLite stores: no put can follow it"
            raise self._bad_row(token, tag, why)
        version = current + 1
        conn.execute(_UPSERT, (token, tag, version, len(data), saved_at, data))
        conn.execute("COMMIT")
        return version

    def _get(self, key: CheckpointKey) -> StoredRecord:
        try:
            with self._connection() as conn:
                row = conn.execute(
                    "SELECT version, data FROM checkpoints WHERE pid = ? AND tag = ?",
                    (key.token, _encode_tag(key.tag)),
                ).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc, doing="read", key=key) from exc
        if row is None:
            raise self._not_found(key)
        version, data = row

        def bad(why: str) -> CorruptStoredRecordError:
            return self._bad_row(key.token, _encode_tag(key.tag), why)

        version = _check_version(version, bad)
        if not isinstance(data, bytes):
            # TEXT, REAL or INTEGER where a BLOB belongs; bytes(int) would even
            # allocate that many zero bytes.
            raise bad(f"its data is {type(data).__name__}, not a BLOB")
        return StoredRecord(key=key, data=data, version=version)

    def _read_prefix(self, key: CheckpointKey, size: int) -> bytes:
        try:
            with self._connection() as conn:
                # substr on a BLOB counts bytes and returns only those.
                row = conn.execute(
                    "SELECT substr(data, 1, ?), typeof(data) FROM checkpoints "
                    "WHERE pid = ? AND tag = ?",
                    (size, key.token, _encode_tag(key.tag)),
                ).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc, doing="read", key=key) from exc
        if row is None:
            raise self._not_found(key)
        value, kind = row
        if kind != "blob":
            raise self._bad_row(key.token, _encode_tag(key.tag), f"its data is {kind}, not a BLOB")
        # substr of an empty BLOB is the empty *text* '' in some SQLite versions.
        return bytes(value) if isinstance(value, (bytes, memoryview)) else b""

    def _delete(self, key: CheckpointKey) -> bool:
        try:
            with self._connection() as conn:
                cursor = conn.execute(
                    "DELETE FROM checkpoints WHERE pid = ? AND tag = ?",
                    (key.token, _encode_tag(key.tag)),
                )
                return cursor.rowcount > 0
        except sqlite3.Error as exc:
            raise self._error(exc, doing="delete", key=key, write=True) from exc

    def _delete_pid(self, pid: Pid) -> int:
        try:
            with self._connection() as conn:
                cursor = conn.execute("DELETE FROM checkpoints WHERE pid = ?", (pid_token(pid),))
                return max(cursor.rowcount, 0)
        except sqlite3.Error as exc:
            raise self._error(
                exc, doing=f"delete the checkpoints of pid {pid!r}", write=True
            ) from exc

    def _rows(self, pid: Pid | None) -> builtins.list[tuple[object, ...]]:
        """:return: the (pid, tag, version, size, saved_at) rows of ``pid``, or of all"""
        # Never the data column: listing must not read payloads.
        query = "SELECT pid, tag, version, size, saved_at FROM checkpoints"
        params: tuple[str, ...] = ()
        if pid is not None:
            query += " WHERE pid = ?"
            params = (pid_token(pid),)
        try:
            with self._connection() as conn:
                return conn.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, doing="list the checkpoints") from exc

    def _list(self, pid: Pid | None) -> builtins.list[RecordInfo]:
        infos, damaged = read_rows(self._rows(pid), self._row_info)
        for exc in damaged:  # find_damaged() reports it, get() raises it.
            _LOG.warning("skipping a damaged checkpoint row while listing: %s", exc)
        return infos

    def _find_damaged(self, pid: Pid | None) -> builtins.list[CorruptStoredRecordError]:
        return read_rows(self._rows(pid), self._row_info)[1]

    def _list_key_tokens(self, pid: Pid | None) -> builtins.list[KeyToken]:
        # Only the primary key's columns: SQLite answers from that index alone
        # (a covering index scan), in the order list() sorts by, never touching
        # the table's rows. '' sorts before ':<tag>', as None before a tag.
        query = "SELECT pid, tag FROM checkpoints"
        params: tuple[str, ...] = ()
        if pid is not None:
            query += " WHERE pid = ?"
            params = (pid_token(pid),)
        query += " ORDER BY pid, tag"
        try:
            with self._connection() as conn:
                rows = conn.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, doing="list the checkpoints") from exc
        # Inline for the usual column values; any other is checked one by one.
        try:
            return [
                (token, None) if tag == "" else (token, tag[1:]) if tag[:1] == ":" else _raise()
                for token, tag in rows
            ]
        except (_Unusual, TypeError):
            pass
        found: builtins.list[KeyToken] = []
        for token, tag in rows:
            if isinstance(token, str) and isinstance(tag, str):
                try:
                    found.append((token, _decode_tag(tag)))
                    continue
                except StorageError:
                    pass
            _LOG.warning(
                "skipping a damaged checkpoint row while listing: %s",
                self._bad_row(token, tag, "its pid or tag is malformed"),
            )
        return found

    def _close(self) -> None:
        self._pool.close()


def open_storage(
    url: str,
    *,
    durability: Durability = "normal",
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    read_only: bool = False,
    create: bool = True,
) -> SqliteStorage:
    """Open a SQLite storage, creating the database and its directory if needed.

    :param url: ``sqlite:///rel/path.db`` or ``sqlite:////abs/path.db``
    :param durability: ``"normal"`` or ``"full"``
    :param busy_timeout: seconds to wait for other writers
    :param read_only: open it read-only: create, change and lock nothing
    :param create: create a missing database (else refuse it, creating nothing)
    :raises StorageError: if the URL is invalid, the file is not a usable database,
        or (``read_only`` or not ``create``) it does not exist
    :raises BackendUnavailableError: if the database cannot be opened or stays locked
    :return: the storage
    """
    return SqliteStorage(
        url, durability=durability, busy_timeout=busy_timeout, read_only=read_only, create=create
    )


def local_path(url: str) -> str:
    """:return: the database file a ``sqlite:`` URL names
    :raises StorageError: if the URL is invalid"""
    return path_from_url(url)
