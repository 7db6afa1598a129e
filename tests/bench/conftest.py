"""One ``smoke`` run of the whole suite, shared by the benchmark tests."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks._config import Config
from benchmarks._suite import JSON_NAME, run_suite


@pytest.fixture(scope="session")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """:return: the output folder, the JSON it holds and the report printed"""
    out_dir = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    returned = run_suite(Config.smoke(), out_dir, progress=True, stream=printed)
    data = json.loads((out_dir / JSON_NAME).read_text(encoding="utf-8"))
    assert data["config"] == returned["config"]
    return out_dir, data, printed.getvalue()
