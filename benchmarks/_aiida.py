"""The ``aiida`` section: our persister against aiida-core's ``AiiDAPersister`` (issue 14).

It needs aiida-core (the ``aiida`` extra); without it the section is skipped and the
report says so. The measurements run in a child interpreter
(:mod:`benchmarks._aiida_run`) against a throwaway profile made here with
``verdi presto --no-broker`` in a temporary ``AIIDA_PATH`` (as the AiiDA tests do): AiiDA
reads ``AIIDA_PATH`` when it is first imported, and the suite's own process must neither
import it nor touch the user's ``~/.aiida``. The folder is removed afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._config import Config
from ._timing import Progress

__all__ = ("PROFILE", "run_aiida", "steps")

PROFILE = "loopaware-bench"
#: The checkout the child imports ``benchmarks`` from, whatever its working directory.
_CHECKOUT = Path(__file__).resolve().parent.parent
#: How long making the profile and measuring may take before the run fails.
DEADLINE_S = 900.0


def available() -> bool:
    """:return: whether aiida-core is installed (without importing it)"""
    return importlib.util.find_spec("aiida") is not None


def steps(config: Config) -> int:
    """:param config: the run's configuration
    :return: how many progress steps :func:`run_aiida` takes"""
    return 1 if config.aiida_rounds and available() else 0


def _per_round(config: Config) -> int:
    return max(2, config.load_count // (10 * max(config.aiida_rounds, 1)))


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(  # noqa: S603 - this interpreter, our own module / verdi
        [sys.executable, *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=DEADLINE_S,
    )
    if done.returncode != 0:
        msg = f"{' '.join(args[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    return done.stdout


def run_aiida(config: Config, progress: Progress) -> dict[str, Any]:
    """:param config: rounds and calls per round (``aiida_rounds``, from ``load_count``)
    :param progress: advanced once
    :return: the section's results (JSON-ready); ``skipped`` says why it did not run
    """
    per_round = _per_round(config)
    result: dict[str, Any] = {
        "baseline": "AiiDAPersister",
        "rounds": config.aiida_rounds,
        "per_round": per_round,
        "cases": {},
        "skipped": {},
        "note": (
            "one BenchChain stopped mid-run, saved and loaded by each persister in turn; "
            "load = load_checkpoint(pk) + bundle.unbundle(LoadSaveContext(runner=runner)); "
            "size = the node's checkpoints attribute (AiiDA's YAML, our aiida:// record "
            "text) or the sqlite:// record; ratios are medians over AiiDAPersister's, "
            "same run"
        ),
    }
    if not config.aiida_rounds:
        result["skipped"]["aiida"] = f"the {config.name} preset runs no aiida section"
        return result
    if not available():
        result["skipped"]["aiida"] = (
            "aiida-core is not installed (pip install 'loopaware-persist[aiida]')"
        )
        return result
    root = Path(tempfile.mkdtemp(prefix="loopaware-bench-aiida-"))
    try:
        (root / ".aiida").mkdir()
        env = dict(os.environ)
        env["AIIDA_PATH"] = str(root)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_CHECKOUT), env.get("PYTHONPATH"))))
        verdi = "from aiida.cmdline.commands.cmd_verdi import verdi; verdi()"
        _run(["-c", verdi, "presto", "--no-broker", "--profile-name", PROFILE], env)
        store_dir = root / "store"
        store_dir.mkdir()
        out = _run(
            [
                "-m",
                "benchmarks._aiida_run",
                str(config.aiida_rounds),
                str(per_round),
                str(store_dir),
                PROFILE,
            ],
            env,
        )
        result["cases"] = json.loads(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    progress.step("aiida: AiiDAPersister vs ours")
    return result
