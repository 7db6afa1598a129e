"""The README's usage example runs as written (a fresh interpreter, a fresh directory)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_python_block(text: str) -> str:
    lines = text.splitlines()
    start = lines.index(".. code-block:: python") + 2
    block = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def test_the_usage_example_runs(tmp_path: Path) -> None:
    code = _first_python_block((ROOT / "README.rst").read_text(encoding="utf-8"))
    assert "open_persister" in code
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'greeting': 'hello'" in done.stdout, done.stdout
    assert (tmp_path / "checkpoints.db").is_file()
