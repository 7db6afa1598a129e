"""The targets of issues 4, 14 and 15, checked against one run's results.

Each target reads medians (codecs, loop, loading, AiiDA) or p50s (storage) from the
results of the *same* run. A target whose case ran smaller than the issue's size
(``quick`` mode) is still evaluated, and its ``note`` says at what size. Issue 15's
targets are judged with the cyclic GC on (as a user's process runs); each also
carries the ratio with it off (``gc_off``, and in its note).
"""

from __future__ import annotations

from typing import Any

from ._config import Config
from ._storage import GC_ON_SAVE, PLUMPY

__all__ = ("evaluate",)

_CODEC_TIME = {"small": 0.8, "medium": 1.0, "futures": 1.2, "dense": 1.0}
_UNBUNDLE = ("small", "medium", "futures")
_MS = 1e-3
_US = 1e-6


def _target(
    tid: str,
    text: str,
    limit: float,
    measured: float | None,
    unit: str,
    basis: str,
    note: str = "",
    *,
    issue: int = 4,
) -> dict[str, Any]:
    return {
        "id": tid,
        "issue": issue,
        "target": text,
        "limit": limit,
        "measured": measured,
        "unit": unit,
        "met": None if measured is None else bool(measured <= limit),
        "margin": None if measured is None else measured / limit,
        "basis": basis,
        "note": note,
    }


def _size_note(case: str, config: Config, results: dict[str, Any]) -> str:
    if case in ("dense", "floats", "strings") and config.large_bytes < 10_000_000:
        size = results["codecs"]["cases"][case]["pickle_size"]
        return f"{config.name} run: case is {size / 1e6:.1f} MB, not 10 MB"
    if case == "futures" and config.futures < 10_000:
        return f"{config.name} run: {config.futures} snapshots"
    return ""


def _ratio(entry: dict[str, Any]) -> dict[str, float]:
    """:return: a variant's ratios, or none if it failed to run (its ``error`` says why)"""
    ratio: dict[str, float] = entry.get("ratio", {})
    return ratio


def _codec_targets(results: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    cases = results["codecs"]["cases"]
    out = []
    for case, limit in _CODEC_TIME.items():
        if case not in cases:
            continue
        ratio = _ratio(cases[case]["variants"]["msgpack"])
        out.append(
            _target(
                f"codec.{case}.time",
                f"msgpack encode+decode, {case}",
                limit,
                ratio.get("codec_total"),
                "x pickle-5",
                "codec alone (no envelope), median per-round sum",
                _size_note(case, config, results),
            )
        )
    if "small" in cases:
        out.append(
            _target(
                "codec.small.size",
                "msgpack size, small",
                0.9,
                _ratio(cases["small"]["variants"]["msgpack"]).get("size"),
                "x pickle-5",
                "codec payload bytes",
            )
        )
    if "medium" in cases:
        zstd = _ratio(cases["medium"]["variants"]["msgpack+zstd"])
        out.append(
            _target(
                "codec.medium.zstd.size",
                "msgpack+zstd size, medium",
                0.55,
                zstd.get("record_size"),
                "x pickle-5",
                "stored record (compressed payload + header)",
            )
        )
        out.append(
            _target(
                "codec.medium.zstd.time",
                "msgpack+zstd encode+decode, medium",
                1.15,
                zstd.get("total"),
                "x pickle-5",
                "whole record: codec + envelope with zstd",
            )
        )
    return out


def _storage_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    storage = results["storage"]
    out = []
    listing = storage["listing"]
    counts = sorted({int(c) for by_count in listing.values() for c in by_count})
    if counts:
        top = counts[-1]
        stores = sorted(
            {name for by_count in listing.values() for name in by_count.get(str(top), {})}
            - {PLUMPY}
        )
        for name in stores:
            worst = max(
                (by_count[str(top)][name]["p50_s"], size)
                for size, by_count in listing.items()
                if name in by_count.get(str(top), {})
            )
            out.append(
                _target(
                    f"list.{name}",
                    f"get_checkpoints() of {top:,} checkpoints, {name}",
                    10 * _MS,
                    worst[0],
                    "s",
                    f"p50, worst over sizes ({worst[1]})",
                    "" if top >= 10_000 else f"at {top:,} checkpoints, not 10,000",
                )
            )
    save = storage["operations"].get("save", {}).get("small", {})
    bundling = storage.get("bundle", {}).get("small")
    bundle_note = (
        f"of which plumpy.Bundle(process) p50 {bundling['p50_s'] * 1e6:.0f} µs" if bundling else ""
    )
    for name, limit, kind in (
        ("file", 100 * _US, "atomic"),
        ("sqlite", 100 * _US, "atomic"),
        ("postgresql", 100 * _US, "atomic"),
        ("file (full)", 450 * _US, "durable"),
        ("sqlite (full)", 450 * _US, "durable"),
        ("postgresql (full)", 450 * _US, "durable"),
    ):
        if name in save:
            out.append(
                _target(
                    f"save.{name}",
                    f"small save, {kind}, {name}",
                    limit,
                    save[name]["p50_s"],
                    "s",
                    "p50 of save_checkpoint(process), end to end",
                    bundle_note,
                )
            )
    load = storage["ratios"].get("load", {}).get("small", {})
    for name, ratio in load.items():
        if "(full)" in name:
            continue  # durability does not change a read
        out.append(
            _target(
                f"load.{name}",
                f"small load, {name}",
                0.6,
                ratio["p50"],
                f"x {PLUMPY}",
                "p50 of load_checkpoint(pid)",
            )
        )
    return out


def _loop_targets(results: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    loop = results["loop"]
    restore = loop["restore"]
    out = [
        _target(
            "restore",
            f"restore {restore['count']:,} snapshots ({what})",
            1.5,
            restore["variants"][variant]["ratio"],
            "x direct",
            "median; direct = loop.create_future() + set_result()",
            "" if restore["count"] >= 10_000 else f"{config.name} run",
        )
        for variant, what in (
            ("restore_future", "restore_future"),
            ("restore_futures", "restore_futures, one batch"),
        )
    ]
    for case in _UNBUNDLE:
        entry = loop["unbundle"].get(case)
        if entry is None:
            continue
        out.append(
            _target(
                f"unbundle.{case}",
                f"whole-graph unbundle, {case}",
                1.2,
                entry["unbundle"]["variants"]["unbundle"]["ratio"],
                "x plumpy unbundle",
                "median, from a coroutine on the target loop",
                "plumpy leaves the snapshots as values; ours makes a future of each"
                if case == "futures"
                else "",
            )
        )
    return out


#: Issue 14's limits, as ratios over ``AiiDAPersister`` on the same process state.
_AIIDA_SAVE = 0.3
_AIIDA_SIZE = 0.8
_AIIDA_LOAD = {"small": 1.0, "table": 0.5}


def _aiida_targets(aiida: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for case, entry in aiida["cases"].items():
        for store, stats in entry["stores"].items():
            if store == aiida["baseline"]:
                continue
            ratio = stats["ratio"]
            for metric, text, limit, measured, basis in (
                ("save", "save", _AIIDA_SAVE, ratio["save_gc_off"], "median save_checkpoint"),
                ("size", "size", _AIIDA_SIZE, ratio["size"], "stored checkpoint bytes"),
                (
                    "load",
                    "load + unbundle",
                    _AIIDA_LOAD[case],
                    ratio["load_gc_off"],
                    "median load_checkpoint + unbundle onto the runner's loop",
                ),
            ):
                gc_on = ratio.get(f"{metric}_gc_on")
                out.append(
                    _target(
                        f"aiida.{case}.{store}.{metric}",
                        f"AiiDA {text}, {case}, {store}",
                        limit,
                        measured,
                        f"x {aiida['baseline']}",
                        basis + (", GC off" if gc_on is not None else ""),
                        "" if gc_on is None else f"GC on: {gc_on:.2f}x",
                        issue=14,
                    )
                )
    return out


#: Issue 15's limits: ``load_process`` over ``PicklePersister`` load + unbundle, by case;
#: restart (list + load every process) by case; msgpack codec over pickle-5, by case.
_LOAD = {"small": 1.2, "medium": 1.0, "big": 1.0, "futures": 1.5}
_RESTART = {"small": 1.2, "waiting": 1.0}
_CODEC_15 = {"medium": 0.8, "dense": 0.7}
_SAVE_OVER_BUNDLE = 1.5
_FILE_SAVE = 1.0


def _gc_target(
    tid: str,
    text: str,
    limit: float,
    gc_on: float | None,
    gc_off: float | None,
    unit: str,
    basis: str,
    note: str = "",
) -> dict[str, Any]:
    """:return: an issue-15 target judged on ``gc_on``, with ``gc_off`` beside it"""
    off = "n/a" if gc_off is None else f"{gc_off:.2f}x"
    target = _target(
        f"i15.{tid}",
        text,
        limit,
        gc_on,
        unit,
        basis + ", GC on",
        "; ".join(part for part in (f"GC off: {off}", note) if part),
        issue=15,
    )
    return {**target, "gc_on": gc_on, "gc_off": gc_off}


def _loading_targets(loading: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    out = []
    base = loading["baseline"]
    for case, limit in _LOAD.items():
        entry = loading["load"].get(case)
        if entry is None:
            continue
        note = ""
        if case == "futures":
            count = loading["load_futures"]
            note = "plumpy leaves the snapshots as values; ours makes a future of each"
            if count != 1_000:
                note += f"; {config.name} run: {count:,} snapshots"
        out.append(
            _gc_target(
                f"load.{case}",
                f"load_process, {case} ({entry['title']})",
                limit,
                entry["ratio"]["gc_on"],
                entry["ratio"]["gc_off"],
                f"x {base}",
                "median, sqlite://, from a coroutine on B",
                note,
            )
        )
    for case, limit in _RESTART.items():
        entry = loading["restart"].get(case)
        if entry is None:
            continue
        count = entry["count"]
        out.append(
            _gc_target(
                f"restart.{case}",
                f"restart: list + load {count:,} WAITING processes, {case} "
                f"({entry['pickle_size'] / 1e3:.0f} KB)",
                limit,
                entry["ratio"]["gc_on"],
                entry["ratio"]["gc_off"],
                f"x {base}",
                "median, sqlite://, from a coroutine on B",
                "" if count >= 1_000 else f"{config.name} run: {count:,} processes",
            )
        )
    return out


def _codec_targets_15(results: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    cases = results["codecs"]["cases"]
    out = []
    for case, limit in _CODEC_15.items():
        if case not in cases:
            continue
        ratio = _ratio(cases[case]["variants"]["msgpack"])
        size = cases[case]["pickle_size"]
        out.append(
            _gc_target(
                f"codec.{case}",
                f"msgpack encode+decode, {case} ({size / 1e6:.2g} MB)",
                limit,
                ratio.get("codec_total_gc_on"),
                ratio.get("codec_total"),
                "x pickle-5",
                "codec alone, median per-round sum",
                _size_note(case, config, results),
            )
        )
    return out


def _save_targets_15(storage: dict[str, Any]) -> list[dict[str, Any]]:
    def p50(section: dict[str, Any] | None, name: str) -> float | None:
        stats = (section or {}).get("small", {}).get(name)
        return None if stats is None else float(stats["p50_s"])

    def over(mine: float | None, base: float | None) -> float | None:
        return None if mine is None or not base else mine / base

    off, on = storage["operations"].get("save"), storage["operations"].get(GC_ON_SAVE)
    out = []
    bundle_off = storage.get("bundle", {}).get("small", {}).get("p50_s")
    bundle_on = storage.get("bundle_gc_on", {}).get("small", {}).get("p50_s")
    if p50(off, "sqlite") is not None:
        out.append(
            _gc_target(
                "save.sqlite",
                "small save, sqlite",
                _SAVE_OVER_BUNDLE,
                over(p50(on, "sqlite"), bundle_on),
                over(p50(off, "sqlite"), bundle_off),
                "x plumpy.Bundle",
                "p50 of save_checkpoint(process) over p50 of plumpy.Bundle(process) alone",
            )
        )
    if p50(off, "file") is not None:
        out.append(
            _gc_target(
                "save.file",
                "small save, file",
                _FILE_SAVE,
                over(p50(on, "file"), p50(on, PLUMPY)),
                over(p50(off, "file"), p50(off, PLUMPY)),
                f"x {PLUMPY}",
                "p50 of save_checkpoint(process), durability normal",
            )
        )
    return out


def _aiida_targets_15(aiida: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for case, entry in aiida["cases"].items():
        for store, stats in entry["stores"].items():
            if store == aiida["baseline"]:
                continue
            ratio = stats["ratio"]
            out.append(
                _gc_target(
                    f"aiida.{case}.{store}.load",
                    f"AiiDA load + unbundle, {case}, {store}",
                    _AIIDA_LOAD[case],
                    ratio.get("load_gc_on"),
                    ratio.get("load_gc_off"),
                    f"x {aiida['baseline']}",
                    "median load_checkpoint + unbundle onto the runner's loop",
                )
            )
    return out


def evaluate(results: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """:param results: one run's results (``loading``, ``codecs``, ``storage``, ``loop``,
        ``aiida`` sections)
    :param config: the run's configuration
    :return: one entry per target: issue, limit, measured, met, margin (measured / limit),
        basis; issue 15's first, each with ``gc_on`` and ``gc_off``
    """
    out: list[dict[str, Any]] = []
    if "loading" in results:
        out += _loading_targets(results["loading"], config)
    if "codecs" in results:
        out += _codec_targets_15(results, config)
    if "storage" in results:
        out += _save_targets_15(results["storage"])
    if results.get("aiida", {}).get("cases"):
        out += _aiida_targets_15(results["aiida"])
    if "codecs" in results:
        out += _codec_targets(results, config)
    if "storage" in results:
        out += _storage_targets(results)
    if "loop" in results:
        out += _loop_targets(results, config)
    if results.get("aiida", {}).get("cases"):
        out += _aiida_targets(results["aiida"])
    return out
