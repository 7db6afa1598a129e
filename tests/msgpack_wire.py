"""Values as the msgpack codec writes them, built by hand: for tests that craft records."""

from __future__ import annotations

from typing import Any

import msgpack

from loopaware_persist.codecs.msgpack import WELL_KNOWN_CODES


def pack(value: Any) -> bytes:
    """:return: ``value`` packed as msgpack, ``bytes`` as bin"""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def ext(tag: str, *fields: Any) -> msgpack.ExtType:
    """A value as the codec writes it: an ext whose data is the packed fields.

    :param tag: the value's tag: a well-known one has its own ext code, any other is
        written under code 2 with the tag first
    :return: the ext
    """
    code = WELL_KNOWN_CODES.get(tag)
    if code is None:
        return msgpack.ExtType(2, pack([tag, *fields]))
    return msgpack.ExtType(code, pack(list(fields)))
