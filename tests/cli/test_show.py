"""``show``: one checkpoint's header and bundle, rendered without running its code."""

from __future__ import annotations

import time
from pathlib import Path

from tests.cli._support import (
    ALLOW,
    FAILER,
    SLEEPER,
    Doubler,
    Store,
    canary,
    drive,
    invoke,
    json_of,
    on,
    one_error_line,
    put_hostile,
    save_at,
)


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
