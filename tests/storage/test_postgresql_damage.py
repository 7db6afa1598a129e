"""PostgreSQL storage against a schema other programs changed: rows it did not write
and a dropped schema are reported as StorageErrors that say what is wrong and what to
do; a closed storage says how to reopen. Needs the throwaway server of
``.ci/servers/start-postgres.sh`` (``LOOPAWARE_TEST_POSTGRES_URL``); skips without it,
except under ``CI`` (``.ci/run``), where a missing server is a failure.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

from loopaware_persist import StorageError
from loopaware_persist.storage import CheckpointKey, open_storage

psycopg = pytest.importorskip("psycopg")

# Needs the PostgreSQL server: the chroot legs deselect it with the other integration tests.
pytestmark = pytest.mark.integration

URL = os.environ.get("LOOPAWARE_TEST_POSTGRES_URL")


@pytest.fixture(autouse=True)
def _server() -> None:
    if URL:
        return
    msg = (
        "LOOPAWARE_TEST_POSTGRES_URL is not set. Start the throwaway server with "
        "`bash .ci/servers/start-postgres.sh && . .ci/servers/postgres.env`."
    )
    if os.environ.get("CI"):
        pytest.fail(f"{msg} Under CI a missing server is a failure, not a skip.")
    pytest.skip(msg)


@pytest.fixture
def schema() -> Iterator[str]:
    assert URL is not None
    name = f"lap_dmg_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _url(schema: str) -> str:
    assert URL is not None
    parts = urllib.parse.urlsplit(URL)
    query = [*urllib.parse.parse_qsl(parts.query), ("schema", schema)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _sql(statement: str) -> None:
    assert URL is not None
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("tag", "'\\x6e6f2d636f6c6f6e'::bytea", "Malformed tag column value 'no-colon'"),
        ("pid", "'\\xff'::bytea", r"Malformed pid column value b'\\xff': not UTF-8"),
    ],
)
def test_a_row_another_program_wrote_is_reported(
    schema: str, column: str, value: str, message: str
) -> None:
    with open_storage(_url(schema)) as storage:
        storage.put(CheckpointKey("p", "t"), b"data")
        _sql(f'UPDATE "{schema}".checkpoints SET {column} = {value}')
        # Skipped by the listing (one bad row hides nothing else), reported here.
        assert storage.list() == []
        (damaged,) = storage.find_damaged()
        assert isinstance(damaged, StorageError)
        assert re.search(message, str(damaged))
        assert "delete that row" in str(damaged)


def test_a_dropped_schema_says_so_and_reopening_recreates_it(schema: str) -> None:
    url = _url(schema)
    with open_storage(url) as storage:
        storage.put(CheckpointKey("p"), b"data")
        _sql(f'DROP SCHEMA "{schema}" CASCADE')
        with pytest.raises(StorageError, match="the table is gone") as info:
            storage.get(CheckpointKey("p"))
        assert "Open the storage again to recreate it" in str(info.value)
    with open_storage(url) as reopened:
        assert reopened.list() == []
        assert reopened.put(CheckpointKey("p"), b"again") == 1


def test_a_closed_storage_says_how_to_reopen(schema: str) -> None:
    storage = open_storage(_url(schema))
    storage.close()
    with pytest.raises(StorageError, match="is closed"):
        storage.list()
