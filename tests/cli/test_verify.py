"""``verify``: every record read back, its problems reported, nothing it names run."""

from __future__ import annotations

import plumpy

from loopaware_persist.storage import CheckpointKey
from tests.cli._support import (
    ALL_KEYS,
    HEALTHY_KEYS,
    SLEEPER,
    Sleeper,
    Store,
    class_name,
    drive,
    json_of,
    on,
)


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
            persister.dumps(bundle, meta={"process_class": class_name(Sleeper)}),
        )
    audited = on(clean_store, "verify")
    assert audited.exit_code == 1
    assert "renamed" in audited.stdout
    assert "wake_up" in audited.stdout
    loaded = on(clean_store, "verify", "--load")
    assert loaded.exit_code == 1
    assert "wake_up" in loaded.stdout
