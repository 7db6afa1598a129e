"""Importing loopaware_persist imports nothing of AiiDA; the extra is declared."""

from __future__ import annotations

import tomllib

from tests.aiida.daemon_support import ROOT, python_prints


def test_importing_the_package_imports_no_aiida() -> None:
    code = (
        "import sys, loopaware_persist, loopaware_persist.storage;"
        "print(sorted(m for m in sys.modules if m == 'aiida' or m.startswith('aiida.')"
        " or m.startswith('loopaware_persist.aiida')))"
    )
    out = python_prints(code)
    assert out.strip() == "[]"


def test_pyproject_declares_the_extra_marker_and_scheme() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["optional-dependencies"]["aiida"] == ["aiida-core>=2.9,<3"]
    storages = project["project"]["entry-points"]["loopaware_persist.storages"]
    assert storages["aiida"] == "loopaware_persist.aiida._storage:open_storage"
    markers = project["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("aiida:") for m in markers)
    assert "aiida]" in (ROOT / "Makefile").read_text()


def test_aiida_subpackage_all_is_complete() -> None:
    import loopaware_persist.aiida as sub

    # (Its order is ruff's RUF022: constants, classes, functions.)
    public = {n for n in vars(sub) if not n.startswith("_")}
    assert public == set(sub.__all__)
    for name in sub.__all__:
        obj = getattr(sub, name)
        if isinstance(obj, type):
            assert obj.__module__ == "loopaware_persist.aiida"
