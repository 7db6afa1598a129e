"""The benchmark's worker section against the real broker and stores (no timing assertions)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from benchmarks._config import Config
from benchmarks._report import _worker_lines
from benchmarks._timing import Progress
from benchmarks._workers import STEPS, run_workers
from loopaware_persist import open_persister

pytestmark = pytest.mark.integration

#: The checkpoints one BenchSteps process writes: CREATED, RUNNING (run), one RUNNING
#: per ``advance`` call (STEPS steps and the one that outputs), FINISHED.
CHECKPOINTS = 1 + 1 + (STEPS + 1) + 1


def test_worker_runs_on_sqlite_and_postgresql_count_every_process_and_checkpoint(
    amqp_url: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPAWARE_TEST_AMQP_URL", amqp_url)
    monkeypatch.setenv("LOOPAWARE_TEST_POSTGRES_URL", postgres_url)
    config = Config.smoke().evolve(postgres=True, worker_counts=(1, 2), worker_tasks=12)
    out = run_workers(config, Progress(4, enabled=False, stream=io.StringIO()))

    assert out["skipped"] == {}
    assert list(out["runs"]) == ["sqlite", "postgresql"]
    for runs in out["runs"].values():
        assert [run["workers"] for run in runs] == [1, 2]
        for run in runs:
            assert run["processes"] == 12
            assert run["latency"]["n"] == 12  # every reply arrived
            assert run["checkpoints"] == 12 * CHECKPOINTS
            assert run["processes_per_s"] == pytest.approx(12 / run["elapsed_s"])
            assert 0 < run["latency"]["min_s"] <= run["latency"]["p99_s"] <= run["elapsed_s"]
    # The shared server keeps nothing of the benchmark's.
    with open_persister(postgres_url) as persister:
        left = [
            info.pid
            for info in persister.list_info()
            if str(info.as_dict()["process_class"]).endswith(":BenchSteps")
        ]
    assert left == []
    rows = [line for line in _worker_lines(out) if line.startswith(("| sqlite", "| postgresql"))]
    assert len(rows) == 4  # two stores by two worker counts


def test_no_broker_is_reported_as_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOOPAWARE_TEST_AMQP_URL", raising=False)
    monkeypatch.delenv("LOOPAWARE_BROKER_URL", raising=False)
    out = run_workers(
        Config.smoke().evolve(worker_counts=(1,)), Progress(1, enabled=False, stream=io.StringIO())
    )
    assert out["runs"] == {}
    assert "LOOPAWARE_TEST_AMQP_URL" in out["skipped"]["workers"]
