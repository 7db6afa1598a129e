"""The pytest plugin, run as a user runs it: pytest -p loopaware_persist.aiida.pytest_plugin,
over a test module that uses aiida-core's own fixtures (a profile of their making)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

USER_TESTS = """
import pytest
from aiida.engine import WorkChain, run_get_node
from aiida.manage import get_manager
from aiida.orm import Int

pytest_plugins = ["aiida.tools.pytest_fixtures"]


class Doubler(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("y", valid_type=Int)
        spec.outline(cls.double)

    def double(self):
        self.out("y", Int(self.inputs.x.value * 2).store())


@pytest.mark.parametrize("round", [1, 2])
def test_runs(aiida_profile_clean, round):
    # aiida_profile_clean resets the profile, emptying AiiDA's cached persister each time.
    result, node = run_get_node(Doubler, x=Int(21))
    assert result["y"].value == 42 and node.is_finished_ok
    print("PERSISTER", type(get_manager().get_persister()).__name__)
"""


def _run(
    tmp_path: Path, *options: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, str]]]:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    report = tmp_path / "persisters.jsonl"
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("LOOPAWARE_AIIDA_")
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "loopaware_persist.aiida.pytest_plugin",
        "-p",
        "no:cacheprovider",
        "-s",
        "-W",
        "ignore::sqlalchemy.exc.SAWarning",
        f"--loopaware-report={report}",
        "--rootdir",
        str(tmp_path),
        "-c",
        os.devnull,
        *options,
        str(tmp_path / "test_user.py"),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    lines = report.read_text().splitlines() if report.exists() else []
    return done, [json.loads(line) for line in lines]


def test_ours_for_every_test_even_after_a_profile_reset(tmp_path: Path) -> None:
    done, records = _run(tmp_path, "--loopaware-allow=test_user")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PERSISTER LoopAwarePersister") == 2, done.stdout
    assert "loopaware-persist: our persister in AiiDA, store aiida://" in done.stdout
    assert {(r["role"], r["persister"]) for r in records} == {("pytest", "LoopAwarePersister")}


def test_aiidas_own_when_asked(tmp_path: Path) -> None:
    done, records = _run(tmp_path, "--loopaware-persister=aiida")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PERSISTER AiiDAPersister") == 2, done.stdout
    assert {(r["role"], r["persister"]) for r in records} == {("pytest", "AiiDAPersister")}
