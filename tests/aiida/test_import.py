"""Importing loopaware_persist imports nothing of AiiDA; the extra is declared."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_package_imports_no_aiida() -> None:
    code = (
        "import sys, loopaware_persist, loopaware_persist.storage;"
        "print(sorted(m for m in sys.modules if m == 'aiida' or m.startswith('aiida.')"
        " or m.startswith('loopaware_persist.aiida')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"


def test_pyproject_declares_the_extra_marker_and_scheme() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["optional-dependencies"]["aiida"] == ["aiida-core>=2.9,<3"]
    storages = project["project"]["entry-points"]["loopaware_persist.storages"]
    assert storages["aiida"] == "loopaware_persist.aiida._storage:open_storage"
    markers = project["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("aiida:") for m in markers)
    assert "aiida]" in (ROOT / "Makefile").read_text()


def test_aiida_subpackage_all_is_complete_and_sorted() -> None:
    import loopaware_persist.aiida as sub

    assert list(sub.__all__) == sorted(sub.__all__)
    public = {n for n in vars(sub) if not n.startswith("_")}
    assert public == set(sub.__all__)
    for name in sub.__all__:
        obj = getattr(sub, name)
        if isinstance(obj, type):
            assert obj.__module__ == "loopaware_persist.aiida"
