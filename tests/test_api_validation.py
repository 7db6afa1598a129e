"""Argument checks at the public API: a wrong type is a LoopAwarePersistError that is
also a TypeError and says what was expected, before any I/O; an unknown codec,
compression or scheme is one ConfigurationError when opening; URLs in error messages
never show a password; an allowed name that cannot be imported is refused with the
reason."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import loopaware_persist
from loopaware_persist import (
    ArgumentTypeError,
    AwaitedFutures,
    BackendUnavailableError,
    ConfigurationError,
    EncodeError,
    FutureSnapshot,
    HookRegistry,
    LoopAwareLauncher,
    LoopAwarePersister,
    LoopAwarePersistError,
    LoopBridge,
    LoopContext,
    MessageCodec,
    StorageError,
    UnsafeCheckpointError,
    Worker,
    check_loop_bound,
    decode_message,
    default_registry,
    encode_message,
    get_codec,
    open_persister,
    relink_awaited,
    restore_future,
    restore_futures,
    unbundle,
)
from loopaware_persist._fencing import open_fencing_persister
from loopaware_persist.storage import CheckpointKey, open_storage
from loopaware_persist.storage.memory import MemoryStorage
from tests.processes import drive


@pytest.mark.parametrize("tag", [3, b"t", ("a",)])
def test_a_tag_must_be_a_str_or_none(tag: Any) -> None:
    with pytest.raises(EncodeError, match=r"Unsupported checkpoint tag type .* Use a str or None"):
        CheckpointKey("p", tag)


def test_an_int_pid_too_large_to_write_as_decimal_is_refused() -> None:
    huge = 10 ** (sys.get_int_max_str_digits() + 10)
    with pytest.raises(EncodeError, match=r"The int pid is too large to store .* Use a str"):
        CheckpointKey(huge).token  # noqa: B018


def test_storage_calls_check_their_arguments() -> None:
    with MemoryStorage() as storage:
        storage.put(CheckpointKey("p"), b"data")
        with pytest.raises(EncodeError, match="Expected a CheckpointKey, got <class 'tuple'>"):
            storage.get(("p", None))  # type: ignore[arg-type]
        for size in ("4", 4.0, True):
            with pytest.raises(EncodeError, match="read_prefix size must be an int"):
                storage.read_prefix(CheckpointKey("p"), size)  # type: ignore[arg-type]
        for expected in ("1", 1.0, False):
            with pytest.raises(EncodeError, match="expected_version must be None or an int"):
                storage.put(CheckpointKey("p"), b"x", expected_version=expected)  # type: ignore[arg-type]
        assert storage.get(CheckpointKey("p")).version == 1  # nothing was changed


@pytest.mark.parametrize(
    "url", ["memory://name/path", "memory://?x=1", "memory://#frag", "memory:name"]
)
def test_an_invalid_memory_url_is_refused(url: str) -> None:
    with pytest.raises(StorageError, match="Invalid memory storage URL"):
        open_storage(url)


def test_a_storage_url_must_be_a_string() -> None:
    with pytest.raises(StorageError, match="A storage URL must be a str, got <class 'bytes'>"):
        open_storage(b"memory://")  # type: ignore[arg-type]


def test_errors_about_a_url_never_show_its_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_storage("nosuchscheme://user:s3cret@host/db")
    assert "s3cret" not in str(info.value)
    assert "user:***@host" in str(info.value)


def test_a_postgres_url_that_cannot_connect_hides_its_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(BackendUnavailableError) as info:
        open_storage("postgresql://user:s3cret@127.0.0.1:1/db?connect_timeout=1")
    assert "s3cret" not in str(info.value)


def test_an_allowed_name_that_cannot_be_imported_is_refused_with_the_reason() -> None:
    registry = default_registry.copy()
    registry.allow("tests.processes", "no_such_package_xyz")
    assert not registry.trusted
    with pytest.raises(UnsafeCheckpointError, match="cannot be imported here") as info:
        registry.resolve("tests.processes:NoSuchClass", "class")
    assert info.value.name == "tests.processes:NoSuchClass"
    with pytest.raises(UnsafeCheckpointError, match="cannot be imported here"):
        registry.resolve("no_such_package_xyz:Thing", "class")


def test_standard_library_classes_are_names_not_constructors() -> None:
    """A checkpoint may name a stdlib class (as a value) but not have it constructed."""
    import datetime

    registry = default_registry.copy()
    assert registry.may_revive(datetime.tzinfo, "class")
    assert not registry.may_revive(datetime.tzinfo, "object")


# Wrong-type arguments: one table over the public callables.


@attrs.frozen
class Env:
    """What the calls in the table need: an open persister, an idle loop, a process."""

    persister: LoopAwarePersister
    loop: asyncio.AbstractEventLoop
    process: Any


def _async(make: Callable[[Env], Any]) -> Callable[[Env], Any]:
    """Run the coroutine ``make`` builds on the env's loop (the async API's calls)."""

    def call(env: Env) -> Any:
        return env.loop.run_until_complete(make(env))

    return call


#: (call as written, what it does with the env); every one passes a wrong type.
WRONG_TYPES: list[tuple[str, Callable[[Env], Any]]] = [
    ("save_checkpoint(None)", lambda e: e.persister.save_checkpoint(None)),  # type: ignore[arg-type]
    ("save_checkpoint('pid')", lambda e: e.persister.save_checkpoint("pid")),  # type: ignore[arg-type]
    ("check_save(None)", lambda e: e.persister.check_save(None)),  # type: ignore[arg-type]
    ("asave_checkpoint(None)", _async(lambda e: e.persister.asave_checkpoint(None))),  # type: ignore[arg-type]
    ("load_process(loop='x')", lambda e: e.persister.load_process("p", loop="x")),  # type: ignore[arg-type]
    ("load_checkpoint(3.5)", lambda e: e.persister.load_checkpoint(3.5)),
    ("load_checkpoint(tag=3)", lambda e: e.persister.load_checkpoint("p", 3)),  # type: ignore[arg-type]
    ("aload_process([])", _async(lambda e: e.persister.aload_process([]))),
    ("get_process_checkpoints(None)", lambda e: e.persister.get_process_checkpoints(None)),
    ("get_process_checkpoints(b'p')", lambda e: e.persister.get_process_checkpoints(b"p")),
    ("delete_checkpoint(None)", lambda e: e.persister.delete_checkpoint(None)),
    ("delete_process_checkpoints(None)", lambda e: e.persister.delete_process_checkpoints(None)),
    ("list_info(3.5)", lambda e: e.persister.list_info(3.5)),  # type: ignore[arg-type]
    ("LoopContext(loop='x')", lambda e: LoopContext(loop="x")),  # type: ignore[arg-type]
    ("restore_future(None, ctx)", lambda e: restore_future(None, LoopContext(loop=e.loop))),  # type: ignore[arg-type]
    ("restore_future(snap, loop)", lambda e: restore_future(FutureSnapshot.pending(), e.loop)),  # type: ignore[arg-type]
    ("restore_futures(None, ctx)", lambda e: restore_futures(None, LoopContext(loop=e.loop))),  # type: ignore[arg-type]
    ("restore_futures([None], ctx)", lambda e: restore_futures([None], LoopContext(loop=e.loop))),  # type: ignore[list-item]
    ("snapshot_future(None)", lambda e: loopaware_persist.snapshot_future(None)),  # type: ignore[arg-type]
    ("unbundle(None, ctx)", lambda e: unbundle(None, LoopContext(loop=e.loop))),
    ("unbundle({}, loop)", lambda e: unbundle({}, e.loop)),  # type: ignore[arg-type]
    (
        "unbundle({}, ctx, registry='x')",
        lambda e: unbundle({}, LoopContext(loop=e.loop), registry="x"),
    ),  # type: ignore[arg-type]
    ("check_loop_bound(obj, 'x')", lambda e: check_loop_bound({}, "x")),  # type: ignore[arg-type]
    ("get_codec(3)", lambda e: get_codec(3)),  # type: ignore[arg-type]
    ("get_codec(allow=3)", lambda e: get_codec("msgpack", allow=3)),  # type: ignore[arg-type]
    ("open_persister(3)", lambda e: open_persister(3)),  # type: ignore[arg-type]
    ("open_persister(compression=1)", lambda e: open_persister("memory://", compression=1)),  # type: ignore[arg-type]
    ("open_persister(allow=[3])", lambda e: open_persister("memory://", allow=[3])),  # type: ignore[list-item]
    ("open_persister(allow=b'app')", lambda e: open_persister("memory://", allow=b"app")),  # type: ignore[arg-type]
    ("open_persister(registry='x')", lambda e: open_persister("memory://", registry="x")),  # type: ignore[arg-type]
    ("LoopAwarePersister('memory://')", lambda e: LoopAwarePersister("memory://")),  # type: ignore[arg-type]
    ("open_fencing_persister(allow=3)", lambda e: open_fencing_persister("memory://", allow=3)),  # type: ignore[arg-type]
    ("HookRegistry(allow=3)", lambda e: HookRegistry(allow=3)),  # type: ignore[arg-type]
    ("HookRegistry.allow(None)", lambda e: HookRegistry().allow(None)),  # type: ignore[arg-type]
    ("HookRegistry.allow(['a'])", lambda e: HookRegistry().allow(["a"])),  # type: ignore[arg-type]
    (
        "HookRegistry.register('x')",
        lambda e: HookRegistry().register("x", tag="t", encode=list, decode=list),  # type: ignore[arg-type]
    ),
    (
        "HookRegistry.register(tag=3)",
        lambda e: HookRegistry().register(complex, tag=3, encode=list, decode=list),  # type: ignore[arg-type]
    ),
    (
        "HookRegistry.register(encode=None)",
        lambda e: HookRegistry().register(complex, tag="t", encode=None, decode=list),  # type: ignore[arg-type]
    ),
    (
        "HookRegistry.register_predicate('x')",
        lambda e: HookRegistry().register_predicate("x", tag="t", encode=list, decode=list),  # type: ignore[arg-type]
    ),
    ("LoopAwareLauncher(p, loop=None)", lambda e: LoopAwareLauncher(e.persister, loop=None)),  # type: ignore[arg-type]
    ("LoopAwareLauncher('x', loop)", lambda e: LoopAwareLauncher("x", loop=e.loop)),  # type: ignore[arg-type]
    (
        "LoopAwareLauncher(load_context_extra=[])",
        lambda e: LoopAwareLauncher(e.persister, loop=e.loop, load_context_extra=[]),  # type: ignore[arg-type]
    ),
    ("LoopBridge(c, loop=None)", lambda e: LoopBridge(object(), loop=None)),  # type: ignore[arg-type]
    ("MessageCodec(allow=3)", lambda e: MessageCodec(allow=3)),  # type: ignore[arg-type]
    ("MessageCodec(registry='x')", lambda e: MessageCodec(registry="x")),  # type: ignore[arg-type]
    ("encode_message(m, codec='x')", lambda e: encode_message({}, codec="x")),  # type: ignore[arg-type]
    ("decode_message(b'', codec='x')", lambda e: decode_message(b"", codec="x")),  # type: ignore[arg-type]
    ("decode_message(b'', allow=3)", lambda e: decode_message(b"", allow=3)),  # type: ignore[arg-type]
    ("decode_message(3)", lambda e: decode_message(3)),  # type: ignore[arg-type]
    ("get_codec(registry=3)", lambda e: get_codec("msgpack", registry=3)),  # type: ignore[arg-type]
    # A truthy string must not switch the allow-list off.
    ("open_persister(trusted='no')", lambda e: open_persister("memory://", trusted="no")),  # type: ignore[arg-type]
    ("unbundle(trusted='no')", lambda e: unbundle({}, LoopContext(loop=e.loop), trusted="no")),  # type: ignore[arg-type]
    ("LoopContext.run(None)", lambda e: LoopContext(loop=e.loop).run(None)),  # type: ignore[arg-type]
    (
        "LoopContext.arun(None)",
        lambda e: e.loop.run_until_complete(LoopContext(loop=e.loop).arun(None)),
    ),  # type: ignore[arg-type]
    ("loads(3)", lambda e: e.persister.loads(3)),  # type: ignore[arg-type]
    ("dumps(3)", lambda e: e.persister.dumps(3)),  # type: ignore[arg-type]
    ("open_fencing_persister(3)", lambda e: open_fencing_persister(3)),  # type: ignore[arg-type]
    ("Worker(broker_url=3)", lambda e: Worker(broker_url=3, store_url="memory://")),  # type: ignore[arg-type]
    ("Worker(store_url=3)", lambda e: Worker(broker_url="amqp://x", store_url=3)),  # type: ignore[arg-type]
    (
        "Worker(prefetch='8')",
        lambda e: Worker(broker_url="amqp://x", store_url="memory://", prefetch="8"),
    ),  # type: ignore[arg-type]
    ("relink_awaited(None)", lambda e: relink_awaited(None)),  # type: ignore[arg-type]
    ("relink_awaited(p, 'x')", lambda e: relink_awaited(e.process, "x")),  # type: ignore[arg-type]
    ("relink_awaited(relink=3)", lambda e: relink_awaited(e.process, relink=3)),  # type: ignore[arg-type]
    (
        "AwaitedFutures(None)",
        lambda e: AwaitedFutures(None, member="_awaiting", tokens={}),  # type: ignore[arg-type]
    ),
    (
        "AwaitedFutures(member=3)",
        lambda e: AwaitedFutures({}, member=3, tokens={}),  # type: ignore[arg-type]
    ),
    ("open_persister(accept=3)", lambda e: open_persister("memory://", accept=3)),  # type: ignore[arg-type]
    ("open_persister(accept=[3])", lambda e: open_persister("memory://", accept=[3])),  # type: ignore[list-item]
    ("open_persister(accept=b'x')", lambda e: open_persister("memory://", accept=b"msgpack")),  # type: ignore[arg-type]
    (
        "bundle.unbundle(loop)",
        lambda e: e.persister.check_save(e.process).unbundle(e.loop),  # type: ignore[arg-type]
    ),
    ("HookRegistry.may_revive(3)", lambda e: HookRegistry().may_revive(3, "class")),  # type: ignore[arg-type]
    ("FutureSnapshot(status=3)", lambda e: FutureSnapshot(status=3)),  # type: ignore[arg-type]
    ("FencingPersister.fence(None)", lambda e: open_fencing_persister("memory://").fence(None)),  # type: ignore[arg-type]
    ("save_checkpoint(verify='no')", lambda e: e.persister.save_checkpoint(e.process, verify="no")),  # type: ignore[arg-type]
    ("dumps({}, meta=3)", lambda e: e.persister.dumps({}, meta=3)),  # type: ignore[arg-type]
    ("open_persister(durability=1)", lambda e: open_persister("memory://", durability=1)),  # type: ignore[arg-type]
]


@pytest.fixture
def env(loop: asyncio.AbstractEventLoop) -> Iterator[Env]:
    with open_persister("memory://", allow=["tests.processes"]) as persister:
        yield Env(persister, loop, drive("chain", loop))


@pytest.mark.parametrize("call", [call for _, call in WRONG_TYPES], ids=[n for n, _ in WRONG_TYPES])
def test_a_wrong_type_argument_is_a_typed_type_error(env: Env, call: Callable[[Env], Any]) -> None:
    """Never an AttributeError from deep inside: ours, catchable as TypeError, and
    saying what it wanted; nothing was stored."""
    with pytest.raises(TypeError) as info:
        call(env)
    assert isinstance(info.value, LoopAwarePersistError), repr(info.value)
    message = str(info.value)
    assert len(message) > 40, message  # what, where and what to do, not a bare repr
    if isinstance(info.value, ArgumentTypeError):
        assert info.value.argument, message
        assert info.value.argument in message  # where: the parameter
        assert "()" in message  # where: the call
        assert "got " in message  # what it was given
    assert env.persister.get_checkpoints() == []


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda e: e.persister.save_checkpoint(None), "process"),
        (lambda e: e.persister.load_process("p", loop="x"), "loop"),
        (lambda e: LoopContext(loop="x"), "loop"),
        (lambda e: restore_future(None, LoopContext(loop=e.loop)), "snapshot"),
        (lambda e: LoopAwareLauncher(e.persister, loop=None), "loop"),
        (lambda e: e.persister.get_process_checkpoints(None), "pid"),
    ],
    ids=["save", "load_process", "LoopContext", "restore_future", "launcher", "pid"],
)
def test_the_issue_s_calls_name_the_call_and_argument(
    env: Env, call: Callable[[Env], Any], argument: str
) -> None:
    with pytest.raises(ArgumentTypeError) as info:
        call(env)
    assert info.value.argument == argument
    assert "()" in str(info.value)  # names the call


def test_a_none_pid_never_means_every_process(env: Env) -> None:
    """get_process_checkpoints(None) listed every process's checkpoints, so a delete
    loop over it emptied the store."""
    env.persister.save_checkpoint(env.process)
    other = drive("chain", env.loop)
    env.persister.save_checkpoint(other)
    with pytest.raises(ArgumentTypeError, match="got None"):
        env.persister.get_process_checkpoints(None)
    with pytest.raises(ArgumentTypeError, match="get_checkpoints"):
        env.persister.delete_process_checkpoints(None)
    assert len(env.persister.get_checkpoints()) == 2  # nothing deleted


@pytest.mark.parametrize("allow", ["tests.processes", ["tests.processes"], ("tests.processes",)])
def test_allow_takes_a_string_as_one_module(allow: Any, loop: asyncio.AbstractEventLoop) -> None:
    """allow='myapp' was split into the one-letter modules 'm', 'y', 'a'..."""
    with open_persister("memory://", allow=allow) as persister:
        assert persister.registry.allowed == ("tests.processes",)
        process = drive("chain", loop)
        persister.save_checkpoint(process)
        assert persister.load_process(process.pid, loop=loop).pid == process.pid
    registry = HookRegistry(allow="myapp")
    assert registry.allowed == ("myapp",)
    assert MessageCodec(allow="myapp").registry.allowed == ("myapp",)
    assert get_codec("msgpack", allow="myapp.calcs:Relax").registry.allowed == (  # type: ignore[attr-defined]
        "myapp.calcs:Relax",
    )


# Options refused when opening.


@pytest.mark.parametrize(
    ("options", "option", "listed"),
    [
        ({"compression": "gzip"}, "compression", "'zlib'"),
        ({"compression": "ZLIB"}, "compression", "'zlib'"),
        ({"codec": "json"}, "codec", "msgpack"),
        ({"codec": "Msgpack"}, "codec", "pickle"),
    ],
    ids=["gzip", "case", "json", "codec-case"],
)
def test_an_unknown_option_is_refused_when_opening_and_creates_nothing(
    tmp_path: Path, options: dict[str, Any], option: str, listed: str
) -> None:
    db = tmp_path / "ckpt.db"
    with pytest.raises(ConfigurationError) as info:
        open_persister(f"sqlite:///{db}", **options)
    assert info.value.option == option
    assert isinstance(info.value, ValueError)
    assert listed in str(info.value)  # lists what is available
    assert "pip install" in str(info.value)  # and how to get more
    assert not db.exists()  # refused before the store was opened


def test_an_unknown_scheme_is_the_same_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_persister("nosuchscheme://user:s3cret@host/db")
    assert info.value.option == "url"
    assert "sqlite://" in str(info.value)  # lists the known schemes
    assert "s3cret" not in str(info.value)


def test_zstd_without_its_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from loopaware_persist import _persister

    monkeypatch.setattr(_persister, "available_compressions", lambda: (None, "zlib"))
    with pytest.raises(ConfigurationError, match=r"pip install 'loopaware-persist\[zstd\]'"):
        open_persister("memory://", compression="zstd")


def test_a_refused_argument_leaves_no_store_open(tmp_path: Path) -> None:
    """The storage is closed again when the persister refuses an argument."""
    url = f"sqlite:///{tmp_path / 'ckpt.db'}"
    with pytest.raises(ArgumentTypeError):
        open_persister(url, allow=[3])  # type: ignore[list-item]
    with contextlib.closing(open_persister(url)) as persister:  # not locked by the first
        assert persister.get_checkpoints() == []


@pytest.mark.parametrize("name", [3, None, ["a:b"], b"os:system"])
def test_a_class_name_of_another_type_is_a_malformed_reference(name: Any) -> None:
    """resolve() sees names from stored data: a wrong type there is damage, refused like
    any malformed name, never an AttributeError or 'unhashable type'."""
    with pytest.raises(UnsafeCheckpointError, match="Malformed class reference"):
        default_registry.resolve(name, "class")
