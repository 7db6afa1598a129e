"""The targets of issue 4, checked against one run's results.

Each target reads medians (codecs, loop) or p50s (storage) from the results of
the *same* run. A target whose case ran smaller than the issue's size (``quick``
mode) is still evaluated, and its ``note`` says at what size.
"""

from __future__ import annotations

from typing import Any

from ._config import Config
from ._storage import PLUMPY

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
) -> dict[str, Any]:
    return {
        "id": tid,
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
                    )
                )
    return out


def evaluate(results: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """:param results: one run's results (``codecs``, ``storage``, ``loop`` sections)
    :param config: the run's configuration
    :return: one entry per target: limit, measured, met, margin (measured / limit), basis
    """
    out: list[dict[str, Any]] = []
    if "codecs" in results:
        out += _codec_targets(results, config)
    if "storage" in results:
        out += _storage_targets(results)
    if "loop" in results:
        out += _loop_targets(results, config)
    if results.get("aiida", {}).get("cases"):
        out += _aiida_targets(results["aiida"])
    return out
