"""Where an encode failed: the walk that names the path of a value no codec can store.

Codecs encode at C speed and, when they fail, call :func:`encode_error` with the
whole tree: only then is it walked (through lists, dicts and what hooks encode) for
the first value that cannot be stored, a reference cycle, the second meeting of a
value shared too often (:class:`SharedValueError`) or a value nested too deep
(:class:`NestingError`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import plumpy

from .._errors import EncodeError, LoopAwarePersistError
from .._registry import HookRegistry

__all__ = (
    "NestingError",
    "SharedValueError",
    "UnstorableValueError",
    "encode_error",
    "path_nested_deeper",
)

# Types every codec writes natively, whatever the registry says: these exact types (a
# subclass, an IntEnum member say, goes through a hook, which may refuse it).
_NATIVE = frozenset({type(None), bool, int, float, str, bytes})


def _render(path: str, key: Any, attribute_style: bool) -> str:
    if attribute_style and isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _children(value: Any, registry: HookRegistry) -> Iterator[tuple[Any, Any, bool]]:
    """Yield ``(key, child, attribute_style)`` for each value inside ``value``."""
    if type(value) is dict or isinstance(value, plumpy.Bundle):
        bundle = isinstance(value, plumpy.Bundle)
        for key, child in value.items():
            if type(key) not in _NATIVE:
                yield "<key>", key, False
            yield key, child, bundle
    elif type(value) is list:
        yield from ((i, child, False) for i, child in enumerate(value))
    else:
        _tag, fields = registry.encode_value(value)
        if _tag in {"object", "subclass"}:
            # [name, state] or [name, base, base value, state]: the items, then attributes.
            *_, state = fields
            if _tag == "subclass" and type(fields[2]) in {dict, list}:
                yield from _children(fields[2], registry)
            if isinstance(state, tuple) and len(state) == 2:
                state = {**(state[0] or {}), **(state[1] or {})}
            if isinstance(state, dict):
                yield from ((key, child, True) for key, child in state.items())
            elif state is not None:
                yield "<state>", state, False
        elif isinstance(value, (tuple, list, set, frozenset)):
            yield from ((i, child, False) for i, child in enumerate(fields))
        elif len(fields) == 1 and isinstance(fields[0], dict):
            yield from _children(fields[0], registry)
        else:
            yield from ((f"<{_tag}>", child, False) for child in fields)


def _find(value: Any, registry: HookRegistry, path: str, walk: _Walk) -> EncodeError | None:
    if type(value) in _NATIVE:
        if type(value) is str:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                msg = f"Unencodable string {value[:40]!r} (lone surrogates) at {path or '<root>'}."
                return EncodeError(msg, path=path)
        return None
    key = id(value)
    if key in walk.done:  # shared, and found fine: a DAG is walked in linear time
        return None
    if key in walk.stack:
        msg = (
            f"Reference cycle at {path or '<root>'}: {type(value).__name__} contains itself. "
            "msgpack stores trees; break the cycle or use codec='pickle'."
        )
        return EncodeError(msg, path=path)
    walk.stack.add(key)
    try:
        children = list(_children(value, registry))
    except LoopAwarePersistError as error:
        where = path or "<root>"
        msg = f"{error} (at {where})"
        return EncodeError(msg, path=where)
    walk.alive.append(children)  # hooks' fields may be fresh: their ids stay theirs
    for child_key, child, attribute_style in children:
        found = _find(child, registry, _render(path, child_key, attribute_style), walk)
        if found is not None:
            return found
    walk.stack.discard(key)
    walk.done.add(key)
    return None


class SharedValueError(EncodeError):
    """Internal: a codec met ``value`` too many times; :func:`encode_error` finds where.

    :ivar value: the value referenced from many places
    """

    def __init__(self, msg: str, *, value: Any) -> None:
        super().__init__(msg)
        self.value = value


def _second_path(
    value: Any, registry: HookRegistry, target: Any, path: str, walk: _Walk
) -> str | None:
    """The path at which ``target`` is met a second time, depth first (``None``: never)."""
    if value is target:
        if walk.met:
            return path
        walk.met = True
        return None
    if type(value) in _NATIVE or id(value) in walk.done:
        return None
    try:
        children = list(_children(value, registry))
    except LoopAwarePersistError:
        return None
    walk.alive.append(children)
    met_before = walk.met
    for key, child, attribute_style in children:
        found = _second_path(child, registry, target, _render(path, key, attribute_style), walk)
        if found is not None:
            return found
    if walk.met == met_before:  # target not inside: meeting this again finds nothing new
        walk.done.add(id(value))
    return None


def path_nested_deeper(
    value: Any,
    registry: HookRegistry,
    limit: int,
    counts: Callable[[Any], bool],
    target: Any = None,
) -> str:
    """The path of ``target`` or of a value nested inside more than ``limit`` values that
    ``counts``, else of the most deeply nested one: where a codec's depth limit was met.
    Iterative (the value is deep), each container once, through lists, dicts and what
    hooks encode.

    :param value: the tree a codec found too deep
    :param registry: the registry the codec used
    :param limit: how many counted values the codec nests
    :param counts: whether a value counts towards the limit
    :param target: the value the codec refused, if it knows
    :return: the path (``""``: the root, or nothing found)
    """
    done: set[int] = set()
    alive: list[Any] = []  # what hooks made: their ids stay theirs for this walk
    deepest, deepest_path = 0, ""
    stack: list[tuple[Iterator[tuple[Any, Any, bool]], str, int]] = []
    stack.append((_children(value, registry), "", int(counts(value))))
    while stack:
        pending, path, depth = stack[-1]
        try:
            key, child, attribute_style = next(pending)
        except Exception:  # done, or a value the registry cannot take apart: a dead end
            stack.pop()
            continue
        if type(child) in _NATIVE or id(child) in done:
            continue
        done.add(id(child))
        alive.append(child)
        child_path, child_depth = _render(path, key, attribute_style), depth + counts(child)
        if child_depth > limit or child is target:
            return child_path
        if child_depth > deepest:
            deepest, deepest_path = child_depth, child_path
        stack.append((_children(child, registry), child_path, child_depth))
    return deepest_path


class NestingError(EncodeError):
    """Internal: a codec met values nested deeper than it stores; :func:`encode_error`
    finds where.

    :ivar limit: how many counted values the codec nests
    :ivar counts: whether a value counts towards ``limit``
    :ivar target: the value refused, if the codec knows it
    """

    def __init__(
        self, msg: str, *, limit: int, counts: Callable[[Any], bool], target: Any = None
    ) -> None:
        super().__init__(msg)
        self.limit = limit
        self.counts = counts
        self.target = target


class UnstorableValueError(EncodeError):
    """Internal: a codec met a value it would write as something else (msgpack's own
    ext types, a ``memoryview``); :func:`encode_error` finds where.

    :ivar value: the value refused
    """

    def __init__(self, msg: str, *, value: Any) -> None:
        super().__init__(msg)
        self.value = value


def _counts_nothing(value: Any) -> bool:
    del value
    return False


class _Walk:
    """The state of one :func:`_find`: the ids on the current path, and those done."""

    __slots__ = ("alive", "done", "met", "stack")

    def __init__(self) -> None:
        self.stack: set[int] = set()
        self.done: set[int] = set()
        self.alive: list[Any] = []
        self.met = False


def encode_error(value: Any, registry: HookRegistry, cause: BaseException) -> EncodeError:
    """Explain why ``value`` could not be encoded, naming the path of the culprit.

    Only called once encoding has failed, so the slow walk never runs on the hot path.

    :param value: the whole tree that failed to encode
    :param registry: the registry the codec used
    :param cause: what the encoder raised
    :return: an :class:`EncodeError` whose ``path`` names the offending value
    """
    if isinstance(cause, EncodeError) and cause.path:
        return cause  # it knows where already
    if isinstance(cause, NestingError):
        where = (
            path_nested_deeper(value, registry, cause.limit, cause.counts, cause.target) or "<root>"
        )
        return EncodeError(f"{cause} (at {where})", path=where)
    if isinstance(cause, UnstorableValueError):
        # No depth counts: the walk goes until it meets the value.
        where = (
            path_nested_deeper(value, registry, sys.maxsize, _counts_nothing, cause.value)
            or "<root>"
        )
        return EncodeError(f"{cause} (at {where})", path=where)
    if isinstance(cause, SharedValueError):
        path = _second_path(value, registry, cause.value, "", _Walk())
        if path is not None:
            return EncodeError(f"{cause} (at {path or '<root>'})", path=path)
    try:
        found = _find(value, registry, "", _Walk())
    except RecursionError:
        found = None
    if found is not None:
        return found
    msg = f"Cannot encode the checkpoint: {cause}"
    return EncodeError(msg, path="")
