"""What the CLI tests share: real plumpy processes, a store they wrote, and ways to run
the command line (in process through click's ``CliRunner``, or as a real subprocess).

The store holds, besides healthy checkpoints, a *corrupt* record (a payload byte
flipped through the storage) and a *hostile* one (a bundle naming ``os:system``); a
*canary* record names a module whose import leaves a file behind, which proves the
commands never import what they refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import plumpy
from click.testing import CliRunner, Result

from loopaware_persist import LoopAwarePersister, open_persister
from loopaware_persist._cli import cli
from loopaware_persist.storage import CheckpointKey
from tests.processes import step_until

ALLOW = __name__  # "tests.cli._support": the classes below are stored under this module
REPO = Path(__file__).resolve().parents[2]
# The interpreter running the tests and the console script installed beside it: no path
# into a particular venv (the chroot legs of .ci/run install elsewhere).
PYTHON = sys.executable
SCRIPT = Path(sysconfig.get_path("scripts")) / "loopaware-persist"
DAY = 86400.0

SLEEPER = uuid.UUID("5eeb5eeb-0000-4000-8000-000000000001")
DOUBLER = 42
FAILER = "failer"
RESUME = {"answer": 42}


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
        await step_until(process, plumpy.ProcessState.WAITING)
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


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def save_at(
    persister: LoopAwarePersister, process: plumpy.Process, tag: str | None, saved_at: float
) -> None:
    """Save ``process`` as ``save_checkpoint`` would, but with a chosen ``saved_at``."""
    meta = {
        "process_class": class_name(type(process)),
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
