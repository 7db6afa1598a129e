"""The ``aiida`` section runs and reports its four ratios (no timing assertions).

It reads the shared ``smoke`` run (``conftest.py``), which measured our persister on
``aiida://`` and ``sqlite://`` against aiida-core's ``AiiDAPersister`` in a throwaway
profile. Without aiida-core the section must say it was skipped, and these tests skip.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _aiida
from benchmarks._config import Config
from benchmarks._report import markdown
from benchmarks._suite import MARKDOWN_NAME
from benchmarks._timing import Progress

OURS = ("aiida://", "sqlite://")
#: The four ratios of issue 14, as target ids: (case, metric) -> limit.
FOUR = {
    ("small", "save"): 0.3,
    ("small", "size"): 0.8,
    ("small", "load"): 1.0,
    ("table", "load"): 0.5,
}


def _require_aiida(data: dict[str, Any], text: str) -> None:
    if not _aiida.available():
        assert "aiida-core is not installed" in data["aiida"]["skipped"]["aiida"]
        assert "aiida-core is not installed" in text
        pytest.skip("aiida-core is not installed: the aiida benchmark section was NOT RUN")


def test_the_section_measures_the_same_states_with_every_persister(
    outcome: tuple[Path, dict[str, Any], str],
) -> None:
    out_dir, data, _printed = outcome
    text = (out_dir / MARKDOWN_NAME).read_text(encoding="utf-8")
    _require_aiida(data, text)
    aiida = data["aiida"]
    assert aiida["skipped"] == {}
    assert set(aiida["cases"]) == {"small", "table"}
    for entry in aiida["cases"].values():
        stores = entry["stores"]
        assert set(stores) == {aiida["baseline"], *OURS}
        base = stores[aiida["baseline"]]
        for stats in stores.values():
            assert stats["size"] > 0
            for op in ("save", "load"):
                for mode in ("off", "on"):
                    summary = stats[op][mode]
                    assert summary["n"] == aiida["rounds"] * aiida["per_round"]
                    assert 0 < summary["min_s"] <= summary["median_s"]
                    ratio = stats["ratio"][f"{op}_gc_{mode}"]
                    assert ratio == pytest.approx(summary["median_s"] / base[op][mode]["median_s"])
            assert stats["ratio"]["size"] == pytest.approx(stats["size"] / base["size"])
    # the 1,000-item dict makes the bigger checkpoint, in every store
    for store in stores:
        assert (
            aiida["cases"]["table"]["stores"][store]["size"]
            > (aiida["cases"]["small"]["stores"][store]["size"])
        )
    assert "## AiiDA: ours against `AiiDAPersister`" in text


def test_the_four_targets_are_reported_with_ratio_and_verdict(
    outcome: tuple[Path, dict[str, Any], str],
) -> None:
    out_dir, data, _printed = outcome
    text = (out_dir / MARKDOWN_NAME).read_text(encoding="utf-8")
    _require_aiida(data, text)
    targets = {t["id"]: t for t in data["targets"] if t["id"].startswith("aiida.")}
    for store in OURS:
        for (case, metric), limit in FOUR.items():
            target = targets[f"aiida.{case}.{store}.{metric}"]
            assert target["limit"] == limit
            assert isinstance(target["measured"], float)
            assert math.isfinite(target["measured"])
            assert target["measured"] > 0
            assert target["met"] is (target["measured"] <= limit)
            assert f"| {target['target']} |" in text


def test_without_aiida_the_report_says_it_was_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_aiida, "available", lambda: False)
    config = Config.smoke()
    assert _aiida.steps(config) == 0
    section = _aiida.run_aiida(config, Progress(1, enabled=False))
    assert section["cases"] == {}
    report = markdown(
        {
            "config": config.as_dict(),
            "machine": {
                "cpu": "cpu",
                "cores": 1,
                "usable_cores": 1,
                "platform": "p",
                "python": "3",
                "python_implementation": "CPython",
                "packages": {},
                "msgpack_extension": True,
                "sqlite": "3",
            },
            "duration_s": 1.0,
            "aiida": section,
        }
    )
    assert "## AiiDA: ours against `AiiDAPersister`" in report
    assert "Skipped: aiida (aiida-core is not installed" in report
