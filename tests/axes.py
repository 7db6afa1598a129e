"""The test axes: every codec and every storage the package offers, and one URL builder.

``tests/conftest.py`` turns these into the ``codec_name``, ``storage`` and ``store_url``
fixtures (the pattern of anyio's ``backend_params``); the reliability campaigns' worker
scripts, which run without pytest, build their stores with :func:`store_url` too.

The lists come from the package (:func:`~loopaware_persist.codecs.available_codecs`,
:func:`~loopaware_persist.storage.available_schemes`), so a new codec or backend is tested
everywhere without editing a test. PostgreSQL is a ``pytest.param`` marked ``integration``
(the chroot legs deselect it) that skips while ``LOOPAWARE_TEST_POSTGRES_URL`` is unset,
except under CI, where the missing server fails the test instead of passing a build that
measured nothing.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from loopaware_persist.codecs import available_codecs
from loopaware_persist.codecs.msgpack import DECODERS
from loopaware_persist.storage import available_schemes

#: Every codec a checkpoint can be written with. ``pickle-unrestricted`` writes the same
#: records as ``pickle`` (it only reads without the allow-list), so it is no axis of its own.
CODECS: tuple[str, ...] = tuple(
    name for name in available_codecs() if name != "pickle-unrestricted"
)

#: The libraries the msgpack codec decodes with on this machine: msgspec, if installed
#: (the ``fast`` extra; the host and the 3.14 leg), and msgpack-python, always.
MSGPACK_DECODERS: tuple[str, ...] = tuple(
    name for name in DECODERS if name != "msgspec" or importlib.util.find_spec("msgspec")
)

#: Schemes that are no general store, tested where they belong: ``aiida://`` (registered
#: by the ``aiida`` extra) keeps one untagged checkpoint per AiiDA ProcessNode of a
#: profile, keyed by its pk, so tests/aiida runs it against a throwaway profile.
NOT_AN_AXIS = frozenset({"aiida"})

#: The storages that need no server, in the package's order.
LOCAL_STORAGES: tuple[str, ...] = tuple(
    scheme
    for scheme in available_schemes()
    if scheme not in ("postgres", "postgresql") and scheme not in NOT_AN_AXIS
)

#: The variable naming the PostgreSQL test server.
POSTGRES_ENV = "LOOPAWARE_TEST_POSTGRES_URL"
#: How to start the throwaway servers, as tests/integration/conftest.py says it.
HOW_TO_START_POSTGRES = "bash .ci/servers/start-postgres.sh && source .ci/servers/postgres.env"

POSTGRESQL = pytest.param(
    "postgresql",
    marks=[
        pytest.mark.integration,
        pytest.mark.skipif(
            not os.environ.get(POSTGRES_ENV) and not os.environ.get("CI"),
            reason=f"{POSTGRES_ENV} is not set; start the server with: {HOW_TO_START_POSTGRES}",
        ),
    ],
    id="postgresql",
)

#: Every storage: the local ones, then PostgreSQL (``postgres://`` is an alias of it).
STORAGES: tuple[Any, ...] = (*LOCAL_STORAGES, POSTGRESQL)
#: The storages whose records outlive the process that wrote them (what a kill tests).
DURABLE_STORAGES: tuple[Any, ...] = (*(s for s in LOCAL_STORAGES if s != "memory"), POSTGRESQL)


def server_url(env: str, how_to_start: str) -> str:
    """A test server's URL, from the environment variable ``env``.

    Unset, a test skips locally and fails under CI (``CI`` set): a skipped campaign
    there would pass a build that measured nothing.

    :param env: the variable's name
    :param how_to_start: the commands that start the server, for the message
    :return: the URL
    """
    url = os.environ.get(env, "")
    if url:
        return url
    msg = f"{env} is not set. Start the server with: {how_to_start}"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (under CI a missing server is a failure, not a skip)")
    pytest.skip(msg)


def postgres_url() -> str:
    """:return: the PostgreSQL test server's URL, from ``LOOPAWARE_TEST_POSTGRES_URL``
    (see :func:`server_url`)"""
    return server_url(POSTGRES_ENV, HOW_TO_START_POSTGRES)


def postgres_schema_url(url: str, schema: str) -> str:
    """Point a PostgreSQL URL at a schema of its own.

    :param url: a libpq URL
    :param schema: the schema the storage should use (created on first open)
    :return: ``url`` with ``schema=`` added to its query
    """
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("schema", schema)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@contextmanager
def postgres_schema(url: str, prefix: str) -> Iterator[str]:
    """A schema no other test uses, dropped (with its tables) afterwards.

    :param url: the server's URL (without ``schema=``)
    :param prefix: the start of the schema's name (lower-case letters, ``_``)
    :return: the schema's name
    """
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def local_store_url(storage: str, directory: Path, name: str = "store") -> str:
    """The URL of a fresh store of a kind that needs no server.

    :param storage: ``"memory"``, ``"file"`` or ``"sqlite"``
    :param directory: an empty directory the store may live in
    :param name: the store's file or directory name inside ``directory``
    :return: the URL (``memory://`` stores are per-persister and need no name)
    :raises ValueError: for PostgreSQL, which needs :func:`store_url`'s cleanup
    """
    if storage == "memory":
        return "memory://"
    if storage == "file":
        return (directory / name).as_uri()
    if storage == "sqlite":
        return f"sqlite:///{directory}/{name}.db"
    raise ValueError(f"{storage!r} is not a local storage; use tests.axes.store_url")


@contextmanager
def store_url(storage: str, directory: Path, name: str = "store") -> Iterator[str]:
    """The URL of a fresh store of any kind, removed afterwards where it outlives the test.

    :param storage: one of :data:`STORAGES`
    :param directory: an empty directory the store may live in
    :param name: the store's file or directory name (for PostgreSQL, its schema's prefix)
    :return: the URL
    """
    if storage not in ("postgres", "postgresql"):
        yield local_store_url(storage, directory, name)
        return
    pytest.importorskip("psycopg")
    base = postgres_url()
    with postgres_schema(base, f"lap_{name}") as schema:
        yield postgres_schema_url(base, schema)
