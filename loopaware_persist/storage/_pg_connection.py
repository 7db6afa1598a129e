"""The PostgreSQL storage's connections: the pool, the retries, the typed errors.

:class:`PooledStorage` runs an operation on a pooled connection (or, to open
the store, a connection of its own), retries it with backoff while the server is
unreachable -- a write only when it provably did not commit -- and turns psycopg's
and the server's errors into this package's typed errors. A process forked from
one that used a storage gets a fresh pool. :mod:`loopaware_persist.storage.postgresql`
builds the schema, the queries and the record I/O on it; see its docstring for
how the storage behaves.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from loopaware_persist._errors import (
    BackendUnavailableError,
    DurabilityError,
    StorageError,
)
from loopaware_persist.storage._base import Storage

try:
    import psycopg
    import psycopg_pool
except ImportError as exc:  # pragma: no cover - checked in a subprocess test
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

if TYPE_CHECKING:
    from psycopg.rows import TupleRow

    _Connection = psycopg.Connection[TupleRow]
    _Pool = psycopg_pool.ConnectionPool[_Connection]

DEFAULT_POOL_MAX_SIZE = 8
DEFAULT_RETRIES = 5
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_POOL_TIMEOUT = 10.0
# Backoff between attempts: 0.1, 0.2, 0.4, 0.8 s... (times a jitter in [0.5, 1])
# capped at 2 s, so the default 5 attempts give up after ~1.5 s of sleeping
# plus the attempts themselves: long enough for a connection reset or a
# restart by a supervisor, short enough that a worker reports an outage
# promptly instead of hanging.
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0

_T = TypeVar("_T")

_HINT = "pip install 'loopaware-persist[postgres]'"

# Settings every connection gets; a URL's own libpq parameters win.
_CONNECT_DEFAULTS: dict[str, str] = {
    "connect_timeout": str(int(DEFAULT_CONNECT_TIMEOUT)),
    "application_name": "loopaware_persist",
    # A server that vanished without closing the socket (a machine crash, a
    # partitioned network) is noticed within ~30 s instead of the kernel's 2 h.
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}

# SQLSTATEs after which the operation can safely run again: the server ended
# the session (57P01 admin_shutdown, 57P02 crash_shutdown), is starting up or
# shutting down (57P03), the connection failed (class 08), too many
# connections (53300), or the transaction was rolled back by the server
# (40001 serialization_failure, 40P01 deadlock_detected, 55P03
# lock_not_available, 57014 query_canceled by a timeout).
_TRANSIENT_STATES = frozenset(
    {"57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03", "57014"}
)
# SQLSTATEs that mean the session itself is gone (a new connection is needed).
_SESSION_LOST_STATES = frozenset({"57P01", "57P02", "57P03"})
# Errors at connect time that retrying cannot fix: a wrong password or user
# (class 28), a missing database (3D000). libpq reports a failed connection
# as text only, without the SQLSTATE the server sent (psycopg issues #242 and
# #1188), so the server's (English) messages are matched too; one in another
# language is retried and then reported, message included, as unavailable.
_CONFIG_STATES_PREFIXES = ("28", "3D")
_CONFIG_MESSAGES = (
    "password authentication failed",
    "authentication failed for user",
    "no password supplied",
    "no pg_hba.conf entry",
    "does not exist",  # database "x" / role "x"
    "permission denied for database",
    "is not permitted to log in",
)


def require_psycopg() -> None:
    """:raises StorageError: saying how to install them, if psycopg or psycopg-pool is missing"""
    if _MISSING is None:
        return
    msg = (
        f"The postgresql:// storage needs psycopg 3 and psycopg-pool, which are not "
        f"installed ({_MISSING}). Install them with: {_HINT}"
    )
    raise StorageError(msg)


def _backoff(attempt: int) -> float:
    # Jitter spreads the retries of many workers that lost the server at the
    # same moment; it is not a secret, so the plain PRNG is right.
    jitter = random.uniform(0.5, 1.0)  # noqa: S311
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) * jitter)


class _Retry(Exception):
    """Internal: this attempt failed in a way that is safe and useful to retry."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _CommitLost(Exception):
    """Internal: the answer to a COMMIT was lost with the connection."""

    def __init__(self, xid: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.xid = xid
        self.cause = cause


def _cause(exc: BaseException | None) -> BaseException | None:
    return exc.cause if isinstance(exc, _Retry) else exc


# Pools inherited through fork are parked here forever instead of being closed
# or garbage collected: closing one in the child would end sessions the parent
# is still using (libpq sends Terminate on the shared socket).
_inherited_after_fork: builtins.list[object] = []
_storages: weakref.WeakSet[PooledStorage] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for storage in builtins.list(_storages):
        storage._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class PooledStorage(Storage):
    """A storage whose operations run on a pool of PostgreSQL connections.

    The base of :class:`~loopaware_persist.storage.postgresql.PostgresStorage`,
    which sets the attributes below and calls :meth:`_init_connections` before
    its first operation, then runs each one through :meth:`_run_read` or
    :meth:`_run_write`.
    """

    #: The schema holding the tables (named in error messages and the pool's name).
    schema: str
    #: Whether every session is read-only on the server.
    read_only: bool
    #: Attempts an operation gets while the server is unreachable.
    retries: int
    #: Most connections held at once.
    pool_max_size: int
    #: Seconds an operation waits for a free pooled connection.
    pool_timeout: float
    #: The ``synchronous_commit`` every connection uses.
    synchronous_commit: str

    def _init_connections(self, libpq_url: str) -> None:
        """Settle the connection settings; the pool is started on first use.

        :param libpq_url: the URL for libpq, without the storage's own parameters
        :raises StorageError: if libpq cannot read it
        """
        try:
            params = psycopg.conninfo.conninfo_to_dict(libpq_url)
        except psycopg.ProgrammingError as exc:
            msg = f"Invalid PostgreSQL URL {self.url!r}: {exc}. See libpq's connection URIs."
            raise StorageError(msg) from None
        for name, value in _CONNECT_DEFAULTS.items():
            params.setdefault(name, value)
        self._conninfo = psycopg.conninfo.make_conninfo("", **params)
        self._lock = threading.Lock()
        self._pool: _Pool | None = None
        self._pool_pid = os.getpid()
        # A generation number per pool: a failure seen on an old pool must not
        # make a thread throw away the new one another thread just created.
        self._generation = 0
        self._suspect: int | None = None  # generation whose connections died
        _storages.add(self)

    # -- connections ---------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        # autocommit: reads are single statements, and writes issue BEGIN and
        # COMMIT themselves so that they know which step a failure hit.
        return {"autocommit": True}

    def _configure(self, conn: _Connection) -> None:
        if self.read_only:
            # The server itself then refuses any write this session attempts.
            conn.execute("SELECT set_config('default_transaction_read_only', 'on', false)")
        conn.execute(
            "SELECT set_config('synchronous_commit', %s, false), "
            # A client stalled mid-transaction must not hold a row lock forever.
            "set_config('idle_in_transaction_session_timeout', '60s', false)",
            (self.synchronous_commit,),
        )

    def _connect_direct(self) -> _Connection:
        conn: _Connection = psycopg.Connection.connect(self._conninfo, **self._connect_kwargs())
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _new_pool(self) -> _Pool:
        pool: _Pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            kwargs=self._connect_kwargs(),
            min_size=1,
            max_size=self.pool_max_size,
            open=False,
            configure=self._configure,
            name=f"loopaware-{self.schema}-{id(self):x}",
            timeout=self.pool_timeout,
        )
        pool.open(wait=False)
        return pool

    def _current_pool(self) -> tuple[_Pool, int]:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._pool is None:
                self._pool = self._new_pool()
                self._pool_pid = os.getpid()
            return self._pool, self._generation

    def _renew_pool(self, generation: int) -> None:
        """Replace the pool whose connections died, once the server answers again.

        psycopg_pool reconnects on its own, but with a backoff that grows to
        minutes while the server is down; a fresh pool connects at once.
        """
        with self._lock:
            if generation != self._generation or self._closed:
                return
            old, self._pool = self._pool, None
            self._generation += 1
            self._suspect = None
        if old is not None:
            # Connections other threads hold are closed when they give them back.
            old.close(timeout=1.0)

    @contextlib.contextmanager
    def _direct_connection(self) -> Iterator[_Connection]:
        """A connection outside the pool, closed afterwards.

        :raises _Retry: with the reason, if the server is unreachable
        :raises StorageError: if it refuses us (credentials, database name)
        """
        try:
            conn = self._connect_direct()
        except psycopg.OperationalError as exc:
            state, text = exc.sqlstate or "", str(exc)
            if state.startswith(_CONFIG_STATES_PREFIXES) or any(
                fragment in text for fragment in _CONFIG_MESSAGES
            ):
                msg = (
                    f"PostgreSQL refused the connection for {self.url!r}: {exc}. Check the user, "
                    f"password and database name in the URL."
                )
                raise StorageError(msg) from exc
            raise _Retry(exc) from exc
        try:
            yield conn
        finally:
            conn.close()

    def _probe(self) -> None:
        """Connect once outside the pool, to learn whether (and why not) the server answers.

        :raises _Retry: with the reason, if the server is unreachable
        :raises StorageError: if it refuses us (credentials, database name)
        """
        with self._direct_connection():
            pass

    @contextlib.contextmanager
    def _connection(self) -> Iterator[_Connection]:
        """A pooled connection; raises :class:`_Retry` when a retry may help."""
        pool, generation = self._current_pool()
        if self._suspect == generation:
            self._probe()
            self._renew_pool(generation)
            pool, generation = self._current_pool()
        try:
            conn = pool.getconn()
        except psycopg_pool.PoolClosed as exc:
            if self._closed:
                raise self._closed_error() from None
            raise _Retry(exc) from exc  # replaced by another thread: use the new one
        except psycopg_pool.PoolTimeout as exc:
            # Either every connection stayed busy, or the pool cannot connect and
            # is backing off (it only logs why). A direct attempt tells: it
            # raises if the server is unreachable; if not, the next attempt
            # starts a fresh pool.
            self._suspect_pool(generation)
            self._probe()
            raise _Retry(exc) from exc
        try:
            yield conn
        except BaseException as exc:
            if self._session_lost(conn, exc.cause if isinstance(exc, _CommitLost) else exc):
                # The session died (server restarted or killed, network cut):
                # the pool's other idle connections most likely died with it.
                self._suspect_pool(generation)
            raise
        finally:
            if conn.closed:
                pass  # the pool discards it
            elif conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            pool.putconn(conn)  # a broken connection is discarded and replaced

    def _suspect_pool(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._suspect = generation

    @staticmethod
    def _session_lost(conn: _Connection | None, exc: BaseException) -> bool:
        if conn is not None and conn.closed:
            return True
        if isinstance(exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed):
            return False
        if not isinstance(exc, psycopg.OperationalError):
            return False
        state = exc.sqlstate
        # No SQLSTATE: libpq itself failed (no answer from the server at all).
        return state is None or state.startswith("08") or state in _SESSION_LOST_STATES

    @classmethod
    def _transient(cls, conn: _Connection | None, exc: BaseException) -> bool:
        if isinstance(exc, _Retry):
            return True
        if not isinstance(exc, psycopg.Error):
            return False
        if cls._session_lost(conn, exc):
            return True
        state = exc.sqlstate or ""
        return state.startswith("08") or state in _TRANSIENT_STATES

    def _closed_error(self) -> StorageError:
        msg = (
            f"The storage {self.url!r} is closed. Open it again with "
            f"open_storage('postgresql://...')."
        )
        return StorageError(msg)

    # -- running operations with bounded retries ----------------------------------------

    def _unavailable(
        self, doing: str, cause: BaseException | None, attempts: int, started: float
    ) -> BackendUnavailableError:
        reason = cause.cause if isinstance(cause, _Retry) else cause
        detail = f"{type(reason).__name__}: {reason}".strip() if reason else "no answer"
        msg = (
            f"Could not {doing} in {self.url!r}: the PostgreSQL server was unreachable for "
            f"{attempts} attempts over {time.monotonic() - started:.1f} s (last error: "
            f"{detail}). Nothing was changed. Check that the server is running and reachable, "
            f"then retry."
        )
        return BackendUnavailableError(msg)

    def _run_read(
        self, doing: str, body: Callable[[_Connection], _T], *, direct: bool = False
    ) -> _T:
        """Run a read (or an idempotent write, like the migration), retrying.

        :param direct: on a connection of its own rather than a pooled one
        """
        started = time.monotonic()
        last: BaseException | None = None
        for attempt in range(self.retries):
            if attempt:
                time.sleep(_backoff(attempt - 1))
            conn: _Connection | None = None
            try:
                with self._direct_connection() if direct else self._connection() as conn:
                    return body(conn)
            except (_Retry, psycopg.Error) as exc:
                if not self._transient(conn, exc):
                    raise self._error(exc, doing=doing, write=False) from exc
                last = exc
        raise self._unavailable(doing, last, self.retries, started) from _cause(last)

    def _run_write(self, doing: str, body: Callable[[_Connection], tuple[_T, int | None]]) -> _T:
        """Run a write transaction; retry only what provably did not commit.

        ``body`` runs after ``BEGIN`` and returns its result and the
        transaction id (``None`` if it changed nothing); it may raise (e.g.
        :class:`StaleCheckpointError`), which rolls back. Then ``COMMIT``.
        """
        started = time.monotonic()
        last: BaseException | None = None
        for attempt in range(self.retries):
            if attempt:
                time.sleep(_backoff(attempt - 1))
            conn: _Connection | None = None
            try:
                with self._connection() as conn:
                    conn.execute("BEGIN")
                    # Any failure up to here, or in body, happens before COMMIT
                    # is sent, so the transaction cannot have committed.
                    result, xid = body(conn)
                    if xid is None:  # nothing changed: nothing to commit or lose
                        with contextlib.suppress(psycopg.Error):
                            conn.execute("ROLLBACK")
                        return result
                    try:
                        self._commit(conn)
                    except psycopg.Error as exc:
                        if not self._session_lost(conn, exc):
                            raise  # the server answered with an error: rolled back
                        # The server may have committed and then lost us (or
                        # been killed) before we read its answer.
                        raise _CommitLost(xid, exc) from exc
                    return result
            except _CommitLost as lost:
                if self._resolve(doing, lost, started):
                    return result  # it did commit: running it again would be a second put
                last = lost.cause  # it aborted: safe to run again
            except (_Retry, psycopg.Error) as exc:
                if not self._transient(conn, exc):
                    raise self._error(exc, doing=doing, write=True) from exc
                last = exc
        raise self._unavailable(doing, last, self.retries, started) from _cause(last)

    def _commit(self, conn: _Connection) -> None:
        """Send ``COMMIT``; a seam for tests that lose its answer on purpose."""
        conn.execute("COMMIT")

    def _resolve(self, doing: str, unknown: _CommitLost, started: float) -> bool:
        """Ask the server whether a transaction whose COMMIT answer was lost committed.

        :raises BackendUnavailableError: if the server cannot tell within the retries
        :return: ``True`` if it committed, ``False`` if it aborted
        """
        last: BaseException = unknown.cause
        for attempt in range(self.retries):
            time.sleep(_backoff(attempt))
            conn: _Connection | None = None
            try:
                with self._connection() as conn:
                    row = conn.execute("SELECT txid_status(%s)", (unknown.xid,)).fetchone()
            except (_Retry, psycopg.Error, StorageError) as exc:
                if not self._transient(conn, exc):
                    break  # e.g. the credentials stopped working: still unknown
                last = exc
                continue
            status = None if row is None else row[0]
            if status == "committed":
                return True
            if status == "aborted":
                return False
            if status is None:  # too old to know, cannot happen within seconds
                break
            # "in progress": the old session has not noticed it lost us yet.
        reason = last.cause if isinstance(last, _Retry) else last
        msg = (
            f"Could not {doing} in {self.url!r}: the connection was lost while committing "
            f"(transaction {unknown.xid}) and the server could not say within "
            f"{time.monotonic() - started:.1f} s whether it committed (last error: "
            f"{type(reason).__name__}: {reason}). The save may or may not have been stored: "
            f"once the server is reachable, get() the checkpoint to find out."
        )
        raise BackendUnavailableError(msg) from unknown.cause

    def _error(self, exc: BaseException, *, doing: str, write: bool) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        state = getattr(exc, "sqlstate", None) or ""
        where = f"Could not {doing} in {self.url!r}"
        if state in ("42P01", "3F000"):  # undefined_table, invalid_schema_name
            msg = (
                f"{where}: the table is gone ({exc}); someone dropped the schema "
                f"{self.schema!r}. Open the storage again to recreate it."
            )
            return StorageError(msg)
        if write and (state[:2] in ("53", "54") or state in ("42501", "25006")):
            hint = {
                "42501": "Grant this user INSERT, UPDATE and DELETE on the checkpoints table.",
                "25006": "The server is a read-only standby; connect to the primary "
                "(add target_session_attrs=read-write to the URL).",
                "54000": "The pid and tag together may be too long for an index "
                "(at most about 2.5 kB), or the payload above 1 GB.",
            }.get(state, "Check the server's disk space and logs.")
            msg = (
                f"{where}: the write failed ({type(exc).__name__}: {exc}). "
                f"Nothing was stored. {hint}"
            )
            return DurabilityError(msg)
        msg = f"{where}: {type(exc).__name__}: {exc}"
        return StorageError(msg)

    # -- closing, forking ----------------------------------------------------------

    def _close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        _storages.discard(self)
        if pool is not None:
            pool.close(timeout=5.0)

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by a parent thread at fork time; that
        # thread does not exist here, so it would never be released.
        self._lock = threading.Lock()
        if self._pool is not None and self._pool_pid != os.getpid():
            _inherited_after_fork.append(self._pool)
            self._pool = None
            self._generation += 1
            self._suspect = None
