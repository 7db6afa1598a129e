"""The machine a run measured: CPU, cores, memory, OS, Python and package versions."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sqlite3
import sys
from pathlib import Path
from typing import Any

__all__ = ("machine_info",)

_PACKAGES = (
    "loopaware-persist",
    "plumpy",
    "kiwipy",
    "msgpack",
    "zstandard",
    "attrs",
    "psycopg",
    "matplotlib",
    "pyinstrument",
)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """:return: CPU, cores, memory, OS, Python, package versions and the current load"""
    import msgpack

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "packages": {name: _version(name) for name in _PACKAGES},
        "msgpack_extension": msgpack.Packer.__module__,
        "sqlite": sqlite3.sqlite_version,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
