"""Every decode runs in memory proportional to the record and ends in a typed error.

Each bomb is decoded in a fresh interpreter (``tests/_peak.py``) without an
address-space cap, so an allocation shows as resident memory, not as a
``MemoryError`` that a cap would have turned it into.
"""

from __future__ import annotations

import pickle
import struct

import pytest
from hypothesis import given

from loopaware_persist import CorruptCheckpointError, DecodeError, UnsafeCheckpointError, get_codec
from loopaware_persist.codecs._pickle_scan import check_opcodes
from tests import strategies
from tests._peak import MIB, run_peak

#: What a refused bomb may add to the peak: far below any bomb here, above the noise.
NOISE = 32 * MIB

_SETUP_PICKLE = """
from loopaware_persist import get_codec
codec = get_codec("pickle")
codec.decode(codec.encode({"warm": [1, 2.0, "x", (3,)]}))
"""

PICKLE_BOMBS = {
    # ]r<2**25>. : EMPTY_LIST, LONG_BINPUT 2**25 -> a 512 MiB memo array in the C unpickler.
    "LONG_BINPUT 2**25": (b"\x80\x05]r\x00\x00\x00\x02.", CorruptCheckpointError),
    "PUT 2**25": (b"(lp33554432\n.", CorruptCheckpointError),
    # BINBYTES8 / BYTEARRAY8 / BINBYTES: the unpickler allocates the count, then reads.
    "BINBYTES8 2**31": (b"\x80\x05\x8e" + struct.pack("<Q", 2**31) + b"x.", CorruptCheckpointError),
    "BYTEARRAY8 2**31": (
        b"\x80\x05\x96" + struct.pack("<Q", 2**31) + b"x.",
        CorruptCheckpointError,
    ),
    "BINBYTES 2**31": (b"\x80\x05B" + struct.pack("<I", 2**31) + b"x.", CorruptCheckpointError),
    # tuple(range(2**26)): 40 bytes that iterate a lazy range into 2.5 GiB.
    "tuple(range(2**26))": (
        b"\x80\x05cbuiltins\ntuple\ncbuiltins\nrange\nJ\x00\x00\x00\x04\x85R\x85R.",
        UnsafeCheckpointError,
    ),
    "frozenset.__new__(range)": (
        b"\x80\x05cbuiltins\nfrozenset\ncbuiltins\nrange\nJ\x00\x00\x00\x04\x85R\x85\x81.",
        UnsafeCheckpointError,
    ),
}


@pytest.mark.parametrize("name", sorted(PICKLE_BOMBS))
def test_pickle_bombs_are_refused_in_bounded_memory(name: str) -> None:
    payload, expected = PICKLE_BOMBS[name]
    result = run_peak(f"codec.decode({payload!r})", setup=_SETUP_PICKLE)
    assert result["outcome"].startswith(f"loopaware_persist.{expected.__name__}:"), result
    assert result["peak"] < NOISE, f"{name} added {result['peak'] / MIB:.0f} MiB"


@pytest.mark.parametrize("name", sorted(PICKLE_BOMBS))
def test_pickle_bombs_are_refused_in_process(name: str) -> None:
    payload, expected = PICKLE_BOMBS[name]
    with pytest.raises(expected):
        get_codec("pickle").decode(payload)


@pytest.mark.parametrize(
    "payload",
    [b"\x80\x05]r\x00\x00\x00\x02.", b"(lp-1\n.", b"(lp1_0\n.", b"(lp" + b"9" * 40 + b"\n."],
)
def test_the_scan_names_the_memo_index_and_its_offset(payload: bytes) -> None:
    with pytest.raises(CorruptCheckpointError, match=r"memo index .* at byte \d+"):
        check_opcodes(payload)


@given(strategies.values())
def test_every_protocol_passes_the_scan(value: object) -> None:
    # The scan must walk real pickles exactly as the unpickler does, memo writes of
    # the old protocols (PUT, BINPUT, LONG_BINPUT) included.
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        try:
            data = pickle.dumps(value, protocol)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
            continue
        check_opcodes(data)


def test_long_binput_of_a_real_pickle_passes() -> None:
    # Protocol 1 writes LONG_BINPUT once the memo passes 256 entries.
    value = [[i] for i in range(600)]
    data = pickle.dumps(value, 1)
    assert b"r" in data
    check_opcodes(data)
    assert pickle.loads(data) == value


@pytest.mark.parametrize("name", ["msgpack", "pickle"])
@pytest.mark.parametrize("payload", ["str", None, 3, ["x"]])
def test_decode_of_a_non_bytes_payload_is_a_decode_error(name: str, payload: object) -> None:
    with pytest.raises(DecodeError, match="payload must be bytes"):
        get_codec(name).decode(payload)  # type: ignore[arg-type]
