"""The PostgreSQL storage, against a real server.

The server's URL comes from ``LOOPAWARE_TEST_POSTGRES_URL``. Start a throwaway
one with ``bash .ci/servers/start-postgres.sh`` (it writes the variable to
``.ci/servers/postgres.env``); without it these tests skip, except under
``CI`` (``.ci/run``), where a missing server fails them. Each test works in a
schema of its own, dropped afterwards. The crash test starts a cluster of its
own with the same script, so killing it disturbs no other test.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pathlib
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

import loopaware_persist
from loopaware_persist._errors import (
    BackendUnavailableError,
    CheckpointNotFoundError,
    StaleCheckpointError,
    StorageError,
)
from loopaware_persist.storage import CheckpointKey, Durability, Storage
from loopaware_persist.testing import (
    check_storage,
    check_storage_processes,
    storage_state_machine,
)
from loopaware_persist.testing._check_concurrency import increment_by_compare_and_set
from tests.axes import postgres_url

URL_ENV = "LOOPAWARE_TEST_POSTGRES_URL"
UNDER_CI = bool(os.environ.get("CI"))

try:
    import psycopg
except ImportError:
    if UNDER_CI:
        pytest.fail(
            "psycopg is not installed, so the PostgreSQL storage cannot be tested. Install the "
            "extra: pip install -e '.[test,postgres]'. Under CI this is a failure, not a skip.",
            pytrace=False,
        )
    pytest.skip(
        "psycopg is not installed: pip install -e '.[test,postgres]'", allow_module_level=True
    )

from loopaware_persist.storage import postgresql as pg  # noqa: E402  (needs psycopg)
from loopaware_persist.storage.postgresql import PostgresStorage  # noqa: E402

REPO_ROOT = pathlib.Path(loopaware_persist.__file__).resolve().parents[1]
SERVERS = REPO_ROOT / ".ci" / "servers"
NO_DB = settings(database=None, deadline=None)

integration = pytest.mark.integration


def with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def with_credentials(url: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@contextlib.contextmanager
def admin(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def schema() -> str:
    return f"lap_t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_url(schema: str) -> Iterator[str]:
    """A URL naming a fresh schema of this test's own, dropped afterwards."""
    base = postgres_url()
    yield with_query(base, schema=schema)
    with admin(base) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def opener(url: str, durability: Durability = "normal", **options: Any) -> Callable[[], Storage]:
    return lambda: pg.open_storage(url, durability=durability, **options)


# -- no server needed ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db?password=secret&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("postgresql://h1:1,h2:2/db", "postgresql://h1:1,h2:2/db"),
        ("postgresql:///db?host=/tmp", "postgresql:///db?host=/tmp"),
    ],
)
def test_passwords_never_reach_messages(url: str, shown: str) -> None:
    assert pg.redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://u@h/db", "Not a PostgreSQL URL"),
        ("postgresql:db", "Not a PostgreSQL URL"),
        ("postgresql://u@h/db?schema=Upper", "Invalid schema name"),
        ("postgresql://u@h/db?schema=1x", "Invalid schema name"),
        ("postgresql://u@h/db?schema=" + "x" * 64, "Invalid schema name"),
        ("postgresql://u@h/db?schema=a&schema=b", "twice"),
        ("postgresql://u@h/db?pool_max_size=0", "pool_max_size must be a positive integer"),
        ("postgresql://u@h/db?retries=many", "retries must be a positive integer"),
        ("postgresql://u@h/db?no_such_libpq_option=1", "Invalid PostgreSQL URL"),
    ],
)
def test_bad_urls_are_refused_before_connecting(url: str, complaint: str) -> None:
    with pytest.raises(StorageError, match=complaint) as info:
        pg.open_storage(url)
    assert not isinstance(info.value, BackendUnavailableError)


def test_own_parameters_are_not_passed_to_libpq() -> None:
    libpq, own = pg._parse_url(
        "postgresql://u@h/db?schema=s1&sslmode=disable&retries=2&pool_max_size=3"
    )
    assert own == {"schema": "s1", "retries": "2", "pool_max_size": "3"}
    assert libpq == "postgresql://u@h/db?sslmode=disable"
    # Everything else reaches libpq untouched ('+' is not a space to libpq).
    assert pg._parse_url("postgresql:///db?host=/tmp&password=a+b%20c&schema=x") == (
        "postgresql:///db?host=/tmp&password=a+b%20c",
        {"schema": "x"},
    )
    assert pg._parse_url("postgres://h/db") == ("postgres://h/db", {})


def test_unreachable_server_is_backend_unavailable_after_bounded_retries() -> None:
    # A port nothing listens on: refused at once, so the time is the backoff.
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://nobody:hunter2@127.0.0.1:{port}/db"
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        pg.open_storage(url, retries=3)
    elapsed = time.monotonic() - started
    assert elapsed < 10
    message = str(info.value)
    assert "3 attempts" in message
    assert "hunter2" not in message
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )


def test_missing_psycopg_says_how_to_install_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"  # makes `import psycopg` raise ImportError
        "sys.modules['psycopg_pool'] = None\n"
        "from loopaware_persist._errors import StorageError\n"
        "from loopaware_persist.storage import postgresql\n"
        "try:\n"
        "    postgresql.open_storage('postgresql://u@127.0.0.1/db')\n"
        "except StorageError as exc:\n"
        "    print(exc)\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert "pip install 'loopaware-persist[postgres]'" in result.stdout


def test_psycopg_is_not_imported_until_used() -> None:
    code = (
        "import sys, loopaware_persist, loopaware_persist.storage as s\n"
        "s.open_storage('memory://').close()\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
        "assert 'loopaware_persist.storage.postgresql' not in sys.modules\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr


# -- the shared contract -----------------------------------------------------------------


@integration
@pytest.mark.parametrize("durability", ["normal", "full"])
def test_conformance(pg_url: str, durability: Durability) -> None:
    check_storage(opener(pg_url, durability), threads=8, puts_per_thread=25)


@integration
def test_state_machine(pg_url: str) -> None:
    run_state_machine_as_test(
        storage_state_machine(opener(pg_url)),
        settings=settings(
            NO_DB,
            max_examples=30,
            stateful_step_count=25,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


@integration
def test_opens_through_open_storage_by_scheme(pg_url: str) -> None:
    from loopaware_persist.storage import open_storage

    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        with open_storage(url, durability="full") as storage:
            assert isinstance(storage, PostgresStorage)
            assert storage.durability == "full"


@integration
@pytest.mark.parametrize("durability", ["normal", "full"])
def test_writers_in_several_processes(pg_url: str, durability: Durability) -> None:
    check_storage_processes(pg_url, durability=durability, processes=4, puts_per_process=50)


def _cas_increments(url: str, key: CheckpointKey, count: int, barrier: Any, results: Any) -> None:
    try:
        with pg.open_storage(url) as storage:
            barrier.wait(60)
            losses = increment_by_compare_and_set(storage, key, count)
        results.put(("ok", losses))
    except BaseException as exc:
        results.put(("error", repr(exc)))


@integration
def test_compare_and_set_from_several_processes_loses_no_update(pg_url: str) -> None:
    processes, count = 4, 30
    key = CheckpointKey(uuid.uuid4(), "counter")
    with pg.open_storage(pg_url) as storage:
        storage.put(key, struct.pack(">Q", 0))
    context: Any = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_cas_increments, args=(pg_url, key, count, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(60)
    assert [status for status, _ in outcomes] == ["ok"] * processes, outcomes
    with pg.open_storage(pg_url) as storage:
        record = storage.get(key)
    assert struct.unpack(">Q", record.data)[0] == processes * count
    assert record.version == processes * count + 1
    assert sum(losses for _, losses in outcomes) > 0, "the writers never actually contended"


@integration
def test_compare_and_set_from_many_threads_loses_no_update(pg_url: str) -> None:
    threads, count = 16, 20
    key = CheckpointKey("counter")
    with pg.open_storage(pg_url, pool_max_size=4) as storage:
        storage.put(key, struct.pack(">Q", 0))
        barrier = threading.Barrier(threads)
        errors: list[BaseException] = []

        def increment() -> None:
            try:
                barrier.wait(60)
                increment_by_compare_and_set(storage, key, count)
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=increment) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert errors == []
        record = storage.get(key)
    assert struct.unpack(">Q", record.data)[0] == threads * count
    assert record.version == threads * count + 1


@integration
def test_stale_writer_is_fenced(pg_url: str) -> None:
    key = CheckpointKey(uuid.uuid4())
    with pg.open_storage(pg_url) as first, pg.open_storage(pg_url) as second:
        first.put(key, b"step 1")
        seen_by_both = second.get(key).version
        assert first.put(key, b"step 2 by the winner", expected_version=seen_by_both) == 2
        with pytest.raises(StaleCheckpointError) as info:
            second.put(key, b"step 2 by the stale worker", expected_version=seen_by_both)
        assert (info.value.expected, info.value.actual) == (1, 2)
        record = second.get(key)
    assert (record.data, record.version) == (b"step 2 by the winner", 2)


# -- what only this backend can get wrong ---------------------------------------------


@integration
def test_listing_reads_no_payloads(pg_url: str, schema: str) -> None:
    # A role that may read every column but data: list() must work with it.
    role, password = f"lap_lister_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with pg.open_storage(pg_url) as storage:
        storage.put(CheckpointKey(1), os.urandom(300_000))
        storage.put(CheckpointKey(1, "t"), b"")
    base = postgres_url()
    with admin(base) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        conn.execute(f'GRANT SELECT ON "{schema}".schema_migrations TO {role}')
        conn.execute(
            f'GRANT SELECT (pid, tag, version, size, saved_at) ON "{schema}".checkpoints TO {role}'
        )
    try:
        url = with_query(with_credentials(base, role, password), schema=schema)
        with pg.open_storage(url, retries=2) as lister:
            infos = lister.list()
            assert [(i.key, i.size) for i in infos] == [
                (CheckpointKey(1), 300_000),
                (CheckpointKey(1, "t"), 0),
            ]
            assert [i.key for i in lister.list(1)] == [CheckpointKey(1), CheckpointKey(1, "t")]
            assert lister.list_key_tokens() == [("i:1", None), ("i:1", "t")]
            assert lister.list_key_tokens(1) == [("i:1", None), ("i:1", "t")]
            # ...while reading data is refused at once, not retried as an outage.
            with pytest.raises(StorageError, match="permission denied") as info:
                lister.get(CheckpointKey(1))
            assert not isinstance(info.value, BackendUnavailableError)
            # A denied write says nothing was stored.
            with pytest.raises(StorageError, match="Nothing was stored"):
                lister.put(CheckpointKey(2), b"x")
    finally:
        with admin(base) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@integration
def test_schema_layout_and_settings(pg_url: str, schema: str) -> None:
    with pg.open_storage(pg_url, durability="full") as full:
        full.put(CheckpointKey(1), b"x")
        full.put(CheckpointKey("\x00é", ""), b"y")
        with full._connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
            assert row is not None
            assert row[0] == "on"
    with pg.open_storage(pg_url) as normal, normal._connection() as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row is not None
        # Never "off": that loses acknowledged saves when the server crashes.
        assert row[0] == "local"
    with admin(postgres_url()) as conn:
        assert conn.execute(
            f'SELECT version, description FROM "{schema}".schema_migrations'
        ).fetchall() == [(1, "checkpoints table")]
        rows = conn.execute(
            f'SELECT pid, tag, version, size FROM "{schema}".checkpoints ORDER BY pid'
        ).fetchall()
        assert rows == [(b"i:1", b"", 1, 1), ("s:\x00é".encode(), b":", 1, 1)]
        storage_kind = conn.execute(
            "SELECT attstorage FROM pg_attribute "
            f"WHERE attrelid = '\"{schema}\".checkpoints'::regclass AND attname = 'data'"
        ).fetchone()
        assert storage_kind == ("e",)  # external: substring() reads only the prefix


@integration
def test_concurrent_first_opens_migrate_once(pg_url: str, schema: str) -> None:
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            barrier.wait(30)
            pg.open_storage(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with admin(postgres_url()) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".schema_migrations').fetchall()
    assert rows == [(1,)]


@integration
def test_newer_schema_is_refused(pg_url: str, schema: str) -> None:
    pg.open_storage(pg_url).close()
    with admin(postgres_url()) as conn:
        conn.execute(f'UPDATE "{schema}".schema_migrations SET version = 99')
    with pytest.raises(StorageError, match="Upgrade loopaware_persist"):
        pg.open_storage(pg_url)


@integration
def test_schemas_keep_stores_apart(pg_url: str) -> None:
    other = f"lap_t_{uuid.uuid4().hex[:12]}"
    try:
        with pg.open_storage(pg_url) as one, pg.open_storage(pg_url, schema=other) as two:
            one.put(CheckpointKey(1), b"one")
            assert two.list() == []
            with pytest.raises(CheckpointNotFoundError):
                two.get(CheckpointKey(1))
    finally:
        with admin(postgres_url()) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


@integration
def test_wrong_password_is_a_storage_error_not_an_outage(pg_url: str) -> None:
    parts = urllib.parse.urlsplit(pg_url)
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    url = with_credentials(pg_url, user, "wrong-password")
    started = time.monotonic()
    with pytest.raises(StorageError, match="Check the user, password") as info:
        pg.open_storage(url)
    assert not isinstance(info.value, BackendUnavailableError)
    assert "wrong-password" not in str(info.value)
    assert time.monotonic() - started < 5  # not retried


@integration
def test_terminated_sessions_are_replaced_transparently(pg_url: str) -> None:
    name = f"lap_term_{uuid.uuid4().hex[:8]}"
    url = with_query(pg_url, application_name=name)
    key = CheckpointKey("k")
    with pg.open_storage(url) as storage:
        assert storage.put(key, b"one") == 1
        for operation in ("get", "put", "list", "delete_pid"):
            # Kill every session of this storage: the server reports it to the
            # client as AdminShutdown (57P01) on its next use.
            with admin(postgres_url()) as conn:
                killed = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                ).fetchone()
            assert killed is not None
            assert killed[0] >= 1
            if operation == "get":
                assert storage.get(key).version == 1
            elif operation == "put":
                # Failed before COMMIT, so retried, and applied exactly once.
                assert storage.put(key, b"two") == 2
            elif operation == "list":
                assert [info.version for info in storage.list()] == [2]
            else:
                assert storage.delete_pid("k") == 1


def _lose_commit_answer(*, commit: bool) -> Callable[[Any], None]:
    """A ``_commit`` that drops the connection after (or instead of) COMMIT."""

    def fake(conn: Any) -> None:
        if commit:
            conn.execute("COMMIT")
        conn.pgconn.finish()  # the socket closes as if the network had failed
        msg = "server closed the connection unexpectedly"
        raise psycopg.OperationalError(msg)

    return fake


@integration
def test_commit_answer_lost_after_commit_is_not_repeated(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = CheckpointKey("ack-lost")
    with pg.open_storage(pg_url) as storage:
        storage.put(key, b"v1")
        calls: list[int] = []
        lose = _lose_commit_answer(commit=True)

        def commit_once(conn: Any) -> None:
            calls.append(1)
            lose(conn)

        monkeypatch.setattr(storage, "_commit", commit_once)
        # txid_status() says it committed: success, and not a second put.
        assert storage.put(key, b"v2") == 2
        assert calls == [1]
        record = storage.get(key)
        assert (record.data, record.version) == (b"v2", 2)


@integration
def test_commit_never_sent_is_retried(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = CheckpointKey("never-committed")
    with pg.open_storage(pg_url) as storage:
        storage.put(key, b"v1")
        calls: list[int] = []
        lose = _lose_commit_answer(commit=False)
        real_commit = storage._commit

        def fail_first(conn: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                lose(conn)
            else:
                real_commit(conn)

        monkeypatch.setattr(storage, "_commit", fail_first)
        # txid_status() says it aborted: safe to run again, once.
        assert storage.put(key, b"v2", expected_version=1) == 2
        assert calls == [1, 1]
        record = storage.get(key)
        assert (record.data, record.version) == (b"v2", 2)


@integration
def test_forked_children_get_their_own_connections(pg_url: str) -> None:
    key = CheckpointKey("forked")
    children, puts = 3, 20
    with pg.open_storage(pg_url) as storage:
        storage.put(key, b"parent")  # the pool exists and holds a connection
        context: Any = multiprocessing.get_context("fork")
        results = context.Queue()

        def child() -> None:
            try:
                versions = [storage.put(key, b"child") for _ in range(puts)]
                storage.close()  # closes the child's pool, not the parent's sessions
                results.put(("ok", versions))
            except BaseException as exc:
                results.put(("error", repr(exc)))

        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process that has threads (the
            # pool's); forking is what this test is about.
            warnings.simplefilter("ignore", DeprecationWarning)
            workers = [context.Process(target=child) for _ in range(children)]
            for worker in workers:
                worker.start()
        parent_versions = [storage.put(key, b"parent") for _ in range(puts)]
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(60)
        assert [status for status, _ in outcomes] == ["ok"] * children, outcomes
        versions = sorted(parent_versions + [v for _, vs in outcomes for v in vs])
        total = 1 + (children + 1) * puts
        assert versions == list(range(2, total + 1))
        assert storage.get(key).version == total  # the parent's pool still works


# -- a server that goes away ---------------------------------------------------------------


class Cluster:
    """A throwaway cluster of this test's own, driven through the CI scripts."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.state = directory / "postgres.state"
        self.env = directory / "postgres.env"
        self.url = ""

    def _script(self, name: str, *args: str) -> str:
        command = ["bash", str(SERVERS / name), "--state", str(self.state), "--env", str(self.env)]
        result = subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self) -> str:
        output = self._script("start-postgres.sh").strip().splitlines()[-1]
        name, _, url = output.partition("=")
        assert name == URL_ENV
        assert not self.url or url == self.url, "the restarted cluster moved"
        self.url = url
        return url

    def crash(self) -> None:
        self._script("stop-postgres.sh", "--crash")

    def remove(self) -> None:
        self._script("stop-postgres.sh")


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[Cluster]:
    postgres_url()  # skip (or, under CI, fail) like every integration test
    own = Cluster(tmp_path)
    try:
        own.start()
        yield own
    finally:
        own.remove()
    assert not own.state.exists()


@integration
def test_start_script_is_idempotent(cluster: Cluster) -> None:
    assert cluster.start() == cluster.url  # a second start reuses the running cluster
    assert cluster.env.read_text().count(URL_ENV) == 1
    assert oct(cluster.env.stat().st_mode & 0o777) == "0o600"
    parts = urllib.parse.urlsplit(cluster.url)
    assert parts.hostname == "127.0.0.1"
    # Listening on loopback only.
    with admin(cluster.url) as conn:
        row = conn.execute("SHOW listen_addresses").fetchone()
    assert row == ("127.0.0.1",)


@integration
def test_server_killed_and_restarted(cluster: Cluster) -> None:
    retries = 4
    acknowledged: dict[CheckpointKey, bytes] = {}
    counter = CheckpointKey("counter")
    last_counter = 0
    failures: list[BaseException] = []
    with pg.open_storage(cluster.url, retries=retries) as storage:
        # Saves acknowledged before and while the server is killed.
        stop = threading.Event()

        def writer() -> None:
            nonlocal last_counter
            n = 0
            while not stop.is_set():
                n += 1
                key = CheckpointKey(f"record-{n}")
                try:
                    storage.put(key, f"payload {n}".encode())
                    acknowledged[key] = f"payload {n}".encode()
                    last_counter = storage.put(counter, str(n).encode())
                except BackendUnavailableError as exc:
                    failures.append(exc)
                    return

        thread = threading.Thread(target=writer)
        thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        cluster.crash()  # pg_ctl stop -m immediate: no shutdown checkpoint
        crashed_at = time.monotonic()
        thread.join(60)
        stop.set()
        assert not thread.is_alive()
        assert len(failures) == 1, "the writer should fail once the server stays down"
        assert time.monotonic() - crashed_at < 20, "the retry is not bounded"
        assert len(acknowledged) >= 30

        # Reads retry too, then report the outage as such.
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=f"{retries} attempts"):
            storage.get(counter)
        with pytest.raises(BackendUnavailableError):
            storage.list()
        assert time.monotonic() - started < 20

        # A save whose COMMIT answer is lost while the server stays down: the
        # error says the outcome is unknown, never that nothing was stored.
        cluster.start()
        doubtful = CheckpointKey("doubtful")

        def commit_then_crash(conn: Any) -> None:
            conn.execute("COMMIT")
            cluster.crash()
            msg = "server closed the connection unexpectedly"
            raise psycopg.OperationalError(msg)

        storage.list()  # reconnected
        real_commit = storage._commit
        storage._commit = commit_then_crash  # type: ignore[method-assign]
        with pytest.raises(BackendUnavailableError, match="may or may not have been stored"):
            storage.put(doubtful, b"maybe")
        storage._commit = real_commit  # type: ignore[method-assign]

        # Back up: the same storage object recovers, and nothing acknowledged is lost.
        cluster.start()
        for key, data in acknowledged.items():
            record = storage.get(key)
            assert (record.data, record.version) == (data, 1)
        assert storage.get(counter).version >= last_counter
        assert storage.get(doubtful).data == b"maybe"  # it had committed
        assert storage.put(counter, b"after") == storage.get(counter).version
    # A fresh process-level open sees the same.
    with pg.open_storage(cluster.url) as reopened:
        assert len([i for i in reopened.list() if i.key.tag is None]) >= len(acknowledged) + 2


# -- stores left as found ------------------------------------------------------------------


def _relations(schema: str) -> list[tuple[str, str]]:
    with admin(postgres_url()) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relkind::text FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "ORDER BY 1",
            (schema,),
        ).fetchall()
    return [(str(name), str(kind)) for name, kind in rows]


@integration
@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "writable"])
def test_a_foreign_checkpoints_table_is_refused_unchanged(
    pg_url: str, schema: str, read_only: bool
) -> None:
    with admin(postgres_url()) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".checkpoints (id serial PRIMARY KEY, taken text)')
        conn.execute(f"INSERT INTO \"{schema}\".checkpoints (taken) VALUES ('x')")
    before = _relations(schema)
    with pytest.raises(StorageError, match="is not a loopaware checkpoint store") as caught:
        pg.open_storage(pg_url, read_only=read_only)
    assert "left unchanged" in str(caught.value)
    assert _relations(schema) == before  # no schema_migrations, nothing migrated


@integration
def test_read_only_creates_nothing_and_writes_nothing(pg_url: str, schema: str) -> None:
    with pytest.raises(StorageError, match="No checkpoint store at"):
        pg.open_storage(pg_url, read_only=True)
    with admin(postgres_url()) as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            is None
        )
    key = CheckpointKey("p", "t")
    with pg.open_storage(pg_url) as storage:
        storage.put(key, b"data")
    before = _relations(schema)
    with pg.open_storage(pg_url, read_only=True) as storage:
        assert [info.key for info in storage.list()] == [key]
        assert storage.get(key).data == b"data"
        with pytest.raises(StorageError, match="opened read-only"):
            storage.put(key, b"new")
        with pytest.raises(StorageError, match="opened read-only"):
            storage.delete(key)
    assert _relations(schema) == before
    with pg.open_storage(pg_url) as storage:
        assert storage.get(key).version == 1


@integration
def test_read_only_refuses_a_store_that_needs_migrating(pg_url: str, schema: str) -> None:
    pg.open_storage(pg_url).close()
    with admin(postgres_url()) as conn:
        conn.execute(f'DELETE FROM "{schema}".schema_migrations')
        conn.execute(f'INSERT INTO "{schema}".schema_migrations VALUES (0, %s)', ("old",))
    with pytest.raises(StorageError, match="needs migrating"):
        pg.open_storage(pg_url, read_only=True)
