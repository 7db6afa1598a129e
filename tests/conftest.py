"""Shared fixtures and the hypothesis profiles (fast locally, thorough under CI=true)."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from loopaware_persist import get_codec
from loopaware_persist.codecs.msgpack import MsgpackCodec
from tests import axes
from tests.axes import CODECS, DURABLE_STORAGES, LOCAL_STORAGES, MSGPACK_DECODERS, STORAGES
from tests.loops import LoopPair, loop_in_thread, new_loop

# aiida-core (the aiida extra) creates its configuration folder, ~/.aiida unless
# AIIDA_PATH says otherwise, when it is first imported: tests outside tests/aiida that
# import loopaware_persist.aiida (the __all__ walk) would leave one in the user's home.
# tests/aiida/conftest.py points it at its own profile's folder.
if "AIIDA_PATH" not in os.environ:
    _aiida_path = tempfile.mkdtemp(prefix="loopaware-aiida-path-")
    os.mkdir(os.path.join(_aiida_path, ".aiida"))
    os.environ["AIIDA_PATH"] = _aiida_path
    atexit.register(shutil.rmtree, _aiida_path, ignore_errors=True)

settings.register_profile("fast", max_examples=40, deadline=None)
settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(
    "ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "fast")
)


def pytest_configure(config: pytest.Config) -> None:
    """Make the main thread start with "no current loop", said explicitly.

    Tests ask which loop is current with the public ``asyncio.get_event_loop()``
    (:func:`tests.strategies.current_event_loop`). On 3.11-3.13 that *creates* a loop
    in the main thread until ``set_event_loop`` has been called there once; 3.14 never
    creates one. After this call every version behaves as 3.14 does, so asking never
    changes the answer, and code that relies on a loop being created for it fails here
    on 3.11 as it would on 3.14.
    """
    del config
    asyncio.set_event_loop(None)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh, not running, not current event loop, closed afterwards."""
    new = asyncio.new_event_loop()
    yield new
    new.close()


@pytest.fixture
def loops() -> Iterator[LoopPair]:
    """Loop A (where processes are made) and loop B (where they are restored), both closed."""
    with new_loop() as a, new_loop() as b:
        yield a, b
    asyncio.set_event_loop(None)


@pytest.fixture
def running_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop running forever in its own thread, stopped and closed afterwards."""
    with loop_in_thread("running-loop") as new:
        yield new


# -- the test axes (tests/axes.py); the kinds are session-scoped: hypothesis tests use them


@pytest.fixture(scope="session", params=CODECS)
def codec_name(request: pytest.FixtureRequest) -> str:
    """Each codec a checkpoint can be written with."""
    return str(request.param)


@pytest.fixture(params=MSGPACK_DECODERS)
def msgpack_decoder(request: pytest.FixtureRequest) -> str:
    """Each library the msgpack codec can decode with here."""
    return str(request.param)


@pytest.fixture
def msgpack_codec(msgpack_decoder: str) -> MsgpackCodec:
    """``get_codec("msgpack")``, decoding with each library in turn."""
    codec = get_codec("msgpack")
    assert isinstance(codec, MsgpackCodec)
    codec.decoder = msgpack_decoder
    return codec


@pytest.fixture(scope="session", params=STORAGES)
def storage(request: pytest.FixtureRequest) -> str:
    """Each storage kind (PostgreSQL marked ``integration``, skipped without its server)."""
    return str(request.param)


@pytest.fixture(scope="session", params=LOCAL_STORAGES)
def local_storage(request: pytest.FixtureRequest) -> str:
    """Each storage kind that needs no server."""
    return str(request.param)


@pytest.fixture(scope="session", params=DURABLE_STORAGES)
def durable_storage(request: pytest.FixtureRequest) -> str:
    """Each storage kind whose records outlive the writing process (not ``memory``)."""
    return str(request.param)


@pytest.fixture
def store_url(storage: str, tmp_path: Path) -> Iterator[str]:
    """A fresh store of each kind, removed afterwards."""
    with axes.store_url(storage, tmp_path) as url:
        yield url
