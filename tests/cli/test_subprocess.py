"""The CLI as a real subprocess: ``python -m loopaware_persist`` and the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from loopaware_persist.storage import CheckpointKey
from tests.cli._support import (
    ALLOW,
    DOUBLER,
    FAILER,
    HEALTHY_KEYS,
    PYTHON,
    REPO,
    SLEEPER,
    Store,
    keys_of,
    put_hostile,
    run_process,
)


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
