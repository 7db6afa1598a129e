"""Every decode runs in memory proportional to the record and ends in a typed error.

Each bomb is decoded in a fresh interpreter (``tests/_peak.py``) without an
address-space cap, so an allocation shows as resident memory, not as a
``MemoryError`` that a cap would have turned it into.
"""

from __future__ import annotations

import pickle
import pickletools
import struct
import warnings
import zlib
from pathlib import Path

import msgpack
import pytest
import zstandard
from hypothesis import given, strategies as st

from loopaware_persist import (
    CorruptCheckpointError,
    DecodeError,
    UnsafeCheckpointError,
    get_codec,
    open_persister,
)
from loopaware_persist._envelope import (
    _FIXED,
    EXPANSION_SLACK,
    FORMAT_VERSION,
    MAGIC,
    MAX_EXPANSION,
    decode_envelope,
    encode_envelope,
    read_header,
)
from loopaware_persist.codecs._pickle_scan import check_opcodes
from loopaware_persist.codecs.pickle import UnsafeLoadWarning
from tests import strategies
from tests._peak import MIB, run_peak
from tests.axes import CODECS

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


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_decode_takes_any_bytes_like_payload(name: str, kind: type) -> None:
    codec = get_codec(name)
    value = {"a": [1, "x", (2.0, None)], "b": b"\x00p\n" * 3}
    assert codec.decode(kind(codec.encode(value))) == value


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("payload", ["str", None, 3, ["x"]])
def test_decode_of_a_non_bytes_payload_is_a_decode_error(name: str, payload: object) -> None:
    with pytest.raises(DecodeError, match="payload must be bytes"):
        get_codec(name).decode(payload)  # type: ignore[arg-type]


# Envelope: compressed payloads expand at most MAX_EXPANSION times.


def _bomb(compression: str, size: int) -> bytes:
    """A record whose payload truly decompresses to ``size`` zero bytes, CRCs recomputed
    (as whoever writes the store can), built in chunks so the test itself stays small."""
    chunk = bytes(1 << 20)
    if compression == "zlib":
        deflate = zlib.compressobj(9)
        stored = b"".join(deflate.compress(chunk) for _ in range(size >> 20)) + deflate.flush()
    else:
        writer = zstandard.ZstdCompressor(level=3).compressobj(size=size)
        stored = b"".join(writer.compress(chunk) for _ in range(size >> 20)) + writer.flush()
    return craft_record(stored, flags=1 if compression == "zlib" else 2, raw_size=size)


def craft_record(stored: bytes, *, flags: int, raw_size: int, codec: bytes = b"msgpack") -> bytes:
    """A record with valid checksums around the fields given."""
    head = _FIXED.pack(MAGIC, FORMAT_VERSION, flags, len(codec), 0, len(stored), raw_size)
    head += codec
    return head + struct.pack(">II", zlib.crc32(head), zlib.crc32(stored)) + stored


@pytest.mark.parametrize(("compression", "size"), [("zlib", 256 << 20), ("zstd", 512 << 20)])
def test_decompression_bombs_are_refused_in_bounded_memory(
    tmp_path: Path, compression: str, size: int
) -> None:
    record = _bomb(compression, size)
    assert len(record) < 300 * 1024
    path = tmp_path / "bomb"
    path.write_bytes(record)
    result = run_peak(
        "decode_envelope(data)",
        setup=f"""
        from pathlib import Path
        from loopaware_persist._envelope import decode_envelope, encode_envelope
        decode_envelope(encode_envelope(bytes(1000), codec="msgpack", compression={compression!r}))
        data = Path({str(path)!r}).read_bytes()
        """,
    )
    assert result["outcome"].startswith("loopaware_persist.CorruptCheckpointError:"), result
    assert "expands to" in result["outcome"]
    assert result["peak"] < NOISE, f"{compression} added {result['peak'] / MIB:.0f} MiB"


def test_a_zstd_frame_must_state_the_headers_size() -> None:
    # zstandard allocates the frame's stated content size, whatever max_output_size says.
    writer = zstandard.ZstdCompressor(write_content_size=False)
    frame = writer.compress(b"0123456789")
    with pytest.raises(CorruptCheckpointError, match="no content size"):
        decode_envelope(craft_record(frame, flags=2, raw_size=10))
    lying = zstandard.ZstdCompressor().compressobj(size=1 << 40).flush()
    with pytest.raises(CorruptCheckpointError):
        decode_envelope(craft_record(lying, flags=2, raw_size=10))


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_repetitive_payloads_are_stored_within_the_bound(compression: str) -> None:
    payload = bytes(8 << 20)  # compresses over 200 to 1 with either
    record = encode_envelope(payload, codec="msgpack", compression=compression)
    header = read_header(record)
    assert header.raw_size <= MAX_EXPANSION * header.payload_size + EXPANSION_SLACK
    assert decode_envelope(record).payload == payload
    small = encode_envelope(bytes(60_000), codec="msgpack", compression=compression)
    assert read_header(small).compression == compression  # the slack keeps small ones compressed


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_a_record_beyond_the_bound_reads_when_trusted(compression: str) -> None:
    # What encode_envelope wrote before the bound: a payload compressed far beyond 64 to 1.
    payload = msgpack.packb({"zeros": bytes(4 << 20)})
    stored = (
        zlib.compress(payload, 1)
        if compression == "zlib"
        else zstandard.ZstdCompressor(level=3).compress(payload)
    )
    record = craft_record(stored, flags=1 if compression == "zlib" else 2, raw_size=len(payload))
    with pytest.raises(CorruptCheckpointError, match="trusted=True"):
        decode_envelope(record)
    assert decode_envelope(record, max_expansion=None).payload == payload
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeLoadWarning)
        trusted = open_persister("memory://", trusted=True)
    plain = open_persister("memory://")
    with pytest.raises(CorruptCheckpointError, match="trusted=True"):
        plain.loads(record)
    assert trusted.loads(record) == {"zeros": bytes(4 << 20)}


@given(payload=st.binary(max_size=4096), compression=st.sampled_from(["zlib", "zstd"]))
def test_every_record_written_decodes_within_the_bound(payload: bytes, compression: str) -> None:
    record = encode_envelope(payload, codec="msgpack", compression=compression)
    assert decode_envelope(record).payload == payload


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x05\x8c\x03abc]r\x00\x00\x00\x02.",  # after a short string the regex took
        b"\x80\x05\x8a\x02\x01\x00]r\x00\x00\x00\x02.",  # after a small LONG1
        b"\x80\x05\x8c\x0aabc",  # a short string running past the end
        b"\x80\x05\x8c\xffabc",  # one the regex leaves to Python, running past the end
    ],
)
def test_the_scan_stays_in_step_after_short_counted_opcodes(payload: bytes) -> None:
    with pytest.raises(CorruptCheckpointError, match="Malformed pickle payload"):
        check_opcodes(payload)


@given(
    value=strategies.values(),
    protocol=st.integers(0, pickle.HIGHEST_PROTOCOL),
    at=st.floats(0, 1),
    patch=st.sampled_from(
        [b"r\xff\xff\xff\x7f", b"p99999999\n", b"\x8e\xff\xff\xff\xff\x00\x00\x00\x00", b"B\xff"]
    )
    | st.binary(min_size=1, max_size=9),
)
def test_what_passes_the_scan_is_bounded_by_the_reference_parser(
    value: object, protocol: int, at: float, patch: bytes
) -> None:
    # pickletools.genops, the stdlib's reference walk, must find no memo index and no
    # count beyond the payload in whatever the fast scan lets through.
    try:
        data = bytearray(pickle.dumps(value, protocol))
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        return
    where = int(at * (len(data) - 1))
    data[where : where + len(patch)] = patch
    try:
        check_opcodes(bytes(data))
    except CorruptCheckpointError:
        return
    try:
        with warnings.catch_warnings():
            # A patched protocol-0 STRING may hold an escape such as '\e', which genops
            # decodes with a DeprecationWarning: not what this test is about.
            warnings.simplefilter("ignore", DeprecationWarning)
            for op, arg, _pos in pickletools.genops(bytes(data)):
                # BINPUT's one-byte index grows the memo to 512 entries at most: unchecked.
                if op.name in ("PUT", "LONG_BINPUT"):
                    assert arg is not None
                    assert arg < len(data)
    except ValueError as error:
        # The reference parser stops where the unpickler refuses too, but never for a
        # count the scan should have refused ("expected N bytes ... only M remain").
        stopped = str(error)
    else:
        stopped = ""
    assert "remain" not in stopped, stopped
