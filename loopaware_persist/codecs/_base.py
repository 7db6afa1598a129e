"""What a codec is, and the guards every decoder shares.

The walk that names where an encode failed is in :mod:`._paths`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from .._errors import CorruptCheckpointError, DecodeError, LoopAwarePersistError
from .._registry import HookRegistry

__all__ = ("Codec", "check_payload", "decode_errors")


@runtime_checkable
class Codec(Protocol):
    """Bytes <-> a tree of values (a plumpy ``Bundle``, usually).

    :ivar name: the name stored in each record's envelope
    :ivar registry: the hooks and allow-list it encodes and decodes with
    """

    name: str
    registry: HookRegistry

    def encode(self, value: Any) -> bytes:
        """:raises EncodeError: naming the path of the first value it cannot store"""

    def decode(self, data: bytes) -> Any:
        """:raises DecodeError: (a subclass) for anything it cannot or may not decode"""


def check_payload(data: object, payload: str) -> None:
    """Refuse a payload that is not bytes before a decoder meets it.

    :param data: what ``decode`` was given
    :param payload: the payload format, for the message
    :raises DecodeError: if ``data`` is not ``bytes``, ``bytearray`` or ``memoryview``
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        msg = (
            f"A {payload} payload must be bytes, not {type(data).__name__} "
            f"({data!r:.60}); pass the record's payload bytes as read from the store."
        )
        raise DecodeError(msg)


@contextlib.contextmanager
def decode_errors(payload: str) -> Iterator[None]:
    """Turn whatever a decoder raises into the one typed error a caller may expect.

    :param payload: the payload format, for the message (``"msgpack"``, ``"pickle"``)
    :raises DecodeError: a :class:`CorruptCheckpointError` for anything unexpected
    """
    try:
        yield
    except DecodeError:
        raise
    except LoopAwarePersistError as error:
        msg = f"Cannot decode checkpoint: {error}"
        raise DecodeError(msg) from error
    except Exception as error:
        msg = f"Malformed {payload} payload ({type(error).__name__}: {error})."
        raise CorruptCheckpointError(msg) from error
