"""The ``"msgpack"`` codec: safe, compact, the default.

Everything msgpack writes natively (None, bool, 64-bit ints, floats, str, bytes,
lists, dicts with any native keys, in order) goes through the C packer without a
Python call. Every other value is written in the same pass as a list whose head
is an ext-type *marker* carrying the registry tag, followed by the hook's fields::

    (1, 2)            ->  [Ext(1, b"tuple"), 1, 2]
    UUID(...)         ->  [Ext(1, b"uuid"), b"..."]

Decoding turns each marked list back through the registry's decode hook, which
is the only place a class can be revived, and only if the allow-list says so.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .._errors import CorruptCheckpointError, LoopAwarePersistError
from .._hooks import default_registry
from .._registry import HookRegistry
from ._base import decode_errors, encode_error

__all__ = ("MsgpackCodec", "configure_registry", "make_codec")

_MARKER = 1
# Nesting deeper than this is refused on both sides (msgpack's own default is 512).
_MAX_DEPTH = 500


class _Marker:
    __slots__ = ("tag",)

    def __init__(self, tag: str) -> None:
        self.tag = tag


class MsgpackCodec:
    """The msgpack codec.

    :param registry: the hooks and allow-list; ``default_registry`` if not given
    """

    name = "msgpack"

    def __init__(self, *, registry: HookRegistry | None = None) -> None:
        self.registry = registry if registry is not None else default_registry
        self._ext: dict[str, msgpack.ExtType] = {}
        self._markers: dict[bytes, _Marker] = {}

    def _default(self, value: Any) -> list[Any]:
        tag, fields = self.registry.encode_value(value)
        ext = self._ext.get(tag)
        if ext is None:
            ext = self._ext[tag] = msgpack.ExtType(_MARKER, tag.encode())
        return [ext, *fields]

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` in one pass.

        :param value: the tree to encode
        :raises EncodeError: naming the path of the first value it cannot store
        :return: the msgpack bytes
        """
        try:
            return msgpack.packb(  # type: ignore[no-any-return]
                value, default=self._default, strict_types=True, use_bin_type=True, datetime=False
            )
        except (
            TypeError,
            ValueError,
            OverflowError,
            UnicodeEncodeError,
            LoopAwarePersistError,
        ) as error:
            raise encode_error(value, self.registry, error) from error

    def _ext_hook(self, code: int, data: bytes) -> _Marker:
        if code != _MARKER:
            msg = (
                f"Unknown msgpack ext type {code} in checkpoint; this codec only writes {_MARKER}."
            )
            raise CorruptCheckpointError(msg)
        marker = self._markers.get(data)
        if marker is None:
            try:
                tag = data.decode()
            except UnicodeDecodeError as error:
                msg = f"Type tag {data[:40]!r} in checkpoint is not UTF-8."
                raise CorruptCheckpointError(msg) from error
            marker = self._markers[data] = _Marker(tag)
        return marker

    def _list_hook(self, items: list[Any]) -> Any:
        if items and type(items[0]) is _Marker:
            fields = items[1:]
            try:
                return self.registry.decode_value(items[0].tag, fields)
            except LoopAwarePersistError:
                raise
            except Exception as error:
                msg = (
                    f"Malformed {items[0].tag!r} value in checkpoint ({type(error).__name__}: "
                    f"{error}). The record was damaged or crafted."
                )
                raise CorruptCheckpointError(msg) from error
        return items

    def decode(self, data: bytes) -> Any:
        """Decode bytes written by :meth:`encode`.

        :param data: msgpack bytes
        :raises DecodeError: a :class:`CorruptCheckpointError`, :class:`UnknownTagError` or
            :class:`UnsafeCheckpointError`; never any other exception type
        :return: the tree
        """
        with decode_errors("msgpack"):
            return msgpack.unpackb(
                data,
                ext_hook=self._ext_hook,
                list_hook=self._list_hook,
                strict_map_key=False,
                raw=False,
            )


def configure_registry(registry: HookRegistry) -> None:
    """msgpack needs no hooks beyond the built-in ones; kept for the one-module-per-format shape.

    :param registry: the registry to configure
    """
    del registry


def make_codec(*, registry: HookRegistry | None = None) -> MsgpackCodec:
    """:param registry: hooks and allow-list to use (default: ``default_registry``)
    :return: a msgpack codec
    """
    return MsgpackCodec(registry=registry)
