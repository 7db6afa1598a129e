"""Codec benchmark: encode, decode and size per case, against pickle protocol 5.

Variants, all measured in the same process in interleaved rounds (each round
times every variant once, in a rotated order, so drift and noise hit all alike):

* ``pickle-5``: ``pickle.dumps(bundle, protocol=5)`` / ``pickle.loads`` — the baseline;
* ``pickle`` and ``pickle+zstd``: this package's pickle codec (restricted unpickler);
* ``msgpack`` and ``msgpack+zstd``: this package's msgpack codec.

For this package's variants a sample has two timed parts: the *codec* (value
<-> payload bytes) and the *envelope* (header, CRC-32 and, for ``+zstd``,
compression), so results give both the codec alone and the whole record as
stored. ``pickle-5`` has no envelope. The codec of ``pickle-5`` and ``msgpack`` is
also timed with the cyclic GC on (``codec_total_gc_on``), in the same rounds.
"""

from __future__ import annotations

import gc
import math
import pickle
import statistics
from collections.abc import Callable
from typing import Any

import attrs

from loopaware_persist import LoopAwarePersistError, get_codec

from ._cases import Case, state_label
from ._config import ALLOW, Config
from ._private import decode_envelope, encode_envelope
from ._timing import Progress, calibrate, summarise, time_batch

__all__ = ("BASELINE", "VARIANTS", "run_codecs")

BASELINE = "pickle-5"
VARIANTS: tuple[str, ...] = (BASELINE, "pickle", "pickle+zstd", "msgpack", "msgpack+zstd")
PHASES = ("codec_encode", "envelope_encode", "envelope_decode", "codec_decode")
#: Variants whose codec is also timed with the cyclic GC on (issue 15's codec targets).
GC_ON_VARIANTS = (BASELINE, "msgpack")
_GC_ON = "_gc_on"


@attrs.define
class _Variant:
    name: str
    phases: dict[str, Callable[[], Any]]
    numbers: dict[str, int] = attrs.field(factory=dict)
    samples: dict[str, list[float]] = attrs.field(factory=dict)
    payload_size: int = 0
    record_size: int = 0


def _variant(name: str, case: Case) -> _Variant:
    bundle = case.bundle
    if name == BASELINE:
        payload = pickle.dumps(bundle, protocol=5)
        return _Variant(
            name=name,
            phases={
                "codec_encode": lambda: pickle.dumps(bundle, protocol=5),
                "codec_decode": lambda: pickle.loads(payload),
            },
            payload_size=len(payload),
            record_size=len(payload),
        )
    codec_name, _, compression = name.partition("+")
    codec = get_codec(codec_name, allow=ALLOW)
    meta = {
        "process_class": f"{type(case.process).__module__}:{type(case.process).__qualname__}",
        "state": state_label(case.process),
        "saved_at": 0.0,
    }
    payload = codec.encode(bundle)
    record = encode_envelope(payload, codec=codec.name, compression=compression or None, meta=meta)
    decoded = codec.decode(decode_envelope(record).payload)
    if not isinstance(decoded, dict) or set(decoded) != set(bundle):
        msg = f"{name} did not round-trip the {case.name} bundle"
        raise AssertionError(msg)
    return _Variant(
        name=name,
        phases={
            "codec_encode": lambda: codec.encode(bundle),
            "envelope_encode": lambda: encode_envelope(
                payload, codec=codec.name, compression=compression or None, meta=meta
            ),
            "envelope_decode": lambda: decode_envelope(record),
            "codec_decode": lambda: codec.decode(payload),
        },
        payload_size=len(payload),
        record_size=len(record),
    )


def _per_round_sum(variant: _Variant, phases: tuple[str, ...]) -> list[float]:
    present = [variant.samples[p] for p in phases if p in variant.samples]
    return [sum(values) for values in zip(*present, strict=True)]


def _stats(samples: list[float]) -> dict[str, float | int]:
    full = summarise(samples)
    return {"min_s": full["min_s"], "median_s": full["median_s"], "n": full["n"]}


def _ratio(value: float, base: float) -> float:
    return value / base if base > 0 else float("nan")


def measure_case(case: Case, config: Config, progress: Progress) -> dict[str, Any]:
    """Measure every variant on one case.

    :param case: the case
    :param config: rounds and sample length
    :param progress: advanced once per round
    :return: the case's results (JSON-ready)
    """
    variants: list[_Variant] = []
    failed: dict[str, str] = {}
    for name in VARIANTS:
        try:
            variants.append(_variant(name, case))
        except (LoopAwarePersistError, AssertionError) as error:
            if name == BASELINE:
                raise
            # Reported in the results and the table, not hidden: a codec that cannot
            # store a real process is a finding.
            failed[name] = f"{type(error).__name__}: {error}"
    for variant in variants:
        for phase, fn in variant.phases.items():
            variant.numbers[phase] = calibrate(fn, config.sample_s)
            variant.samples[phase] = []
    gc.collect()
    for round_index in range(config.rounds):
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            for phase, fn in variant.phases.items():
                variant.samples[phase].append(time_batch(fn, variant.numbers[phase]))
                if variant.name in GC_ON_VARIANTS and phase.startswith("codec_"):
                    variant.samples.setdefault(phase + _GC_ON, []).append(
                        time_batch(fn, variant.numbers[phase], gc_on=True)
                    )
        gc.collect()
        progress.step(f"codecs: {case.name} round {round_index + 1}/{config.rounds}")

    out: dict[str, Any] = {}
    totals: dict[str, dict[str, float]] = {}
    for variant in variants:
        encode = _per_round_sum(variant, ("codec_encode", "envelope_encode"))
        decode = _per_round_sum(variant, ("envelope_decode", "codec_decode"))
        codec_total = _per_round_sum(variant, ("codec_encode", "codec_decode"))
        total = [e + d for e, d in zip(encode, decode, strict=True)]
        codec_gc_on = _per_round_sum(variant, ("codec_encode" + _GC_ON, "codec_decode" + _GC_ON))
        totals[variant.name] = {
            "encode": statistics.median(encode),
            "decode": statistics.median(decode),
            "total": statistics.median(total),
            "codec_total": statistics.median(codec_total),
            "codec_total_gc_on": statistics.median(codec_gc_on) if codec_gc_on else math.nan,
            "size": float(variant.payload_size),
            "record_size": float(variant.record_size),
        }
        out[variant.name] = {
            "encode": _stats(encode),
            "decode": _stats(decode),
            "total": _stats(total),
            "codec_encode": _stats(variant.samples["codec_encode"]),
            "codec_decode": _stats(variant.samples["codec_decode"]),
            "codec_total": _stats(codec_total),
            **({"codec_total_gc_on": _stats(codec_gc_on)} if codec_gc_on else {}),
            "payload_size": variant.payload_size,
            "record_size": variant.record_size,
            "calls_per_sample": dict(variant.numbers),
        }
    base = totals[BASELINE]
    for name, entry in out.items():  # only variants that ran are in ``out`` so far
        mine = totals[name]
        entry["ratio"] = {
            "encode": _ratio(mine["encode"], base["encode"]),
            "decode": _ratio(mine["decode"], base["decode"]),
            "total": _ratio(mine["total"], base["total"]),
            "codec_total": _ratio(mine["codec_total"], base["codec_total"]),
            **(
                {"codec_total_gc_on": _ratio(mine["codec_total_gc_on"], base["codec_total_gc_on"])}
                if name in GC_ON_VARIANTS
                else {}
            ),
            "size": _ratio(mine["size"], base["size"]),
            "record_size": _ratio(mine["record_size"], base["size"]),
        }
    for name, why in failed.items():
        out[name] = {"error": why}
    out = {name: out[name] for name in VARIANTS if name in out}
    return {
        "title": case.title,
        "detail": case.detail,
        "pickle_size": case.pickle_size,
        "rounds": config.rounds,
        "variants": out,
    }


def run_codecs(cases: dict[str, Case], config: Config, progress: Progress) -> dict[str, Any]:
    """:param cases: the cases to measure
    :param config: rounds and sample length
    :param progress: advanced once per case and round
    :return: ``{"baseline": ..., "variants": [...], "cases": {name: results}}``
    """
    return {
        "baseline": BASELINE,
        "variants": list(VARIANTS),
        "ratio_basis": "median of per-round sums, divided by the baseline's from the same run",
        "cases": {name: measure_case(case, config, progress) for name, case in cases.items()},
    }
