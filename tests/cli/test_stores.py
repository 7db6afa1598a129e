"""The CLI leaves stores as found, reports every damaged record, and renders or refuses
what a hostile checkpoint holds without hanging, tracebacks or lost records."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from loopaware_persist import open_persister
from loopaware_persist._cli import cli
from loopaware_persist.storage import CheckpointKey, open_storage
from tests.processes import drive, new_loop

ALLOW = "tests.processes"
REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run_process(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI as a real subprocess, under a timeout: a hang fails the test."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LOOPAWARE_PERSIST_STORE", None)
    return subprocess.run(
        [sys.executable, "-m", "loopaware_persist", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: Result | subprocess.CompletedProcess[str]) -> str:
    code = result.exit_code if isinstance(result, Result) else result.returncode
    assert code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    } | {"<names>": ",".join(sorted(p.name for p in directory.rglob("*")))}


def save_processes(url: str) -> None:
    with new_loop() as loop, open_persister(url, allow=[ALLOW]) as persister:
        persister.save_checkpoint(drive("waiting", loop, pid="w"))
        persister.save_checkpoint(drive("finished", loop, pid="f"))
    asyncio.set_event_loop(None)


# -- stores left as found ------------------------------------------------------------------


@pytest.mark.parametrize("command", [["ls"], ["verify"], ["verify", "--load"], ["show", "1"]])
@pytest.mark.parametrize("checkpoints_table", [False, True], ids=["app", "app-checkpoints"])
def test_reading_commands_refuse_another_applications_database_unchanged(
    tmp_path: Path, command: list[str], checkpoints_table: bool
) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    if checkpoints_table:
        conn.execute("CREATE TABLE checkpoints (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = snapshot(tmp_path)
    line = one_error_line(run(*command, "--store", f"sqlite:///{db}"))
    assert "is not a loopaware checkpoint store" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [["ls"], ["verify"], ["show", "1"]])
def test_reading_commands_create_nothing_where_no_store_is(
    tmp_path: Path, command: list[str]
) -> None:
    for url in (f"sqlite:///{tmp_path}/none/x.db", (tmp_path / "nodir").as_uri()):
        line = one_error_line(run(*command, "--store", url))
        assert "No checkpoint store at" in line
    assert list(tmp_path.iterdir()) == []


def test_ls_locks_and_creates_nothing_in_a_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    before = snapshot(home)
    line = one_error_line(run("ls", "--store", home.as_uri()))
    assert "is not a loopaware checkpoint store" in line
    assert snapshot(home) == before  # no .loopaware-writers.lock
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("ls", "--store", empty.as_uri()).exit_code == 0
    assert list(empty.iterdir()) == []


def test_reading_commands_leave_a_store_as_found(tmp_path: Path) -> None:
    store = tmp_path / "store"
    save_processes(store.as_uri())
    before = snapshot(store)
    for command in (["ls"], ["verify", "--load"], ["show", "w"]):
        result = run(*command, "--store", store.as_uri(), "--allow", ALLOW)
        assert result.exit_code == 0, result.output
    assert snapshot(store) == before


# -- verify reports every bad record ---------------------------------------------------------


def test_verify_load_exits_1_on_a_file_store_with_a_torn_record(tmp_path: Path) -> None:
    store = tmp_path / "store"
    save_processes(store.as_uri())
    (record,) = [p for p in store.iterdir() if p.name.startswith("s:w")]
    record.write_bytes(record.read_bytes()[:20])  # torn inside its header
    for args in (["verify"], ["verify", "--load"]):
        result = run(*args, "--store", store.as_uri(), "--allow", ALLOW)
        assert result.exit_code == 1, result.output
        assert "s:w.ckpt" in result.stdout
        assert "1 ok" in result.stdout  # the healthy one is still checked
        assert "Traceback" not in result.output
    listed = run("ls", "--store", store.as_uri(), "--allow", ALLOW)
    assert listed.exit_code == 0
    assert "skipped a damaged record" in listed.stderr
    assert "s:w.ckpt" in listed.stderr


def test_convert_reports_the_torn_record_it_cannot_copy(tmp_path: Path) -> None:
    store = tmp_path / "store"
    save_processes(store.as_uri())
    (record,) = [p for p in store.iterdir() if p.name.startswith("s:w")]
    record.write_bytes(record.read_bytes()[:20])  # torn inside its header
    dst = f"sqlite:///{tmp_path}/dst.db"
    result = run("convert", store.as_uri(), dst, "--json", "--allow", ALLOW)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert (report["copied"], report["failed"]) == (1, 1)
    (failed,) = [r for r in report["results"] if r["status"] == "failed"]
    assert failed["source"] == "(a damaged record)"
    assert "s:w.ckpt" in failed["reason"]


@pytest.mark.parametrize("command", [["show"], ["show", "--json"], ["rm", "--yes"]])
def test_show_and_rm_of_a_torn_record_name_the_damage_not_a_missing_pid(
    tmp_path: Path, command: list[str]
) -> None:
    store = tmp_path / "store"
    save_processes(store.as_uri())
    (record,) = [p for p in store.iterdir() if p.name.startswith("s:w")]
    record.write_bytes(record.read_bytes()[:20])  # torn inside its header
    before = snapshot(store)
    line = one_error_line(run(*command, "w", "--store", store.as_uri(), "--allow", ALLOW))
    assert "No checkpoint for pid" not in line
    assert "s:w.ckpt" in line
    assert "damaged" in line
    assert snapshot(store) == before


def test_a_record_copied_under_another_pids_name_is_that_pid_and_damaged(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    save_processes(store.as_uri())
    (record,) = [p for p in store.iterdir() if p.name.startswith("s:w")]
    (store / "s:copy.ckpt").write_bytes(record.read_bytes())  # an operator's copy
    verified = run("verify", "--json", "--store", store.as_uri(), "--allow", ALLOW)
    assert verified.exit_code == 1, verified.output
    report = json.loads(verified.stdout)
    assert report["ok"] == 2  # w and f, each once (w was checked twice, copy never)
    (problem,) = report["problems"]
    assert problem["pid"] == "copy"
    assert "s:copy.ckpt" in problem["reason"]
    listed = json.loads(run("ls", "--json", "--store", store.as_uri()).stdout)
    assert sorted(entry["pid"] for entry in listed) == ["copy", "f", "w"]
    with open_storage(store.as_uri(), read_only=True) as storage:  # both listings agree
        assert storage.list_key_tokens() == [(i.key.token, i.key.tag) for i in storage.list()]
    shown = run("show", "copy", "--store", store.as_uri(), "--allow", ALLOW)
    assert one_error_line(shown) == "checkpoint copy: corrupt"
    assert "it holds the record of" in shown.stdout
    assert run("rm", "copy", "--yes", "--store", store.as_uri()).exit_code == 0
    assert not (store / "s:copy.ckpt").exists()
    assert record.exists()


def test_verify_reports_a_fifo_and_a_directory_named_like_checkpoints(tmp_path: Path) -> None:
    store = tmp_path / "store"
    save_processes(store.as_uri())
    os.mkfifo(store / "i:7.ckpt")
    (store / "old.ckpt").mkdir()
    verified = run_process("verify", "--json", "--store", store.as_uri(), "--allow", ALLOW)
    assert verified.returncode == 1, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] == 2
    assert len(report["skipped"]) == 2
    assert "Traceback" not in verified.stderr
    listed = run_process("ls", "--store", store.as_uri(), "--allow", ALLOW)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("tests.processes") == 2


def test_verify_reports_a_sqlite_row_of_the_wrong_types_and_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    save_processes(url)
    conn = sqlite3.connect(tmp_path / "store.db")
    conn.execute("UPDATE checkpoints SET version = 'x' WHERE pid = 's:w'")
    conn.execute("UPDATE checkpoints SET data = 12 WHERE pid = 's:f'")
    conn.commit()
    conn.close()
    result = run("verify", "--json", "--store", url, "--allow", ALLOW)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert len(report["skipped"]) == 1
    assert "its version is 'x'" in report["skipped"][0]
    (problem,) = report["problems"]
    assert problem["pid"] == "f"
    assert "not a BLOB" in problem["reason"]


# -- hostile values: rendered, not fatal ------------------------------------------------------


def _put_bundle(url: str, bundle: Any, *, codec: str = "msgpack", pid: object = 1) -> None:
    with open_persister(url, codec=codec) as persister:
        persister.storage.put(CheckpointKey(pid), persister.dumps(bundle, meta={}))  # type: ignore[arg-type]


def test_show_renders_an_int_beyond_the_decimal_digit_limit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    _put_bundle(url, {"big": 2**20000, "small": 12})
    shown = run("show", "--store", url, "1")
    assert shown.exit_code == 0, shown.output
    assert "big: int of ~6021 digits: 0x1000" in shown.stdout
    assert "unexpected" not in shown.output
    as_json = run("show", "--json", "--store", url, "1")
    assert as_json.exit_code == 0, as_json.output
    bundle = json.loads(as_json.stdout)["bundle"]
    assert int(bundle["big"]["hex"], 16) == 2**20000
    assert bundle["small"] == 12


def _shared(levels: int) -> list[Any]:
    x: list[Any] = ["leaf"]
    for _ in range(levels):
        x = [x, x]
    return x


def test_shared_references_render_in_linear_time_and_convert_refuses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    # 2**40 paths through ~40 distinct lists: a small pickle record.
    _put_bundle(url, {"x": _shared(40)}, codec="pickle", pid=1)
    _put_bundle(url, {"fine": [1, 2]}, codec="pickle", pid=2)
    with open_storage(url) as storage:
        assert len(storage.get(CheckpointKey(1)).data) < 4096
    shown = run_process("show", "--store", url, "1", "--full")
    assert shown.returncode == 0, shown.stderr
    assert "*" in shown.stdout
    assert "the same object as &" in shown.stdout
    assert len(shown.stdout.splitlines()) < 500
    as_json = run_process("show", "--json", "--store", url, "1")
    assert as_json.returncode == 0, as_json.stderr
    assert '"$type": "ref"' in as_json.stdout
    converted = run_process(
        "convert", "--json", url, f"sqlite:///{tmp_path}/dst.db", "--codec", "msgpack"
    )
    assert converted.returncode == 1, converted.stderr
    report = json.loads(converted.stdout)
    assert report["copied"] == 1
    assert report["failed"] == 1
    (failed,) = [r for r in report["results"] if r["status"] == "failed"]
    assert failed["pid"] == "1"


# -- convert: resume markers name the source store --------------------------------------------


def test_converting_a_second_store_does_not_replace_the_first_ones_records(
    tmp_path: Path,
) -> None:
    a, b, d = (f"sqlite:///{tmp_path}/{name}.db" for name in ("a", "b", "d"))
    _put_bundle(a, {"from": "a"}, pid=7)  # AiiDA-style int pids collide across stores
    _put_bundle(b, {"from": "b"}, pid=7)
    assert run("convert", a, d).exit_code == 0
    again = run("convert", a, d)
    assert again.exit_code == 0
    assert "1 skipped" in again.stdout
    clash = run("convert", "--json", b, d)
    assert clash.exit_code == 1, clash.output
    assert json.loads(clash.stdout)["conflict"] == 1
    with open_persister(d) as persister:
        assert persister.loads(persister.storage.get(CheckpointKey(7)).data) == {"from": "a"}
    assert run("convert", "--overwrite", b, d).exit_code == 0
    with open_persister(d) as persister:
        assert persister.loads(persister.storage.get(CheckpointKey(7)).data) == {"from": "b"}


# -- no tracebacks -------------------------------------------------------------------------


def test_worker_with_an_unreachable_broker_prints_one_line(tmp_path: Path) -> None:
    done = run_process(
        "--store",
        f"sqlite:///{tmp_path}/w.db",
        "worker",
        "--broker",
        "amqp://guest:hunter2@127.0.0.1:1/",
        "--log-level",
        "ERROR",
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
    assert "Cannot reach the RabbitMQ broker" in done.stderr
    assert "hunter2" not in done.stderr
    # At the default log level too: the error is the only line (no "worker stopped").
    default = run_process(
        "--store", f"sqlite:///{tmp_path}/w.db", "worker", "--broker", "amqp://127.0.0.1:1/"
    )
    assert "Cannot reach the RabbitMQ broker" in one_error_line(default)


@pytest.mark.parametrize(
    "command", [["launch", "tests.processes:Waiter"], ["continue", "w"]], ids=["launch", "continue"]
)
def test_client_commands_with_an_unreachable_broker_print_one_line(command: list[str]) -> None:
    done = run_process(*command, "--broker", "amqp://guest:hunter2@127.0.0.1:1/", "--timeout", "5")
    line = one_error_line(done)
    assert "Cannot reach the RabbitMQ broker at amqp://guest:***@127.0.0.1:1/" in line
    assert "hunter2" not in done.stderr


def test_verify_goes_on_past_deeply_nested_yaml_in_an_excepted_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    with new_loop() as loop, open_persister(url, allow=[ALLOW]) as persister:
        persister.save_checkpoint(drive("excepted", loop, pid="e"))
        persister.save_checkpoint(drive("finished", loop, pid="f"))
        record = persister.storage.get(CheckpointKey("e"))
        bundle = persister.loads(record.data)
        bundle["_state"]["ex_value"] = "[" * 200_000 + "]" * 200_000
        plain = dict(bundle)
        persister.storage.put(CheckpointKey("e"), persister.dumps(plain, meta={}))
    asyncio.set_event_loop(None)
    result = run_process("verify", "--json", "--store", url, "--allow", ALLOW)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["checked"] == 2
    assert report["ok"] == 1
    assert [p["pid"] for p in report["problems"]] == ["e"]
    assert "Traceback" not in result.stderr
    shown = run_process("show", "--store", url, "--allow", ALLOW, "e", "--show-unsafe")
    assert "Traceback" not in shown.stderr


def test_reading_commands_create_nothing_on_postgresql() -> None:
    import urllib.parse
    import uuid

    base = os.environ.get("LOOPAWARE_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("LOOPAWARE_TEST_POSTGRES_URL is not set")
    import psycopg

    schema = f"lap_cli_{uuid.uuid4().hex[:10]}"
    parts = urllib.parse.urlsplit(base)
    query = [*urllib.parse.parse_qsl(parts.query), ("schema", schema)]
    url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    try:
        for command in (["ls"], ["verify"], ["show", "1"]):
            line = one_error_line(run(*command, "--store", url))
            assert "No checkpoint store at" in line
            assert (parts.password or "\0") not in line
        with psycopg.connect(base, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            assert found.fetchone() is None
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


def test_usage_and_tag_errors_never_show_a_postgresql_password() -> None:
    same = "postgresql://u:hunter2@127.0.0.1:1/db"
    converted = run("convert", same, same)
    assert converted.exit_code == 2, converted.output
    assert "same store" in converted.stderr
    assert "hunter2" not in converted.output
    base = os.environ.get("LOOPAWARE_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("LOOPAWARE_TEST_POSTGRES_URL is not set")
    import urllib.parse
    import uuid

    import psycopg

    schema = f"lap_cli_{uuid.uuid4().hex[:10]}"
    parts = urllib.parse.urlsplit(base)
    assert parts.password, "the test server's URL should carry a password"
    query = [*urllib.parse.parse_qsl(parts.query), ("schema", schema)]
    url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    try:
        save_processes(url)
        line = one_error_line(run("rm", "w", "--tag", "nope", "--yes", "--store", url))
        assert "has no checkpoint with tag 'nope'" in line
        assert parts.password not in line
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]
