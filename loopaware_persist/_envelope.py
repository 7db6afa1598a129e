"""The envelope every stored record travels in: versioned, self-describing, checksummed.

Layout (integers big-endian)::

    offset  size  field
    0       4     magic b"LAPC"
    4       1     format version (2; 1 is read too)
    5       1     flags: bits 0-1 compression (0 none, 1 zlib, 2 zstd); others must be 0
    6       1     codec name length  C (1..64)
    7       2     meta length        M (0..65535)
    9       8     stored payload length  P
    17      8     raw (uncompressed) payload length  R
    25      C     codec name (ASCII)
    25+C    M     meta: a msgpack map of str -> str | int | float | None
    ..      4     CRC-32 of every header byte before it
    ..      4     CRC-32 of the stored payload
    ..      P     payload

Format versions: 2 is 1's layout whose msgpack payloads may hold a savable's record as
an ext value of its own (:data:`~loopaware_persist.codecs.msgpack.RECORD_CODE`), which
a reader of version 1 would take for damage; a reader of 2 reads both.

Decoding checks, in order: length of the fixed part, magic, version, the header
CRC, that the record is *exactly* header + P bytes long (so truncations and
splices fail), the payload CRC, that R is within the expansion bound, and only
then decompresses, with the output bounded by R. Every failure is a
:class:`CorruptCheckpointError`.

Memory bound: the CRCs prove nothing against whoever writes the record (they can
recompute them), so R is not trusted either. A compressed payload may expand to
at most ``MAX_EXPANSION * P + EXPANSION_SLACK`` bytes (64 times plus 64 KiB);
a header claiming more is refused before anything is decompressed, a zstd frame
must state its content size and it must be R, and zlib output stops at R + 1
bytes. So decoding a record of B bytes allocates at most B (the stored bytes) +
64 B + 64 KiB (the payload), and a codec then decodes a payload of bounded size.
:func:`encode_envelope` keeps every record it writes within the bound: a payload
that compresses better than 64 to 1 is stored uncompressed. Records written
before the bound that exceed it decode with ``max_expansion=None``, which a
persister opened with ``trusted=True`` passes.

The meta block lets listings show a record's process class and state without
touching the payload.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any, Final

import attrs
import msgpack

from ._errors import CorruptCheckpointError, EncodeError

__all__ = (
    "EXPANSION_SLACK",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_EXPANSION",
    "OLDEST_VERSION",
    "Envelope",
    "Header",
    "available_compressions",
    "decode_envelope",
    "encode_envelope",
    "max_raw_size",
    "read_header",
    "with_meta",
)

MAGIC: Final = b"LAPC"
FORMAT_VERSION: Final = 2
#: The oldest format version this one reads.
OLDEST_VERSION: Final = 1
_FIXED = struct.Struct(">4sBBBHQQ")
_CRC = struct.Struct(">II")
#: Bytes that always suffice to read a header whose meta is under 4 KiB.
HEADER_PEEK: Final = 4096
_COMPRESSION_CODES: Final = {None: 0, "zlib": 1, "zstd": 2}
_COMPRESSION_NAMES: Final = {code: name for name, code in _COMPRESSION_CODES.items()}
_MAX_META: Final = 0xFFFF
#: How many times its stored size a compressed payload may expand to, on decode...
MAX_EXPANSION: Final = 64
#: ...plus this many bytes, so that small records of repetitive data keep compressing.
EXPANSION_SLACK: Final = 64 * 1024


def max_raw_size(payload_size: int, max_expansion: int = MAX_EXPANSION) -> int:
    """:param payload_size: bytes of a stored, compressed payload
    :param max_expansion: the expansion factor allowed
    :return: the most bytes it may decompress to
    """
    return max_expansion * payload_size + EXPANSION_SLACK


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as error:
        msg = (
            "Compression 'zstd' needs the zstandard package: pip install 'loopaware-persist[zstd]'."
        )
        raise ModuleNotFoundError(msg) from error
    return zstandard


def available_compressions() -> tuple[str | None, ...]:
    """:return: the compressions usable here (``None`` meaning none)"""
    try:
        _zstd()
    except ModuleNotFoundError:
        return (None, "zlib")
    return (None, "zlib", "zstd")


@attrs.frozen(kw_only=True)
class Header:
    """What a record says about itself, readable without its payload.

    :param version: the format version that wrote it
    :param codec: the codec name of the payload
    :param compression: ``None``, ``"zlib"`` or ``"zstd"``
    :param meta: small listing data (process class, state, saved-at...)
    :param header_size: bytes before the payload
    :param payload_size: bytes of the stored (possibly compressed) payload
    :param raw_size: bytes of the payload once decompressed
    :param payload_crc: CRC-32 of the stored payload
    """

    version: int
    codec: str
    compression: str | None
    meta: Mapping[str, Any]
    header_size: int
    payload_size: int
    raw_size: int
    payload_crc: int

    @property
    def record_size(self) -> int:
        """:return: the exact size in bytes of the whole record"""
        return self.header_size + self.payload_size


@attrs.frozen(kw_only=True)
class Envelope:
    """A decoded record: its header and its (decompressed, verified) payload.

    :param header: the record's header
    :param payload: the codec bytes
    """

    header: Header
    payload: bytes


def _corrupt(why: str) -> CorruptCheckpointError:
    msg = (
        f"Corrupt checkpoint record: {why}. The stored bytes are damaged (or not a "
        "loopaware_persist record); restore it from a backup or delete it."
    )
    return CorruptCheckpointError(msg)


_META_TYPES: Final = frozenset({str, int, float, bool, type(None)})


def _check_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in meta.items():
        if type(value) not in _META_TYPES or not isinstance(key, str):
            msg = f"Envelope meta must map str to str/int/float/bool/None; got {key!r}: {value!r}."
            raise EncodeError(msg)
    return meta if type(meta) is dict else dict(meta)


#: Codec names checked already, as the bytes a header stores (a persister writes one).
_CODEC_BYTES: dict[str, bytes] = {}


def _codec_bytes(codec: str) -> bytes:
    known = _CODEC_BYTES.get(codec) if type(codec) is str else None
    if known is not None:
        return known
    try:
        codec_bytes = codec.encode("ascii")
    except UnicodeEncodeError:
        codec_bytes = b""
    if not 0 < len(codec_bytes) <= 64:
        msg = f"Codec name {codec!r} must be 1 to 64 ASCII characters."
        raise EncodeError(msg)
    if type(codec) is str and len(_CODEC_BYTES) < 64:
        _CODEC_BYTES[codec] = codec_bytes
    return codec_bytes


def encode_envelope(
    payload: bytes,
    *,
    codec: str,
    compression: str | None = None,
    meta: Mapping[str, Any] | None = None,
    level: int | None = None,
) -> bytes:
    """Wrap a codec payload into a record.

    :param payload: the codec's bytes
    :param codec: the codec's name, stored so the record says how to read it
    :param compression: ``None``, ``"zlib"`` or ``"zstd"``
    :param meta: small listing data; str keys, scalar values
    :param level: compression level (default: zlib 1, zstd 3: checkpoints favour speed)
    :raises EncodeError: for an unknown compression, a bad codec name or oversized meta
    :raises ModuleNotFoundError: if ``zstd`` is asked for without the ``zstd`` extra
    :return: the record bytes
    """
    if compression not in _COMPRESSION_CODES:
        msg = f"Unknown compression {compression!r}; use one of None, 'zlib', 'zstd'."
        raise EncodeError(msg)
    codec_bytes = _codec_bytes(codec)
    meta_bytes = msgpack.packb(_check_meta(meta), use_bin_type=True) if meta else b""
    if len(meta_bytes) > _MAX_META:
        msg = f"Envelope meta is {len(meta_bytes)} bytes; at most {_MAX_META} fit."
        raise EncodeError(msg)
    if compression == "zlib":
        stored = zlib.compress(payload, 1 if level is None else level)
    elif compression == "zstd":
        stored = _zstd().ZstdCompressor(level=3 if level is None else level).compress(payload)
    else:
        stored = payload
    if compression is not None and len(payload) > max_raw_size(len(stored)):
        # Beyond what a load accepts from a record of this size (see the module
        # docstring): stored as is, so that everything written here reads back.
        compression, stored = None, payload
    head = (
        _FIXED.pack(
            MAGIC,
            FORMAT_VERSION,
            _COMPRESSION_CODES[compression],
            len(codec_bytes),
            len(meta_bytes),
            len(stored),
            len(payload),
        )
        + codec_bytes
        + meta_bytes
    )
    return b"".join((head, _CRC.pack(zlib.crc32(head), zlib.crc32(stored)), stored))


def read_header(data: bytes) -> Header:
    """Parse and verify a record's header from its first bytes.

    :param data: the record, or at least its first :data:`HEADER_PEEK` bytes
        (more if its meta is larger; the error says so)
    :raises CorruptCheckpointError: if the header is damaged or from a newer format
    :return: the header
    """
    view = memoryview(data)
    if len(view) < _FIXED.size:
        raise _corrupt(f"{len(view)} bytes is shorter than any record header ({_FIXED.size})")
    magic, version, flags, codec_len, meta_len, payload_len, raw_len = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise _corrupt(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if not OLDEST_VERSION <= version <= FORMAT_VERSION:
        if version > FORMAT_VERSION:
            msg = (
                f"Checkpoint record has format version {version}, written by a newer "
                f"loopaware_persist; this one reads version {FORMAT_VERSION}. Upgrade "
                "loopaware_persist to load it (or the header byte is damaged)."
            )
            raise CorruptCheckpointError(msg)
        raise _corrupt(f"unknown format version {version}")
    header_size = _FIXED.size + codec_len + meta_len + _CRC.size
    if len(view) < header_size:
        raise _corrupt(f"header needs {header_size} bytes, only {len(view)} given")
    head_end = _FIXED.size + codec_len + meta_len
    header_crc, payload_crc = _CRC.unpack_from(view, head_end)
    if zlib.crc32(view[:head_end]) != header_crc:
        raise _corrupt("header checksum mismatch")
    if flags & ~0b11 or flags not in _COMPRESSION_NAMES:
        raise _corrupt(f"unknown flags {flags:#04x}")
    try:
        codec = bytes(view[_FIXED.size : _FIXED.size + codec_len]).decode("ascii")
        meta: Any = (
            msgpack.unpackb(view[_FIXED.size + codec_len : head_end], raw=False) if meta_len else {}
        )
    except (ValueError, msgpack.UnpackException) as error:
        raise _corrupt(f"unreadable header fields ({error})") from error
    if not isinstance(meta, dict):
        raise _corrupt("meta is not a map")
    return Header(
        version=version,
        codec=codec,
        compression=_COMPRESSION_NAMES[flags],
        meta=meta,
        header_size=header_size,
        payload_size=payload_len,
        raw_size=raw_len,
        payload_crc=payload_crc,
    )


def with_meta(data: bytes, meta: Mapping[str, Any]) -> bytes:
    """The same record with its meta replaced by ``meta``; the payload is not touched
    (neither decompressed nor re-encoded, its checksum kept). Replacing a meta by the one
    it replaced gives the original bytes back.

    :param data: a record, or a prefix of one that holds its whole header (the bytes
        after the header are kept as they are)
    :param meta: the new meta; str keys, scalar values
    :raises CorruptCheckpointError: if ``data`` does not start with an undamaged header
    :raises EncodeError: if ``meta`` is invalid or too large
    :return: the new record (or prefix)
    """
    header = read_header(data)
    codec_bytes = header.codec.encode("ascii")
    meta_bytes = msgpack.packb(_check_meta(meta), use_bin_type=True) if meta else b""
    if len(meta_bytes) > _MAX_META:
        msg = f"Envelope meta is {len(meta_bytes)} bytes; at most {_MAX_META} fit."
        raise EncodeError(msg)
    head = (
        _FIXED.pack(
            MAGIC,
            header.version,  # the payload is the same, so is what reads it
            _COMPRESSION_CODES[header.compression],
            len(codec_bytes),
            len(meta_bytes),
            header.payload_size,
            header.raw_size,
        )
        + codec_bytes
        + meta_bytes
    )
    rest = memoryview(data)[header.header_size :]
    return b"".join((head, _CRC.pack(zlib.crc32(head), header.payload_crc), rest))


def _decompress(header: Header, stored: memoryview, max_expansion: int | None) -> bytes:
    limit = header.raw_size
    if max_expansion is not None and limit > max_raw_size(header.payload_size, max_expansion):
        msg = (
            f"Corrupt checkpoint record: its header says the {header.payload_size}-byte "
            f"{header.compression} payload expands to {limit} bytes, more than the "
            f"{max_expansion}x + {EXPANSION_SLACK} bytes a load accepts (a decompression "
            "bomb, or a record of very repetitive data written before that bound). If you "
            "wrote it yourself, load it with trusted=True; otherwise delete it."
        )
        raise CorruptCheckpointError(msg)
    try:
        if header.compression == "zlib":
            inflater = zlib.decompressobj()
            raw = inflater.decompress(stored, limit + 1)
            if not inflater.eof or inflater.unused_data:
                raise _corrupt("zlib stream does not end where the payload does")
        else:
            zstd = _zstd()
            data = bytes(stored)
            # zstandard allocates a frame's stated content size whatever max_output_size
            # says, so that size must be the header's (every frame written here states it).
            content = zstd.frame_content_size(data)
            if content != limit:
                raise _corrupt(
                    f"zstd frame states {'no' if content < 0 else content} content size, "
                    f"the header says {limit}"
                )
            # Bounded output, and no bytes may follow the frame (zlib checks the same above).
            raw = zstd.ZstdDecompressor().decompress(
                data, max_output_size=limit + 1, allow_extra_data=False
            )
    except CorruptCheckpointError:
        raise
    except Exception as error:
        raise _corrupt(f"payload does not decompress ({error})") from error
    if len(raw) != limit:
        raise _corrupt(f"payload decompresses to {len(raw)} bytes, header says {limit}")
    return raw


def decode_envelope(data: bytes, *, max_expansion: int | None = MAX_EXPANSION) -> Envelope:
    """Verify a whole record and return its header and payload.

    :param data: the record bytes
    :param max_expansion: how many times its stored size (plus :data:`EXPANSION_SLACK`)
        a compressed payload may expand to; ``None`` trusts the header's raw size
    :raises CorruptCheckpointError: for any damage, truncation, extension or splice,
        and for a payload claiming to expand beyond the bound
    :return: the envelope, payload decompressed
    """
    header = read_header(data)
    if len(data) != header.record_size:
        raise _corrupt(
            f"record is {len(data)} bytes, its header says {header.record_size} "
            "(truncated, extended or spliced)"
        )
    stored = memoryview(data)[header.header_size :]
    if zlib.crc32(stored) != header.payload_crc:
        raise _corrupt("payload checksum mismatch")
    if header.compression is None:
        if header.raw_size != header.payload_size:
            raise _corrupt("uncompressed payload size disagrees with the header")
        return Envelope(header=header, payload=bytes(stored))
    return Envelope(header=header, payload=_decompress(header, stored, max_expansion))
