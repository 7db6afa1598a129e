"""Subprocess worker of the peak-memory figure (``python -m tests.reliability._memory_worker``).

A fresh interpreter *without* an address-space cap (under one, an allocation bomb
looks like a typed error): it builds the hostile corpus of ``_hostile_worker`` plus
the bombs of the second campaign (pickle memo and byte counts, ``tuple(range)``,
zlib/zstd records whose payload expands far beyond their size, YAML billion laughs
and deep nesting in an ``Excepted`` state) and the worst per-byte amplifiers known
(payloads of empty containers, one byte each), warms every path up, reads
``ru_maxrss``, then loads every record through ``load_process`` (and prints any
exception it restores), and reads ``ru_maxrss`` again. Prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import random
import resource
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import msgpack
import plumpy
import zstandard

from loopaware_persist import LoopAwarePersistError, open_persister
from loopaware_persist._envelope import (
    _FIXED,
    FORMAT_VERSION,
    MAGIC,
    encode_envelope,
    max_raw_size,
)
from loopaware_persist.storage import CheckpointKey

from ._hostile_worker import corpus, plant_evil_module
from ._support import ALLOW, CODECS, make_process, new_loop

MIB = 1 << 20
#: Raw payload of each amplifier: big enough that its cost stands out of the noise.
AMPLIFIER_BYTES = MIB // 2


def _craft(stored: bytes, *, codec: str, flags: int, raw_size: int) -> bytes:
    """A record with valid checksums around the fields given (as whoever writes the store can)."""
    name = codec.encode()
    head = _FIXED.pack(MAGIC, FORMAT_VERSION, flags, len(name), 0, len(stored), raw_size) + name
    return head + struct.pack(">II", zlib.crc32(head), zlib.crc32(stored)) + stored


def _decompression_bomb(compression: str, size: int) -> bytes:
    chunk = bytes(MIB)
    if compression == "zlib":
        deflate = zlib.compressobj(9)
        stored = b"".join(deflate.compress(chunk) for _ in range(size // MIB)) + deflate.flush()
    else:
        writer = zstandard.ZstdCompressor(level=3).compressobj(size=size)
        stored = b"".join(writer.compress(chunk) for _ in range(size // MIB)) + writer.flush()
    return _craft(stored, codec="msgpack", flags=1 if compression == "zlib" else 2, raw_size=size)


def _amplifiers() -> dict[str, tuple[str, bytes]]:
    """Payloads where each byte builds an object: the most memory a payload byte can cost."""
    n = AMPLIFIER_BYTES
    head = b"\x81\xa1x\xdd" + struct.pack(">I", n)  # {"x": [<n items>]}
    pickled = b"\x80\x05}\x8c\x01x](" + b"\x8f" * n + b"es."  # {"x": [set(), ...]}
    out = {
        "msgpack [[] x 512Ki]": ("msgpack", encode_envelope(head + b"\x90" * n, codec="msgpack")),
        "msgpack [{} x 512Ki]": ("msgpack", encode_envelope(head + b"\x80" * n, codec="msgpack")),
        "pickle [set() x 512Ki]": ("pickle", encode_envelope(pickled, codec="pickle")),
    }
    # The same, compressed right up to the envelope's bound (64x): a small record whose
    # payload expands as far as a load accepts. Random padding sets the ratio.
    lists = head[:-4] + struct.pack(">I", n) + b"\x90" * n
    pad = random.Random(7).randbytes(n // 56)
    payload = msgpack.packb({"x": msgpack.unpackb(lists)["x"], "pad": pad})
    stored = zstandard.ZstdCompressor(level=19).compress(payload)
    out["msgpack [[] x 512Ki], zstd at the bound"] = (
        "msgpack",
        _craft(stored, codec="msgpack", flags=2, raw_size=len(payload)),
    )
    return out


def _excepted(ex_value: str, codec: str) -> bytes:
    with new_loop() as loop, open_persister("memory://", codec=codec, allow=[ALLOW]) as enc:
        bundle = plumpy.Bundle(make_process("excepted", loop, "y"))
        bundle["_state"]["ex_value"] = ex_value
        return enc.dumps(bundle)


def _yaml_bombs() -> dict[str, str]:
    head = "!!python/object/apply:builtins.ValueError\n- - x\n"
    laughs = ["  - &a0 [" + ", ".join(["lol"] * 10) + "]"]
    laughs += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return {
        "billion laughs": head + "\n".join(laughs) + "\n",
        "scalar aliased 2000x": head
        + "  - &s "
        + "x" * 100_000
        + "\n  - ["
        + ", ".join(["*s"] * 2000)
        + "]\n",
        "deep flow nesting": head + "  - " + "[" * 5000 + "]" * 5000 + "\n",
    }


def _bombs() -> dict[str, tuple[str, bytes]]:
    pickles = {
        "LONG_BINPUT 2**25": b"\x80\x05]r\x00\x00\x00\x02.",
        "PUT 2**25": b"(lp33554432\n.",
        "BINBYTES8 2**31": b"\x80\x05\x8e" + struct.pack("<Q", 2**31) + b"x.",
        "tuple(range(2**26))": (
            b"\x80\x05cbuiltins\ntuple\ncbuiltins\nrange\nJ\x00\x00\x00\x04\x85R\x85R."
        ),
    }
    out = {
        f"pickle {name}": ("pickle", encode_envelope(payload, codec="pickle"))
        for name, payload in pickles.items()
    }
    out["zlib 256 MiB of zeros"] = ("msgpack", _decompression_bomb("zlib", 256 * MIB))
    out["zstd 512 MiB of zeros"] = ("msgpack", _decompression_bomb("zstd", 512 * MIB))
    for name, text in _yaml_bombs().items():
        for codec in CODECS:
            out[f"{codec} yaml {name}"] = (codec, _excepted(text, codec))
    return out


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _start_peak() -> int:
    """Reset the resident high-water mark where Linux allows it (writing 5 to
    ``/proc/self/clear_refs``), so the warm-up's own peak does not hide the loads'.

    :return: the baseline to subtract from :func:`_peak`
    """
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return _peak()
    return _status("VmRSS") or _peak()


def _peak() -> int:
    hwm = _status("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _accepted_raw(data: bytes) -> int:
    """:return: the most bytes a load lets this record's payload decode from"""
    try:
        fields = _FIXED.unpack_from(data)
    except struct.error:
        return len(data)
    flags, stored, raw = fields[2], fields[5], fields[6]
    return int(raw if flags == 0 else min(raw, max_raw_size(stored)))


def _load_all(records: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
    """Warm up, then load every record; report the peak-memory increase and outcomes."""
    with new_loop() as b, open_persister("memory://", allow=[ALLOW], accept=CODECS) as per:
        # Every path once, benign, so imports and caches are not counted.
        with new_loop() as a:
            for codec in CODECS:
                with open_persister("memory://", codec=codec, allow=[ALLOW]) as enc:
                    for kind in ("created", "finished", "excepted", "waiting"):
                        key = CheckpointKey(f"warm {codec} {kind}")
                        per.storage.put(key, enc.dumps(plumpy.Bundle(make_process(kind, a, 1))))
                        process = per.load_process(key.pid, loop=b)
                        if process.state is plumpy.ProcessState.EXCEPTED:
                            str(process.exception())
        for name, (_codec, data) in records.items():
            per.storage.put(CheckpointKey(name), data)
        before = _start_peak()
        outcomes: dict[str, int] = {}
        untyped: list[str] = []
        started = time.monotonic()
        for name in records:
            try:
                process = per.load_process(name, loop=b)
                if process.state is plumpy.ProcessState.EXCEPTED:
                    str(process.exception())  # what froze on "billion laughs"
            except LoopAwarePersistError as error:
                outcomes[type(error).__name__] = outcomes.get(type(error).__name__, 0) + 1
            except BaseException as error:
                untyped.append(f"{name}: {type(error).__name__}: {error}"[:300])
            else:
                outcomes["loaded"] = outcomes.get("loaded", 0) + 1
        elapsed = time.monotonic() - started
        peak = max(0, _peak() - before)
    return {
        "records": len(records),
        "largest_record": max(len(data) for _codec, data in records.values()),
        "largest_accepted_raw": max(_accepted_raw(data) for _codec, data in records.values()),
        "peak_bytes": peak,
        "outcomes": outcomes,
        "untyped": untyped[:20],
        "untyped_count": len(untyped),
        "seconds": round(elapsed, 2),
    }


def main() -> None:
    """``corpus DIR``: the hostile corpus and the bombs, in one interpreter;
    ``amplifier NAME``: one amplifier alone (so its peak is its own)."""
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "amplifier":
        report = _load_all({arg: _amplifiers()[arg]})
    else:
        marker, evil = plant_evil_module(Path(arg))
        records = {
            name: (codec, data)
            for name, (codec, data, _expected) in corpus(str(marker), evil).items()
        }
        bombs = _bombs()
        records.update(bombs)
        report = {"bombs": len(bombs), **_load_all(records), "executions": int(marker.exists())}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
