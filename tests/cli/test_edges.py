"""Command-line edge cases an operator meets: an empty store, compressed and converted
records, dry runs in plain text, a tag that does not exist, and a convert given too
many stores."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from loopaware_persist import open_persister
from loopaware_persist._cli import cli
from tests.processes import drive, new_loop

ALLOW = "tests.processes"


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A zlib-compressed SQLite store with pid "w" (untagged and tag "t1") and pid "f"."""
    url = f"sqlite:///{tmp_path}/store.db"
    with new_loop() as loop, open_persister(url, allow=[ALLOW], compression="zlib") as per:
        waiting = drive("waiting", loop, pid="w")
        per.save_checkpoint(waiting)
        per.save_checkpoint(waiting, tag="t1")
        per.save_checkpoint(drive("finished", loop, pid="f"))
    asyncio.set_event_loop(None)
    return url


def test_ls_of_an_empty_store_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    open_persister(url).close()
    result = run("ls", "--store", url)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"no checkpoints in {url}" in result.stderr


def test_ls_and_show_name_the_compression(store: str) -> None:
    listed = run("ls", "--store", store)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.count("msgpack+zlib") == 3
    shown = run("show", "--store", store, "--allow", ALLOW, "w")
    assert shown.exit_code == 0, shown.output
    assert "msgpack (zlib)" in shown.stdout


def test_show_of_a_converted_record_names_its_source(store: str, tmp_path: Path) -> None:
    dst = f"sqlite:///{tmp_path}/dst.db"
    converted = run("convert", "--allow", ALLOW, "--json", store, dst)
    assert converted.exit_code == 0, converted.output
    shown = run("show", "--store", dst, "--allow", ALLOW, "w", "--tag", "t1")
    assert shown.exit_code == 0, shown.output
    assert "converted" in shown.stdout
    # The marker names the source store (its real path) and the record.
    source_db = os.path.realpath(tmp_path / "store.db")
    assert f'["sqlite:{source_db}", "s:w", "t1"]' in shown.stdout


def test_prune_dry_run_in_plain_text_lists_what_would_go(store: str) -> None:
    result = run("prune", "--store", store, "--keep", "0", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"would delete 1 checkpoint(s) from {store}:" in result.stdout
    assert "t1" in result.stdout
    assert len(json.loads(run("ls", "--store", store, "--json").stdout)) == 3  # nothing deleted


def test_prune_with_nothing_to_delete_reports_an_empty_json_list(store: str) -> None:
    result = run("prune", "--store", store, "--keep", "5", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"store": store, "dry_run": False, "deleted": []}


def test_rm_of_a_tag_the_pid_does_not_have_is_one_error_line(store: str) -> None:
    result = run("rm", "--store", store, "w", "--tag", "nope", "--yes")
    assert result.exit_code == 1
    assert "Pid 'w' has no checkpoint with tag 'nope'" in result.stderr
    assert "ls --pid PID" in result.stderr
    assert len(json.loads(run("ls", "--store", store, "--json").stdout)) == 3


def test_convert_from_a_pickle_directory_takes_only_the_destination(
    store: str, tmp_path: Path
) -> None:
    result = run(
        "convert",
        "--from-plumpy-pickle",
        str(tmp_path),
        "--trust-pickle",
        store,
        f"sqlite:///{tmp_path}/dst.db",
    )
    assert result.exit_code == 2
    assert "give only the destination" in result.stderr


def test_show_draws_with_ascii_when_the_terminal_cannot_encode_box_drawing(store: str) -> None:
    result = CliRunner(charset="ascii").invoke(
        cli, ["show", "--store", store, "--allow", ALLOW, "w"]
    )
    assert result.exit_code == 0, result.output
    assert "|-- " in result.stdout or "`-- " in result.stdout
    assert not any(glyph in result.stdout for glyph in "├└│")


def test_no_color_turns_off_colour_even_on_a_terminal(store: str) -> None:
    args = ["show", "--store", store, "--allow", ALLOW, "w"]
    coloured = CliRunner().invoke(cli, args, color=True)
    assert "\x1b[" in coloured.stdout
    plain = CliRunner().invoke(cli, args, color=True, env={"NO_COLOR": "1"})
    assert plain.exit_code == 0, plain.output
    assert "\x1b[" not in plain.stdout
    assert "audit     ok" in plain.stdout
