"""The operator CLI end to end, on stores written by real plumpy processes.

Every command runs through click's ``CliRunner`` and once more as a real
subprocess. The store holds, besides healthy checkpoints, a *corrupt* record (a
payload byte flipped through the storage) and a *hostile* one (a bundle naming
``os:system``); a *canary* record names a module whose import leaves a file
behind, which proves the commands never import what they refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import pathlib
import pickle
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import plumpy
import pytest
from click.testing import CliRunner, Result

from loopaware_persist import LoopAwarePersister, open_persister
from loopaware_persist._cli import cli
from loopaware_persist._ops import parse_duration
from loopaware_persist.storage import CheckpointKey

ALLOW = __name__  # "tests.test_cli": the classes below are stored under this module
REPO = Path(__file__).resolve().parents[1]
# The interpreter running the tests and the console script installed beside it: no path
# into a particular venv (the chroot legs of .ci/run install elsewhere).
PYTHON = sys.executable
SCRIPT = Path(sysconfig.get_path("scripts")) / "loopaware-persist"
DAY = 86400.0

SLEEPER = uuid.UUID("5eeb5eeb-0000-4000-8000-000000000001")
DOUBLER = 42
FAILER = "failer"
RESUME = {"answer": 42}


# region processes


class CLIError(Exception):
    """An exception class of this module: revived only where the module is allowed."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code


class Doubler(plumpy.Process):
    """Doubles its input and finishes."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=21)
        spec.output("doubled", valid_type=int)

    def run(self) -> None:
        self.out("doubled", self.inputs["x"] * 2)


class Sleeper(plumpy.Process):
    """Emits one output, then waits until resumed."""

    @classmethod
    def define(cls, spec: plumpy.ProcessSpec) -> None:
        super().define(spec)
        spec.outputs.dynamic = True

    def run(self) -> plumpy.Wait:
        self.out("before", 1)
        return plumpy.Wait(self.wake, "waiting for a signal")

    def wake(self, value: Any = None) -> None:
        self.out("after", value)


class Failer(plumpy.Process):
    """Fails with a :class:`CLIError`."""

    def run(self) -> None:
        raise CLIError("disk full", 28)


async def _drive(cls: type[plumpy.Process], pid: Any) -> plumpy.Process:
    process = cls(pid=pid, loop=asyncio.get_running_loop())
    if cls is Sleeper:
        for _ in range(20):
            if process.state is plumpy.ProcessState.WAITING:
                break
            await process.step()
        assert process.state is plumpy.ProcessState.WAITING
    else:
        await process.step_until_terminated()
        process.future().exception()  # retrieved: no "never retrieved" log later
    return process


def drive(cls: type[plumpy.Process], pid: Any) -> plumpy.Process:
    """:return: a process of ``cls`` driven to WAITING (Sleeper) or to its end, on a new loop"""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_drive(cls, pid))
    finally:
        loop.close()


async def _complete(process: plumpy.Process) -> dict[str, Any]:
    asyncio.get_running_loop().call_soon(process.resume, RESUME)
    await process.step_until_terminated()
    return dict(await process.future())


def resume_sleeper(persister: LoopAwarePersister, pid: Any = SLEEPER) -> dict[str, Any]:
    """Load the sleeper from ``persister`` onto a fresh loop and run it to the end.

    :return: its outputs
    """
    loop = asyncio.new_event_loop()
    try:
        process = persister.load_process(pid, loop=loop)
        return loop.run_until_complete(_complete(process))
    finally:
        loop.close()


# endregion

# region the store


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def save_at(
    persister: LoopAwarePersister, process: plumpy.Process, tag: str | None, saved_at: float
) -> None:
    """Save ``process`` as ``save_checkpoint`` would, but with a chosen ``saved_at``."""
    meta = {
        "process_class": _class_name(type(process)),
        "state": process.state.value,
        "saved_at": saved_at,
    }
    data = persister.dumps(plumpy.Bundle(process), meta=meta)
    persister.storage.put(CheckpointKey(pid=process.pid, tag=tag), data)


def put_hostile(persister: LoopAwarePersister, pid: str, class_name: str) -> None:
    """Store a real bundle whose process class is ``class_name``, as a tampered record."""
    bundle = plumpy.Bundle(drive(Doubler, pid))
    bundle["!!meta"] = {**bundle["!!meta"], "class_name": class_name}
    meta = {"process_class": class_name, "state": "finished", "saved_at": time.time()}
    persister.storage.put(CheckpointKey(pid=pid), persister.dumps(bundle, meta=meta))


def flip_payload_byte(persister: LoopAwarePersister, key: CheckpointKey) -> None:
    """Damage a stored record's payload (not its header), through the storage."""
    data = bytearray(persister.storage.get(key).data)
    data[-5] ^= 0x40
    persister.storage.put(key, bytes(data))


@attrs.frozen
class Store:
    """A store as the tests see it."""

    url: str
    path: Path
    now: float

    def open(self, **kwargs: Any) -> LoopAwarePersister:
        """:return: a persister on it (close it)"""
        return open_persister(self.url, allow=[ALLOW], **kwargs)

    def snapshot(self) -> dict[CheckpointKey, bytes]:
        """:return: every record's bytes"""
        with self.open() as persister:
            return {r.key: persister.storage.get(r.key).data for r in persister.storage.list()}

    def remove(self, *pids: Any) -> None:
        """Delete every checkpoint of these pids."""
        with self.open() as persister:
            for pid in pids:
                persister.storage.delete_pid(pid)


def build_store(path: Path) -> Store:
    """Write the test store: healthy checkpoints of three processes, a corrupt and a hostile one.

    ============  ======  ===========================================================
    pid           kind    checkpoints (saved_at relative to now)
    ============  ======  ===========================================================
    SLEEPER       uuid    untagged (now), step-1 (-10 d), step-2 (-3 d), step-3 (-1 h)
    42            int     untagged (now), done (-30 d)
    "failer"      str     untagged (now), EXCEPTED with CLIError
    "corrupt"     str     untagged, one payload byte flipped
    "hostile"     str     untagged, '!!meta' class_name 'os:system'
    ============  ======  ===========================================================
    """
    url = f"sqlite:///{path}"
    now = time.time()
    with open_persister(url, allow=[ALLOW]) as persister:
        sleeper = drive(Sleeper, SLEEPER)
        persister.save_checkpoint(sleeper)
        for tag, age in (("step-1", 10 * DAY), ("step-2", 3 * DAY), ("step-3", 3600.0)):
            save_at(persister, sleeper, tag, now - age)
        doubler = drive(Doubler, DOUBLER)
        persister.save_checkpoint(doubler)
        save_at(persister, doubler, "done", now - 30 * DAY)
        persister.save_checkpoint(drive(Failer, FAILER))
        persister.save_checkpoint(drive(Doubler, "corrupt"))
        flip_payload_byte(persister, CheckpointKey(pid="corrupt"))
        put_hostile(persister, "hostile", "os:system")
    return Store(url=url, path=path, now=now)


ALL_KEYS = {
    CheckpointKey(SLEEPER),
    CheckpointKey(SLEEPER, "step-1"),
    CheckpointKey(SLEEPER, "step-2"),
    CheckpointKey(SLEEPER, "step-3"),
    CheckpointKey(DOUBLER),
    CheckpointKey(DOUBLER, "done"),
    CheckpointKey(FAILER),
    CheckpointKey("corrupt"),
    CheckpointKey("hostile"),
}
HEALTHY_KEYS = ALL_KEYS - {CheckpointKey("corrupt"), CheckpointKey("hostile")}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh test store (see :func:`build_store`)."""
    return build_store(tmp_path / "store.db")


@pytest.fixture
def clean_store(store: Store) -> Store:
    """The test store without its corrupt and hostile records."""
    store.remove("corrupt", "hostile")
    return store


def keys_of(url: str) -> set[CheckpointKey]:
    """:return: the keys stored at ``url``"""
    with open_persister(url) as persister:
        return {record.key for record in persister.storage.list()}


@contextlib.contextmanager
def canary(tmp_path: Path, name: str) -> Iterator[Path]:
    """A module ``name`` on ``sys.path`` whose import creates a file; yields that file.

    Afterwards the module is imported once on purpose, to prove the canary works.
    """
    directory = tmp_path / "canary"
    directory.mkdir(exist_ok=True)
    sentinel = tmp_path / f"{name}.imported"
    (directory / f"{name}.py").write_text(
        f"import pathlib\npathlib.Path({str(sentinel)!r}).touch()\n\n\nclass Boom:\n    pass\n"
    )
    sys.path.insert(0, str(directory))
    try:
        yield sentinel
        assert name not in sys.modules
        assert not sentinel.exists()
        importlib.import_module(name)
        assert sentinel.exists(), "the canary does not work: the test proves nothing"
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop(name, None)


# endregion

# region running the CLI


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run the CLI in process.

    :return: click's result (``stdout`` and ``stderr`` separate)
    """
    return CliRunner().invoke(cli, list(args), input=input, env=env)


def on(store: Store | str, *args: str, allow: bool = True, input: str | None = None) -> Result:
    """Run a command on a store, with the test module allowed."""
    url = store if isinstance(store, str) else store.url
    return invoke("--store", url, *(("--allow", ALLOW) if allow else ()), *args, input=input)


def json_of(result: Result) -> Any:
    """:return: the command's JSON output, after checking it succeeded or reported"""
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def one_error_line(result: Result) -> str:
    """Assert the command failed with exactly one line on stderr and no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


def run_process(
    *args: str, env: dict[str, str] | None = None, script: bool = False, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a real subprocess (the module, or the console script)."""
    command = [str(SCRIPT)] if script else [PYTHON, "-m", "loopaware_persist"]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("LOOPAWARE_PERSIST_STORE", None)
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=60,
        check=False,
        **kwargs,
    )


# endregion

# region ls


def test_ls_lists_every_checkpoint_including_the_corrupt_and_hostile_ones(store: Store) -> None:
    result = on(store, "ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["PID", "TAG", "CLASS", "STATE"]
    assert len(lines) == 1 + len(ALL_KEYS)
    assert "\x1b[" not in result.stdout  # no colour off a terminal
    rows = {(line.split()[0], line.split()[1]) for line in lines[1:]}
    assert rows == {(str(k.pid), "-" if k.tag is None else k.tag) for k in ALL_KEYS}
    hostile = next(line for line in lines if line.startswith("hostile"))
    assert "os:system" in hostile
    failer = next(line for line in lines if line.startswith("failer"))
    assert f"{ALLOW}:Failer" in failer
    assert "excepted" in failer


def test_ls_json_has_every_field_and_filters_combine(store: Store) -> None:
    entries = json_of(on(store, "ls", "--json"))
    assert len(entries) == len(ALL_KEYS)
    step1 = next(e for e in entries if e["tag"] == "step-1")
    assert step1["pid"] == str(SLEEPER)
    assert step1["pid_token"] == f"u:{SLEEPER.hex}"
    assert step1["process_class"] == f"{ALLOW}:Sleeper"
    assert step1["state"] == "waiting"
    assert step1["codec"] == "msgpack"
    assert step1["version"] == 1
    assert step1["size"] > 0
    assert step1["saved_at"] == pytest.approx(store.now - 10 * DAY)  # the header's, not the put's
    assert step1["stored_at"] > step1["saved_at"]  # stored now, saved "ten days ago"

    def tags(*args: str) -> set[tuple[str, str | None]]:
        return {(e["pid"], e["tag"]) for e in json_of(on(store, "ls", "--json", *args))}

    sleeper = {(str(SLEEPER), t) for t in (None, "step-1", "step-2", "step-3")}
    assert tags("--state", "waiting") == sleeper
    assert tags("--class", "Sleeper") == sleeper
    assert tags("--class", f"{ALLOW}:Sleeper") == sleeper
    finished = {
        ("42", None),
        ("42", "done"),
        ("corrupt", None),
    }  # the corrupt one's header is intact
    assert tags("--class", "tests.*", "--state", "finished") == finished
    assert tags("--pid", "42") == tags("--pid", "i:42") == {("42", None), ("42", "done")}
    assert tags("--pid", "s:42") == set()
    assert tags("--class", "os:system") == {("hostile", None)}
    assert tags("--state", "waiting", "--state", "excepted") == sleeper | {("failer", None)}


def test_ls_marks_a_damaged_header_and_verify_reports_it(store: Store) -> None:
    key = CheckpointKey(DOUBLER, "done")
    with store.open() as persister:
        data = bytearray(persister.storage.get(key).data)
        data[12] ^= 0x01  # inside the envelope header: its checksum no longer matches
        persister.storage.put(key, bytes(data))
    result = on(store, "ls")
    assert result.exit_code == 0, result.output
    row = next(
        line for line in result.stdout.splitlines() if line.startswith("42 ") and " done " in line
    )
    assert row.split()[2:4] == ["?", "damaged"]
    assert "! 42 tag='done': Corrupt checkpoint record: header checksum mismatch" in result.stdout
    damaged = json_of(on(store, "ls", "--json", "--state", "damaged"))
    assert [(e["pid"], e["tag"], e["error"] is not None) for e in damaged] == [("42", "done", True)]
    report = json_of(on(store, "verify", "--json"))
    assert {(p["pid"], p["tag"], p["problem"]) for p in report["problems"]} == {
        ("42", "done", "corrupt"),
        ("corrupt", None, "corrupt"),
        ("hostile", None, "unsafe"),
    }


def test_ls_on_a_missing_store_is_one_error_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    line = one_error_line(on(f"sqlite:///{missing}", "ls"))
    assert "does not exist" in line
    assert "--store" in line
    assert not missing.exists()


def test_store_comes_from_the_command_then_the_group_then_the_environment(
    store: Store, tmp_path: Path
) -> None:
    missing = f"sqlite:///{tmp_path}/missing.db"
    from_env = invoke("ls", "--json", env={"LOOPAWARE_PERSIST_STORE": store.url})
    assert len(json_of(from_env)) == len(ALL_KEYS)
    group_wins = invoke("--store", store.url, "ls", env={"LOOPAWARE_PERSIST_STORE": missing})
    assert group_wins.exit_code == 0, group_wins.output
    command_wins = invoke("--store", missing, "ls", "--json", "--store", store.url)
    assert len(json_of(command_wins)) == len(ALL_KEYS)
    assert "missing.db" in one_error_line(invoke("ls", env={"LOOPAWARE_PERSIST_STORE": missing}))


def test_the_group_lists_every_command_and_keeps_demo() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("convert", "demo", "ls", "prune", "rm", "show", "verify"):
        assert f"  {command} " in result.stdout
    assert "  bench " not in result.stdout  # python -m benchmarks, from a checkout


# endregion

# region show


def test_show_draws_a_waiting_process_as_a_tree(store: Store) -> None:
    result = on(store, "show", str(SLEEPER))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"class     {ALLOW}:Sleeper" in out
    assert "audit     ok" in out
    assert f"Sleeper [{ALLOW}:Sleeper]" in out
    assert "_future: future pending" in out
    assert "_state: Waiting [plumpy.process_states:Waiting]" in out
    assert "msg: 'waiting for a signal'" in out
    assert "before: 1" in out
    assert "└── " in out
    tagged = on(store, "show", str(SLEEPER), "--tag", "step-1")
    assert tagged.exit_code == 0, tagged.output
    assert "tag       step-1" in tagged.stdout


def test_show_names_the_type_and_message_of_exceptions(store: Store) -> None:
    result = on(store, "show", FAILER)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "state     excepted" in out
    assert "_future: future failed" in out
    assert f"exception: {ALLOW}:CLIError: ('disk full', 28)" in out
    # plumpy's Excepted state keeps the exception as YAML, read here without loading it
    assert f"ex_value: {ALLOW}:CLIError: disk full, 28" in out
    assert "raise CLIError" in out  # the saved traceback


def test_show_json_gives_the_decoded_bundle(store: Store) -> None:
    data = json_of(on(store, "show", FAILER, "--json"))
    assert data["ok"] is True
    assert data["header"]["process_class"] == f"{ALLOW}:Failer"
    bundle = data["bundle"]
    assert bundle["_state"]["!!meta"]["class_name"] == "plumpy.process_states:Excepted"
    assert bundle["_future"]["exception"] == {
        "$type": "exception",
        "class": f"{ALLOW}:CLIError",
        "message": "('disk full', 28)",
        "args": ["disk full", 28],
    }
    sleeper = json_of(on(store, "show", f"u:{SLEEPER.hex}", "--json"))["bundle"]
    assert sleeper["_pid"] == {"$type": "uuid", "value": str(SLEEPER)}


def test_show_refuses_a_hostile_checkpoint_without_importing_it(
    store: Store, tmp_path: Path
) -> None:
    result = on(store, "show", "hostile")
    assert result.exit_code == 1
    assert "audit     unsafe: Refusing to load 'os:system'" in result.stdout
    assert "├──" not in result.stdout  # no tree
    assert "refused as unsafe; nothing of it was imported" in result.stderr
    assert "Traceback" not in result.output
    data = json_of(on(store, "show", "hostile", "--json"))
    assert data["problem"] == "unsafe"
    assert data["bundle"] is None
    inert = on(store, "show", "hostile", "--show-unsafe")
    assert inert.exit_code == 1
    assert "Doubler [os:system]" not in inert.stdout
    assert "system [os:system]" in inert.stdout  # drawn as data

    with canary(tmp_path, "lap_canary_show") as sentinel:
        with store.open() as persister:
            put_hostile(persister, "canary", "lap_canary_show:Boom")
        for args in (("show", "canary"), ("show", "canary", "--show-unsafe", "--json")):
            refused = on(store, *args)
            assert refused.exit_code == 1
            assert "lap_canary_show:Boom" in refused.stdout
        assert on(store, "verify").exit_code == 1
        assert not sentinel.exists()


def test_show_reports_a_corrupt_checkpoint(store: Store) -> None:
    result = on(store, "show", "corrupt")
    assert result.exit_code == 1
    assert (
        "audit     corrupt: Corrupt checkpoint record: payload checksum mismatch" in result.stdout
    )
    assert "checkpoint corrupt: corrupt" in result.stderr


def test_show_errors_name_what_exists(store: Store) -> None:
    assert "No checkpoint for pid 'nope'" in one_error_line(on(store, "show", "nope"))
    line = one_error_line(on(store, "show", str(SLEEPER), "--tag", "step-9"))
    assert "(untagged), 'step-1', 'step-2', 'step-3'" in line
    line = one_error_line(on(store, "show", "42", "--tag", "nope"))
    assert "(untagged), 'done'" in line


def test_show_asks_for_the_typed_pid_when_an_int_and_a_str_pid_collide(store: Store) -> None:
    with store.open() as persister:
        save_at(persister, drive(Doubler, "42"), None, time.time())
    line = one_error_line(on(store, "show", "42"))
    assert "i:42 (int), s:42 (str)" in line
    assert on(store, "show", "i:42").exit_code == 0
    assert on(store, "show", "s:42").exit_code == 0


def test_without_the_allow_list_show_refuses_and_says_how_to_allow(store: Store) -> None:
    result = on(store, "show", str(SLEEPER), allow=False)
    assert result.exit_code == 1
    assert f"Refusing to load '{ALLOW}:Sleeper'" in result.stdout
    assert "--allow MODULE" in result.stdout
    allowed_by_env = invoke(
        "--store", store.url, "show", str(SLEEPER), env={"LOOPAWARE_PERSIST_ALLOW": ALLOW}
    )
    assert allowed_by_env.exit_code == 0, allowed_by_env.output


def test_debug_shows_the_traceback_instead_of_one_line(store: Store) -> None:
    quiet = on(store, "show", "nope")
    one_error_line(quiet)
    loud = on(store, "show", "nope", "--debug")
    assert loud.exit_code == 1
    assert type(loud.exception).__name__ == "CheckpointNotFoundError"
    group_level = invoke("--store", store.url, "--debug", "show", "nope")
    assert type(group_level.exception).__name__ == "CheckpointNotFoundError"


# endregion

# region verify


def test_verify_reports_the_corrupt_and_hostile_checkpoints_and_exits_1(store: Store) -> None:
    result = on(store, "verify")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    problems = [line for line in lines if not line.startswith("checked")]
    assert len(problems) == 2, result.stdout
    assert problems[0].startswith("CORRUPT     corrupt: Corrupt checkpoint record")
    assert problems[1].startswith("UNSAFE      hostile: Refusing to load 'os:system'")
    assert lines[-1] == f"checked {len(ALL_KEYS)} checkpoint(s): 7 ok, 1 corrupt, 1 unsafe"
    assert "verifying" not in result.output  # no progress bar off a terminal

    report = json_of(on(store, "verify", "--json"))
    assert report["checked"] == len(ALL_KEYS)
    assert report["ok"] == len(ALL_KEYS) - 2
    assert {(p["pid"], p["problem"]) for p in report["problems"]} == {
        ("corrupt", "corrupt"),
        ("hostile", "unsafe"),
    }
    assert all(p["reason"] for p in report["problems"])
    only = json_of(on(store, "verify", "--json", "--pid", str(SLEEPER)))
    assert (only["checked"], only["problems"]) == (4, [])


def test_verify_passes_a_clean_store_and_load_checks_it_would_restart(clean_store: Store) -> None:
    result = on(clean_store, "verify", "--load")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"checked {len(HEALTHY_KEYS)} checkpoint(s): 7 ok"
    # A checkpoint that names a callback its class lacks: the audit refuses it (plumpy
    # would getattr() the name back on load), and so does loading it as a restart would.
    with clean_store.open() as persister:
        bundle = plumpy.Bundle(drive(Sleeper, "renamed"))
        bundle["_state"]["DONE_CALLBACK"] = "wake_up"
        persister.storage.put(
            CheckpointKey("renamed"),
            persister.dumps(bundle, meta={"process_class": _class_name(Sleeper)}),
        )
    audited = on(clean_store, "verify")
    assert audited.exit_code == 1
    assert "renamed" in audited.stdout
    assert "wake_up" in audited.stdout
    loaded = on(clean_store, "verify", "--load")
    assert loaded.exit_code == 1
    assert "wake_up" in loaded.stdout


# endregion

# region convert


def test_convert_to_a_zstd_file_store_and_back_keeps_every_checkpoint(
    clean_store: Store, tmp_path: Path
) -> None:
    before = clean_store.snapshot()
    files = (tmp_path / "files").as_uri()
    back = f"sqlite:///{tmp_path}/back.db"

    there = on(clean_store, "convert", clean_store.url, files, "--compress", "zstd")
    assert there.exit_code == 0, there.output
    assert there.stdout.strip().endswith(f"{len(HEALTHY_KEYS)} copied")
    listed = json_of(on(files, "ls", "--json"))
    assert {(e["codec"], e["compression"]) for e in listed} == {("msgpack", "zstd")}

    again = on(files, "convert", files, back, "--codec", "msgpack", "--compress", "none")
    assert again.exit_code == 0, again.output
    assert keys_of(back) == HEALTHY_KEYS
    original = {(e["pid"], e["tag"]): e for e in json_of(on(clean_store, "ls", "--json"))}
    for entry in json_of(on(back, "ls", "--json")):
        source = original[(entry["pid"], entry["tag"])]
        for field in ("process_class", "state", "saved_at", "codec"):
            assert entry[field] == source[field]
        assert entry["compression"] is None
    assert on(back, "verify", "--load").exit_code == 0
    with open_persister(back, allow=[ALLOW]) as persister:
        assert resume_sleeper(persister) == {"before": 1, "after": RESUME}
        failed = persister.load_checkpoint(FAILER)["_future"]["exception"]
        assert type(failed) is CLIError
        assert failed.args == ("disk full", 28)
    assert clean_store.snapshot() == before  # the source is only read


def test_convert_resumes_skipping_what_it_already_converted(
    clean_store: Store, tmp_path: Path
) -> None:
    dst = f"sqlite:///{tmp_path}/dst.db"
    first = json_of(on(clean_store, "convert", clean_store.url, dst, "--json"))
    assert first["copied"] == len(HEALTHY_KEYS)
    with open_persister(dst) as persister:
        versions = {r.key: r.version for r in persister.storage.list()}

    second = json_of(on(clean_store, "convert", clean_store.url, dst, "--json"))
    assert (second["copied"], second["skipped"]) == (0, len(HEALTHY_KEYS))
    with open_persister(dst) as persister:
        assert {r.key: r.version for r in persister.storage.list()} == versions
        # an interrupted or damaged copy, and one that went missing
        flip_payload_byte(persister, CheckpointKey(DOUBLER))
        persister.storage.delete(CheckpointKey(SLEEPER, "step-2"))
    with clean_store.open() as persister:  # the source moves on
        save_at(persister, drive(Sleeper, SLEEPER), "step-3", time.time())

    third = json_of(on(clean_store, "convert", clean_store.url, dst, "--json"))
    status = {(r["pid"], r["tag"]): r["status"] for r in third["results"]}
    assert status.pop((str(SLEEPER), "step-3")) == "updated"
    assert status.pop(("42", None)) == "updated"
    assert status.pop((str(SLEEPER), "step-2")) == "copied"
    assert set(status.values()) == {"skipped"}
    assert on(dst, "verify").exit_code == 0
    # a different format is a different conversion, not a skip
    fourth = json_of(
        on(clean_store, "convert", clean_store.url, dst, "--compress", "zlib", "--json")
    )
    assert fourth["updated"] == len(HEALTHY_KEYS)


def test_convert_reports_corrupt_and_hostile_records_and_copies_the_rest(
    store: Store, tmp_path: Path
) -> None:
    before = store.snapshot()
    dst = f"sqlite:///{tmp_path}/dst.db"
    result = on(store, "convert", store.url, dst)
    assert result.exit_code == 1
    assert "FAILED    corrupt: corrupt: Corrupt checkpoint record" in result.stdout
    assert "FAILED    hostile: unsafe: Refusing to load 'os:system'" in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("7 copied, 2 failed")
    assert keys_of(dst) == HEALTHY_KEYS
    assert store.snapshot() == before


def test_convert_leaves_foreign_destination_records_alone_unless_overwrite(
    clean_store: Store, tmp_path: Path
) -> None:
    dst = f"sqlite:///{tmp_path}/dst.db"
    with open_persister(dst, allow=[ALLOW]) as persister:
        persister.save_checkpoint(drive(Doubler, DOUBLER))
        native = persister.storage.get(CheckpointKey(DOUBLER)).data
    result = on(clean_store, "convert", clean_store.url, dst)
    assert result.exit_code == 1
    assert "CONFLICT  42: the destination already holds a checkpoint" in result.stdout
    assert "--overwrite" in result.stdout
    with open_persister(dst) as persister:
        assert persister.storage.get(CheckpointKey(DOUBLER)).data == native
    forced = on(clean_store, "convert", clean_store.url, dst, "--overwrite")
    assert forced.exit_code == 0, forced.output
    with open_persister(dst) as persister:
        assert persister.storage.get(CheckpointKey(DOUBLER)).data != native


def test_convert_usage_errors_exit_2(clean_store: Store, tmp_path: Path) -> None:
    same = on(clean_store, "convert", clean_store.url, f"sqlite:///{clean_store.path}")
    assert same.exit_code == 2
    assert "same store" in same.stderr
    assert on(clean_store, "convert", clean_store.url).exit_code == 2
    bad_codec = on(
        clean_store,
        "convert",
        clean_store.url,
        f"sqlite:///{tmp_path}/x.db",
        "--codec",
        "pickle-unrestricted",
    )
    assert bad_codec.exit_code == 2
    assert not (tmp_path / "x.db").exists()
    missing = on(
        clean_store, "convert", f"sqlite:///{tmp_path}/none.db", f"sqlite:///{tmp_path}/x.db"
    )
    assert "does not exist" in one_error_line(missing)


class _Touch:
    """Unpickling this creates a file: what a hostile pickle could do instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.fixture
def pickle_dir(tmp_path: Path) -> Path:
    """A real plumpy ``PicklePersister`` directory with three processes."""
    directory = tmp_path / "pickles"
    persister = plumpy.PicklePersister(str(directory))
    persister.save_checkpoint(drive(Sleeper, SLEEPER))
    persister.save_checkpoint(drive(Doubler, DOUBLER), tag="done")
    persister.save_checkpoint(drive(Failer, FAILER))
    return directory


def test_convert_from_a_plumpy_pickle_directory_needs_trust(
    pickle_dir: Path, tmp_path: Path
) -> None:
    sentinel = tmp_path / "unpickled"
    (pickle_dir / "evil.pickle").write_bytes(pickle.dumps(_Touch(sentinel)))
    dst = f"sqlite:///{tmp_path}/dst.db"
    for args in (
        ("convert", f"plumpy-pickle://{pickle_dir}", dst),
        ("convert", "--from-plumpy-pickle", str(pickle_dir), dst),
    ):
        refused = invoke("--allow", ALLOW, *args)
        assert refused.exit_code == 2
        assert "--trust-pickle" in refused.stderr
    assert not sentinel.exists()
    assert not (tmp_path / "dst.db").exists()

    (pickle_dir / "evil.pickle").unlink()
    result = invoke(
        "--allow", ALLOW, "convert", f"plumpy-pickle://{pickle_dir}", dst, "--trust-pickle"
    )
    assert result.exit_code == 0, result.output
    assert "WARNING: --trust-pickle: unpickling every file" in result.stderr
    assert "3 copied" in result.stdout
    assert keys_of(dst) == {
        CheckpointKey(SLEEPER),
        CheckpointKey(DOUBLER, "done"),
        CheckpointKey(FAILER),
    }
    listed = {e["pid"]: e for e in json_of(on(dst, "ls", "--json"))}
    assert (listed[str(SLEEPER)]["process_class"], listed[str(SLEEPER)]["state"]) == (
        f"{ALLOW}:Sleeper",
        "waiting",
    )
    assert listed[FAILER]["state"] == "excepted"
    assert on(dst, "verify", "--load").exit_code == 0
    with open_persister(dst, allow=[ALLOW]) as persister:
        assert resume_sleeper(persister) == {"before": 1, "after": RESUME}

    again = invoke(
        "--allow", ALLOW, "convert", "--from-plumpy-pickle", str(pickle_dir), dst, "--trust-pickle"
    )
    assert again.exit_code == 0, again.output
    assert "0 copied, 3 skipped" in again.stdout


# endregion

# region rm and prune


def test_rm_asks_before_deleting_one_tag(store: Store) -> None:
    declined = on(store, "rm", str(SLEEPER), "--tag", "step-1", input="n\n")
    assert declined.exit_code == 1
    assert "about to delete 1 checkpoint(s)" in declined.stderr
    assert "Delete these 1 checkpoint(s)? [y/N]" in declined.stderr
    assert keys_of(store.url) == ALL_KEYS
    accepted = on(store, "rm", str(SLEEPER), "--tag", "step-1", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout.strip() == f"deleted 1 checkpoint(s) from {store.url}"
    assert keys_of(store.url) == ALL_KEYS - {CheckpointKey(SLEEPER, "step-1")}


def test_rm_without_a_tag_deletes_every_checkpoint_of_the_pid(store: Store) -> None:
    dry = json_of(on(store, "rm", str(SLEEPER), "--dry-run", "--json"))
    assert dry["dry_run"] is True
    assert len(dry["deleted"]) == 4
    assert keys_of(store.url) == ALL_KEYS
    only_untagged = on(store, "rm", "42", "--untagged", "--yes")
    assert only_untagged.exit_code == 0, only_untagged.output
    assert CheckpointKey(DOUBLER, "done") in keys_of(store.url)
    done = json_of(on(store, "rm", str(SLEEPER), "--yes", "--json"))
    assert {e["tag"] for e in done["deleted"]} == {None, "step-1", "step-2", "step-3"}
    assert keys_of(store.url) == ALL_KEYS - {
        CheckpointKey(SLEEPER),
        CheckpointKey(SLEEPER, "step-1"),
        CheckpointKey(SLEEPER, "step-2"),
        CheckpointKey(SLEEPER, "step-3"),
        CheckpointKey(DOUBLER),
    }
    assert "No checkpoint for pid" in one_error_line(on(store, "rm", str(SLEEPER), "--yes"))
    assert on(store, "rm", "42", "--tag", "x", "--untagged").exit_code == 2


def test_prune_keep_keeps_the_newest_tags_per_pid_and_every_untagged_one(store: Store) -> None:
    result = on(store, "prune", "--keep", "1", "--yes")
    assert result.exit_code == 0, result.output
    assert keys_of(store.url) == ALL_KEYS - {
        CheckpointKey(SLEEPER, "step-1"),
        CheckpointKey(SLEEPER, "step-2"),
    }


def test_prune_older_than_and_both_criteria_together(store: Store) -> None:
    both = json_of(on(store, "prune", "--keep", "2", "--older-than", "2d", "--dry-run", "--json"))
    assert {(e["pid"], e["tag"]) for e in both["deleted"]} == {(str(SLEEPER), "step-1")}
    older = on(store, "prune", "--older-than", "7d", "--yes")
    assert older.exit_code == 0, older.output
    assert keys_of(store.url) == ALL_KEYS - {
        CheckpointKey(SLEEPER, "step-1"),
        CheckpointKey(DOUBLER, "done"),
    }


def test_prune_asks_and_can_include_untagged_checkpoints(store: Store) -> None:
    declined = on(store, "prune", "--keep", "0", input="n\n")
    assert declined.exit_code == 1
    assert keys_of(store.url) == ALL_KEYS
    untagged = on(
        store, "prune", "--keep", "0", "--include-untagged", "--state", "excepted", input="y\n"
    )
    assert untagged.exit_code == 0, untagged.output
    assert keys_of(store.url) == ALL_KEYS - {CheckpointKey(FAILER)}
    nothing = on(store, "prune", "--older-than", "1w", "--pid", FAILER, "--yes")
    assert nothing.exit_code == 0
    assert "nothing to delete" in nothing.stderr


def test_prune_usage_errors_exit_2(store: Store) -> None:
    assert "--keep N and/or --older-than" in on(store, "prune").stderr
    bad = on(store, "prune", "--older-than", "7x")
    assert bad.exit_code == 2
    assert "'7x' is not a duration" in bad.stderr
    assert on(store, "prune", "--keep", "-1").exit_code == 2
    assert keys_of(store.url) == ALL_KEYS


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "1d 2", "-1d", "7d!"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


# endregion

# region real subprocesses


@pytest.fixture
def canary_store(store: Store, tmp_path: Path) -> Iterator[tuple[Store, dict[str, str]]]:
    """The test store plus a record naming a canary module that subprocesses could import."""
    directory = tmp_path / "canary"
    directory.mkdir()
    sentinel = tmp_path / "canary.imported"
    (directory / "lap_canary_sub.py").write_text(
        f"import pathlib\npathlib.Path({str(sentinel)!r}).touch()\n\n\nclass Boom:\n    pass\n"
    )
    with store.open() as persister:
        put_hostile(persister, "canary", "lap_canary_sub:Boom")
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{directory}"}
    yield store, env
    assert not sentinel.exists(), "a command imported the canary module"
    imported = subprocess.run(
        [PYTHON, "-c", "import lap_canary_sub"],
        env={**os.environ, **env},
        check=True,
        timeout=60,
    )
    assert imported.returncode == 0
    assert sentinel.exists(), "the canary does not work: the test proves nothing"


def test_subprocess_ls_show_verify(canary_store: tuple[Store, dict[str, str]]) -> None:
    store, env = canary_store
    base = ("--store", store.url, "--allow", ALLOW)
    ls = run_process(*base, "ls", "--json", env=env, script=True)
    assert ls.returncode == 0, ls.stderr
    assert {e["pid"] for e in json.loads(ls.stdout)} >= {"corrupt", "hostile", "canary"}

    show = run_process(*base, "show", FAILER, env=env)
    assert show.returncode == 0, show.stderr
    assert f"exception: {ALLOW}:CLIError: ('disk full', 28)" in show.stdout
    refused = run_process(*base, "show", "canary", env=env)
    assert refused.returncode == 1
    assert "lap_canary_sub:Boom" in refused.stdout
    assert "Traceback" not in refused.stderr

    verify = run_process(*base, "verify", "--json", env=env)
    assert verify.returncode == 1, verify.stderr
    report = json.loads(verify.stdout)
    assert {(p["pid"], p["problem"]) for p in report["problems"]} == {
        ("corrupt", "corrupt"),
        ("hostile", "unsafe"),
        ("canary", "unsafe"),
    }
    assert verify.stderr == ""  # no progress bar off a terminal

    quiet = run_process(*base, "show", "nope", env=env)
    assert quiet.returncode == 1
    assert quiet.stderr.startswith("Error: No checkpoint for pid 'nope'")
    assert len(quiet.stderr.strip().splitlines()) == 1
    loud = run_process(*base, "--debug", "show", "nope", env=env)
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr
    assert "CheckpointNotFoundError" in loud.stderr


def test_subprocess_convert_rm_prune(store: Store, pickle_dir: Path, tmp_path: Path) -> None:
    before = store.snapshot()
    files = (tmp_path / "files").as_uri()
    base = ("--allow", ALLOW)
    convert = run_process(*base, "convert", store.url, files, "--compress", "zstd")
    assert convert.returncode == 1, convert.stderr  # the corrupt and hostile records
    assert "7 copied, 2 failed" in convert.stdout
    assert keys_of(files) == HEALTHY_KEYS
    assert store.snapshot() == before

    from_pickles = f"sqlite:///{tmp_path}/from-pickles.db"
    refused = run_process(*base, "convert", f"plumpy-pickle://{pickle_dir}", from_pickles)
    assert refused.returncode == 2
    trusted = run_process(
        *base, "convert", "--from-plumpy-pickle", str(pickle_dir), from_pickles, "--trust-pickle"
    )
    assert trusted.returncode == 0, trusted.stderr
    assert "WARNING: --trust-pickle" in trusted.stderr
    assert len(keys_of(from_pickles)) == 3

    prune = run_process("--store", files, "prune", "--keep", "1", "--yes")
    assert prune.returncode == 0, prune.stderr
    assert prune.stdout.strip() == f"deleted 2 checkpoint(s) from {files}"
    rm_declined = run_process("--store", files, "rm", "42", input="n\n")
    assert rm_declined.returncode == 1
    assert "Aborted" in rm_declined.stderr
    rm = run_process("--store", files, "rm", "42", input="y\n")
    assert rm.returncode == 0, rm.stderr
    assert keys_of(files) == HEALTHY_KEYS - {
        CheckpointKey(SLEEPER, "step-1"),
        CheckpointKey(SLEEPER, "step-2"),
        CheckpointKey(DOUBLER),
        CheckpointKey(DOUBLER, "done"),
    }


def _run_on_terminal(args: Sequence[str], *, no_color: bool = False) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return its exit code and output."""
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    process = subprocess.Popen(
        [PYTHON, "-m", "loopaware_persist", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=REPO,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return process.wait(timeout=60), b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_progress_bar_and_colour_only_on_a_terminal(store: Store) -> None:
    code, output = _run_on_terminal(["--store", store.url, "--allow", ALLOW, "verify"])
    assert code == 1
    assert "verifying" in output  # the progress bar's label
    assert "\x1b[31m" in output  # red problem lines
    assert "UNSAFE" in output
    code, plain = _run_on_terminal(
        ["--store", store.url, "--allow", ALLOW, "verify"], no_color=True
    )
    assert code == 1
    assert "UNSAFE" in plain
    assert "\x1b[31m" not in plain  # NO_COLOR is honoured on a terminal too
    piped = run_process("--store", store.url, "--allow", ALLOW, "verify")
    assert piped.returncode == 1
    assert "verifying" not in piped.stdout + piped.stderr
    assert "\x1b[" not in piped.stdout + piped.stderr


# endregion
