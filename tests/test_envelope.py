"""The envelope: round trips, headers from a prefix, any damage is a CorruptCheckpointError."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import given, strategies as st

from loopaware_persist import CorruptCheckpointError, EncodeError
from loopaware_persist._envelope import (
    FORMAT_VERSION,
    HEADER_PEEK,
    MAGIC,
    Header,
    available_compressions,
    decode_envelope,
    encode_envelope,
    read_header,
    with_meta,
)

COMPRESSIONS = pytest.mark.parametrize("compression", [None, "zlib", "zstd"])
META = {"process_class": "plumpy.processes:Process", "state": "waiting", "step": 3, "t": 1.5}
_FIXED = struct.Struct(">4sBBBHQQ")


def _craft(
    stored: bytes,
    *,
    codec: bytes = b"msgpack",
    meta: bytes = b"",
    flags: int = 0,
    version: int = FORMAT_VERSION,
    raw_size: int | None = None,
    magic: bytes = MAGIC,
) -> bytes:
    """A record with *valid* checksums around whatever fields we choose (a crafted record)."""
    head = (
        _FIXED.pack(
            magic,
            version,
            flags,
            len(codec),
            len(meta),
            len(stored),
            len(stored) if raw_size is None else raw_size,
        )
        + codec
        + meta
    )
    return head + struct.pack(">II", zlib.crc32(head), zlib.crc32(stored)) + stored


def _only_corrupt(data: bytes) -> None:
    """Decoding ``data`` raises CorruptCheckpointError and nothing else."""
    with pytest.raises(CorruptCheckpointError):
        decode_envelope(data)


# Round trips.


@COMPRESSIONS
@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)) * 40])
def test_round_trip(compression: str | None, payload: bytes) -> None:
    record = encode_envelope(payload, codec="msgpack", compression=compression, meta=META)
    envelope = decode_envelope(record)
    assert envelope.payload == payload
    header = envelope.header
    assert header.codec == "msgpack"
    assert header.compression == compression
    assert dict(header.meta) == META
    assert header.version == FORMAT_VERSION
    assert header.raw_size == len(payload)
    assert header.record_size == len(record)
    assert record.startswith(MAGIC)


@COMPRESSIONS
@pytest.mark.parametrize("meta", [None, META])
def test_with_meta_replaces_it_and_keeps_the_payload(compression: str | None, meta: Any) -> None:
    payload = bytes(range(256)) * 40
    record = encode_envelope(payload, codec="pickle", compression=compression, meta=meta)
    stamped = with_meta(record, {**(meta or {}), "owner": "u-1"})
    envelope = decode_envelope(stamped)
    assert envelope.payload == payload
    assert dict(envelope.header.meta) == {**(meta or {}), "owner": "u-1"}
    assert (envelope.header.codec, envelope.header.compression) == ("pickle", compression)
    assert stamped[-envelope.header.payload_size :] == record[-envelope.header.payload_size :]
    # Putting the old meta back gives the record byte for byte, from a prefix too.
    assert with_meta(stamped, meta or {}) == record
    size = envelope.header.header_size + 3
    assert with_meta(stamped[:size], meta or {}) == record[: size - len(stamped) + len(record)]


def test_with_meta_refuses_a_damaged_header_or_bad_meta() -> None:
    record = encode_envelope(b"payload", codec="msgpack", meta=META)
    with pytest.raises(CorruptCheckpointError):
        with_meta(record[:10], {"a": 1})
    with pytest.raises(CorruptCheckpointError):
        with_meta(b"nope" + record[4:], {"a": 1})
    with pytest.raises(EncodeError):
        with_meta(record, {"a": object()})


@COMPRESSIONS
def test_compression_compresses(compression: str | None) -> None:
    payload = b"abc" * 10_000
    record = encode_envelope(payload, codec="pickle", compression=compression)
    if compression is None:
        assert len(record) > len(payload)
    else:
        assert len(record) < len(payload) // 10


def test_no_meta_is_empty_mapping() -> None:
    header = decode_envelope(encode_envelope(b"p", codec="c")).header
    assert dict(header.meta) == {}


@given(
    payload=st.binary(max_size=2048),
    compression=st.sampled_from([None, "zlib", "zstd"]),
    meta=st.dictionaries(
        st.text(max_size=8),
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
        max_size=4,
    ),
    codec=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=64),
)
def test_round_trip_property(
    payload: bytes, compression: str | None, meta: dict[str, Any], codec: str
) -> None:
    envelope = decode_envelope(
        encode_envelope(payload, codec=codec, compression=compression, meta=meta)
    )
    assert envelope.payload == payload
    assert envelope.header.codec == codec
    assert envelope.header.meta.keys() == meta.keys()


def test_available_compressions() -> None:
    assert available_compressions() == (None, "zlib", "zstd")


# Read_header.


def test_read_header_from_prefix() -> None:
    payload = bytes(range(256)) * 1000
    record = encode_envelope(payload, codec="msgpack", compression="zlib", meta=META)
    full = decode_envelope(record).header
    header = read_header(record[:HEADER_PEEK])
    assert isinstance(header, Header)
    assert header == full
    assert header.record_size == len(record)


def test_read_header_from_exact_header() -> None:
    record = encode_envelope(b"payload", codec="msgpack", meta=META)
    size = read_header(record).header_size
    assert read_header(record[:size]) == read_header(record)


def test_read_header_needs_whole_header() -> None:
    record = encode_envelope(b"payload", codec="msgpack", meta=META)
    size = read_header(record).header_size
    for end in range(size):
        with pytest.raises(CorruptCheckpointError):
            read_header(record[:end])


def test_read_header_does_not_check_payload() -> None:
    record = bytearray(encode_envelope(b"payload", codec="msgpack"))
    record[-1] ^= 0xFF
    assert read_header(bytes(record)).codec == "msgpack"  # listing works...
    _only_corrupt(bytes(record))  # ... loading does not


# Damage.


def _small_record() -> bytes:
    return encode_envelope(b"\x93\x01\x02\x03", codec="msgpack", meta={"k": "v"})


def test_every_truncation_small() -> None:
    record = _small_record()
    for end in range(len(record)):
        _only_corrupt(record[:end])


@COMPRESSIONS
def test_every_single_byte_flip_small(compression: str | None) -> None:
    record = encode_envelope(
        b"\x93\x01\x02\x03" * 3, codec="msgpack", compression=compression, meta={"k": "v"}
    )
    for index in range(len(record)):
        for value in (record[index] ^ 0xFF, record[index] ^ 0x01, 0x00, 0xFF):
            if value == record[index]:
                continue
            damaged = bytearray(record)
            damaged[index] = value
            _only_corrupt(bytes(damaged))


@given(
    payload=st.binary(min_size=1, max_size=4096),
    compression=st.sampled_from([None, "zlib", "zstd"]),
    data=st.data(),
)
def test_single_byte_change_property(payload: bytes, compression: str | None, data: Any) -> None:
    record = encode_envelope(payload, codec="pickle", compression=compression, meta=META)
    index = data.draw(st.integers(0, len(record) - 1), label="index")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != record[index]), label="value")
    damaged = bytearray(record)
    damaged[index] = value
    _only_corrupt(bytes(damaged))


@given(
    payload=st.binary(max_size=4096),
    compression=st.sampled_from([None, "zlib", "zstd"]),
    data=st.data(),
)
def test_truncation_property(payload: bytes, compression: str | None, data: Any) -> None:
    record = encode_envelope(payload, codec="msgpack", compression=compression)
    end = data.draw(st.integers(0, len(record) - 1), label="end")
    _only_corrupt(record[:end])


@given(
    payload=st.binary(max_size=512),
    extra=st.binary(min_size=1, max_size=64),
    compression=st.sampled_from([None, "zlib", "zstd"]),
)
def test_appended_bytes(payload: bytes, extra: bytes, compression: str | None) -> None:
    record = encode_envelope(payload, codec="msgpack", compression=compression)
    _only_corrupt(record + extra)
    _only_corrupt(record + record)


@given(
    first=st.binary(max_size=512),
    second=st.binary(max_size=512),
    compression=st.sampled_from([None, "zlib", "zstd"]),
    data=st.data(),
)
def test_spliced_records(first: bytes, second: bytes, compression: str | None, data: Any) -> None:
    a = encode_envelope(first, codec="msgpack", compression=compression, meta={"n": 1})
    b = encode_envelope(second, codec="msgpack", compression=compression, meta={"n": 2})
    cut_a = data.draw(st.integers(1, len(a) - 1), label="cut_a")
    cut_b = data.draw(st.integers(0, len(b) - 1), label="cut_b")
    spliced = a[:cut_a] + b[cut_b:]
    if spliced in (a, b):
        return  # the splice happened to rebuild an intact record
    _only_corrupt(spliced)


@given(data=st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    _only_corrupt(data)
    with pytest.raises(CorruptCheckpointError):
        read_header(data)


@given(tail=st.binary(max_size=512))
def test_random_bytes_after_magic(tail: bytes) -> None:
    _only_corrupt(MAGIC + bytes([FORMAT_VERSION]) + tail)


def test_newer_format_version_says_newer() -> None:
    record = bytearray(_small_record())
    record[4] = FORMAT_VERSION + 1
    with pytest.raises(CorruptCheckpointError, match="newer"):
        decode_envelope(bytes(record))
    with pytest.raises(CorruptCheckpointError, match="newer"):
        read_header(bytes(record))


def test_unknown_old_version() -> None:
    record = bytearray(_small_record())
    record[4] = 0
    with pytest.raises(CorruptCheckpointError) as info:
        decode_envelope(bytes(record))
    assert "newer" not in str(info.value)


def test_bad_magic() -> None:
    record = _small_record()
    _only_corrupt(b"XXXX" + record[4:])


# Crafted records: valid checksums around invalid fields.


def test_crafted_unknown_flags() -> None:
    for flags in (3, 4, 0x80, 0xFF):
        _only_corrupt(_craft(b"x", flags=flags))


def test_crafted_garbage_zlib() -> None:
    _only_corrupt(_craft(b"not zlib at all", flags=1, raw_size=100))


def test_crafted_garbage_zstd() -> None:
    _only_corrupt(_craft(b"not zstd at all", flags=2, raw_size=100))


@pytest.mark.parametrize("claimed", [0, 9, 11, 2**40])
@pytest.mark.parametrize("flags", [1, 2])
def test_crafted_wrong_raw_size(claimed: int, flags: int) -> None:
    raw = b"0123456789"
    stored = zlib.compress(raw) if flags == 1 else zstandard.ZstdCompressor().compress(raw)
    _only_corrupt(_craft(stored, flags=flags, raw_size=claimed))


def test_crafted_uncompressed_size_mismatch() -> None:
    _only_corrupt(_craft(b"abc", raw_size=4))


def test_crafted_zlib_with_trailing_data() -> None:
    stored = zlib.compress(b"0123456789") + b"junk"
    _only_corrupt(_craft(stored, flags=1, raw_size=10))


def test_crafted_zstd_with_trailing_data() -> None:
    """A second frame (or junk) after the one frame the header accounts for is damage."""
    frame = zstandard.ZstdCompressor().compress(b"0123456789")
    _only_corrupt(_craft(frame + b"junk", flags=2, raw_size=10))
    _only_corrupt(_craft(frame + frame, flags=2, raw_size=10))


def test_crafted_decompression_bomb_is_bounded() -> None:
    bomb = zlib.compress(b"\x00" * (64 * 1024 * 1024))
    _only_corrupt(_craft(bomb, flags=1, raw_size=10))
    zbomb = zstandard.ZstdCompressor().compress(b"\x00" * (64 * 1024 * 1024))
    _only_corrupt(_craft(zbomb, flags=2, raw_size=10))


@pytest.mark.parametrize(
    "meta",
    [
        b"\xc1",  # never-used msgpack byte
        b"\x93\x01\x02\x03",  # an array, not a map
        b"\x81\x01",  # truncated map
        b"\x80\x80",  # extra data
        b"\x81\x91\x01\x01",  # unhashable key
        b"\xa3\xff\xfe\xfd",  # invalid UTF-8 string
    ],
)
def test_crafted_bad_meta(meta: bytes) -> None:
    _only_corrupt(_craft(b"x", meta=meta))


def test_crafted_non_ascii_codec_name() -> None:
    _only_corrupt(_craft(b"x", codec="m\u00e9".encode()))


def test_crafted_huge_lengths_allocate_nothing() -> None:
    head = _FIXED.pack(MAGIC, FORMAT_VERSION, 0, 7, 0, 2**63, 2**63)
    _only_corrupt(head + b"msgpack" + struct.pack(">II", zlib.crc32(head + b"msgpack"), 0))


# Validation on encode.


@pytest.mark.parametrize("compression", ["gzip", "ZLIB", "", "none", 1])
def test_bad_compression_is_encode_error(compression: Any) -> None:
    with pytest.raises(EncodeError, match="compression"):
        encode_envelope(b"x", codec="msgpack", compression=compression)


@pytest.mark.parametrize("codec", ["", "x" * 65])
def test_bad_codec_name_is_encode_error(codec: str) -> None:
    with pytest.raises(EncodeError, match="Codec name"):
        encode_envelope(b"x", codec=codec)


def test_non_ascii_codec_name_is_encode_error() -> None:
    """The docstring and message promise ASCII; a non-ASCII name must not be silently mangled."""
    with pytest.raises(EncodeError, match="ASCII"):
        encode_envelope(b"x", codec="msgp\u00e4ck")


@pytest.mark.parametrize(
    "meta",
    [
        {1: "int key"},
        {"list": [1, 2]},
        {"dict": {"a": 1}},
        {"bytes": b"x"},
        {"tuple": (1,)},
        {"obj": object()},
    ],
    ids=["int-key", "list", "dict", "bytes", "tuple", "object"],
)
def test_bad_meta_is_encode_error(meta: dict[Any, Any]) -> None:
    with pytest.raises(EncodeError, match="meta"):
        encode_envelope(b"x", codec="msgpack", meta=meta)


def test_oversized_meta_is_encode_error() -> None:
    with pytest.raises(EncodeError, match="meta"):
        encode_envelope(b"x", codec="msgpack", meta={"big": "x" * 70_000})


def test_meta_scalar_types_accepted() -> None:
    meta = {"s": "x", "i": -1, "f": 0.5, "b": True, "n": None}
    assert dict(decode_envelope(encode_envelope(b"", codec="c", meta=meta)).header.meta) == meta


def test_meta_is_plain_msgpack() -> None:
    """Other tools can list records: meta is an ordinary msgpack map."""
    record = encode_envelope(b"", codec="msgpack", meta={"a": 1})
    header = read_header(record)
    start = _FIXED.size + len(b"msgpack")
    raw_meta = record[start : header.header_size - 8]
    assert msgpack.unpackb(raw_meta) == {"a": 1}
