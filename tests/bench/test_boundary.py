"""The benchmark suite lives beside the package and uses its public API only."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import benchmarks
import loopaware_persist
from benchmarks._config import ALLOW
from benchmarks._workers import WORKER_ALLOW
from loopaware_persist import default_registry, open_persister

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = Path(benchmarks.__file__).resolve().parent
#: The one module allowed to name private parts of the package; its docstring says why.
PRIVATE_GATE = "_private.py"


def _private_imports(path: Path) -> list[str]:
    """:return: every ``loopaware_persist._x`` the module imports (absolute or relative)"""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or any(p.startswith("_") for p in module.split(".")[1:]):
                found.append(f"{'.' * node.level}{module}")
            elif module == "loopaware_persist":
                found += [f"{module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if "._" in a.name]
    return [name for name in found if "loopaware_persist" in name or name.startswith("..")]


def test_the_package_ships_no_benchmark_code() -> None:
    """The wheel is the ``loopaware_persist`` package only, and no benchmark is in it."""
    package = Path(loopaware_persist.__file__).resolve().parent
    names = {module.name for module in pkgutil.walk_packages([str(package)])}
    assert not [name for name in names if "bench" in name]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["loopaware_persist"]
    assert BENCHMARKS == ROOT / "benchmarks"


def test_the_benchmarks_use_the_public_api_outside_one_gate() -> None:
    modules = sorted(BENCHMARKS.glob("*.py"))
    assert len(modules) > 10
    reached = {path.name: _private_imports(path) for path in modules}
    assert reached.pop(PRIVATE_GATE) == [
        "loopaware_persist._envelope",
        "loopaware_persist._snapshot",
    ]
    assert reached == {name: [] for name in reached}


def test_the_worker_section_allows_its_one_class_by_name() -> None:
    """Workers the benchmark starts allow ``BenchSteps`` explicitly; nothing else of the
    suite, and the default allow-list none of it."""
    assert WORKER_ALLOW == ("benchmarks._workers:BenchSteps",)
    with open_persister("memory://", allow=WORKER_ALLOW) as persister:
        assert persister.registry.may_import("benchmarks._workers", "BenchSteps")
        assert not persister.registry.may_import("benchmarks._cases", "BenchChain")
    with open_persister("memory://", allow=ALLOW) as persister:
        assert persister.registry.may_import("benchmarks._cases", "BenchChain")
        assert not persister.registry.may_import("benchmarks._workers", "BenchSteps")
    for module, name in (
        ("benchmarks._workers", "BenchSteps"),
        ("benchmarks._cases", "BenchChain"),
    ):
        assert not default_registry.may_import(module, name)


def test_python_m_benchmarks_parses_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--quick", "--out DIR", "--profile"):
        assert option in result.stdout
