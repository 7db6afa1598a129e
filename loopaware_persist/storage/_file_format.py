"""The file storage's on-disk layout: record file names and the record header.

Pure functions of bytes and keys, no I/O: :mod:`loopaware_persist.storage.file`
reads and writes the files; see its docstring for the format.
"""

from __future__ import annotations

import hashlib
import re
import struct
import urllib.parse
import zlib
from typing import NamedTuple

from loopaware_persist._errors import StorageError
from loopaware_persist.storage._base import CheckpointKey, KeyToken, pid_from_token

SUFFIX = ".ckpt"
TEMP_PREFIX = ".tmp-"
VERSIONS_LOCK = ".loopaware-versions.lock"
WRITERS_LOCK = ".loopaware-writers.lock"

_MAGIC = b"LAPCKPT1"
# magic, header length, version, saved_at, data size, token length, tag flag
_FIXED = struct.Struct(">8sIQdQIB")
_CRC = struct.Struct(">I")
# One pread of this size covers the header of any key shorter than ~450
# bytes, i.e. all but pathological ones, which take a second pread.
HEADER_GUESS = 512

MAX_NAME = 200  # well under NAME_MAX (255 bytes) on every POSIX file system
_HASHED_KEEP = 130
_UNSAFE = re.compile(r"[^a-z0-9_:\-]+")
# A name checkpoint_filename writes for a key whose token and tag need no
# escaping (every UUID and int pid, most str pids and tags): the groups are the
# token and the tag (None when absent), verbatim.
PLAIN_NAME = re.compile(
    r"(u:[0-9a-f]{32}|i:(?:-?[1-9][0-9]*|0)|s:[a-z0-9_:\-]*)(?:\.t([a-z0-9_:\-]*))?\.ckpt",
    re.ASCII,
)
# Any other unhashed name it writes: the same with %xx escapes.
_ESCAPED_NAME = re.compile(
    r"((?:[a-z0-9_:\-]|%[0-9a-f]{2})+)(?:\.t((?:[a-z0-9_:\-]|%[0-9a-f]{2})*))?\.ckpt",
    re.ASCII,
)


def _escape_run(match: re.Match[str]) -> str:
    return "".join(f"%{b:02x}" for b in match.group().encode("utf-8"))


def escape(text: str) -> str:
    return _UNSAFE.sub(_escape_run, text)


def checkpoint_filename(key: CheckpointKey) -> str:
    """The file name a key is stored under, inside the storage directory.

    Injective over keys, at most 205 ASCII characters, free of ``/``, NUL and
    upper-case letters, never ``.``/``..`` and never starting with ``.``.

    :param key: the key
    :return: the bare file name
    """
    stem = escape(key.token)
    if key.tag is not None:
        stem = f"{stem}.t{escape(key.tag)}"
    if len(stem) + len(SUFFIX) > MAX_NAME:
        digest = hashlib.sha256(stem.encode("ascii")).hexdigest()
        stem = f"{stem[:_HASHED_KEEP]}~{digest}"
    return stem + SUFFIX


def _unescape(text: str) -> str | None:
    """Reverse :func:`escape`, or ``None`` if ``text`` is not an escaping it writes."""
    try:
        plain = urllib.parse.unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        return None
    # One escaping per text: "%61" (for "a") or a needless escape is not ours.
    return plain if escape(plain) == text else None


def key_token_from_name(name: str) -> KeyToken | None:
    """The key a file name stands for, read from the name alone.

    :param name: a directory entry
    :return: ``(pid token, tag)`` if ``checkpoint_filename`` writes exactly this
        name for that key; ``None`` for any other name (hashed, foreign,
        non-canonical), whose header alone can tell
    """
    if len(name) > MAX_NAME:
        return None
    match = PLAIN_NAME.fullmatch(name)
    if match is not None:
        token, tag = match.groups()
        return token, tag
    match = _ESCAPED_NAME.fullmatch(name)
    if match is None:
        return None
    escaped_token, escaped_tag = match.groups()
    token = _unescape(escaped_token)
    if token is None:
        return None
    try:
        pid_from_token(token)
    except StorageError:
        return None
    if escaped_tag is None:
        return token, None
    tag = _unescape(escaped_tag)
    return None if tag is None else (token, tag)


def may_hold_pid(name: str, escaped_pid: str) -> bool:
    # A cheap filter on names before reading headers; the header decides.
    stem = name[: -len(SUFFIX)]
    cut = stem.find("~")
    if cut < 0:
        return stem.partition(".")[0] == escaped_pid
    kept = stem[:cut]
    # A hashed name keeps a prefix of "<pid>.t<tag>" or of "<pid>".
    return kept.startswith(escaped_pid + ".") or escaped_pid.startswith(kept.partition(".")[0])


class RecordHeader(NamedTuple):
    # A named tuple, not an attrs class: list() builds one per record.
    key: CheckpointKey
    version: int
    saved_at: float
    size: int
    length: int


def encode_header(key: CheckpointKey, *, version: int, saved_at: float, size: int) -> bytes:
    token = key.token.encode("utf-8")
    tag = b"" if key.tag is None else key.tag.encode("utf-8")
    length = _FIXED.size + len(token) + len(tag) + _CRC.size
    head = _FIXED.pack(
        _MAGIC, length, version, saved_at, size, len(token), 0 if key.tag is None else 1
    )
    body = head + token + tag
    return body + _CRC.pack(zlib.crc32(body))


def header_size(key: CheckpointKey) -> int:
    token = key.token.encode("utf-8")
    tag = b"" if key.tag is None else key.tag.encode("utf-8")
    return _FIXED.size + len(token) + len(tag) + _CRC.size


class _DamagedHeader(Exception):
    """A file's header is not a valid loopaware header; the reason is the message."""


def decode_header(buf: bytes) -> RecordHeader | int:
    """Parse a header from the start of ``buf``.

    :return: the header, or how many bytes are needed if ``buf`` is too short
    :raises _DamagedHeader: if the bytes are not a header
    """
    if len(buf) < _FIXED.size:
        if buf and not _MAGIC.startswith(buf[: len(_MAGIC)]):
            raise _DamagedHeader("no loopaware magic")
        return _FIXED.size
    magic, length, version, saved_at, size, token_len, tag_flag = _FIXED.unpack_from(buf)
    if magic != _MAGIC:
        raise _DamagedHeader("no loopaware magic")
    if length < _FIXED.size + token_len + _CRC.size or tag_flag not in (0, 1):
        raise _DamagedHeader("inconsistent header fields")
    if len(buf) < length:
        return int(length)
    (crc,) = _CRC.unpack_from(buf, length - _CRC.size)
    if zlib.crc32(buf[: length - _CRC.size]) != crc:
        raise _DamagedHeader("header checksum mismatch")
    start = _FIXED.size
    try:
        token = buf[start : start + token_len].decode("utf-8")
        tag_bytes = buf[start + token_len : length - _CRC.size]
        tag = tag_bytes.decode("utf-8") if tag_flag else None
        if tag is None and tag_bytes:
            raise _DamagedHeader("untagged header with tag bytes")
        key = CheckpointKey._from_storage(token, tag)
    except (UnicodeDecodeError, StorageError) as exc:
        raise _DamagedHeader(f"undecodable key: {exc}") from None
    return RecordHeader(key, version, saved_at, size, length)
