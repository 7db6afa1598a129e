"""``postgresql://user@host:port/db``: checkpoints in a shared PostgreSQL database.

The URL is libpq's (``postgres://`` works too): anything libpq takes in the
query string (``sslmode=require``, ``target_session_attrs=read-write``,
``application_name=...``) is passed on. Three query parameters are this
storage's own and are removed before the URL reaches libpq:

``schema``
    the schema holding the tables, ``loopaware`` by default (lower-case
    letters, digits and ``_``); several independent stores can share a database
``pool_max_size``
    connections the storage may hold open at once, 8 by default
``retries``
    attempts an operation gets when the server is unreachable, 5 by default

Needs the ``postgres`` extra (psycopg 3 and psycopg-pool), imported only when
such a URL is opened. PostgreSQL 10 or newer.

Schema (version 1, recorded in ``<schema>.schema_migrations``)::

    checkpoints(pid bytea, tag bytea, version bigint, size bigint,
                saved_at timestamptz, data bytea, PRIMARY KEY (pid, tag))

``pid`` holds :func:`pid_token` as UTF-8 and ``tag`` is ``''`` for the untagged
checkpoint and ``':' || tag`` otherwise, as in the SQLite storage. They are
``bytea``, not ``text``, because ``text`` cannot hold NUL (a valid pid) and is
bound to the database's encoding (a ``LATIN1`` database cannot hold ``"日本"``).
In ``psql``: ``SELECT convert_from(pid, 'UTF8'), version, size, saved_at FROM
loopaware.checkpoints``. ``saved_at`` is the server's clock, so workers on
several machines agree on it.

How it behaves:

* Each put is one transaction; the version is bumped by the database in the
  same statement that writes the data (``INSERT ... ON CONFLICT DO UPDATE``,
  or ``UPDATE ... WHERE version = expected`` for a compare-and-set), so
  concurrent writers from any number of threads, processes and machines get
  each version exactly once and a stale writer is fenced.
* :meth:`~PostgresStorage.list` selects metadata columns only; ``data`` is
  stored out of line and not compressed by PostgreSQL (``STORAGE EXTERNAL``;
  the envelope compresses payloads itself when asked to, with zlib or zstd),
  so neither listing nor ``read_prefix`` (``substring(data FROM 1 FOR n)``)
  touches more of it than it returns.
* Connections come from a :class:`psycopg_pool.ConnectionPool`, shared by the
  threads using one storage. A process forked from one that used the storage
  gets a fresh pool of its own and never touches the parent's connections.
* Transient failures (the server restarting, a dropped connection, a
  serialisation failure) are retried with exponential backoff, ``retries``
  times; then :class:`BackendUnavailableError`. Reads are always retried. A
  write is retried only when it provably did not commit: the transaction id
  is read before ``COMMIT`` is sent, and when the answer to ``COMMIT`` is lost
  with the connection, ``txid_status()`` asks the server whether it committed
  (then the put succeeded and is not repeated) or aborted (then it is retried).
  If the server stays down so that nobody can tell, the error says the save
  may or may not have been stored. Unless the URL sets them, connections use
  ``connect_timeout=10`` and TCP keepalives that notice a vanished server
  within about 30 s.
* ``durability="normal"`` commits with ``synchronous_commit=local`` and
  ``"full"`` with ``on``; never ``off``, which loses acknowledged saves when
  the server crashes (see :attr:`PostgresStorage.synchronous_commit`).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

from loopaware_persist._errors import StorageError
from loopaware_persist.storage._base import (
    CheckpointKey,
    CorruptStoredRecordError,
    Durability,
    KeyToken,
    Pid,
    RecordInfo,
    StoredRecord,
    pid_token,
    read_rows,
)
from loopaware_persist.storage._pg_connection import (
    BACKOFF_BASE as BACKOFF_BASE,
    BACKOFF_CAP as BACKOFF_CAP,
    DEFAULT_CONNECT_TIMEOUT as DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POOL_MAX_SIZE,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_RETRIES,
    PooledStorage,
    require_psycopg,
)
from loopaware_persist.storage._url import redact_url

with contextlib.suppress(ImportError):  # PostgresStorage() says how to install it
    from psycopg import sql

if TYPE_CHECKING:
    from loopaware_persist.storage._pg_connection import _Connection

__all__ = (
    "DEFAULT_POOL_MAX_SIZE",
    "DEFAULT_RETRIES",
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "PostgresStorage",
    "open_storage",
)

SCHEMA_VERSION = 1
DEFAULT_SCHEMA = "loopaware"

_LOG = logging.getLogger(__name__)

_OWN_PARAMETERS = ("schema", "pool_max_size", "retries")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}", re.ASCII)
_INT32_MAX = 2**31 - 1
# How many times a compare-and-set retries when the row changed between its
# UPDATE and the SELECT that reads the actual version for the error (e.g. it
# was deleted and written again to exactly the expected version).
_CAS_RACES = 5


def _encode_tag(tag: str | None) -> bytes:
    return b"" if tag is None else b":" + tag.encode("utf-8")


def _decode_text(value: bytes, *, what: str) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        msg = (
            f"Malformed {what} column value {bytes(value)[:60]!r}: not UTF-8. The row was "
            f"written by another program; remove it."
        )
        raise StorageError(msg) from None


def _decode_tag(value: bytes) -> str | None:
    text = _decode_text(value, what="tag")
    if text == "":
        return None
    if text.startswith(":"):
        return text[1:]
    msg = f"Malformed tag column value {text!r}: expected '' or ':<tag>'."
    raise StorageError(msg)


def _parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split off this storage's own query parameters.

    The rest of the URL is passed to libpq byte for byte: re-encoding it
    through :mod:`urllib.parse` would turn ``+`` into a space, which libpq
    does not, and would mangle host-less URLs (``postgresql:///db?host=/tmp``).

    :param url: the URL given to :func:`open_storage`
    :raises StorageError: if it is not a PostgreSQL URL
    :return: the URL for libpq, and this storage's parameters
    """
    shown = redact_url(url)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        msg = (
            f"Not a PostgreSQL URL: {shown!r}. Use libpq's form, "
            f"'postgresql://user@host:port/dbname'."
        )
        raise StorageError(msg)
    head, _, query = url.partition("?")
    own: dict[str, str] = {}
    passed: list[str] = []
    for piece in query.split("&") if query else []:
        raw_name, _, raw_value = piece.partition("=")
        name = urllib.parse.unquote(raw_name)
        if name not in _OWN_PARAMETERS:
            passed.append(piece)
            continue
        if name in own:
            msg = f"The PostgreSQL URL {shown!r} gives {name!r} twice. Give it once."
            raise StorageError(msg)
        own[name] = urllib.parse.unquote(raw_value)
    return (f"{head}?{'&'.join(passed)}" if passed else head), own


def _positive_int(value: str | int, *, name: str, shown: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if isinstance(value, bool) or number < 1:
        msg = f"{name} must be a positive integer, got {value!r} (in {shown!r})."
        raise StorageError(msg)
    return number


def _lock_key(schema: str) -> int:
    # pg_advisory_xact_lock takes a bigint; derive a stable one per schema so
    # stores in different schemas of one database migrate independently.
    digest = hashlib.sha256(f"loopaware_persist migrate {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStorage(PooledStorage):
    """Checkpoints in a PostgreSQL database; see the module docstring.

    :param url: ``postgresql://user[:password]@host[:port]/dbname[?params]``
    :param durability: ``"normal"`` or ``"full"``, see :attr:`synchronous_commit`
    :param schema: the schema holding the tables (overrides ``?schema=``)
    :param pool_max_size: most connections held at once (overrides ``?pool_max_size=``)
    :param retries: attempts per operation while the server is unreachable
        (overrides ``?retries=``)
    :param pool_timeout: seconds an operation waits for a free pooled connection
    :raises StorageError: if psycopg is missing, the URL or an option is
        invalid, the credentials or database name are wrong, the server is
        older than PostgreSQL 10, or the schema is newer than this version
    :raises BackendUnavailableError: if the server cannot be reached
    """

    def __init__(
        self,
        url: str,
        *,
        durability: Durability = "normal",
        schema: str | None = None,
        pool_max_size: int | None = None,
        retries: int | None = None,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        read_only: bool = False,
    ) -> None:
        require_psycopg()
        shown = redact_url(url)
        # The password never reaches repr() or an error message.
        super().__init__(url=shown, durability=durability)
        self.read_only = bool(read_only)
        libpq_url, own = _parse_url(url)
        self.schema = schema if schema is not None else own.get("schema", DEFAULT_SCHEMA)
        if not isinstance(self.schema, str) or not _SCHEMA_NAME.fullmatch(self.schema):
            msg = (
                f"Invalid schema name {self.schema!r} for {shown!r}: use 1 to 63 lower-case "
                f"ASCII letters, digits and '_', not starting with a digit."
            )
            raise StorageError(msg)
        self.pool_max_size = _positive_int(
            pool_max_size
            if pool_max_size is not None
            else own.get("pool_max_size", DEFAULT_POOL_MAX_SIZE),
            name="pool_max_size",
            shown=shown,
        )
        self.retries = _positive_int(
            retries if retries is not None else own.get("retries", DEFAULT_RETRIES),
            name="retries",
            shown=shown,
        )
        self.pool_timeout = float(pool_timeout)
        # Why not synchronous_commit=off for "normal": an asynchronous commit is
        # acknowledged while its WAL record is still in shared memory, so even a
        # crash of the PostgreSQL server alone (not of the OS) loses it; the
        # "normal" promise is that an acknowledged save survives that.
        # PostgreSQL has no level between "off" and flushing the WAL locally,
        # so "normal" is "local": durable on this server's disk, without
        # waiting for synchronous standbys. "full" is "on": with
        # synchronous_standby_names configured it also waits for the standbys,
        # so a save survives losing the primary machine; without standbys the
        # two are the same.
        #: The ``synchronous_commit`` every connection of this storage uses.
        self.synchronous_commit = "on" if self.durability == "full" else "local"
        self._init_connections(libpq_url)
        self._queries = _Queries(self.schema)
        try:
            # On a connection of its own, not the pool's: a server that is down
            # shows at once, and the pool is started only once it answered.
            if self.read_only:
                self._run_read("open the checkpoint schema", self._check_store, direct=True)
            else:
                self._run_read("open the checkpoint schema", self._migrate, direct=True)
        except BaseException:
            self._close()
            raise

    # -- schema --------------------------------------------------------------------

    def _schema_version(self, conn: _Connection) -> int | None:
        row = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'schema_migrations'",
            (self.schema,),
        ).fetchone()
        if row is None:
            return None
        found = conn.execute(self._queries.max_version).fetchone()
        return None if found is None or found[0] is None else int(found[0])

    def _foreign_tables(self, conn: _Connection) -> builtins.list[str]:
        """The tables of the schema, if it has tables but no ``schema_migrations``."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm')",
            (self.schema,),
        ).fetchall()
        names = sorted(str(row[0]) for row in rows)
        return [] if "schema_migrations" in names else names

    def _refuse_foreign(self, conn: _Connection) -> None:
        foreign = self._foreign_tables(conn)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            msg = (
                f"The schema {self.schema!r} in {self.url!r} is not a loopaware checkpoint "
                f"store: it holds other tables ({shown}) and no schema_migrations table. It was "
                f"left unchanged. Choose another schema with ?schema=NAME."
            )
            raise StorageError(msg)

    def _newer_schema(self, found: int) -> StorageError:
        msg = (
            f"The schema {self.schema!r} in {self.url!r} has checkpoint schema version "
            f"{found}, newer than the {SCHEMA_VERSION} this loopaware_persist understands. "
            f"Upgrade loopaware_persist to use it."
        )
        return StorageError(msg)

    def _check_store(self, conn: _Connection) -> None:
        """The read-only open: check the store is there and current; change nothing."""
        self._refuse_foreign(conn)
        found = self._schema_version(conn)
        if found is None:
            msg = (
                f"No checkpoint store at {self.url!r}: the schema {self.schema!r} holds none. "
                f"Reading creates nothing; check the URL and its ?schema=."
            )
            raise StorageError(msg)
        if found < SCHEMA_VERSION:
            msg = (
                f"The checkpoint store in schema {self.schema!r} of {self.url!r} is at schema "
                f"version {found} and needs migrating to {SCHEMA_VERSION}, which a read-only "
                f"open does not do. Open it once for writing (e.g. open_persister(url))."
            )
            raise StorageError(msg)
        if found > SCHEMA_VERSION:
            raise self._newer_schema(found)

    def _migrate(self, conn: _Connection) -> None:
        if conn.info.server_version < 100000:
            msg = (
                f"The server behind {self.url!r} runs PostgreSQL {conn.info.server_version}; "
                f"this storage needs PostgreSQL 10 or newer (for txid_status)."
            )
            raise StorageError(msg)
        found = self._schema_version(conn)
        if found is None or found < SCHEMA_VERSION:
            # Under an advisory lock, so processes opening a new database at the
            # same time apply each migration exactly once; one transaction, so a
            # crash halfway leaves the old schema, and a retry starts over.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self.schema),))
                # Before anything is created: another application's tables (an
                # unrelated "checkpoints" among them) are left as found.
                self._refuse_foreign(conn)
                exists = conn.execute(
                    "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (self.schema,)
                ).fetchone()
                if exists is None:
                    conn.execute(self._queries.create_schema)
                conn.execute(self._queries.create_migrations)
                found = self._schema_version(conn) or 0
                for version, description, statements in self._queries.migrations:
                    if version <= found:
                        continue
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(self._queries.record_migration, (version, description))
                    found = version
        if found > SCHEMA_VERSION:
            raise self._newer_schema(found)

    # -- Storage hooks ---------------------------------------------------------------

    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        pid, tag = key.token.encode("utf-8"), _encode_tag(key.tag)
        doing = f"save pid {key.pid!r} with tag {key.tag!r}"
        q = self._queries

        def body(conn: _Connection) -> tuple[int, int | None]:
            if expected_version is None:
                row = conn.execute(q.upsert, (pid, tag, len(data), data)).fetchone()
            elif expected_version == 0:
                row = conn.execute(q.insert_new, (pid, tag, len(data), data)).fetchone()
            else:
                row = conn.execute(
                    q.update_if, (len(data), data, pid, tag, expected_version)
                ).fetchone()
            if row is not None:
                return int(row[0]), int(row[1])
            # The compare-and-set lost. READ COMMITTED: this sees the latest commit.
            current = conn.execute(q.version, (pid, tag)).fetchone()
            actual = 0 if current is None else int(current[0])
            if actual == expected_version:
                return -1, None  # changed under us between the statements: try again
            raise self._stale(key, expected=expected_version or 0, actual=actual)

        for _ in range(_CAS_RACES):
            version = self._run_write(doing, body)
            if version != -1:
                return version
        raise self._stale(key, expected=expected_version or 0, actual=expected_version or 0)

    def _select_key(
        self, key: CheckpointKey, query: sql.Composed, *first: object
    ) -> tuple[Any, ...]:
        """Read the row of one checkpoint.

        :param query: a ``SELECT`` whose last parameters are the pid and the tag
        :param first: its parameters before them
        :raises CheckpointNotFoundError: if there is no such checkpoint
        :return: the row
        """
        params = (*first, key.token.encode("utf-8"), _encode_tag(key.tag))

        def body(conn: _Connection) -> tuple[Any, ...] | None:
            # Binary results: a bytea comes back as its bytes, not as hex text
            # twice its size to parse.
            with conn.cursor(binary=True) as cursor:
                return cursor.execute(query, params).fetchone()

        row = self._run_read(f"read pid {key.pid!r} with tag {key.tag!r}", body)
        if row is None:
            raise self._not_found(key)
        return row

    def _get(self, key: CheckpointKey) -> StoredRecord:
        version, data = self._select_key(key, self._queries.get)
        return StoredRecord(key=key, data=bytes(data), version=int(version))

    def _read_prefix(self, key: CheckpointKey, size: int) -> bytes:
        (prefix,) = self._select_key(key, self._queries.read_prefix, min(size, _INT32_MAX))
        return bytes(prefix)

    def _delete(self, key: CheckpointKey) -> bool:
        params = (key.token.encode("utf-8"), _encode_tag(key.tag))

        def body(conn: _Connection) -> tuple[bool, int | None]:
            rows = conn.execute(self._queries.delete, params).fetchall()
            return bool(rows), (int(rows[0][0]) if rows else None)

        return self._run_write(f"delete pid {key.pid!r} with tag {key.tag!r}", body)

    def _delete_pid(self, pid: Pid) -> int:
        token = pid_token(pid).encode("utf-8")

        def body(conn: _Connection) -> tuple[int, int | None]:
            rows = conn.execute(self._queries.delete_pid, (token,)).fetchall()
            return len(rows), (int(rows[0][0]) if rows else None)

        return self._run_write(f"delete the checkpoints of pid {pid!r}", body)

    def _select(
        self, pid: Pid | None, every: sql.Composed, of_pid: sql.Composed
    ) -> builtins.list[tuple[Any, ...]]:
        """:return: the rows ``of_pid`` selects for ``pid``, or (``pid`` is ``None``)
        those ``every`` selects"""

        def body(conn: _Connection) -> builtins.list[tuple[Any, ...]]:
            with conn.cursor(binary=True) as cursor:
                if pid is None:
                    return cursor.execute(every).fetchall()
                token = pid_token(pid).encode("utf-8")
                return cursor.execute(of_pid, (token,)).fetchall()

        return self._run_read("list the checkpoints", body)

    def _rows(self, pid: Pid | None) -> builtins.list[tuple[Any, ...]]:
        """:return: the (pid, tag, version, size, saved_at) rows of ``pid``, or of all"""
        return self._select(pid, self._queries.list_all, self._queries.list_pid)

    def _list(self, pid: Pid | None) -> builtins.list[RecordInfo]:
        infos, damaged = read_rows(self._rows(pid), self._row_info)
        for exc in damaged:  # find_damaged() reports it.
            _LOG.warning("skipping a damaged checkpoint row while listing: %s", exc)
        return infos

    def _row_info(self, row: tuple[Any, ...]) -> RecordInfo:
        token, tag, version, size, saved_at = row
        try:
            key = CheckpointKey._from_storage(
                _decode_text(token, what="pid"), _decode_tag(bytes(tag))
            )
        except StorageError as exc:
            msg = (
                f"The checkpoint row pid={bytes(token)[:60]!r} tag={bytes(tag)[:60]!r} in "
                f"{self.url!r} (schema {self.schema!r}) is damaged: {str(exc).rstrip('.')}. "
                f"Something other than loopaware_persist wrote it; delete that row or restore "
                f"it from a backup."
            )
            raise CorruptStoredRecordError(msg) from None
        # The column types (bigint, timestamptz) and CHECKs keep the rest valid.
        return RecordInfo(key=key, version=int(version), size=int(size), saved_at=float(saved_at))

    def _find_damaged(self, pid: Pid | None) -> builtins.list[CorruptStoredRecordError]:
        return read_rows(self._rows(pid), self._row_info)[1]

    def _list_key_tokens(self, pid: Pid | None) -> builtins.list[KeyToken]:
        rows = self._select(pid, self._queries.list_keys_all, self._queries.list_keys_pid)
        try:
            # Inline for the usual column values: UTF-8, and b'' or b':<tag>'.
            return [
                (token.decode(), None)
                if tag == b""
                else (token.decode(), tag[1:].decode())
                if tag[:1] == b":"
                else (token.decode(), _decode_tag(bytes(tag)))
                for token, tag in rows
            ]
        except UnicodeDecodeError:
            # Again, value by value, to raise the error that names the bad one.
            found: builtins.list[KeyToken] = []
            for token, tag in rows:
                try:
                    found.append((_decode_text(token, what="pid"), _decode_tag(bytes(tag))))
                except StorageError as exc:
                    _LOG.warning("skipping a damaged checkpoint row while listing: %s", exc)
            return found


class _Queries:
    """The SQL, composed once per schema name."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)
        table = sql.SQL("{}.checkpoints").format(s)
        migrations = sql.SQL("{}.schema_migrations").format(s)
        self.create_schema = sql.SQL("CREATE SCHEMA {}").format(s)
        self.create_migrations = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            "version integer PRIMARY KEY, "
            "description text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ).format(migrations)
        self.max_version = sql.SQL("SELECT max(version) FROM {}").format(migrations)
        self.record_migration = sql.SQL(
            "INSERT INTO {} (version, description) VALUES (%s, %s)"
        ).format(migrations)
        self.migrations: tuple[tuple[int, str, tuple[sql.Composed, ...]], ...] = (
            (
                1,
                "checkpoints table",
                (
                    sql.SQL(
                        "CREATE TABLE {} ("
                        "pid bytea NOT NULL, "  # pid_token() as UTF-8
                        "tag bytea NOT NULL, "  # '' for no tag, ':' || tag otherwise
                        "version bigint NOT NULL CHECK (version > 0), "
                        "size bigint NOT NULL CHECK (size >= 0), "
                        "saved_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                        "data bytea NOT NULL, "
                        "PRIMARY KEY (pid, tag))"
                    ).format(table),
                    # Out of line and not compressed by PostgreSQL: the envelope
                    # compresses when asked to, and substring() can then fetch
                    # just the chunks it needs instead of decompressing.
                    sql.SQL("ALTER TABLE {} ALTER COLUMN data SET STORAGE EXTERNAL").format(table),
                ),
            ),
        )
        columns = sql.SQL("(pid, tag, version, size, saved_at, data)")
        self.upsert = sql.SQL(
            "INSERT INTO {t} {c} VALUES (%s, %s, 1, %s, clock_timestamp(), %s) "
            "ON CONFLICT (pid, tag) DO UPDATE SET version = {t}.version + 1, "
            "size = EXCLUDED.size, saved_at = EXCLUDED.saved_at, data = EXCLUDED.data "
            "RETURNING version, txid_current()"
        ).format(t=table, c=columns)
        self.insert_new = sql.SQL(
            "INSERT INTO {t} {c} VALUES (%s, %s, 1, %s, clock_timestamp(), %s) "
            "ON CONFLICT (pid, tag) DO NOTHING RETURNING version, txid_current()"
        ).format(t=table, c=columns)
        # Under READ COMMITTED a concurrent writer's UPDATE makes this one wait,
        # then re-check "version = %s" against the row it committed.
        self.update_if = sql.SQL(
            "UPDATE {} SET version = version + 1, size = %s, saved_at = clock_timestamp(), "
            "data = %s WHERE pid = %s AND tag = %s AND version = %s "
            "RETURNING version, txid_current()"
        ).format(table)
        self.version = sql.SQL("SELECT version FROM {} WHERE pid = %s AND tag = %s").format(table)
        self.get = sql.SQL("SELECT version, data FROM {} WHERE pid = %s AND tag = %s").format(table)
        self.read_prefix = sql.SQL(
            "SELECT substring(data FROM 1 FOR %s::integer) FROM {} WHERE pid = %s AND tag = %s"
        ).format(table)
        self.delete = sql.SQL(
            "DELETE FROM {} WHERE pid = %s AND tag = %s RETURNING txid_current()"
        ).format(table)
        self.delete_pid = sql.SQL("DELETE FROM {} WHERE pid = %s RETURNING txid_current()").format(
            table
        )
        # Never the data column: listing must not read payloads.
        listing = "SELECT pid, tag, version, size, date_part('epoch', saved_at) FROM {}"
        self.list_all = sql.SQL(listing).format(table)
        self.list_pid = sql.SQL(listing + " WHERE pid = %s").format(table)
        # The primary key's columns only, in its order: an index-only scan. bytea
        # sorts bytewise, and UTF-8 bytewise is code point order, as Python sorts.
        self.list_keys_all = sql.SQL("SELECT pid, tag FROM {} ORDER BY pid, tag").format(table)
        self.list_keys_pid = sql.SQL(
            "SELECT pid, tag FROM {} WHERE pid = %s ORDER BY pid, tag"
        ).format(table)


def open_storage(
    url: str,
    *,
    durability: Durability = "normal",
    schema: str | None = None,
    pool_max_size: int | None = None,
    retries: int | None = None,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    read_only: bool = False,
) -> PostgresStorage:
    """Open a PostgreSQL storage, creating its schema and tables if needed.

    :param url: ``postgresql://user[:password]@host[:port]/dbname[?params]``
    :param durability: ``"normal"`` or ``"full"``
    :param schema: the schema holding the tables (default ``loopaware``)
    :param pool_max_size: most connections held at once
    :param retries: attempts per operation while the server is unreachable
    :param pool_timeout: seconds an operation waits for a free pooled connection
    :param read_only: create and migrate nothing; the session is read-only on the server
    :raises StorageError: if psycopg is missing (``pip install
        'loopaware-persist[postgres]'``), the URL is invalid, the server refuses
        the credentials, or the schema is newer than this version
    :raises BackendUnavailableError: if the server cannot be reached
    :return: the storage
    """
    return PostgresStorage(
        url,
        durability=durability,
        schema=schema,
        pool_max_size=pool_max_size,
        retries=retries,
        pool_timeout=pool_timeout,
        read_only=read_only,
    )
