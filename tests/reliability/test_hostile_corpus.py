"""Figure 6: a hostile corpus of >= 50 crafted checkpoints, in a fresh interpreter.

Pickle gadgets, YAML apply tags in an ``Excepted`` state, class references,
object loaders, callbacks and launch bodies naming modules outside the
allow-list, and ext types with unknown tags, stored in each storage
(PostgreSQL marked ``integration``) and driven through every read path, the worker's
``FencingPersister`` included. See ``_hostile_worker`` for the corpus.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.axes import store_url

from ._support import figure

ROOT = Path(__file__).resolve().parents[2]


def test_hostile_corpus(tmp_path: Path, storage: str) -> None:
    with store_url(storage, tmp_path, "hostile") as url:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.reliability._hostile_worker",
                str(tmp_path),
                storage,
                # A local store is made by the worker in tmp_path, a PostgreSQL one here.
                *([url] if storage == "postgresql" else []),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    outcomes = result["outcomes"]
    refused = outcomes.get("UnsafeCheckpointError", 0) + outcomes.get("UnknownTagError", 0)
    inert = outcomes.get("inert bundle returned (audited on unbundle)", 0)
    line = figure(
        "hostile_corpus",
        refused_pct=round(100.0 * refused / (result["load_attempts"] - inert), 3),
        **result,
    )
    assert line["checkpoints"] >= 50
    assert line["executions"] == 0
    assert line["evil_module_imported"] is False
    assert line["new_modules"] == []
    assert line["wrong_count"] == 0, line["wrong"]
    assert line["refused_pct"] == 100.0
    assert not (tmp_path / "MARKER").exists()
