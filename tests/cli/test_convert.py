"""``convert``: stores and plumpy pickle directories copied, re-encoded, resumable."""

from __future__ import annotations

import pathlib
import pickle
import time
from pathlib import Path
from typing import Any

from loopaware_persist import open_persister
from loopaware_persist.storage import CheckpointKey
from tests.cli._support import (
    ALLOW,
    DOUBLER,
    FAILER,
    HEALTHY_KEYS,
    RESUME,
    SLEEPER,
    CLIError,
    Doubler,
    Sleeper,
    Store,
    drive,
    flip_payload_byte,
    invoke,
    json_of,
    keys_of,
    on,
    one_error_line,
    resume_sleeper,
    save_at,
)


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
