"""Codecs: bytes <-> a tree of values, looked up by name.

Built in: ``"msgpack"`` (the safe default) and ``"pickle"`` (restricted unpickler);
``"pickle-unrestricted"`` opts out of the restriction, loudly. Third-party codecs
register a factory ``make_codec(*, registry)`` in the entry-point group
``loopaware_persist.codecs``.

Decoding is bounded for both built-ins: time is linear in the payload, nesting is
limited (msgpack's ext depth; pickle's unpickler is iterative), and memory is at
most one Python object per payload byte: about 250 bytes per byte at worst (a
pickle ``EMPTY_SET`` opcode; about 75 for msgpack's one-byte empty containers;
``tests/reliability/test_decode_memory.py`` measures it), nothing sized by a number
the payload states: the pickle codec scans opcodes first (``codecs._pickle_scan``),
msgpack caps every length at the payload's size.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, NoReturn

from .._arguments import check_allow, check_instance
from .._errors import ConfigurationError
from .._hooks import default_registry
from .._registry import HookRegistry, check_registry
from ._base import Codec

__all__ = ("Codec", "available_codecs", "check_codec_name", "get_codec")

_BUILTIN: dict[str, tuple[str, str]] = {
    "msgpack": ("loopaware_persist.codecs.msgpack", "make_codec"),
    "pickle": ("loopaware_persist.codecs.pickle", "make_codec"),
    "pickle-unrestricted": ("loopaware_persist.codecs.pickle", "make_unrestricted_codec"),
}
_GROUP = "loopaware_persist.codecs"


def available_codecs() -> tuple[str, ...]:
    """:return: the names :func:`get_codec` accepts (built-ins and entry points)"""
    return tuple(sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group=_GROUP)}))


def check_codec_name(name: object) -> None:
    """Refuse, before anything is opened, a codec name that :func:`get_codec` would refuse.

    :param name: the codec name
    :raises ArgumentTypeError: if ``name`` is not a str
    :raises ConfigurationError: if no codec of that name is installed
    """
    check_instance(
        name,
        str,
        call="get_codec()",
        argument="name",
        wanted="a codec name (str)",
        hint="Use 'msgpack' (the default) or 'pickle'.",
    )
    if name not in available_codecs():
        _unknown(str(name))


def _unknown(name: str) -> NoReturn:
    known = ", ".join(available_codecs())
    msg = (
        f"Unknown codec {name!r}. Available here: {known}. A third-party codec must be "
        f"installed (pip install the package that registers it in {_GROUP!r})."
    )
    raise ConfigurationError(msg, option="codec", value=name)


def _factory(name: str) -> Callable[..., Any]:
    if name in _BUILTIN:
        module, attr = _BUILTIN[name]
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    for ep in entry_points(group=_GROUP):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    _unknown(name)


def get_codec(
    name: str = "msgpack",
    *,
    registry: HookRegistry | None = None,
    allow: Iterable[str | type] = (),
) -> Codec:
    """Build the codec called ``name``.

    :param name: ``"msgpack"``, ``"pickle"``, ``"pickle-unrestricted"`` or an entry-point name
    :param registry: hooks and allow-list (default: a copy of ``default_registry``)
    :param allow: more modules/classes a load may revive, added to a copy of the registry
    :raises ConfigurationError: (a ``ValueError``) if no codec has that name
    :raises ArgumentTypeError: if ``name`` is not a str or ``allow`` not modules/classes
    :return: the codec
    """
    check_codec_name(name)
    check_registry(registry, call="get_codec()")
    allow = check_allow(allow, call="get_codec()")
    if allow:
        registry = (registry if registry is not None else default_registry).copy()
        registry.allow(*allow)
    codec: Codec = _factory(name)(registry=registry)
    return codec
