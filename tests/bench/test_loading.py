"""Issue 15's section and targets: every target is evaluated from one run's results, with
the cyclic GC on and off both measured (no timing assertions).

It reads the shared ``smoke`` run (``conftest.py``).
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _aiida
from benchmarks._config import Config
from benchmarks._loading import BASELINE, GC_MODES, LOAD_CASES, OURS, RESTART_CASES
from benchmarks._storage import GC_ON_SAVE, PLUMPY
from benchmarks._suite import MARKDOWN_NAME
from benchmarks._timing import time_batch, time_each

#: Issue 15's limits by target id (the AiiDA ones are checked when aiida-core runs).
LIMITS = {
    "i15.load.small": 1.2,
    "i15.load.medium": 1.0,
    "i15.load.big": 1.0,
    "i15.load.futures": 1.5,
    "i15.restart.small": 1.2,
    "i15.restart.waiting": 1.0,
    "i15.codec.medium": 0.8,
    "i15.codec.dense": 0.7,
    "i15.save.sqlite": 1.5,
    "i15.save.file": 1.0,
}
AIIDA_LIMITS = {"small": 1.0, "table": 0.5}


def _finite_positive(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def _targets(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in data["targets"] if t["id"].startswith("i15.")}


def test_the_gc_flag_runs_the_samples_with_the_collector_on_or_off() -> None:
    seen: list[bool] = []
    was = gc.isenabled()
    try:
        for start in (True, False):
            (gc.enable if start else gc.disable)()
            for gc_on in (True, False):
                seen.clear()
                time_batch(lambda: seen.append(gc.isenabled()), 2, gc_on=gc_on)
                time_each(lambda: seen.append(gc.isenabled()), 2, gc_on=gc_on)
                assert seen == [gc_on] * 4
                assert gc.isenabled() is start  # restored as it was
    finally:
        (gc.enable if was else gc.disable)()


def test_the_loading_section_times_both_persisters_with_the_gc_off_and_on(
    outcome: tuple[Path, dict[str, Any], str],
) -> None:
    _out_dir, data, _printed = outcome
    loading = data["loading"]
    config = Config.smoke()
    assert set(loading["load"]) == set(LOAD_CASES)
    assert set(loading["restart"]) == set(RESTART_CASES)
    assert loading["load_futures"] == config.load_futures
    assert loading["load"]["futures"]["detail"] == f"{config.load_futures:,} snapshots"
    for part, rounds in (("load", config.rounds), ("restart", config.restart_rounds)):
        for entry in loading[part].values():
            assert set(entry["variants"]) == {BASELINE, OURS}
            for mode in GC_MODES:
                for stats in entry["variants"].values():
                    assert stats[mode]["n"] == rounds
                    assert 0 < stats[mode]["min_s"] <= stats[mode]["median_s"]
                mine = entry["variants"][OURS][mode]["median_s"]
                base = entry["variants"][BASELINE][mode]["median_s"]
                assert entry["ratio"][f"gc_{mode}"] == pytest.approx(mine / base)
    for entry in loading["restart"].values():
        assert entry["count"] == config.restart_count
    # the 100 KB WAITING process is bigger than the small one
    assert loading["restart"]["waiting"]["pickle_size"] > loading["restart"]["small"]["pickle_size"]


def test_every_issue_15_target_is_evaluated_from_the_run(
    outcome: tuple[Path, dict[str, Any], str],
) -> None:
    _out_dir, data, _printed = outcome
    targets = _targets(data)
    assert set(LIMITS) <= set(targets)
    for tid, limit in LIMITS.items():
        target = targets[tid]
        assert target["issue"] == 15
        assert target["limit"] == limit
        assert _finite_positive(target["gc_on"]), tid
        assert _finite_positive(target["gc_off"]), tid
        assert target["measured"] == target["gc_on"]  # judged with the GC on
        assert target["met"] is (target["measured"] <= limit)
        assert f"GC off: {target['gc_off']:.2f}x" in target["note"]
    loading = data["loading"]
    for case in LOAD_CASES:
        ratio = loading["load"][case]["ratio"]
        assert targets[f"i15.load.{case}"]["gc_on"] == ratio["gc_on"]
        assert targets[f"i15.load.{case}"]["gc_off"] == ratio["gc_off"]
    for case in RESTART_CASES:
        assert targets[f"i15.restart.{case}"]["gc_on"] == loading["restart"][case]["ratio"]["gc_on"]
    for case in ("medium", "dense"):
        ratio = data["codecs"]["cases"][case]["variants"]["msgpack"]["ratio"]
        assert targets[f"i15.codec.{case}"]["gc_on"] == ratio["codec_total_gc_on"]
        assert targets[f"i15.codec.{case}"]["gc_off"] == ratio["codec_total"]
    storage = data["storage"]
    for mode, op, bundle in (("gc_off", "save", "bundle"), ("gc_on", GC_ON_SAVE, "bundle_gc_on")):
        saves = storage["operations"][op]["small"]
        assert targets["i15.save.sqlite"][mode] == pytest.approx(
            saves["sqlite"]["p50_s"] / storage[bundle]["small"]["p50_s"]
        )
        assert targets["i15.save.file"][mode] == pytest.approx(
            saves["file"]["p50_s"] / saves[PLUMPY]["p50_s"]
        )


def test_the_codec_ratio_with_the_gc_on_comes_from_the_same_rounds(
    outcome: tuple[Path, dict[str, Any], str],
) -> None:
    _out_dir, data, _printed = outcome
    for case in data["codecs"]["cases"].values():
        variants = case["variants"]
        for name in ("pickle-5", "msgpack"):
            assert variants[name]["codec_total_gc_on"]["n"] == case["rounds"]
        mine = variants["msgpack"]["codec_total_gc_on"]["median_s"]
        base = variants["pickle-5"]["codec_total_gc_on"]["median_s"]
        assert variants["msgpack"]["ratio"]["codec_total_gc_on"] == pytest.approx(mine / base)
        assert "codec_total_gc_on" not in variants["pickle"]


def test_the_aiida_load_targets_of_issue_15(outcome: tuple[Path, dict[str, Any], str]) -> None:
    _out_dir, data, _printed = outcome
    if not _aiida.available():
        pytest.skip("aiida-core is not installed: the aiida benchmark section was NOT RUN")
    targets = _targets(data)
    for case, limit in AIIDA_LIMITS.items():
        for store in ("aiida://", "sqlite://"):
            target = targets[f"i15.aiida.{case}.{store}.load"]
            ratio = data["aiida"]["cases"][case]["stores"][store]["ratio"]
            assert target["limit"] == limit
            assert target["gc_on"] == ratio["load_gc_on"]
            assert target["gc_off"] == ratio["load_gc_off"]
            assert target["met"] is (target["gc_on"] <= limit)


def test_the_report_states_each_issue_15_target_and_the_loading_tables(
    outcome: tuple[Path, dict[str, Any], str],
) -> None:
    out_dir, data, _printed = outcome
    text = (out_dir / MARKDOWN_NAME).read_text(encoding="utf-8")
    assert "## Targets (issue 15: loading at pickle speed; judged with the GC on)" in text
    assert "## Targets (issues 4 and 14)" in text
    assert text.index("## Targets (issue 15") < text.index("## Targets (issues 4 and 14)")
    for target in _targets(data).values():
        assert f"| {target['target']} |" in text
    assert "## Loading (issue 15)" in text
    assert "### Load to a runnable process on B (median)" in text
    restart_count = Config.smoke().restart_count
    assert f"### Restart: list + load {restart_count:,} WAITING processes (median)" in text
    for case in (*LOAD_CASES, *RESTART_CASES):
        assert f"| {case} (" in text
