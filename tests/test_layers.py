"""The safety core's layers: each module imports only the modules below it.

From the bottom: the errors, argument checks, the allow-list, the type registry, the
built-in hooks, the audit, the load. A lower module importing a higher one (the
allow-list reaching for the registry, the audit for the load) is a cycle waiting to
happen and a concept leaking across modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import loopaware_persist

PACKAGE = Path(loopaware_persist.__file__).parent

#: Bottom first. A module may import any module before it, none after it.
SAFETY_CORE = (
    "_errors",
    "_arguments",
    "_allowlist",
    "_registry",
    "_named_hooks",
    "_hooks",
    "_yaml_audit",
    "_audit",
    "_unbundle",
)


def _ours(name: str) -> set[str]:
    """:return: ``{"_x"}`` for ``loopaware_persist._x...``, else nothing"""
    head, _, rest = name.partition(".")
    return {rest.split(".")[0]} if head == "loopaware_persist" and rest else set()


def _package_imports(module: str) -> set[str]:
    """:return: the first component of every module of this package that ``module``
    imports, at any depth of its code (lazy imports in functions included)"""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is not None:
                found.add(node.module.split(".")[0])
            else:  # from . import x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            found.update(_ours(node.module))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_ours(alias.name))
    return found


@pytest.mark.parametrize("module", SAFETY_CORE)
def test_a_safety_module_imports_no_layer_above_it(module: str) -> None:
    above = set(SAFETY_CORE[SAFETY_CORE.index(module) + 1 :])
    assert _package_imports(module) & above == set()


def test_the_allow_list_knows_nothing_of_hooks_or_codecs() -> None:
    imported = _package_imports("_allowlist")
    assert imported <= {"_errors", "_arguments"}
