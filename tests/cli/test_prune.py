"""``rm`` and ``prune``: what is deleted is shown, confirmed, and exactly that."""

from __future__ import annotations

import pytest

from loopaware_persist._ops import parse_duration
from loopaware_persist.storage import CheckpointKey
from tests.cli._support import (
    ALL_KEYS,
    DOUBLER,
    FAILER,
    SLEEPER,
    Store,
    json_of,
    keys_of,
    on,
    one_error_line,
)


def test_rm_asks_before_deleting_one_tag(store: Store) -> None:
    declined = on(store, "rm", str(SLEEPER), "--tag", "step-1", input="n\n")
    assert declined.exit_code == 1
    assert "about to delete 1 checkpoint(s)" in declined.stderr
    assert "Delete these 1 checkpoint(s)? [y/N]" in declined.stderr
    assert keys_of(store.url) == ALL_KEYS
    accepted = on(store, "rm", str(SLEEPER), "--tag", "step-1", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    # click 8.2's CliRunner echoes the typed answer to stdout, as a terminal shows it.
    report = accepted.stdout.strip().removeprefix("y").strip()
    assert report == f"deleted 1 checkpoint(s) from {store.url}"
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
