"""The benchmark suite runs end to end and writes well-formed results (no timing assertions).

It runs the ``smoke`` preset in-process (the ``outcome`` fixture of ``conftest.py``):
every section and case of the real suite at tiny sizes and two rounds, into a
temporary directory.
"""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run
from benchmarks._codecs import BASELINE, VARIANTS
from benchmarks._config import Config
from benchmarks._storage import PLUMPY
from benchmarks._suite import JSON_NAME, MARKDOWN_NAME, PNG_NAME

CASE_NAMES = ("small", "medium", "big", "futures", "dense", "floats", "strings")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _stats_ok(stats: dict[str, Any]) -> None:
    assert stats["n"] >= 1
    for key in ("min_s", "median_s"):
        assert _positive(stats[key]), (key, stats)
    assert stats["min_s"] <= stats["median_s"]
    if "p50_s" in stats:
        assert stats["min_s"] <= stats["p50_s"] <= stats["p99_s"] <= stats["max_s"]


def test_files_written_and_nothing_left_over(outcome: tuple[Path, dict[str, Any], str]) -> None:
    out_dir, _data, _printed = outcome
    assert (out_dir / JSON_NAME).is_file()
    assert (out_dir / MARKDOWN_NAME).is_file()
    assert not list(out_dir.glob("*.tmp"))


def test_png_chart(outcome: tuple[Path, dict[str, Any], str]) -> None:
    pytest.importorskip("matplotlib")
    out_dir, _data, _printed = outcome
    assert (out_dir / PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_machine_and_config(outcome: tuple[Path, dict[str, Any], str]) -> None:
    _out_dir, data, _printed = outcome
    machine = data["machine"]
    assert machine["cpu"]
    assert machine["cores"] >= 1
    assert re.fullmatch(r"3\.\d+\.\d+.*", machine["python"])
    for package in ("plumpy", "msgpack", "loopaware-persist"):
        assert machine["packages"][package]
    assert data["config"]["name"] == "smoke"
    assert _positive(data["duration_s"])
    assert set(data["cases"]) == set(CASE_NAMES)


def test_codec_results_and_ratios_from_the_same_run(
    outcome: tuple[Path, dict[str, Any], str],
) -> None:
    _out_dir, data, markdown = outcome
    codecs = data["codecs"]
    assert codecs["baseline"] == BASELINE
    assert list(codecs["cases"]) == list(CASE_NAMES)
    for case in codecs["cases"].values():
        variants = case["variants"]
        assert list(variants) == list(VARIANTS)
        base = variants[BASELINE]
        assert "error" not in base
        for name, entry in variants.items():
            if "error" in entry:
                # a variant that cannot store a real process is reported, with why
                assert entry["error"].strip(), name
                assert f"`{name}` | failed: " in markdown
                continue
            for key in ("encode", "decode", "total", "codec_encode", "codec_decode"):
                _stats_ok(entry[key])
                assert entry[key]["n"] == case["rounds"]
            assert entry["payload_size"] > 0
            assert entry["record_size"] > 0
            ratio = entry["ratio"]
            for key in ("encode", "decode", "total"):
                expected = entry[key]["median_s"] / base[key]["median_s"]
                assert ratio[key] == pytest.approx(expected, rel=1e-9)
            assert ratio["size"] == pytest.approx(entry["payload_size"] / base["payload_size"])
            assert ratio["record_size"] == pytest.approx(
                entry["record_size"] / base["payload_size"]
            )
        assert base["ratio"]["total"] == pytest.approx(1.0)
        assert base["payload_size"] == case["pickle_size"]
        # msgpack is the default codec: it must store every real process
        assert "error" not in variants["msgpack"]
        assert "error" not in variants["msgpack+zstd"]
        # compression is applied in the envelope: the stored record shrinks, the payload not
        assert variants["msgpack+zstd"]["payload_size"] == variants["msgpack"]["payload_size"]


def test_storage_results(outcome: tuple[Path, dict[str, Any], str]) -> None:
    _out_dir, data, _printed = outcome
    storage = data["storage"]
    names = [store["name"] for store in storage["stores"]]
    assert {"memory", "file", "sqlite", "file (full)", "sqlite (full)", PLUMPY} <= set(names)
    for op in ("save", "load"):
        for size in ("small", "medium", "big"):
            by_store = storage["operations"][op][size]
            assert set(by_store) == set(names)
            for stats in by_store.values():
                _stats_ok(stats)
    for size, by_store in storage["ratios"]["load"].items():
        base = storage["operations"]["load"][size][PLUMPY]["p50_s"]
        for name, ratio in by_store.items():
            mine = storage["operations"]["load"][size][name]["p50_s"]
            assert ratio["p50"] == pytest.approx(mine / base)
    for size in Config.smoke().list_sizes:
        for count in Config.smoke().list_counts:
            by_store = storage["listing"][size][str(count)]
            assert {"memory", "file", "sqlite", PLUMPY} <= set(by_store)
            for stats in by_store.values():
                _stats_ok(stats)


def test_workers_are_left_out_of_the_smoke_preset_and_say_so(
    outcome: tuple[Path, dict[str, Any], str],
) -> None:
    out_dir, data, _printed = outcome
    workers = data["workers"]
    assert workers["runs"] == {}
    assert "runs no workers" in workers["skipped"]["workers"]
    text = (out_dir / MARKDOWN_NAME).read_text(encoding="utf-8")
    assert "## Workers over RabbitMQ" in text
    assert "smoke preset runs no workers" in text


def test_loop_results(outcome: tuple[Path, dict[str, Any], str]) -> None:
    _out_dir, data, _printed = outcome
    restore = data["loop"]["restore"]
    base = restore["variants"][restore["baseline"]]["median_s"]
    for entry in restore["variants"].values():
        _stats_ok(entry)
        assert entry["ratio"] == pytest.approx(entry["median_s"] / base)
    assert set(data["loop"]["unbundle"]) == {"small", "medium", "futures"}
    for entry in data["loop"]["unbundle"].values():
        for part in ("unbundle", "load"):
            variants = entry[part]["variants"]
            base = variants[entry[part]["baseline"]]["median_s"]
            for stats in variants.values():
                _stats_ok(stats)
                assert stats["ratio"] == pytest.approx(stats["median_s"] / base)


def test_targets(outcome: tuple[Path, dict[str, Any], str]) -> None:
    _out_dir, data, _printed = outcome
    targets = data["targets"]
    ids = {target["id"] for target in targets}
    assert {"codec.medium.time", "codec.small.size", "restore", "unbundle.medium"} <= ids
    assert any(tid.startswith("list.") for tid in ids)
    assert any(tid.startswith("save.") for tid in ids)
    for target in targets:
        assert _positive(target["limit"])
        assert _positive(target["measured"])
        assert target["met"] is (target["measured"] <= target["limit"])


def test_markdown_tables(outcome: tuple[Path, dict[str, Any], str]) -> None:
    out_dir, _data, printed = outcome
    text = (out_dir / MARKDOWN_NAME).read_text(encoding="utf-8")
    assert text.startswith("# loopaware_persist benchmarks (smoke)")
    assert text.strip() in printed  # the same report went to the terminal
    for heading in ("## Targets", "## Codecs", "## Storage", "## Loop re-materialisation"):
        assert heading in text
    lines = text.splitlines()
    tables = 0
    for index, line in enumerate(lines):
        if re.fullmatch(r"\|(---\|)+", line):
            tables += 1
            columns = lines[index - 1].count("|")
            body = index + 1
            while body < len(lines) and lines[body].startswith("|"):
                assert lines[body].count("|") == columns, lines[body]
                body += 1
            assert body > index + 1, "empty table"
    assert tables >= 7 + 6  # a table per codec case; storage: one per size, and listing


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset"):
        run(out_dir=tmp_path, preset="huge")


def test_profile_missed_targets(tmp_path: Path) -> None:
    pytest.importorskip("pyinstrument")
    from benchmarks._cases import build_cases
    from benchmarks._profile import profile_missed

    loop = asyncio.new_event_loop()
    try:
        cases = build_cases(Config.smoke(), loop, ("small",))
        targets = [
            {"id": tid, "met": met}
            for tid, met in (
                ("codec.small.time", False),
                ("unbundle.small", False),
                ("restore", False),
                ("save.sqlite (full)", False),
                ("load.memory", False),
                ("list.file", False),  # not profiled: needs a filled store
                ("i15.load.small", False),
                ("i15.save.file", False),
                ("i15.restart.small", False),  # not profiled: built by the loading section
                ("codec.small.size", True),  # met: not profiled
            )
        ]
        written = profile_missed(targets, cases, loop, tmp_path, seconds=0.02)
    finally:
        loop.close()
    assert set(written) == {
        "codec.small.time:encode",
        "codec.small.time:decode",
        "unbundle.small:unbundle",
        "restore:restore",
        "save.sqlite (full):save",
        "load.memory:load",
        "i15.load.small:load_process",
        "i15.save.file:save",
    }
    for name in written.values():
        assert (tmp_path / name).read_text(encoding="utf-8").strip()
