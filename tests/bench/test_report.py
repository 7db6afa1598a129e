"""The benchmark report renders whatever a run produced: missing measurements show as a
dash, not "nan"; tiny times get a sensible unit; a results file with NaN or infinity is
still valid JSON; a run with only machine data and profiles renders without errors."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from benchmarks._config import Config
from benchmarks._format import NA, X, fmt_ratio, fmt_time
from benchmarks._output import write_json
from benchmarks._report import markdown
from benchmarks._targets import evaluate
from benchmarks._timing import Progress


def test_times_and_ratios_without_a_measurement_are_a_dash() -> None:
    assert fmt_time(None) == NA
    assert fmt_time(math.nan) == NA
    assert fmt_ratio(None) == NA
    assert fmt_ratio(math.nan) == NA
    assert fmt_ratio(1.234) == f"1.23{X}"


def test_times_pick_a_unit() -> None:
    assert fmt_time(2.5) == "2.5 s"
    assert fmt_time(0.0123) == "12.3 ms"
    assert fmt_time(4.2e-6) == "4.2 µs"
    assert fmt_time(3.5e-8) == "35 ns"
    assert fmt_time(0.0) == "0 ns"


def test_results_with_non_finite_numbers_are_written_as_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_json(path, {"ratio": math.inf, "nested": [math.nan, 1.5], 3: -math.inf})
    assert json.loads(path.read_text()) == {"ratio": None, "nested": [None, 1.5], "3": None}
    assert not list(tmp_path.glob("*.tmp"))  # written atomically through a temp file


def _minimal_results() -> dict[str, Any]:
    return {
        "config": {"name": "quick"},
        "duration_s": 12.0,
        "machine": {
            "cpu": "test cpu",
            "cores": 2,
            "usable_cores": 1,
            "platform": "linux",
            "python": "3.11",
            "python_implementation": "CPython",
            "packages": {"plumpy": "0.22", "msgpack": None},
            "msgpack_extension": True,
            "sqlite": "3.45",
            "load_average": [2.0, 1.0, 0.5],
        },
        "load_average_end": [1.0, 1.0, 0.5],
        "targets": [
            {
                "target": "save small",
                "limit": 0.01,
                "unit": "s",
                "measured": None,
                "met": None,
                "margin": None,
                "basis": "issue 4",
                "note": "",
            },
            {
                "target": "msgpack vs pickle",
                "limit": 1.5,
                "unit": f"{X} pickle",
                "measured": 2.0,
                "met": False,
                "margin": 1.33,
                "basis": "",
                "note": "noisy",
            },
        ],
        "profiles": {"save-small": "profiles/save-small.html"},
    }


def test_a_partial_run_renders_machine_targets_and_profiles() -> None:
    text = markdown(_minimal_results())
    assert text.startswith("# loopaware_persist benchmarks (quick)")
    assert "test cpu, 2 cores (1 usable)" in text
    assert "plumpy 0.22" in text
    assert "msgpack None" not in text  # a package that is not installed is left out
    assert "the machine was busy: treat timings as noisy" in text
    assert f"| save small | 10 ms | {NA} | n/a | issue 4 |" in text
    assert f"**missed** (1.33{X} the limit)" in text
    assert f"2.00{X} (pickle)" in text
    assert "## Profiles" in text
    assert "- `save-small`: profiles/save-small.html" in text
    assert "## Codecs" not in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_and_erases_itself() -> None:
    terminal = _Terminal()
    progress = Progress(4, enabled=True, stream=terminal)
    progress.step("codecs: msgpack encode")
    progress.step("storage: sqlite save", advance=5)  # never beyond 100 %
    progress.close()
    drawn = terminal.getvalue()
    assert " 25%" in drawn
    assert "100%" in drawn
    assert "codecs: msgpack encode" in drawn
    assert drawn.endswith("\r")  # the bar is erased, leaving the line clean


def test_progress_is_silent_off_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(2, enabled=True, stream=stream)
    progress.step("anything")
    progress.close()
    assert stream.getvalue() == ""


def test_a_run_that_measured_nothing_judges_no_target() -> None:
    assert evaluate({}, Config(name="quick")) == []
    assert "## Targets" not in markdown({**_minimal_results(), "targets": []})
