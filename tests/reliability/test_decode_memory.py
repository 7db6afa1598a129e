"""Figure: peak memory of every decode, measured without an address-space cap.

The first campaign's malformed-input figure ran under a 1 GiB cap, so allocation
bombs looked like typed errors. Here each run is a fresh interpreter with no cap
(``_memory_worker``), its resident high-water mark reset after warm-up:

* ``corpus``: the hostile corpus of ``_hostile_worker`` plus the second campaign's
  bombs (pickle memo and byte counts, ``tuple(range)``, zlib/zstd records expanding
  to hundreds of MiB, YAML billion laughs and deep nesting), all in one process;
  each loaded through ``load_process`` and any restored exception printed. Before
  the bounds, three of them added 512 MiB each and one never finished.
* ``amplifier``: one payload of half a million one-byte empty containers at a time, the
  most memory a payload byte can cost (a Python object per byte), uncompressed and
  zstd-compressed right up to the envelope's 64x bound.

The bounds asserted are the ones the package states: a load of a record of B bytes
stays under 64 B + 32 MiB for the corpus, and under :data:`PER_RAW_BYTE` bytes per
byte of payload a load accepts (at most 64 times the stored payload plus 64 KiB)
for the amplifiers. Every run is a subprocess under a timeout: a hang fails it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ._support import figure

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
#: What one byte of accepted payload may cost a load_process, at most: an empty set
#: (232 B) built by one pickle opcode, plus its pointer and the load's walk over it.
PER_RAW_BYTE = 512
AMPLIFIERS = (
    "msgpack [[] x 512Ki]",
    "msgpack [{} x 512Ki]",
    "pickle [set() x 512Ki]",
    "msgpack [[] x 512Ki], zstd at the bound",
)


def _worker(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability._memory_worker", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,  # under pytest-timeout's 120 s; "billion laughs" once froze the interpreter
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_peak_memory_over_the_hostile_corpus_and_the_bombs(tmp_path: Path) -> None:
    result = _worker("corpus", str(tmp_path))
    line = figure(
        "decode_peak_memory",
        peak_mib=round(result["peak_bytes"] / MIB, 1),
        bound_mib=round((64 * result["largest_record"] + 32 * MIB) / MIB, 1),
        hangs=0,
        **result,
    )
    assert line["records"] >= 100
    assert line["bombs"] >= 12
    assert line["untyped_count"] == 0, line["untyped"]
    assert line["executions"] == 0
    assert "loaded" not in line["outcomes"]
    assert line["peak_bytes"] <= 64 * line["largest_record"] + 32 * MIB


@pytest.mark.parametrize("name", AMPLIFIERS)
def test_peak_memory_per_payload_byte(name: str) -> None:
    result = _worker("amplifier", name)
    raw = result["largest_accepted_raw"]
    line = figure(
        "decode_peak_per_payload_byte",
        amplifier=name,
        per_raw_byte=round(result["peak_bytes"] / raw, 1),
        per_record_byte=round(result["peak_bytes"] / result["largest_record"], 1),
        **result,
    )
    assert line["untyped_count"] == 0, line["untyped"]
    assert line["peak_bytes"] <= PER_RAW_BYTE * raw + 32 * MIB
