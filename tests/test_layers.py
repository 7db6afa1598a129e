"""The package's layers: each module imports only the modules below it.

Across the package (:data:`LAYERS`): the errors and argument checks at the bottom, the
storages and the safety core above them, the persister, the kiwipy half, the operator
operations and, on top, the command line. Within the safety core, a strict order
(:data:`SAFETY_CORE`): the errors, argument checks, the allow-list, the type registry,
the built-in hooks, the audit, the load. A lower module importing a higher one (the
allow-list reaching for the registry, the operations for the command line) is a cycle
waiting to happen and a concept leaking across modules.

And no module outside ``storage/`` names a storage backend (``storage.sqlite``,
``storage.file``...): it asks :func:`loopaware_persist.storage.open_storage` (or
:func:`~loopaware_persist.storage.local_path`), and the backend for the URL answers.
"""

from __future__ import annotations

import ast
import re
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


#: Bottom first: a module may import modules of its own layer or of any layer below,
#: none above. Every top-level module and subpackage is listed: a new one is placed here.
#: The package itself (``loopaware_persist``, the public API) is left out: importing it
#: is using the public API, as the demo does.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"_errors"}),
    frozenset({"_arguments", "_uuid"}),
    frozenset({"_allowlist", "_loop", "_envelope", "_tasks", "storage"}),
    frozenset({"_registry", "_snapshot", "_outcome", "_owners"}),
    frozenset({"_named_hooks", "_hooks", "_yaml_audit", "_audit"}),
    frozenset({"codecs", "_messages"}),
    # The load and the persister (the awaiting machinery sits between them).
    frozenset(
        {
            "_loop_check",
            "_unbundle",
            "_bound",
            "_awaiting",
            "_relink",
            "_excepted",
            "_encoding",
            "_persister",
        }
    ),
    # The kiwipy half.
    frozenset({"_bridge", "_broker", "_launcher", "_fencing", "_client", "_worker"}),
    frozenset({"_ops", "testing"}),
    # AiiDA: a registry, storages and install() over the persister and the kiwipy half.
    frozenset({"aiida"}),
    frozenset({"_cli", "_demo", "__main__"}),
)


def _modules() -> dict[str, Path]:
    """:return: every module of the package by dotted name (``loopaware_persist._ops._listing``)"""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """:return: the dotted name of every module of this package that the module
    ``name`` imports, at any depth of its code (lazy imports in functions included)"""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
            found.add(target)
            # from . import x: x may be a module
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    known = _modules()
    return {target for target in found if target in known and target != name}


def _top(name: str) -> str:
    """:return: the top-level module or subpackage ``name`` belongs to (``_ops``)"""
    return name.split(".")[1] if "." in name else ""


def _rank(top: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if top in layer:
            return rank
    pytest.fail(f"loopaware_persist.{top} is in no layer: add it to LAYERS in {__file__}.")


@pytest.mark.parametrize("name", sorted(n for n in _modules() if _top(n)))
def test_no_module_imports_a_layer_above_it(name: str) -> None:
    rank = _rank(_top(name))
    above = {
        target
        for target in _imports(name, _modules()[name])
        if _top(target) and _rank(_top(target)) > rank
    }
    assert above == set(), f"{name} imports a higher layer"


def _is_backend(name: str) -> bool:
    """:return: whether ``name`` is a storage backend (``loopaware_persist.storage.sqlite``),
    not the generic storage layer (``storage``, ``storage._base``, ``storage._url``)"""
    parts = name.split(".")
    return len(parts) >= 3 and parts[1] == "storage" and not parts[2].startswith("_")


def test_the_backends_are_known_to_the_storage_package() -> None:
    # A check that finds nothing to check proves nothing.
    assert {n for n in _modules() if _is_backend(n)} >= {
        "loopaware_persist.storage.memory",
        "loopaware_persist.storage.file",
        "loopaware_persist.storage.sqlite",
        "loopaware_persist.storage.postgresql",
    }
    # ... and the import walk sees relative imports between them.
    sqlite = "loopaware_persist.storage.sqlite"
    assert "loopaware_persist.storage._base" in _imports(sqlite, _modules()[sqlite])
    assert "loopaware_persist._ops._common" in _imports(
        "loopaware_persist._ops._listing", _modules()["loopaware_persist._ops._listing"]
    )


@pytest.mark.parametrize("name", sorted(n for n in _modules() if _top(n) != "storage"))
def test_no_module_outside_storage_imports_a_backend_by_name(name: str) -> None:
    named = {target for target in _imports(name, _modules()[name]) if _is_backend(target)}
    assert named == set(), (
        f"{name} imports {sorted(named)}: open the store with open_storage(url) and let "
        "the backend for its URL answer (local_path(url), create=False, read_only=True)."
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


def _top_levels() -> set[str]:
    """:return: every top-level module and subpackage of the package (``_ops``, ``_loop``)"""
    return {_top(name) for name in _modules() if _top(name)}


@pytest.mark.parametrize(
    ("document", "pattern"),
    [
        # README's layer table: ``_loop.py`` or ``_ops/``.
        ("README.rst", r"``(?:storage/)?(_?[a-z_]+)(?:\.py|/)``"),
        # The docs' layer page: :src:`loopaware_persist._loop`.
        ("docs/layers.rst", r":src:`loopaware_persist\.([a-z_]+)`"),
    ],
)
def test_the_layer_tables_name_every_module(document: str, pattern: str) -> None:
    text = (PACKAGE.parent / document).read_text(encoding="utf-8")
    named = set(re.findall(pattern, text))
    missing = _top_levels() - named - {"__main__"}
    assert missing == set(), f"{document}'s layer table names no row for {sorted(missing)}"
