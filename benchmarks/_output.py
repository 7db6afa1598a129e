"""Writing a run's files: text and JSON, atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ("write_json", "write_text")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (a reader sees the old file or the new one).

    :param path: the destination
    :param text: the content
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, results: dict[str, Any]) -> None:
    """:param path: the destination
    :param results: one run's results (non-finite floats become ``null``)
    """
    write_text(path, json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
