"""Loading runs no code the checkpoint names, with default settings.

Hostile checkpoints are built the way an attacker with write access to the store
would: take a real bundle, tamper with it as data, encode it with
``persister.dumps`` and put it straight into the storage. Every one must raise
:class:`UnsafeCheckpointError` from ``load_checkpoint(...).unbundle(...)`` and
from ``load_process``, and its payload must not run: a marker file that the
payload would create never appears, and a module it names is never imported.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import plumpy
import pytest

from loopaware_persist import (
    DecodeError,
    LoopAwarePersister,
    UnsafeCheckpointError,
    open_persister,
)
from loopaware_persist._envelope import encode_envelope
from loopaware_persist.storage import CheckpointKey
from tests.axes import CODECS
from tests.loops import current_loop, in_thread, new_loop
from tests.processes import EXPECTED_OUTPUTS, LOAD_LOG, CustomError, Opaque, complete, drive

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_current_loop() -> Iterator[None]:
    yield
    asyncio.set_event_loop(None)


@pytest.fixture(params=CODECS)
def persister(request: pytest.FixtureRequest) -> Iterator[LoopAwarePersister]:
    """A persister with default settings (plus this test package on the allow-list)."""
    with open_persister("memory://", codec=request.param, allow=["tests.processes"]) as store:
        yield store


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file that a payload which runs would create; it must never appear."""
    return tmp_path / "MARKER"


class EvilModule:
    """A module on ``sys.path`` whose import (or whose ``f()``) creates ``marker``."""

    def __init__(self, directory: Path, marker: Path) -> None:
        self.name = f"evil_{uuid.uuid4().hex}"
        self.marker = marker
        source = f"""
            import pathlib
            pathlib.Path({str(marker)!r}).write_text("imported")

            class Thing:
                pass

            def f(*args):
                pathlib.Path({str(marker)!r}).write_text("called")
        """
        (directory / f"{self.name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()

    def check_untouched(self) -> None:
        assert not self.marker.exists(), f"the payload ran: {self.marker.read_text()!r}"
        assert self.name not in sys.modules, "the hostile module was imported"


@pytest.fixture
def evil(tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EvilModule]:
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    module = EvilModule(directory, marker)
    yield module
    sys.modules.pop(module.name, None)


def test_the_marker_module_really_runs_code_on_import(evil: EvilModule) -> None:
    """The control: without the allow-list, this is what a load would do."""
    importlib.import_module(evil.name)
    assert evil.marker.read_text() == "imported"


def tampered(process: plumpy.Process) -> plumpy.Bundle:
    """A deep, independent copy of ``process``'s bundle, to tamper with."""
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, copy.deepcopy(dict(plumpy.Bundle(process))))
    return bundle


def store(persister: LoopAwarePersister, bundle: dict[str, Any]) -> uuid.UUID:
    """Put a hostile bundle into the storage, as an attacker with write access would."""
    pid = uuid.uuid4()
    persister.storage.put(CheckpointKey(pid), persister.dumps(bundle))  # type: ignore[arg-type]
    return pid


def assert_refused(persister: LoopAwarePersister, pid: Any) -> UnsafeCheckpointError:
    """Both load paths raise UnsafeCheckpointError (from a thread with no loop, too)."""
    with new_loop() as b:
        with pytest.raises(UnsafeCheckpointError) as via_bundle:
            persister.load_checkpoint(pid).unbundle(plumpy.LoadSaveContext(loop=b))
        with pytest.raises(UnsafeCheckpointError):
            persister.load_process(pid, loop=b)

        def in_worker() -> None:
            with pytest.raises(UnsafeCheckpointError):
                persister.load_process(pid, loop=b)

        in_thread(in_worker)
    error = via_bundle.value
    assert isinstance(error, DecodeError)
    assert isinstance(error, ValueError)
    assert isinstance(error, plumpy.PersistenceError)
    return error


# Class names.


@pytest.mark.parametrize("where", ["root", "state"])
@pytest.mark.parametrize(
    "class_name", ["os:system", "subprocess:Popen", "builtins:eval", "EVIL:Thing", "EVIL:f"]
)
def test_tampered_class_name_is_refused(
    persister: LoopAwarePersister, evil: EvilModule, class_name: str, where: str
) -> None:
    class_name = class_name.replace("EVIL", evil.name)
    with new_loop() as a:
        bundle = tampered(drive("waiting", a))
    meta = bundle["!!meta"] if where == "root" else bundle["_state"]["!!meta"]
    meta["class_name"] = class_name
    error = assert_refused(persister, store(persister, bundle))
    assert class_name in str(error)
    evil.check_untouched()


@pytest.mark.parametrize("loader", ["os:system", "EVIL:Thing", "subprocess:Popen"])
def test_object_loader_naming_a_class_outside_the_allow_list_is_refused(
    persister: LoopAwarePersister, evil: EvilModule, loader: str
) -> None:
    with new_loop() as a:
        bundle = tampered(drive("created", a))
    bundle["!!meta"]["object_loader"] = loader.replace("EVIL", evil.name)
    assert_refused(persister, store(persister, bundle))
    evil.check_untouched()


def test_process_class_outside_the_allow_list_is_not_instantiated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    with open_persister(url, allow=["tests.processes"]) as writer, new_loop() as a:
        refused = drive("created", a, listener=False)
        allowed = drive("created", a, listener=False)
        writer.save_checkpoint(refused)
        writer.save_checkpoint(allowed)
    with open_persister(url) as strict:
        error = assert_refused(strict, refused.pid)
        assert "tests.processes" in str(error)
        assert "allow" in str(error)  # says how to fix it
    assert refused.pid not in LOAD_LOG
    # The control: with the class allowed, plumpy does rebuild it (and the log shows it).
    with open_persister(url, allow=["tests.processes:Finisher"]) as lenient, new_loop() as b:
        process = lenient.load_process(allowed.pid, loop=b)
        assert b.run_until_complete(complete(process)) == EXPECTED_OUTPUTS["created"]
    assert allowed.pid in LOAD_LOG


# Plumpy's Excepted state: YAML read with the unsafe yaml.Loader.


YAML_PAYLOADS = {
    "apply-os-system": '!!python/object/apply:os.system ["touch {marker}"]',
    "new-subprocess-popen": '!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
    "name-os-system": "!!python/name:os.system",
    "module-os": "!!python/module:os",
    "apply-evil-module": "!!python/object/apply:{evil}.f []",
    "name-evil-module": "!!python/name:{evil}.Thing",
    "object-evil-module": "!!python/object:{evil}.Thing {{}}",
    "tag-directive": (
        '%TAG !e! tag:yaml.org,2002:python/object/apply:\n--- !e!os.system ["touch {marker}"]'
    ),
    "verbatim-tag": '!<tag:yaml.org,2002:python/object/apply:os.system> ["touch {marker}"]',
    "nested-in-mapping": 'a: [1, {{b: !!python/object/apply:os.system ["touch {marker}"]}}]',
    "as-a-mapping-key": '? !!python/object/apply:os.system ["touch {marker}"]\n: 1',
    "builtins-exec": "!!python/object/apply:builtins.exec [\"open('{marker}', 'w')\"]",
    "state-on-exception": (
        "!!python/object/apply:builtins.ValueError\n"
        "args: [x]\n"
        'state: {{y: !!python/object/apply:os.system ["touch {marker}"]}}'
    ),
}


def test_plumpy_alone_runs_the_yaml_payload(marker: Path) -> None:
    """The threat is real: plumpy's own unbundle executes an Excepted state's YAML."""
    with new_loop() as a:
        bundle = tampered(drive("excepted", a))
    bundle["_state"]["ex_value"] = YAML_PAYLOADS["apply-os-system"].format(marker=marker)
    with new_loop() as b, current_loop(b):  # plumpy would create a loop otherwise
        process = bundle.unbundle(plumpy.LoadSaveContext(loop=b))
        process.future().exception()
    assert marker.exists()


@pytest.mark.parametrize("payload", sorted(YAML_PAYLOADS))
def test_hostile_yaml_in_an_excepted_state_is_refused(
    persister: LoopAwarePersister, evil: EvilModule, marker: Path, payload: str
) -> None:
    with new_loop() as a:
        bundle = tampered(drive("excepted", a))
    text = YAML_PAYLOADS[payload].format(marker=marker, evil=evil.name)
    bundle["_state"]["ex_value"] = text
    assert_refused(persister, store(persister, bundle))
    evil.check_untouched()


@pytest.mark.parametrize("custom", [False, True], ids=["ValueError", "CustomError"])
def test_a_legitimate_excepted_process_round_trips(
    persister: LoopAwarePersister, custom: bool
) -> None:
    with new_loop() as a:
        process = drive("excepted", a, custom=custom)
    persister.save_checkpoint(process)
    with new_loop() as b:
        restored = persister.load_process(process.pid, loop=b)
        error = restored.exception()
        assert restored.state is plumpy.ProcessState.EXCEPTED
        if custom:
            assert type(error) is CustomError
            assert error.args == ("custom failure", 7)
            assert error.code == 7
        else:
            assert type(error) is ValueError
            assert error.args == ("boom", 42)
        assert type(restored.future().exception()) is type(error)


def test_an_exception_class_outside_the_allow_list_is_refused_not_imported(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    with open_persister(url, allow=["tests.processes"]) as writer, new_loop() as a:
        process = drive("excepted", a, custom=True, listener=False)
        writer.save_checkpoint(process)
    narrow = ["tests.processes:Raiser"]
    with open_persister(url, allow=narrow) as reader:
        error = assert_refused(reader, process.pid)
    assert "CustomError" in str(error)


# Method names plumpy looks up with getattr()


@pytest.mark.parametrize(
    "name", ["__class__", "__init__", "__reduce_ex__", "resumed.__func__", "", "a b"]
)
def test_waiting_done_callback_must_be_a_plain_method_name(
    persister: LoopAwarePersister, name: str
) -> None:
    with new_loop() as a:
        bundle = tampered(drive("waiting", a))
    bundle["_state"]["DONE_CALLBACK"] = name
    assert_refused(persister, store(persister, bundle))


@pytest.mark.parametrize("name", ["__class__", "__init__", "__reduce_ex__"])
@pytest.mark.parametrize("kind", ["created", "chain"])
def test_run_fn_must_be_a_plain_method_name(
    persister: LoopAwarePersister, kind: str, name: str
) -> None:
    """``Created``/``Running`` store ``run_fn`` by name and ``getattr`` it back, like
    ``DONE_CALLBACK``: a dunder there must be refused the same way."""
    with new_loop() as a:
        bundle = tampered(drive(kind, a))
    bundle["_state"]["run_fn"] = name
    assert_refused(persister, store(persister, bundle))


def continue_command(function: str, *args: Any) -> dict[str, Any]:
    """A ``plumpy.Continue`` command as a Running state stores it."""
    return {
        "!!meta": {"class_name": "plumpy.process_states:Continue"},
        "continue_fn": function,
        "args": args,
        "kwargs": {},
    }


def test_continue_command_naming_a_module_function_is_refused(
    persister: LoopAwarePersister, evil: EvilModule
) -> None:
    """plumpy's ``Continue`` loads ``continue_fn`` with ``plumpy.utils.load_function``,
    which *imports* any dotted name: the load itself must refuse it."""
    with new_loop() as a:
        bundle = tampered(drive("chain", a))
    bundle["_state"]["command"] = continue_command(f"{evil.name}.f")
    assert_refused(persister, store(persister, bundle))
    evil.check_untouched()


def test_continue_command_cannot_run_a_library_function(
    persister: LoopAwarePersister, marker: Path
) -> None:
    """``subprocess.getoutput`` is a plain Python function: as a Continue command it
    would run a shell command as soon as the restored process steps."""
    with new_loop() as a:
        bundle = tampered(drive("chain", a))
    bundle["_state"]["command"] = continue_command("subprocess.getoutput", f"touch {marker}")
    pid = store(persister, bundle)
    with new_loop() as b:
        try:
            process = persister.load_process(pid, loop=b)
        except UnsafeCheckpointError:
            pass
        else:
            b.run_until_complete(process.step_until_terminated())
    assert not marker.exists(), "a tampered checkpoint ran a shell command"
    assert_refused(persister, pid)


# Pickle.


class Gadget:
    """Pickles as a call of ``function(*args)``: the classic pickle gadget."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function = function
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.function, self.args


@pytest.fixture
def pickle_persister() -> Iterator[LoopAwarePersister]:
    with open_persister("memory://", codec="pickle", allow=["tests.processes"]) as store_:
        yield store_


def store_raw_pickle(persister: LoopAwarePersister, value: Any) -> uuid.UUID:
    """Store a pickle of a bundle-shaped dict holding ``value``, written by plain ``pickle``
    (an attacker does not use our encoder, which refuses such values)."""
    tree = {"!!meta": {"class_name": "tests.processes:Finisher"}, "OUTPUTS": {"payload": value}}
    record = encode_envelope(pickle.dumps(tree, protocol=5), codec="pickle")
    pid = uuid.uuid4()
    persister.storage.put(CheckpointKey(pid), record)
    return pid


def test_the_raw_pickle_record_loads_when_harmless(pickle_persister: LoopAwarePersister) -> None:
    """The control: the same record shape with a plain value gets past decoding."""
    bundle = pickle_persister.load_checkpoint(store_raw_pickle(pickle_persister, (1, "two")))
    assert bundle["OUTPUTS"] == {"payload": (1, "two")}


@pytest.mark.parametrize("gadget", ["os.system", "subprocess.Popen", "eval", "import_module"])
def test_pickle_gadget_is_refused(
    pickle_persister: LoopAwarePersister, evil: EvilModule, marker: Path, gadget: str
) -> None:
    gadgets = {
        "os.system": Gadget(os.system, f"touch {marker}"),
        "subprocess.Popen": Gadget(subprocess.Popen, ["touch", str(marker)]),
        "eval": Gadget(eval, f"open({str(marker)!r}, 'w')"),
        "import_module": Gadget(importlib.import_module, evil.name),
    }
    pid = store_raw_pickle(pickle_persister, gadgets[gadget])
    with pytest.raises(UnsafeCheckpointError):
        pickle_persister.load_checkpoint(pid)
    assert_refused(pickle_persister, pid)
    evil.check_untouched()


def test_pickle_payload_cannot_call_a_plumpy_class(pickle_persister: LoopAwarePersister) -> None:
    """Unpickling *calls* what it finds. ``plumpy.Process`` is a class the allow-list lets
    through as a reference; called, it creates and sets an event loop in the loading thread
    (plumpy's get_or_create_event_loop). A payload may name classes, not call them."""
    pid = store_raw_pickle(pickle_persister, Gadget(plumpy.Process))

    def load_in_fresh_thread() -> str:
        try:
            pickle_persister.load_checkpoint(pid)
        except UnsafeCheckpointError:
            outcome = "refused"
        else:
            outcome = "loaded"
        try:
            leaked = asyncio.get_event_loop()
        except RuntimeError:
            return outcome
        leaked.close()  # clean up what the payload did, then report it
        asyncio.set_event_loop(None)
        return outcome + " and created an event loop in the loading thread"

    assert in_thread(load_in_fresh_thread) == "refused"


# Trusted=True, the documented opt-out.


def trusted_persister(url: str, codec: str) -> LoopAwarePersister:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_persister(url, codec=codec, trusted=True)


@pytest.mark.filterwarnings("ignore::UserWarning")  # the opt-out may warn; tested below
@pytest.mark.parametrize("codec", CODECS)
def test_trusted_loads_a_process_class_outside_the_allow_list(tmp_path: Path, codec: str) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    with open_persister(url, codec=codec, allow=["tests.processes"]) as writer, new_loop() as a:
        process = drive("created", a, listener=False)
        writer.save_checkpoint(process)
    with open_persister(url, codec=codec) as strict:
        assert_refused(strict, process.pid)
    with trusted_persister(url, codec) as trusted, new_loop() as b:
        restored = trusted.load_process(process.pid, loop=b)
        assert b.run_until_complete(complete(restored)) == EXPECTED_OUTPUTS["created"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # the opt-out may warn; tested below
@pytest.mark.parametrize("codec", CODECS)
def test_trusted_switches_the_allow_list_off_for_values_too(tmp_path: Path, codec: str) -> None:
    """README: ``trusted=True`` (like ``codec="pickle-unrestricted"``) switches the check off,
    so a context value or listener of a class outside the allow-list loads too."""
    url = f"sqlite:///{tmp_path}/store.db"
    with open_persister(url, codec=codec, allow=["tests.processes"]) as writer, new_loop() as a:
        chain = drive("chain", a)
        assert chain.ctx is not None
        chain.ctx.extra = Opaque("kept")
        writer.save_checkpoint(chain)
    with trusted_persister(url, codec) as trusted, new_loop() as b:
        restored = trusted.load_process(chain.pid, loop=b)
        assert restored.ctx is not None
        assert restored.ctx.extra == Opaque("kept")
        assert b.run_until_complete(complete(restored)) == EXPECTED_OUTPUTS["chain"]


def test_trusted_says_so_loudly() -> None:
    """Design: "An explicit trusted=True (or codec="pickle-unrestricted") opts out, loudly"."""
    with pytest.warns(UserWarning, match="(?i)trust|unsafe|run"):
        open_persister("memory://", trusted=True).close()
    with pytest.warns(UserWarning, match="(?i)trust|unsafe|run"):
        open_persister("memory://", codec="pickle-unrestricted").close()


# Loads that must terminate (run in a child process: a bug here is a hang)


CHILD = """
import os, sys, threading
from loopaware_persist import DecodeError, open_persister
from tests.processes import complete
from tests.loops import new_loop

url, codec, pid, expect, watchdog = sys.argv[1:6]
outcome = []


def load():
    allow = ["tests.processes"]
    with open_persister(url, codec=codec, allow=allow) as persister, new_loop() as b:
        try:
            process = persister.load_process(pid, loop=b)
        except DecodeError as error:
            outcome.append(f"refused {type(error).__name__}")
            return
        if process.has_terminated():
            outcome.append(f"loaded {process.state.value}")
            return
        if expect == "cycle":
            assert process.ctx.cycle[0] is process.ctx.cycle
        outcome.append(f"loaded {sorted(b.run_until_complete(complete(process)))}")


worker = threading.Thread(target=load, daemon=True)
worker.start()
worker.join(float(watchdog))
if worker.is_alive():
    print("hung", flush=True)
    os._exit(3)
print(outcome[0] if outcome else "failed (see stderr)")
"""
#: A load of a tiny checkpoint takes milliseconds; one still running after this has hung.
WATCHDOG = 10


def load_in_child(url: str, codec: str, pid: str, expect: str) -> str:
    """Load in a fresh interpreter whose watchdog ends a hung load, so a hang fails one
    test (after WATCHDOG seconds) instead of stalling the suite."""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", CHILD, url, codec, pid, expect, str(WATCHDOG)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WATCHDOG + 50,
        check=False,
    )
    assert done.stdout.strip() != "hung", f"loading checkpoint {pid!r} hung"
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


BILLION_LAUGHS = "\n".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x]",
        *(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


# The YAML check does not depend on the codec: one codec each keeps the hang budget small.
@pytest.mark.parametrize(
    ("text", "codec"),
    [("&a [*a]", "msgpack"), (BILLION_LAUGHS, "pickle")],
    ids=["self-referencing-alias", "billion-laughs"],
)
def test_hostile_yaml_aliases_do_not_hang_the_load(tmp_path: Path, codec: str, text: str) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    with open_persister(url, codec=codec, allow=["tests.processes"]) as writer, new_loop() as a:
        bundle = tampered(drive("excepted", a))
        bundle["_state"]["ex_value"] = text
        pid = "aliases"
        writer.storage.put(CheckpointKey(pid), writer.dumps(bundle))
    outcome = load_in_child(url, codec, pid, "any")
    assert outcome.startswith(("refused", "loaded")), outcome


def test_pickle_keeps_a_reference_cycle_in_the_context(tmp_path: Path) -> None:
    """README: msgpack refuses cycles, "pickle keeps both" (shared references and cycles)."""
    url = f"sqlite:///{tmp_path}/store.db"
    with open_persister(url, codec="pickle", allow=["tests.processes"]) as writer:
        with new_loop() as a:
            chain = drive("chain", a, pid="cyclic")
        assert chain.ctx is not None
        cycle: list[Any] = []
        cycle.append(cycle)
        chain.ctx.cycle = cycle
        writer.save_checkpoint(chain)
    assert load_in_child(url, "pickle", "cyclic", "cycle") == (
        f"loaded {sorted(EXPECTED_OUTPUTS['chain'])}"
    )
