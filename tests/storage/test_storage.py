"""Tests of the storage layer: the conformance suite on every backend, then
what only one backend can get wrong (file names, temp files, SQLite
connections, URLs, typed errors)."""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import os
import pathlib
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import run_state_machine_as_test

import loopaware_persist
from loopaware_persist._errors import (
    ArgumentTypeError,
    BackendUnavailableError,
    CheckpointNotFoundError,
    ConfigurationError,
    CorruptStoredRecordError,
    DurabilityError,
    EncodeError,
    StaleCheckpointError,
    StorageError,
)
from loopaware_persist.storage import (
    CheckpointKey,
    Durability,
    Storage,
    _file_format,
    available_schemes,
    file as file_backend,
    memory as memory_backend,
    open_storage,
    pid_from_token,
    pid_token,
    sqlite as sqlite_backend,
)
from loopaware_persist.storage.file import FileIO, FileStorage, checkpoint_filename
from loopaware_persist.storage.memory import MemoryStorage
from loopaware_persist.storage.sqlite import SqliteStorage
from loopaware_persist.testing import (
    check_storage,
    check_storage_processes,
    storage_state_machine,
)
from loopaware_persist.testing._check_concurrency import _payload_ok, _self_checking_payload
from tests.axes import LOCAL_STORAGES, local_store_url

REPO_ROOT = pathlib.Path(loopaware_persist.__file__).resolve().parents[1]
NO_DB = settings(database=None, deadline=None)

# -- backends -------------------------------------------------------------------

#: Each local storage, the durable ones at both durability levels.
BACKENDS = [
    f"{kind}-{durability}" if kind != "memory" else kind
    for kind in LOCAL_STORAGES
    for durability in (("normal", "full") if kind != "memory" else ("normal",))
]


def backend_durability(backend: str) -> Durability:
    return "full" if backend.endswith("-full") else "normal"


def backend_url(backend: str, tmp_path: pathlib.Path) -> str:
    kind = backend.partition("-")[0]
    # A space in the directory's name: file URLs must quote it.
    return local_store_url(kind, tmp_path, "store dir" if kind == "file" else "checkpoints")


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Callable[[], Storage]:
    backend: str = request.param
    url = backend_url(backend, tmp_path)
    durability = backend_durability(backend)
    return lambda: open_storage(url, durability=durability)


def test_conformance(factory: Callable[[], Storage]) -> None:
    check_storage(factory)


def test_state_machine(factory: Callable[[], Storage]) -> None:
    run_state_machine_as_test(
        storage_state_machine(factory),
        settings=settings(
            NO_DB,
            max_examples=30,
            stateful_step_count=25,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_named_memory_store_is_shared_and_plain_one_is_not() -> None:
    key = CheckpointKey(uuid.uuid4())
    name = f"memory://shared-{uuid.uuid4().hex}"
    with open_storage(name) as first, open_storage(name) as second:
        first.put(key, b"x")
        assert second.get(key).data == b"x"
    with open_storage(name) as again:
        assert again.get(key).version == 1
    with open_storage("memory://") as first, open_storage("memory://") as second:
        first.put(key, b"x")
        with pytest.raises(CheckpointNotFoundError):
            second.get(key)


# -- the conformance suite catches broken storages --------------------------------


class _NoBump(MemoryStorage):
    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        self.delete(key)
        return super()._put(key, data, expected_version=None)


class _IgnoresExpected(MemoryStorage):
    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        return super()._put(key, data, expected_version=None)


class _StoresOnStale(MemoryStorage):
    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        version = super()._put(key, data, expected_version=None)
        if expected_version is not None and expected_version != version - 1:
            raise self._stale(key, expected=expected_version, actual=version - 1)
        return version


class _TruncatesBig(MemoryStorage):
    def _get(self, key: CheckpointKey) -> Any:
        record = super()._get(key)
        return type(record)(key=key, data=record.data[:65536], version=record.version)


class _TagNoneIsEmpty(MemoryStorage):
    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        key = CheckpointKey(key.pid, key.tag or None)
        return super()._put(key, data, expected_version=expected_version)

    def _get(self, key: CheckpointKey) -> Any:
        return super()._get(CheckpointKey(key.pid, key.tag or None))


class _Unsorted(MemoryStorage):
    def list(self, pid: Any = None) -> Any:
        return list(reversed(super().list(pid)))


class _PidsAsStrings(MemoryStorage):
    def _list(self, pid: Any) -> Any:
        infos = super()._list(pid)
        return [
            type(i)(key=CheckpointKey(str(i.key.pid), i.key.tag), version=i.version,
                    size=i.size, saved_at=i.saved_at)
            for i in infos
        ]  # fmt: skip


class _KeysWithoutTags(MemoryStorage):
    def _list_key_tokens(self, pid: Any) -> Any:
        return sorted({(token, None) for token, _ in super()._list_key_tokens(pid)})


class _KeysAsPids(MemoryStorage):
    def _list_key_tokens(self, pid: Any) -> Any:
        return [(str(pid_from_token(token)), tag) for token, tag in super()._list_key_tokens(pid)]


class _KeysAsLists(MemoryStorage):
    def _list_key_tokens(self, pid: Any) -> Any:
        return [[token, tag] for token, tag in super()._list_key_tokens(pid)]


class _PerThreadStore(MemoryStorage):
    """Each thread sees its own records: a missing lock, made deterministic."""

    def __init__(self) -> None:
        self._local = threading.local()
        super().__init__()

    @property
    def _store(self) -> memory_backend._Store:
        if not hasattr(self._local, "store"):
            self._local.store = memory_backend._Store()
        store: memory_backend._Store = self._local.store
        return store

    @_store.setter
    def _store(self, _value: object) -> None:
        pass


class _DeleteRaisesWhenMissing(MemoryStorage):
    def _delete(self, key: CheckpointKey) -> bool:
        if not super()._delete(key):
            raise self._not_found(key)
        return True


class _OpenAfterClose(MemoryStorage):
    def _check_open(self, operation: str) -> None:
        pass


@pytest.mark.parametrize(
    ("broken", "failing_check"),
    [
        (_NoBump, "overwrite bumps version"),
        (_IgnoresExpected, "compare-and-set"),
        (_StoresOnStale, "compare-and-set"),
        (_TruncatesBig, "round trip"),
        (_TagNoneIsEmpty, "delete_pid"),
        (_Unsorted, "list"),
        (_PidsAsStrings, "list"),
        (_KeysWithoutTags, "list_key_tokens"),
        (_KeysAsPids, "list_key_tokens"),
        (_KeysAsLists, "list_key_tokens"),
        (_PerThreadStore, "concurrent writers"),
        (_DeleteRaisesWhenMissing, "delete"),
        (_OpenAfterClose, "close"),
    ],
)
def test_conformance_suite_catches(broken: type[MemoryStorage], failing_check: str) -> None:
    with pytest.raises(AssertionError, match=f"check_storage: {failing_check} failed"):
        check_storage(broken)


def test_state_machine_catches_a_broken_storage() -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            storage_state_machine(_IgnoresExpected),
            settings=settings(NO_DB, max_examples=200, stateful_step_count=20),
        )


# -- keys and tokens ----------------------------------------------------------------

pids = st.one_of(
    st.integers(),
    st.uuids(),
    st.text(
        st.one_of(st.sampled_from("./\x00aA%~:-_.éÉ🙂 "), st.characters(exclude_categories=["Cs"])),
        max_size=320,
    ),
)
tags = st.one_of(st.none(), st.text(st.sampled_from("./\x00bB%~:é"), max_size=20), st.text())


@given(pid=pids)
@NO_DB
def test_pid_token_round_trips_with_type(pid: int | str | uuid.UUID) -> None:
    back = pid_from_token(pid_token(pid))
    assert back == pid
    assert type(back) is type(pid)


@given(a=pids, b=pids)
@NO_DB
def test_pid_token_is_injective(a: Any, b: Any) -> None:
    if type(a) is not type(b) or a != b:
        assert pid_token(a) != pid_token(b)


@pytest.mark.parametrize(
    "token", ["i:01", "i:+1", "i:-0", "i:1_0", "i: 1", "i:", "i:\u0663", "u:" + "A" * 32,
              "u:" + "0" * 31, "x:1", "nocolon", ""],
)  # fmt: skip
def test_malformed_tokens_are_storage_errors(token: str) -> None:
    with pytest.raises(StorageError, match="Malformed pid token"):
        pid_from_token(token)


@pytest.mark.parametrize("pid", [True, False, 1.5, b"pid", None, (1,), "bad\ud800"])
def test_unsupported_pids_are_encode_errors(pid: Any) -> None:
    with pytest.raises(EncodeError) as info:
        CheckpointKey(pid)
    assert isinstance(info.value, TypeError)
    if not isinstance(pid, str):
        assert "int" in str(info.value)
        assert "uuid.UUID" in str(info.value)


def test_bool_is_not_the_int_one() -> None:
    with pytest.raises(EncodeError, match="bool"):
        pid_token(True)


def test_int_enum_pid_uses_its_value() -> None:
    import enum

    class Number(enum.IntEnum):
        SEVEN = 7

    assert CheckpointKey(Number.SEVEN).token == "i:7"


def test_list_and_delete_pid_reject_bad_pids() -> None:
    with open_storage("memory://") as storage:
        with pytest.raises(EncodeError):
            storage.list(True)
        with pytest.raises(EncodeError):
            storage.delete_pid(2.0)  # type: ignore[arg-type]


# -- file: names ----------------------------------------------------------------------

keys = st.builds(CheckpointKey, pids, tags)


@given(st.lists(keys, unique=True, max_size=25))
@settings(NO_DB, max_examples=300)
def test_file_names_are_injective_and_contained(key_list: list[CheckpointKey]) -> None:
    root = "/srv/ckpt"
    names = [checkpoint_filename(key) for key in key_list]
    assert len(set(names)) == len(names)
    # Injective on case-insensitive file systems too (macOS, Windows shares).
    assert len({name.casefold() for name in names}) == len(names)
    for key, name in zip(key_list, names, strict=True):
        assert name.endswith(".ckpt")
        assert not name.startswith(".")
        assert "/" not in name
        assert "\x00" not in name
        assert name.isascii()
        assert len(name.encode()) <= 255
        assert os.path.dirname(os.path.normpath(os.path.join(root, name))) == root
        # list(pid) pre-filters names; it must keep the key's own file.
        assert _file_format.may_hold_pid(name, _file_format.escape(key.token))


@given(st.lists(keys, unique=True, min_size=1, max_size=12))
@settings(NO_DB, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_file_store_keeps_awkward_keys_apart(
    tmp_path: pathlib.Path, key_list: list[CheckpointKey]
) -> None:
    root = tmp_path / uuid.uuid4().hex
    with open_storage(root.as_uri()) as storage:
        for i, key in enumerate(key_list):
            storage.put(key, str(i).encode())
        for i, key in enumerate(key_list):
            assert storage.get(key).data == str(i).encode()
        assert {info.key for info in storage.list()} == set(key_list)
        for key in key_list:
            assert key in {info.key for info in storage.list(key.pid)}
    for path in root.iterdir():
        assert path.parent == root


def test_hashed_names_are_verified(tmp_path: pathlib.Path) -> None:
    first, second = CheckpointKey("p" * 300), CheckpointKey("q" * 300)
    with open_storage(tmp_path.as_uri()) as storage:
        storage.put(first, b"first")
        storage.put(second, b"second")
        first_name, second_name = checkpoint_filename(first), checkpoint_filename(second)
        assert "~" in first_name
        assert "~" in second_name
        # Simulate a digest collision: second's name now holds first's record.
        os.replace(tmp_path / first_name, tmp_path / second_name)
        with pytest.raises(StorageError, match="holds the record of"):
            storage.get(second)
        with pytest.raises(StorageError, match="holds the record of"):
            storage.delete(second)
        with pytest.raises(CheckpointNotFoundError):
            storage.get(first)


# -- file: I/O layer, crashes and faults ------------------------------------------------


class CountingIO(FileIO):
    def __init__(self) -> None:
        self.read_sizes: list[int] = []
        self.bytes_read = 0

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        data = super().pread(fd, size, offset)
        self.read_sizes.append(size)
        self.bytes_read += len(data)
        return data


def test_file_list_reads_headers_only(tmp_path: pathlib.Path) -> None:
    io = CountingIO()
    with file_backend.open_storage(tmp_path.as_uri(), io=io) as storage:
        for tag in (None, "a", "b"):
            storage.put(CheckpointKey(1, tag), os.urandom(1024 * 1024))
        io.bytes_read = 0
        io.read_sizes.clear()
        infos = storage.list()
        assert [info.size for info in infos] == [1024 * 1024] * 3
        assert len(io.read_sizes) == 3
        assert io.bytes_read <= 3 * 512


def test_file_read_prefix_reads_the_prefix_only(tmp_path: pathlib.Path) -> None:
    io = CountingIO()
    data = os.urandom(1024 * 1024)
    with file_backend.open_storage(tmp_path.as_uri(), io=io) as storage:
        storage.put(CheckpointKey(1), data)
        io.bytes_read = 0
        assert storage.read_prefix(CheckpointKey(1), 2000) == data[:2000]
        assert io.bytes_read <= 512 + 2000


class FailingIO(FileIO):
    """Raises an OSError at the n-th call of one method."""

    def __init__(self, method: str, *, error: int = errno.EIO) -> None:
        self.method = method
        self.error = error
        self.armed = False

    def _maybe_fail(self, method: str) -> None:
        if self.armed and method == self.method:
            raise OSError(self.error, os.strerror(self.error))

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        if flags & os.O_EXCL:
            self._maybe_fail("open_temp")
        return super().open(path, flags, mode)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._maybe_fail("pwrite")
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            self._maybe_fail("fsync_dir")
        else:
            self._maybe_fail("fsync")
        super().fsync(fd)

    def replace(self, src: str, dst: str) -> None:
        self._maybe_fail("replace")
        super().replace(src, dst)

    def unlink(self, path: str) -> None:
        self._maybe_fail("unlink")
        super().unlink(path)

    def flock(self, fd: int, operation: int) -> None:
        self._maybe_fail("flock")
        super().flock(fd, operation)


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ("open_temp", errno.EROFS),
        ("pwrite", errno.ENOSPC),
        ("fsync", errno.EIO),
        ("replace", errno.EIO),
        ("flock", errno.ENOLCK),
    ],
)
def test_failed_write_is_durability_error_and_keeps_old_record(
    tmp_path: pathlib.Path, method: str, error: int
) -> None:
    io = FailingIO(method, error=error)
    key = CheckpointKey("p", "t")
    with file_backend.open_storage(tmp_path.as_uri(), durability="full", io=io) as storage:
        storage.put(key, b"old")
        io.armed = True
        with pytest.raises(DurabilityError) as info:
            storage.put(key, b"new")
        assert isinstance(info.value, OSError)
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == error
        assert storage.url in str(info.value)
        assert "'p'" in str(info.value)
        assert "intact" in str(info.value)
        io.armed = False
        record = storage.get(key)
        assert (record.data, record.version) == (b"old", 1)
        assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
        assert storage.put(key, b"new") == 2


def test_failed_directory_fsync_says_record_is_in_place(tmp_path: pathlib.Path) -> None:
    io = FailingIO("fsync_dir")
    key = CheckpointKey(1)
    with file_backend.open_storage(tmp_path.as_uri(), durability="full", io=io) as storage:
        io.armed = True
        with pytest.raises(DurabilityError, match="in place"):
            storage.put(key, b"new")
        io.armed = False
        assert storage.get(key).data == b"new"


def test_failed_delete_is_durability_error(tmp_path: pathlib.Path) -> None:
    io = FailingIO("unlink", error=errno.EACCES)
    with file_backend.open_storage(tmp_path.as_uri(), io=io) as storage:
        storage.put(CheckpointKey(1), b"x")
        io.armed = True
        with pytest.raises(DurabilityError):
            storage.delete(CheckpointKey(1))
        with pytest.raises(DurabilityError):
            storage.delete_pid(1)
        io.armed = False
        assert storage.get(CheckpointKey(1)).data == b"x"


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


CRASH_AT = """
import os, sys
from loopaware_persist.storage.file import FileIO, open_storage
from loopaware_persist.storage import CheckpointKey

class CrashingIO(FileIO):
    def {method}(self, *args):
        os._exit(17)  # the process dies here: no cleanup, no finally

storage = open_storage(sys.argv[1] if len(sys.argv) > 1 else {url!r}, io=CrashingIO())
storage.put(CheckpointKey(1), b"new" * 1000)
"""


@pytest.mark.parametrize("method", ["fsync", "replace"])
def test_crash_mid_write_leaves_old_record_and_temp_is_swept(
    tmp_path: pathlib.Path, method: str
) -> None:
    url = tmp_path.as_uri()
    with open_storage(url) as storage:
        storage.put(CheckpointKey(1), b"old")
    crash = CRASH_AT.format(method=method, url=url)
    if method == "fsync":
        crash = crash.replace("io=CrashingIO()", "io=CrashingIO(), durability='full'")
    result = _run_python(crash)
    assert result.returncode == 17, result.stderr
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")], "no orphan to sweep"
    with open_storage(url) as storage:
        assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
        record = storage.get(CheckpointKey(1))
        assert (record.data, record.version) == (b"old", 1)


def test_live_writers_temp_file_is_not_swept(tmp_path: pathlib.Path) -> None:
    import fcntl

    with open_storage(tmp_path.as_uri()) as storage:
        assert isinstance(storage, FileStorage)
        temp = tmp_path / ".tmp-inflight"
        temp.write_bytes(b"partial")
        # A writer in flight holds the writers' lock shared, as put() does.
        fd = os.open(tmp_path / file_backend.WRITERS_LOCK, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            with open_storage(tmp_path.as_uri()):
                assert temp.exists()
            assert storage.sweep_temp_files() == 0
        finally:
            os.close(fd)
        assert storage.sweep_temp_files() == 1
        assert not temp.exists()


def test_damaged_file_is_a_storage_error(tmp_path: pathlib.Path) -> None:
    key = CheckpointKey("p")
    with open_storage(tmp_path.as_uri()) as storage:
        storage.put(key, b"payload")
        path = tmp_path / checkpoint_filename(key)
        raw = bytearray(path.read_bytes())
        raw[20] ^= 0xFF  # inside the header
        path.write_bytes(bytes(raw))
        for call in (lambda: storage.get(key), lambda: storage.put(key, b"x")):
            with pytest.raises(StorageError, match="damaged"):
                call()
        # Listing skips it (with a warning naming the file) rather than failing for all.
        healthy = CheckpointKey("healthy")
        storage.put(healthy, b"ok")
        assert [info.key for info in storage.list()] == [healthy]
        storage.delete(healthy)
        path.write_bytes(bytes(raw[:10]))
        with pytest.raises(StorageError, match="damaged"):
            storage.get(key)
        assert storage.delete(key) is True
        path.write_bytes(b"")
        with pytest.raises(StorageError, match="damaged"):
            storage.read_prefix(key, 1)


def test_truncated_payload_is_a_storage_error(tmp_path: pathlib.Path) -> None:
    key = CheckpointKey("p")
    with open_storage(tmp_path.as_uri()) as storage:
        storage.put(key, b"payload" * 100)
        path = tmp_path / checkpoint_filename(key)
        path.write_bytes(path.read_bytes()[:-1])
        with pytest.raises(StorageError, match="damaged"):
            storage.get(key)
        with pytest.raises(StorageError, match="damaged"):
            storage.read_prefix(key, 10**6)


def test_foreign_files_are_ignored_by_list(tmp_path: pathlib.Path) -> None:
    # Files dropped into an existing store (it holds its lock file) are not records.
    open_storage(tmp_path.as_uri()).close()
    (tmp_path / "README").write_text("not a checkpoint")
    (tmp_path / ".DS_Store").write_bytes(b"\x00")
    with open_storage(tmp_path.as_uri()) as storage:
        storage.put(CheckpointKey(1), b"x")
        assert [info.key for info in storage.list()] == [CheckpointKey(1)]


@contextlib.contextmanager
def read_only(path: pathlib.Path) -> Iterator[None]:
    """Make ``path`` read-only, even for root (who ignores permission bits)."""
    path.chmod(0o555)
    immutable = False
    try:
        probe = path / "probe"
        try:
            probe.write_bytes(b"")
        except PermissionError:
            pass
        else:
            probe.unlink()
            done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
            immutable = done.returncode == 0
            if not immutable:
                pytest.skip("running as root without chattr: cannot make a read-only directory")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


def test_read_only_directory_is_durability_error_and_still_readable(
    tmp_path: pathlib.Path,
) -> None:
    key = CheckpointKey(1)
    with open_storage(tmp_path.as_uri()) as storage:
        storage.put(key, b"x")
    with read_only(tmp_path), open_storage(tmp_path.as_uri()) as storage:
        with pytest.raises(DurabilityError, match="writable"):
            storage.put(key, b"y")
        with pytest.raises(DurabilityError):
            storage.delete(key)
        assert storage.get(key).data == b"x"
        assert [info.key for info in storage.list()] == [key]


def test_directory_that_is_a_file_is_an_error(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(DurabilityError, match="Cannot create"):
        open_storage(target.as_uri())


# -- file: URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["plain", "with space", "per%cent", "hash#and?query", "ünï©ødé", "semi;colon", "a+b=c"],
)
def test_file_url_from_as_uri_round_trips(tmp_path: pathlib.Path, name: str) -> None:
    directory = tmp_path / name / "sub"
    url = directory.as_uri()
    assert file_backend.path_from_url(url) == str(directory)
    with open_storage(url) as storage:
        storage.put(CheckpointKey(1), b"x")
    assert directory.is_dir()
    assert (directory / checkpoint_filename(CheckpointKey(1))).exists()


def test_file_url_with_undecodable_bytes(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / os.fsdecode(b"raw\xff")
    assert file_backend.path_from_url(directory.as_uri()) == str(directory)


@pytest.mark.parametrize(
    "url",
    [
        "file:///srv/ckpt",
        "file://localhost/srv/ckpt",
        "file:/srv/ckpt",
        "FILE:///srv/ckpt",
        "file:///srv/./x/../ckpt",
    ],
)
def test_file_url_forms(url: str) -> None:
    assert file_backend.path_from_url(url) == "/srv/ckpt"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("file:relative/dir", "relative"),
        ("file://server/share", "host"),
        ("file:///srv/ckpt?x=1", "query"),
        ("file:///srv/ckpt#frag", "query or fragment"),
        ("file:///srv/a%00b", "NUL"),
    ],
)
def test_bad_file_urls(url: str, complaint: str) -> None:
    with pytest.raises(StorageError, match=complaint):
        file_backend.path_from_url(url)
    with pytest.raises(StorageError):
        open_storage(url)


# -- sqlite: URLs ------------------------------------------------------------------------------


def test_sqlite_url_relative_and_absolute(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_backend.path_from_url("sqlite:///rel/ck.db") == str(tmp_path / "rel" / "ck.db")
    assert sqlite_backend.path_from_url("sqlite:////abs/ck.db") == "/abs/ck.db"
    assert sqlite_backend.path_from_url("sqlite:////a%20b/c%3Fd.db") == "/a b/c?d.db"
    with open_storage("sqlite:///rel/ck.db") as storage:
        storage.put(CheckpointKey(1), b"x")
    assert (tmp_path / "rel" / "ck.db").exists()
    with open_storage(f"sqlite:///{tmp_path}/rel/ck.db") as storage:
        assert storage.get(CheckpointKey(1)).data == b"x"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("sqlite://", "memory://"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///", "memory://"),
        ("sqlite://host/x.db", "host"),
        ("sqlite:///x.db?mode=ro", "query"),
        ("sqlite:/x.db", "Not a sqlite URL"),
    ],
)
def test_bad_sqlite_urls(url: str, complaint: str) -> None:
    with pytest.raises(StorageError, match=complaint):
        open_storage(url)


# -- open_storage and plugins ---------------------------------------------------------------


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_storage("nosuch://x")
    for scheme in ("memory://", "file://", "sqlite://"):
        assert scheme in str(info.value)
    assert "'nosuch'" in str(info.value)


@pytest.mark.parametrize("url", ["", "no scheme", "/abs/path", "1x://y"])
def test_url_without_scheme(url: str) -> None:
    with pytest.raises(StorageError, match="no scheme"):
        open_storage(url)


def test_bad_durability() -> None:
    with pytest.raises(ConfigurationError, match="durability"):
        open_storage("memory://", durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="durability"):
        open_storage("memory://", durability=1)  # type: ignore[arg-type]


def test_backends_are_imported_lazily() -> None:
    code = (
        "import sys, loopaware_persist.storage as s; "
        "assert 'loopaware_persist.storage.sqlite' not in sys.modules; "
        "s.open_storage('memory://').close(); "
        "assert 'loopaware_persist.storage.sqlite' not in sys.modules; "
        "assert 'loopaware_persist.storage.file' not in sys.modules"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr


def fake_plugin(url: str, *, durability: str) -> Storage:
    return MemoryStorage("memory://", durability=durability)  # type: ignore[arg-type]


def not_a_storage(url: str, *, durability: str) -> object:
    return object()


def _fake_entry_points(*values: tuple[str, str]) -> Callable[..., Any]:
    group = "loopaware_persist.storages"
    points = [importlib.metadata.EntryPoint(name, value, group) for name, value in values]

    def entry_points(**selection: Any) -> list[importlib.metadata.EntryPoint]:
        assert selection == {"group": group}
        return points

    return entry_points


def test_plugin_schemes_come_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        _fake_entry_points(
            ("fake", f"{__name__}:fake_plugin"),
            ("twice", f"{__name__}:fake_plugin"),
            ("twice", f"{__name__}:not_a_storage"),
            ("broken", "no_such_module_anywhere:factory"),
            ("wrong", f"{__name__}:not_a_storage"),
            ("memory", "no_such_module_anywhere:factory"),  # built-ins win
        ),
    )
    assert {"fake", "memory", "file", "sqlite"} <= set(available_schemes())
    with open_storage("fake://anything", durability="full") as storage:
        assert isinstance(storage, MemoryStorage)
        assert storage.durability == "full"
    with open_storage("memory://") as storage:
        assert isinstance(storage, MemoryStorage)
    with pytest.raises(StorageError, match="Several installed packages"):
        open_storage("twice://x")
    with pytest.raises(StorageError, match="failed to import") as info:
        open_storage("broken://x")
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(StorageError, match="not a Storage"):
        open_storage("wrong://x")


# -- concurrency across processes ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["file-normal", "file-full", "sqlite-normal", "sqlite-full"])
def test_writers_in_several_processes(tmp_path: pathlib.Path, backend: str) -> None:
    durability = backend_durability(backend)
    check_storage_processes(
        backend_url(backend, tmp_path), durability=durability, processes=4, puts_per_process=50
    )


REWRITER = """
import sys
from loopaware_persist.storage import CheckpointKey, open_storage
from loopaware_persist.testing._check_concurrency import _self_checking_payload
with open_storage(sys.argv[1]) as storage:
    for n in range(1, 301):
        storage.put(CheckpointKey("torn"), _self_checking_payload(n))
"""


@pytest.mark.parametrize("backend", ["file", "sqlite"])
def test_reader_never_sees_a_torn_record_from_another_process(
    tmp_path: pathlib.Path, backend: str
) -> None:
    url = backend_url(backend, tmp_path)
    key = CheckpointKey("torn")
    with open_storage(url) as storage:
        storage.put(key, _self_checking_payload(0))
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        writer = subprocess.Popen([sys.executable, "-c", REWRITER, url], env=env)
        try:
            last = 0
            while True:
                finished = writer.poll() is not None
                record = storage.get(key)
                assert _payload_ok(record.data), f"torn record at version {record.version}"
                assert record.version >= last
                last = record.version
                prefix = storage.read_prefix(key, 8)
                assert len(prefix) == 8
                if finished:
                    break
        finally:
            writer.wait(timeout=60)
        assert writer.returncode == 0
        assert storage.get(key).version == 301


# -- sqlite specifics -------------------------------------------------------------------------


def test_sqlite_schema_and_settings(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ck.db"
    with open_storage(f"sqlite:///{path}", durability="full") as storage:
        assert isinstance(storage, SqliteStorage)
        storage.put(CheckpointKey(1), b"x")
        storage.put(CheckpointKey(1, ""), b"y")
        with storage._connection() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    with open_storage(f"sqlite:///{path}") as storage:
        assert isinstance(storage, SqliteStorage)
        with storage._connection() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT version FROM loopaware_schema").fetchall() == [(1,)]
        rows = raw.execute(
            "SELECT pid, tag, version, size FROM checkpoints ORDER BY tag"
        ).fetchall()
        assert rows == [("i:1", "", 1, 1), ("i:1", ":", 1, 1)]
    finally:
        raw.close()


def test_sqlite_newer_schema_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ck.db"
    open_storage(f"sqlite:///{path}").close()
    raw = sqlite3.connect(path)
    try:
        with raw:
            raw.execute("UPDATE loopaware_schema SET version = 99")
    finally:
        raw.close()
    with pytest.raises(StorageError, match="Upgrade loopaware_persist"):
        open_storage(f"sqlite:///{path}")


def test_sqlite_list_and_read_prefix_do_not_select_data(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = _traced_statements(monkeypatch)
    with open_storage(f"sqlite:///{tmp_path}/ck.db") as storage:
        storage.put(CheckpointKey(1), os.urandom(100_000))
        statements.clear()
        assert [info.size for info in storage.list()] == [100_000]
        assert [info.size for info in storage.list(1)] == [100_000]
        assert len(storage.read_prefix(CheckpointKey(1), 10)) == 10
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3
    for statement in selects[:2]:
        assert "data" not in statement.lower()
    assert "substr(data, 1," in selects[2]


def _traced_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    statements: list[str] = []
    real_connect = sqlite3.connect

    def tracing_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", tracing_connect)
    return statements


def test_sqlite_put_is_one_statement_unless_the_version_check_declines(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = _traced_statements(monkeypatch)
    key = CheckpointKey(1)
    with open_storage(f"sqlite:///{tmp_path}/ck.db") as storage:
        statements.clear()
        assert storage.put(key, b"a", expected_version=0) == 1
        assert storage.put(key, b"b") == 2
        assert storage.put(key, b"c", expected_version=2) == 3
        assert len(statements) == 3
        assert all("RETURNING version" in statement for statement in statements)
        # Declined (another writer's version): the checked transaction says which one.
        statements.clear()
        for expected in (0, 2, 4, (1 << 63) - 1, 1 << 63):
            with pytest.raises(StaleCheckpointError) as stale:
                storage.put(key, b"x", expected_version=expected)
            assert stale.value.actual == 3
        assert "BEGIN IMMEDIATE" in statements
        assert storage.get(key).data == b"c"
        assert storage.put(CheckpointKey(2), b"new", expected_version=0) == 1


def test_sqlite_put_after_the_last_version_changes_nothing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ck.db"
    key = CheckpointKey(1)
    with open_storage(f"sqlite:///{path}") as storage:
        storage.put(key, b"old")
        raw = sqlite3.connect(path)
        try:
            with raw:
                raw.execute("UPDATE checkpoints SET version = ?", ((1 << 63) - 1,))
        finally:
            raw.close()
        # The one statement declines rather than store a version SQLite would make a float.
        with pytest.raises(CorruptStoredRecordError, match="no put can follow it"):
            storage.put(key, b"new")
        assert storage.get(key).data == b"old"
        assert storage.get(key).version == (1 << 63) - 1


def test_sqlite_locked_beyond_busy_timeout_is_backend_unavailable(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ck.db"
    with sqlite_backend.open_storage(f"sqlite:///{path}", busy_timeout=0.05) as storage:
        storage.put(CheckpointKey(1), b"old")
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(BackendUnavailableError, match="busy_timeout") as info:
                storage.put(CheckpointKey(1), b"new")
            assert isinstance(info.value, ConnectionError)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            # Readers are not blocked by a writer in WAL mode.
            assert storage.get(CheckpointKey(1)).data == b"old"
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert storage.put(CheckpointKey(1), b"new") == 2


def test_corrupt_sqlite_file_is_a_storage_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ck.db"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(StorageError, match="not a SQLite database") as info:
        open_storage(f"sqlite:///{path}")
    assert not isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_read_only_sqlite_file_is_durability_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ck.db"
    with open_storage(f"sqlite:///{path}") as storage:
        storage.put(CheckpointKey(1), b"x")
    # Rolling the journal back from WAL lets SQLite open the file read-only.
    raw = sqlite3.connect(path)
    try:
        raw.execute("PRAGMA journal_mode = DELETE")
    finally:
        raw.close()
    path.chmod(0o444)
    immutable = False
    try:
        if os.geteuid() == 0:
            immutable = subprocess.run(["chattr", "+i", str(path)], check=False).returncode == 0
            if not immutable:
                pytest.skip("running as root without chattr: cannot make a read-only file")
        with open_storage(f"sqlite:///{path}") as storage:
            with pytest.raises(DurabilityError, match="writable"):
                storage.put(CheckpointKey(1), b"y")
            assert storage.get(CheckpointKey(1)).data == b"x"
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)


def test_sqlite_pool_gets_a_fresh_connection_in_a_new_process(tmp_path: pathlib.Path) -> None:
    with sqlite_backend.open_storage(f"sqlite:///{tmp_path}/ck.db") as storage:
        storage.put(CheckpointKey(1), b"x")
        with storage._connection() as inherited:
            pass
        storage._pool._pid = -1  # as if this process were a fork of another
        with storage._connection() as fresh:
            assert fresh is not inherited
        assert inherited in sqlite_backend._inherited_after_fork
        assert storage.put(CheckpointKey(1), b"y") == 2
    sqlite_backend._inherited_after_fork.remove(inherited)
    inherited.close()


def test_sqlite_after_fork_uses_a_fresh_connection(tmp_path: pathlib.Path) -> None:
    with sqlite_backend.open_storage(f"sqlite:///{tmp_path}/ck.db") as storage:
        storage.put(CheckpointKey(1), b"parent")
        with storage._connection() as parents:
            pass
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            status = 1
            try:
                os.close(read)
                with storage._connection() as conn:
                    assert conn is not parents
                assert storage.put(CheckpointKey(1), b"child") == 2
                assert storage.get(CheckpointKey(1)).data == b"child"
                os.write(write, b"ok")
                status = 0
            except BaseException as exc:
                os.write(write, repr(exc).encode()[:1000])
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            report = pipe.read()
        _, status = os.waitpid(child, 0)
        assert report == b"ok"
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's connection still works after the child used the database.
        with storage._connection() as conn:
            assert conn is parents
        record = storage.get(CheckpointKey(1))
        assert (record.data, record.version) == (b"child", 2)


def test_sqlite_nul_and_unicode_keys(tmp_path: pathlib.Path) -> None:
    with open_storage(f"sqlite:///{tmp_path}/ck.db") as storage:
        a, b = CheckpointKey("a\x00b", "\x00"), CheckpointKey("a", "\x00")
        storage.put(a, b"1")
        storage.put(b, b"2")
        assert storage.get(a).data == b"1"
        assert storage.get(b).data == b"2"
        assert {info.key for info in storage.list()} == {a, b}


def test_errors_carry_context() -> None:
    with open_storage("memory://") as storage:
        key = CheckpointKey(uuid.UUID(int=5), "t")
        with pytest.raises(CheckpointNotFoundError) as missing:
            storage.get(key)
        assert missing.value.pid == key.pid
        assert missing.value.tag == "t"
        assert "list()" in str(missing.value)
        storage.put(key, b"x")
        with pytest.raises(StaleCheckpointError) as stale:
            storage.put(key, b"y", expected_version=0)
        assert (stale.value.expected, stale.value.actual) == (0, 1)
        assert "retry" in str(stale.value)
