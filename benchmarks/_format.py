"""How the report writes one figure: durations, sizes, ratios, table rows and target cells."""

from __future__ import annotations

import math
from typing import Any

__all__ = ("NA", "X", "fmt_ratio", "fmt_size", "fmt_time")

# Written as escapes: ruff flags these look-alike characters in literals (RUF001).
X = "\N{MULTIPLICATION SIGN}"
NA = "\N{EN DASH}"


def fmt_time(seconds: float | None) -> str:
    """:param seconds: a duration
    :return: it with three significant digits in ns, µs, ms or s
    """
    if seconds is None or math.isnan(seconds):
        return NA
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        # 999.7 µs would print as "1e+03 µs": round first, then pick the unit.
        if float(f"{seconds:.3g}") >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_size(size: float) -> str:
    """:param size: bytes
    :return: it in B, KB or MB (decimal)
    """
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if float(f"{size:.3g}") >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


def fmt_ratio(ratio: float | None) -> str:
    """:param ratio: a ratio
    :return: e.g. ``1.23x`` (with a multiplication sign)
    """
    if ratio is None or math.isnan(ratio):
        return NA
    return f"{ratio:.2f}{X}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _measured(target: dict[str, Any]) -> str:
    value = target["measured"]
    if value is None:
        return NA
    return fmt_time(value) if target["unit"] == "s" else f"{value:.2f}{X} ({target['unit'][2:]})"


def _limit(target: dict[str, Any]) -> str:
    return fmt_time(target["limit"]) if target["unit"] == "s" else f"≤ {target['limit']:.2f}{X}"


def _basis(target: dict[str, Any]) -> str:
    return "; ".join(part for part in (target["basis"], target["note"]) if part)


def _status(target: dict[str, Any]) -> str:
    if target["met"] is None:
        return "n/a"
    if target["met"]:
        return "met"
    return f"**missed** ({target['margin']:.2f}{X} the limit)"
