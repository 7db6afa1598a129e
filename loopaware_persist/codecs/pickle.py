"""The ``"pickle"`` codec: fast and general, loaded through a restricted unpickler.

Encoding is ``pickle`` protocol 5 with one addition: every ``asyncio.Future``
and ``concurrent.futures.Future`` is written as the :class:`FutureSnapshot` of
its state, so bundles that hold futures can be saved at all.

Decoding goes through :class:`RestrictedUnpickler`, whose ``find_class`` hands
out only what the registry's allow-list permits for unpickling (value types,
exceptions, enums and what the user allowed) — never a function such as
``os.system`` or ``builtins.exec``. A payload naming anything else raises
:class:`UnsafeCheckpointError` before any of it runs.

``"pickle-unrestricted"`` loads with the plain unpickler. It runs whatever the
checkpoint says: use it only for checkpoints you wrote yourself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import pickle
import warnings
from typing import Any

from .._errors import (
    CorruptCheckpointError,
    DecodeError,
    LoopAwarePersistError,
    UnsafeCheckpointError,
)
from .._hooks import default_registry
from .._registry import HookRegistry
from .._snapshot import FutureSnapshot, snapshot_future
from ._base import encode_error

__all__ = (
    "PickleCodec",
    "RestrictedUnpickler",
    "UnsafeLoadWarning",
    "configure_registry",
    "make_codec",
    "make_unrestricted_codec",
)

PROTOCOL = 5


class UnsafeLoadWarning(UserWarning):
    """Emitted when a codec is created that runs whatever a checkpoint says on load."""


class _Pickler(pickle.Pickler):
    # Called only for objects pickle has no fast path for, so plain data costs nothing.
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (asyncio.Future, concurrent.futures.Future)):
            snap = snapshot_future(obj)
            return FutureSnapshot, (snap.status, snap.result, snap.exception, snap.cancel_message)
        return NotImplemented


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that finds only what the registry's allow-list permits.

    :param file: the file to read from
    :param registry: hooks and allow-list
    """

    def __init__(self, file: io.BytesIO, *, registry: HookRegistry) -> None:
        super().__init__(file)
        self._registry = registry

    def find_class(self, module: str, name: str) -> Any:
        """:raises UnsafeCheckpointError: for anything not allowed; nothing is imported then"""
        return self._registry.resolve(f"{module}:{name}", "pickle")


class PickleCodec:
    """The pickle codec.

    :param registry: the allow-list for loading; ``default_registry`` if not given
    :param restricted: ``False`` loads with the plain unpickler (runs arbitrary code)
    """

    def __init__(self, *, registry: HookRegistry | None = None, restricted: bool = True) -> None:
        self.registry = registry if registry is not None else default_registry
        self.restricted = restricted
        # Both write the same bytes; restriction is a property of loading, so records say "pickle".
        self.name = "pickle"
        if not restricted:
            warnings.warn(
                "codec 'pickle-unrestricted' runs whatever a checkpoint contains when it is "
                "loaded; use it only for checkpoints you wrote yourself.",
                UnsafeLoadWarning,
                stacklevel=3,
            )

    def encode(self, value: Any) -> bytes:
        """:param value: the tree to encode
        :raises EncodeError: naming the path of the first value it cannot store
        :return: the pickle bytes
        """
        buffer = io.BytesIO()
        try:
            _Pickler(buffer, protocol=PROTOCOL).dump(value)
        except (
            pickle.PicklingError,
            TypeError,
            AttributeError,
            RecursionError,
            LoopAwarePersistError,
        ) as error:
            raise encode_error(value, self.registry, error) from error
        return buffer.getvalue()

    def decode(self, data: bytes) -> Any:
        """:param data: bytes written by :meth:`encode`
        :raises DecodeError: :class:`UnsafeCheckpointError` for anything outside the allow-list,
            :class:`CorruptCheckpointError` for damaged data; never another exception type
        :return: the tree
        """
        stream = io.BytesIO(data)
        try:
            if not self.restricted:
                return pickle.Unpickler(stream).load()
            return RestrictedUnpickler(stream, registry=self.registry).load()
        except DecodeError:
            raise
        except LoopAwarePersistError as error:
            msg = f"Cannot decode checkpoint: {error}"
            raise DecodeError(msg) from error
        except Exception as error:
            msg = f"Malformed pickle payload ({type(error).__name__}: {error})."
            raise CorruptCheckpointError(msg) from error


def configure_registry(registry: HookRegistry) -> None:
    """pickle needs no hooks: its allow-list is the registry's.

    :param registry: the registry to configure
    """
    del registry


def make_codec(*, registry: HookRegistry | None = None) -> PickleCodec:
    """:param registry: the allow-list for loading (default: ``default_registry``)
    :return: a pickle codec that loads through :class:`RestrictedUnpickler`
    """
    return PickleCodec(registry=registry)


def make_unrestricted_codec(*, registry: HookRegistry | None = None) -> PickleCodec:
    """:param registry: unused for loading; kept for a uniform factory signature
    :return: a pickle codec that loads with the plain, unsafe unpickler (warns)
    """
    return PickleCodec(registry=registry, restricted=False)


_ = UnsafeCheckpointError
