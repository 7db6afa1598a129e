"""What a run leaves behind: machine info, the Markdown report, the JSON file and the chart."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import sqlite3
import sys
from pathlib import Path
from typing import Any

from ._storage import PLUMPY

__all__ = ("machine_info", "markdown", "write_chart", "write_json", "write_text")

# Written as escapes: ruff flags these look-alike characters in literals (RUF001).
X = "\N{MULTIPLICATION SIGN}"
NA = "\N{EN DASH}"

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


# region formatting


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


# endregion


def _machine_lines(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    packages = machine["packages"]
    load = machine.get("load_average") or []
    load_end = results.get("load_average_end") or []
    return [
        f"- machine: {machine['cpu']}, {machine['cores']} cores "
        f"({machine['usable_cores']} usable), {machine['platform']}",
        f"- Python {machine['python']} ({machine['python_implementation']}); "
        + ", ".join(f"{name} {version}" for name, version in packages.items() if version)
        + f"; msgpack extension {machine['msgpack_extension']}; SQLite {machine['sqlite']}",
        f"- load average at start {', '.join(f'{x:.2f}' for x in load)}; "
        f"at end {', '.join(f'{x:.2f}' for x in load_end)}"
        + (" — **the machine was busy: treat timings as noisy**" if load and load[0] > 0.5 else ""),
        f"- mode `{results['config']['name']}`, {results['duration_s']:.0f} s, "
        f"temp file system {results.get('storage', {}).get('temp_filesystem')}",
        "",
    ]


def _codec_lines(codecs: dict[str, Any]) -> list[str]:
    lines = [
        "## Codecs",
        "",
        f"Median (min) over {_first_rounds(codecs)} interleaved rounds; ratios are medians "
        f"divided by `{codecs['baseline']}`'s from this run. *record* = codec + envelope "
        "(header, CRC-32, compression), what a save and a load pay; *codec* = the codec alone.",
        "",
    ]
    for name, case in codecs["cases"].items():
        lines += [
            f"### {name}: {case['title']} ({case['detail']}; "
            f"pickle-5 {fmt_size(case['pickle_size'])})",
            "",
        ]
        rows = []
        for variant, entry in case["variants"].items():
            if "error" in entry:
                rows.append([f"`{variant}`", f"failed: {_cell(entry['error'])}"] + [NA] * 7)
                continue
            ratio = entry["ratio"]
            rows.append(
                [
                    f"`{variant}`",
                    _median_min(entry["encode"]),
                    _median_min(entry["decode"]),
                    fmt_ratio(ratio["encode"]),
                    fmt_ratio(ratio["decode"]),
                    fmt_ratio(ratio["total"]),
                    fmt_ratio(ratio["codec_total"]),
                    fmt_size(entry["record_size"]),
                    fmt_ratio(ratio["record_size"]),
                ]
            )
        lines += _table(
            [
                "variant",
                "encode (record)",
                "decode (record)",
                f"enc {X}",
                f"dec {X}",
                f"enc+dec {X}",
                f"codec enc+dec {X}",
                "stored",
                f"size {X}",
            ],
            rows,
        )
    return lines


def _cell(text: str) -> str:
    """:return: ``text`` fit for one Markdown table cell"""
    return " ".join(text.replace("|", "/").split())[:160]


def _median_min(stats: dict[str, Any]) -> str:
    return f"{fmt_time(stats['median_s'])} ({fmt_time(stats['min_s'])})"


def _first_rounds(codecs: dict[str, Any]) -> int:
    for case in codecs["cases"].values():
        return int(case["rounds"])
    return 0


def _storage_lines(storage: dict[str, Any]) -> list[str]:
    ops = storage["operations"]
    lines = [
        "## Storage",
        "",
        f"Codec `{storage['codec']}`; p50 / p99 of single calls, interleaved across stores. "
        f"`save` = `save_checkpoint(process)` end to end, `put` = the storage write of a ready "
        f"record; `load` = `load_checkpoint(pid)`, `get` = the storage read. "
        f"{X} = p50 against `{PLUMPY}`.",
        "",
    ]
    if storage["skipped"]:
        lines += [
            "Skipped: " + "; ".join(f"{k} ({v})" for k, v in storage["skipped"].items()),
            "",
        ]
    stores = [store["name"] for store in storage["stores"]]
    sizes = [size for size in ("small", "medium", "big") if size in ops.get("save", {})]
    bundling = storage.get("bundle", {})
    if bundling:
        lines += [
            f"{storage['bundle_note']}: "
            + ", ".join(
                f"{size} p50 {fmt_time(stats['p50_s'])} / p99 {fmt_time(stats['p99_s'])}"
                for size, stats in bundling.items()
            )
            + ".",
            "",
        ]
    for size in sizes:
        rows = []
        for store in stores:
            row = [store]
            for op in ("save", "put", "load", "get"):
                stats = ops.get(op, {}).get(size, {}).get(store)
                row.append(
                    NA
                    if stats is None
                    else f"{fmt_time(stats['p50_s'])} / {fmt_time(stats['p99_s'])}"
                )
            ratio = storage["ratios"].get("load", {}).get(size, {}).get(store)
            row.append(NA if ratio is None else fmt_ratio(ratio["p50"]))
            rows.append(row)
        first: dict[str, Any] = next(iter(ops.get("save", {}).get(size, {}).values()), {})
        count = int(first.get("n", 0))
        lines += [f"### {size} (p50 / p99 of {count:,} calls each)", ""]
        lines += _table(
            ["store", "save", "put", "load", "get", f"load {X}"],
            rows,
        )
    listing = storage["listing"]
    if listing:
        columns = [(size, count) for size, by_count in listing.items() for count in by_count]
        names: list[str] = []
        for by_count in listing.values():
            for by_store in by_count.values():
                names += [name for name in by_store if name not in names]
        rows = []
        for name in names:
            row = [name]
            for size, count in columns:
                stats = listing[size][count].get(name)
                row.append(
                    NA
                    if stats is None
                    else f"{fmt_time(stats['p50_s'])} / {fmt_time(stats['p99_s'])} (n={stats['n']})"
                )
            rows.append(row)
        lines += [
            f"### `get_checkpoints()`, p50 / p99 ({storage['listing_note']})",
            "",
            *_table(["store"] + [f"{int(c):,} {s}" for s, c in columns], rows),
        ]
    return lines


def _loop_lines(loop: dict[str, Any]) -> list[str]:
    restore = loop["restore"]
    lines = [
        "## Loop re-materialisation",
        "",
        f"### {restore['count']:,} finished snapshots → futures (median, min; {X} direct)",
        "",
    ]
    rows = [
        [f"`{name}`", fmt_time(v["median_s"]), fmt_time(v["min_s"]), fmt_ratio(v["ratio"])]
        for name, v in restore["variants"].items()
    ]
    lines += _table(["variant", "median", "min", X], rows)
    if restore.get("skipped"):
        lines += [
            "Skipped: " + "; ".join(f"`{k}` ({_cell(v)})" for k, v in restore["skipped"].items()),
            "",
        ]
    lines += [
        f"### Whole-graph load (median; {X}: against plumpy's plain unbundle, and against "
        f"`{PLUMPY}` load + unbundle)",
        "",
    ]
    rows = []
    for name, entry in loop["unbundle"].items():
        unb = entry["unbundle"]["variants"]
        load = entry["load"]["variants"]
        rows.append(
            [
                name,
                fmt_time(unb["plumpy unbundle"]["median_s"]),
                fmt_time(unb["unbundle"]["median_s"]),
                fmt_ratio(unb["unbundle"]["ratio"]),
                fmt_time(unb["unbundle (loop idle)"]["median_s"]),
                fmt_ratio(unb["unbundle (loop idle)"]["ratio"]),
                fmt_time(load["PicklePersister load + unbundle"]["median_s"]),
                fmt_time(load["load_process"]["median_s"]),
                fmt_ratio(load["load_process"]["ratio"]),
            ]
        )
    lines += _table(
        [
            "case",
            "plumpy unbundle",
            "unbundle",
            X,
            "unbundle, loop idle",
            X,
            f"{PLUMPY} load+unbundle",
            "load_process (memory)",
            X,
        ],
        rows,
    )
    return lines


def _worker_lines(workers: dict[str, Any]) -> list[str]:
    lines = [
        "## Workers over RabbitMQ",
        "",
        f"`loopaware-persist worker` processes (prefetch {workers['prefetch']}) on one queue "
        f"and one store, {workers['cpu_count']} cores for workers and client together. Each "
        f"process runs {workers['steps_per_process']} checkpointed steps; {workers['note']}.",
        "",
    ]
    if workers["skipped"]:
        lines += [
            "Skipped: " + "; ".join(f"{k} ({v})" for k, v in workers["skipped"].items()),
            "",
        ]
    rows = [
        [
            store,
            str(run["workers"]),
            f"{run['processes']:,}",
            f"{run['processes_per_s']:.1f}",
            f"{run['checkpoints_per_s']:.0f}",
            f"{fmt_time(run['latency']['p50_s'])} / {fmt_time(run['latency']['p99_s'])}",
        ]
        for store, store_runs in workers["runs"].items()
        for run in store_runs
    ]
    if rows:
        lines += _table(
            ["store", "workers", "processes", "processes/s", "checkpoints/s", "latency p50 / p99"],
            rows,
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """:param results: one run's results
    :return: the report in Markdown
    """
    lines = [f"# loopaware_persist benchmarks ({results['config']['name']})", ""]
    lines += _machine_lines(results)
    targets = results.get("targets", [])
    if targets:
        rows = [[t["target"], _limit(t), _measured(t), _status(t), _basis(t)] for t in targets]
        lines += ["## Targets (issue 4)", ""]
        lines += _table(["target", "limit", "measured", "status", "basis / note"], rows)
    if "codecs" in results:
        lines += _codec_lines(results["codecs"])
    if "storage" in results:
        lines += _storage_lines(results["storage"])
    if "loop" in results:
        lines += _loop_lines(results["loop"])
    if "workers" in results:
        lines += _worker_lines(results["workers"])
    if results.get("profiles"):
        lines += ["## Profiles", ""]
        lines += [f"- `{tid}`: {path}" for tid, path in results["profiles"].items()]
        lines.append("")
    return "\n".join(lines)


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


def write_chart(path: Path, results: dict[str, Any]) -> bool:
    """Draw the codec, storage and loop ratios into a PNG (matplotlib, Agg backend).

    :param path: the destination
    :param results: one run's results
    :return: whether a chart was written (``False`` without matplotlib)
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    codecs = results.get("codecs", {}).get("cases", {})
    variants = [v for v in results.get("codecs", {}).get("variants", []) if v != "pickle-5"]
    names = list(codecs)
    width = 0.8 / max(1, len(variants))
    for panel, key, title in (
        (axes[0][0], "total", "encode+decode time (record) vs pickle-5"),
        (axes[0][1], "record_size", "stored size vs pickle-5"),
    ):
        for i, variant in enumerate(variants):
            values = [codecs[n]["variants"][variant].get("ratio", {}).get(key, 0.0) for n in names]
            panel.bar([x + i * width for x in range(len(names))], values, width, label=variant)
        panel.axhline(1.0, color="black", linewidth=0.8)
        panel.set_xticks([x + width * (len(variants) - 1) / 2 for x in range(len(names))])
        panel.set_xticklabels(names)
        panel.set_ylabel("x pickle protocol 5 (lower is better)")
        panel.set_title(title)
        panel.legend(fontsize=8)
    storage = results.get("storage", {})
    ops = storage.get("operations", {})
    panel = axes[1][0]
    stores = [store["name"] for store in storage.get("stores", [])]
    groups = [(op, size) for size in ("small", "medium", "big") for op in ("save", "load")]
    listing = storage.get("listing", {})
    for size, by_count in listing.items():
        top = max(by_count, key=int)
        groups.append((f"list {int(top):,}", size))
    width = 0.8 / max(1, len(stores))
    for i, store in enumerate(stores):
        values = []
        for op, size in groups:
            if op.startswith("list"):
                top = max(listing[size], key=int)
                stats = listing[size][top].get(store)
            else:
                stats = ops.get(op, {}).get(size, {}).get(store)
            values.append(stats["p50_s"] * 1e3 if stats else 0.0)
        panel.bar([x + i * width for x in range(len(groups))], values, width, label=store)
    panel.set_yscale("log")
    panel.set_xticks([x + width * (len(stores) - 1) / 2 for x in range(len(groups))])
    panel.set_xticklabels([f"{op}\n{size}" for op, size in groups], fontsize=8)
    panel.set_ylabel("p50, ms (log)")
    panel.set_title("storage operations")
    panel.legend(fontsize=7, ncol=2)
    panel = axes[1][1]
    loop = results.get("loop", {})
    labels: list[str] = []
    values = []
    for name, entry in loop.get("restore", {}).get("variants", {}).items():
        if name != "direct":
            labels.append(f"restore: {name}")
            values.append(entry["ratio"])
    for case, entry in loop.get("unbundle", {}).items():
        labels.append(f"unbundle {case}")
        values.append(entry["unbundle"]["variants"]["unbundle"]["ratio"])
        labels.append(f"load_process {case}")
        values.append(entry["load"]["variants"]["load_process"]["ratio"])
    panel.barh(labels, values, color="tab:purple")
    panel.axvline(1.0, color="black", linewidth=0.8)
    panel.set_xscale("log")
    panel.set_xlabel("x baseline (direct futures / plumpy unbundle / PicklePersister), log")
    panel.set_title("loop re-materialisation and whole-graph load")
    machine = results.get("machine", {})
    fig.suptitle(
        f"loopaware_persist benchmarks ({results.get('config', {}).get('name')}) — "
        f"{machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}"
    )
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return True
