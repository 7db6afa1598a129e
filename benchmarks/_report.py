"""The Markdown report of a run: machine, targets, codecs, storage, loop, loading, workers,
AiiDA."""

from __future__ import annotations

from typing import Any

from ._format import (
    NA,
    X,
    _basis,
    _limit,
    _measured,
    _status,
    _table,
    fmt_ratio,
    fmt_size,
    fmt_time,
)
from ._storage import PLUMPY

__all__ = ("markdown",)


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


def _skipped_lines(skipped: dict[str, Any]) -> list[str]:
    """:param skipped: why each skipped case was skipped, by name
    :return: the lines saying so, or none if nothing was skipped
    """
    if not skipped:
        return []
    return ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()), ""]


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
    lines += _skipped_lines(storage["skipped"])
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


def _loading_rows(entries: dict[str, Any], baseline: str, ours: str) -> list[list[str]]:
    rows = []
    for name, entry in entries.items():
        row = [f"{name} ({fmt_size(entry['pickle_size'])})"]
        for mode in ("off", "on"):
            base, mine = entry["variants"][baseline][mode], entry["variants"][ours][mode]
            row += [
                fmt_time(base["median_s"]),
                fmt_time(mine["median_s"]),
                fmt_ratio(entry["ratio"][f"gc_{mode}"]),
            ]
        rows.append(row)
    return rows


def _loading_lines(loading: dict[str, Any]) -> list[str]:
    baseline, ours = loading["baseline"], loading["ours"]
    header = ["case"] + [
        part for mode in ("off", "on") for part in (f"{PLUMPY}, GC {mode}", f"ours, GC {mode}", X)
    ]
    restart = loading["restart"]
    count = next(iter(restart.values()))["count"] if restart else 0
    return [
        "## Loading (issue 15)",
        "",
        f"`{ours}` against `{baseline}` (`load_checkpoint(pid).unbundle(LoadSaveContext"
        f"(loop=B))`), {loading['note']}. The futures case holds "
        f"{loading['load_futures']:,} snapshots.",
        "",
        "### Load to a runnable process on B (median)",
        "",
        *_table(header, _loading_rows(loading["load"], baseline, ours)),
        f"### Restart: list + load {count:,} WAITING processes (median)",
        "",
        *_table(header, _loading_rows(restart, baseline, ours)),
    ]


def _worker_lines(workers: dict[str, Any]) -> list[str]:
    lines = [
        "## Workers over RabbitMQ",
        "",
        f"`loopaware-persist worker` processes (prefetch {workers['prefetch']}) on one queue "
        f"and one store, {workers['cpu_count']} cores for workers and client together. Each "
        f"process runs {workers['steps_per_process']} checkpointed steps; {workers['note']}.",
        "",
    ]
    lines += _skipped_lines(workers["skipped"])
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


def _aiida_lines(aiida: dict[str, Any]) -> list[str]:
    lines = [
        f"## AiiDA: ours against `{aiida['baseline']}`",
        "",
        f"{aiida['rounds']} rounds of {aiida['per_round']} single calls per persister, "
        f"the cyclic GC off then on; median (min), ratio over the baseline's median; "
        f"{aiida['note']}.",
        "",
    ]
    lines += _skipped_lines(aiida["skipped"])
    for case, entry in aiida["cases"].items():
        rows = []
        for store, stats in entry["stores"].items():
            ratio = stats["ratio"]
            row = [f"`{store}`", fmt_size(stats["size"]), fmt_ratio(ratio["size"])]
            for op in ("save", "load"):
                for mode in ("off", "on"):
                    median, least = stats[op][mode]["median_s"], stats[op][mode]["min_s"]
                    row.append(
                        f"{fmt_time(median)} (min {fmt_time(least)}), "
                        f"{fmt_ratio(ratio[f'{op}_gc_{mode}'])}"
                    )
            rows.append(row)
        lines += [f"### `{case}`: {entry['title']}", ""]
        lines += _table(
            [
                "persister",
                "size",
                "size ratio",
                "save, GC off",
                "save, GC on",
                "load, GC off",
                "load, GC on",
            ],
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
    for heading, issues in (
        ("## Targets (issue 15: loading at pickle speed; judged with the GC on)", {15}),
        ("## Targets (issues 4 and 14)", {4, 14}),
    ):
        chosen = [t for t in targets if t.get("issue", 4) in issues]
        if chosen:
            rows = [[t["target"], _limit(t), _measured(t), _status(t), _basis(t)] for t in chosen]
            lines += [heading, ""]
            lines += _table(["target", "limit", "measured", "status", "basis / note"], rows)
    if "codecs" in results:
        lines += _codec_lines(results["codecs"])
    if "storage" in results:
        lines += _storage_lines(results["storage"])
    if "loop" in results:
        lines += _loop_lines(results["loop"])
    if "loading" in results:
        lines += _loading_lines(results["loading"])
    if "workers" in results:
        lines += _worker_lines(results["workers"])
    if "aiida" in results:
        lines += _aiida_lines(results["aiida"])
    if results.get("profiles"):
        lines += ["## Profiles", ""]
        lines += [f"- `{tid}`: {path}" for tid, path in results["profiles"].items()]
        lines.append("")
    return "\n".join(lines)
