"""What a codec is, and the guards every decoder shares.

The walk that names where an encode failed is in :mod:`._paths`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from .._errors import CorruptCheckpointError, DecodeError, LoopAwarePersistError
from .._registry import HookRegistry
from .._snapshot import FutureSnapshot

__all__ = ("Binding", "Codec", "check_payload", "decode_errors")


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


class Binding(Protocol):
    """What a load is told while a codec decodes its record, so that it need not walk it.

    A codec that can decode for a load (``decode_bound(data, binding)``) hands over each
    savable's record as it meets it, before anything after it in the record is decoded,
    and lets the load decide what a future snapshot becomes, where the snapshot sits.

    :ivar unsure: set by the codec when it cannot vouch that :meth:`savable` met every
        record plumpy may read as a savable (a hook outside the built-in ones built a
        value, or the record holds plumpy's key elsewhere): the load must walk the tree
    """

    unsure: bool

    def savable(self, state: dict[Any, Any]) -> None:
        """A map holding plumpy's ``!!meta`` key, its values decoded.

        :raises DecodeError: (a subclass) to stop the decode there
        """

    def future(self, snapshot: FutureSnapshot) -> Any:
        """:return: what ``snapshot`` stands for in the decoded tree"""

    def reset(self) -> None:
        """Forget what this decode told: the codec decodes the record again from its start."""


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
