"""``ls``: listings from headers, filters, JSON, damaged records, missing stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopaware_persist.storage import CheckpointKey
from tests.cli._support import (
    ALL_KEYS,
    ALLOW,
    DAY,
    DOUBLER,
    SLEEPER,
    Store,
    invoke,
    json_of,
    on,
    one_error_line,
)


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
