"""Rendering: a decoded bundle as a bounded tree of lines, or as JSON-ready data.

Nothing is imported or run: the bundle is walked as data."""

from __future__ import annotations

import datetime as dt
import enum
import math
import reprlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import yaml
from plumpy.persistence import META, META__CLASS_NAME

from .._errors import (
    CorruptCheckpointError,
)
from .._hooks import ForeignException
from .._snapshot import FutureSnapshot
from .._yaml_audit import audit_yaml
from ._common import ATOMS


class _BoundedRepr(reprlib.Repr):
    """``repr`` in bounded time and size: shared references and deep nesting in a
    hostile checkpoint cannot make it exponential, nor a huge int raise."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxtuple = self.maxlist = self.maxset = self.maxfrozenset = self.maxdict = 8
        self.maxstring = self.maxother = 200
        self.maxlong = 60

    def repr_int(self, x: int, level: int) -> str:
        return _int_text(x, limit=self.maxlong)


_brepr = _BoundedRepr().repr

# Above Python's int->str digit limit (sys.get_int_max_str_digits) decimal
# conversion raises, and below it is still quadratic; hex is linear and exact.
_DECIMAL_BITS: Final = 4000


def _int_text(value: int, *, limit: int | None) -> str:
    """An int as text: decimal when small, else its exact hex with a digit count.

    :param value: the int
    :param limit: shorten the hex to about this many characters (``None``: never)
    :return: e.g. ``12`` or ``int of 6021 digits: 0x1000…0000``
    """
    if value.bit_length() <= _DECIMAL_BITS:
        return _short(int.__repr__(value), limit)
    digits = math.floor(value.bit_length() * math.log10(2)) + 1
    return f"int of ~{digits} digits: " + _short(hex(value), limit)


def _atom_repr(value: Any, limit: int | None) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_text(value, limit=limit)
    return _short(repr(value), limit)


def _short(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} chars)"


def _type_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}:{cls.__qualname__}"


def _exception_text(exc: BaseException) -> str:
    if isinstance(exc, ForeignException):
        return f"{exc.type_name}: {exc.message} (class not on the allow-list; not imported)"
    args = exc.args
    message = ""
    if args and all(isinstance(arg, ATOMS) for arg in args):
        try:  # atoms print in linear time; an exception class may format them its own way
            message = str(exc)
        except Exception:
            message = _brepr(args)
    elif args:
        # str(exc) would repr container args unbounded (shared references, cycles).
        message = _brepr(args[0] if len(args) == 1 else args)
    return f"{_type_name(type(exc))}: {message}" if message else _type_name(type(exc))


def _yaml_exception(text: str) -> str | None:
    """Describe the exception plumpy's ``Excepted`` state stores as YAML, without loading it."""
    try:
        # The composer recurses once per level: measure the depth first, iteratively.
        audit_yaml(text, None, "ex_value")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, CorruptCheckpointError):
        return None
    if node is None:
        return None
    tag = str(node.tag)
    name = tag.rpartition(":")[2] if tag.startswith("tag:yaml.org,2002:python/") else tag
    args: list[str] = []
    items = node.value if isinstance(node.value, list) else []
    for item in items:
        if isinstance(item, yaml.ScalarNode):
            args.append(str(item.value))
        elif isinstance(item, tuple) and isinstance(item[1], yaml.SequenceNode):  # state: args
            args.extend(str(v.value) for v in item[1].value if isinstance(v, yaml.ScalarNode))
    module, _, qualname = name.rpartition(".")
    shown = qualname if module == "builtins" else (f"{module}:{qualname}" if module else name)
    return f"{shown}: {', '.join(args)}" if args else shown


_FUTURE_STATES: Final = {"PENDING": "pending", "CANCELLED": "cancelled", "FINISHED": "finished"}
_SAVABLE_FUTURE: Final = "plumpy.persistence:SavableFuture"
_EXCEPTED: Final = "plumpy.process_states:Excepted"


@attrs.define
class _Node:
    text: str
    children: list[_Node] = attrs.field(factory=list)


_PLAIN_VALUES = (*ATOMS, type, enum.Enum, uuid.UUID, dt.date, dt.time, dt.timedelta, Path)


@attrs.define
class _Seen:
    node: _Node
    value: Any  # kept alive, so its id is not reused while rendering
    anchor: int | None = None
    done: bool = False


class _Renderer:
    """Builds the tree of :func:`render_tree`. Every container is rendered once: a
    second reference to it (shared, or a cycle) is drawn as ``*N``, pointing at the
    ``&N`` its first rendering carries, so the work is linear in the record."""

    def __init__(self, *, full: bool) -> None:
        self.limit: int | None = None if full else 120
        self.lines: int | None = None if full else 40
        self.seen: dict[int, _Seen] = {}
        self.anchors = 0

    def atom(self, value: Any) -> str:
        return _atom_repr(value, self.limit)

    def node(self, label: str, value: Any, depth: int = 0) -> _Node:
        prefix = f"{label}: " if label else ""
        if depth > 64:
            return _Node(f"{prefix}… (nested too deep)")
        if isinstance(value, _PLAIN_VALUES):
            return self.plain_node(prefix, value, depth)
        seen = self.seen.get(id(value))
        if seen is not None:
            if seen.anchor is None:
                self.anchors += 1
                seen.anchor = self.anchors
                if seen.done:
                    seen.node.text += f" &{seen.anchor}"
            return _Node(f"{prefix}*{seen.anchor} (the same object as &{seen.anchor})")
        holder = _Seen(node=_Node(""), value=value)
        self.seen[id(value)] = holder
        built = self.plain_node(prefix, value, depth)
        holder.node.text = built.text + ("" if holder.anchor is None else f" &{holder.anchor}")
        holder.node.children = built.children
        holder.done = True
        return holder.node

    def plain_node(self, prefix: str, value: Any, depth: int) -> _Node:
        if isinstance(value, str) and "\n" in value.rstrip("\n"):
            lines = value.rstrip("\n").split("\n")
            shown = lines if self.lines is None else lines[-self.lines :]
            children = [_Node(line) for line in shown]
            if len(shown) < len(lines):
                children.insert(0, _Node(f"… {len(lines) - len(shown)} earlier lines"))
            return _Node(f"{prefix}({len(lines)} lines)", children)
        if isinstance(value, ATOMS):
            return _Node(prefix + self.atom(value))
        if isinstance(value, FutureSnapshot):
            return self.snapshot(prefix, value, depth)
        if isinstance(value, BaseException):
            return self.exception(prefix, value, depth)
        if isinstance(value, type):
            return _Node(f"{prefix}class {value.__module__}:{value.__qualname__}")
        if isinstance(value, enum.Enum):
            return _Node(f"{prefix}{type(value).__qualname__}.{value.name}")
        if isinstance(value, (uuid.UUID, dt.date, dt.time, dt.timedelta, Path)):
            return _Node(f"{prefix}{value}")
        if isinstance(value, Mapping):
            if isinstance(value, dict) and META in value and isinstance(value[META], dict):
                return self.savable(prefix, value, depth)
            if not value:
                return _Node(prefix + "{}")
            return _Node(
                prefix.rstrip(": ") if prefix else "{…}",
                [self.node(self.key(k), v, depth + 1) for k, v in value.items()],
            )
        if isinstance(value, (list, tuple, set, frozenset)):
            return self.sequence(prefix, value, depth)
        state = getattr(value, "__dict__", None)
        text = f"{prefix}{_type_name(type(value))} object"
        if isinstance(state, dict) and state:
            return _Node(text, [self.node(str(k), v, depth + 1) for k, v in state.items()])
        return _Node(text)

    @staticmethod
    def key(key: Any) -> str:
        return key if isinstance(key, str) else _brepr(key)

    def sequence(self, prefix: str, value: Any, depth: int) -> _Node:
        items = sorted(value, key=_brepr) if isinstance(value, (set, frozenset)) else list(value)
        if all(isinstance(item, ATOMS) for item in items) and len(items) <= 80:
            inner = ", ".join(_atom_repr(item, 80) for item in items)
            if isinstance(value, (set, frozenset)):
                text = "{" + inner + "}" if items else "set()"
            elif isinstance(value, tuple):
                text = "(" + inner + ("," if len(items) == 1 else "") + ")"
            else:
                text = "[" + inner + "]"
            if len(text) <= 80:
                return _Node(prefix + text)
        kind = type(value).__name__
        return _Node(
            f"{prefix}{kind} of {len(items)}",
            [self.node(f"[{i}]", item, depth + 1) for i, item in enumerate(items)],
        )

    def exception(self, prefix: str, exc: BaseException, depth: int) -> _Node:
        node = _Node(f"{prefix}{self.atom_text(_exception_text(exc))}")
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if isinstance(cause, BaseException) and depth < 64:
            node.children.append(self.exception("caused by: ", cause, depth + 1))
        return node

    def atom_text(self, text: str) -> str:
        return _short(" ".join(text.split()), self.limit)

    def snapshot(self, prefix: str, snap: FutureSnapshot, depth: int) -> _Node:
        node = _Node(f"{prefix}future {snap.status.value}")
        if snap.exception is not None:
            node.children.append(self.node("exception", snap.exception, depth + 1))
        elif snap.status.value == "finished":
            node.children.append(self.node("result", snap.result, depth + 1))
        if snap.cancel_message is not None:
            node.children.append(self.node("message", snap.cancel_message, depth + 1))
        return node

    def savable(self, prefix: str, value: dict[Any, Any], depth: int) -> _Node:
        name = str(value[META].get(META__CLASS_NAME, "?"))
        members = {k: v for k, v in value.items() if k != META}
        if name == _SAVABLE_FUTURE:
            exception = members.pop("exception", None)
            status = _FUTURE_STATES.get(str(members.pop("_state", "")), "unknown")
            result = members.pop("_result", None)
            if status == "finished" and exception is not None:
                status = "failed"
            node = _Node(f"{prefix}future {status}")
            if exception is not None:
                node.children.append(self.node("exception", exception, depth + 1))
            elif status == "finished":
                node.children.append(self.node("result", result, depth + 1))
            node.children.extend(self.node(self.key(k), v, depth + 1) for k, v in members.items())
            return node
        short = name.rpartition(":")[2].rpartition(".")[2]
        node = _Node(f"{prefix}{short} [{name}]")
        for key, child in members.items():
            if name == _EXCEPTED and key == "ex_value" and isinstance(child, str):
                described = _yaml_exception(child)
                if described is not None:
                    node.children.append(_Node(f"{key}: {self.atom_text(described)}"))
                    continue
            node.children.append(self.node(self.key(key), child, depth + 1))
        return node


def _draw(node: _Node, out: list[str], lead: str, branch: str, glyphs: tuple[str, ...]) -> None:
    tee, last, pipe, blank = glyphs
    out.append(f"{lead}{branch}{node.text}")
    child_lead = lead + (blank if branch in (last, "") else pipe)
    for i, child in enumerate(node.children):
        _draw(child, out, child_lead, last if i == len(node.children) - 1 else tee, glyphs)


def render_tree(bundle: Any, *, full: bool = False, ascii_only: bool = False) -> list[str]:
    """Render a decoded bundle as an indented tree, as data: nothing is imported or called.

    Future snapshots (and plumpy's saved futures) show their status, exceptions their type
    and message, plumpy's ``Excepted`` YAML the exception it describes.

    :param bundle: a decoded bundle
    :param full: do not shorten long values and tracebacks
    :param ascii_only: draw with ASCII instead of box-drawing characters
    :return: the lines
    """
    glyphs = ("|-- ", "`-- ", "|   ", "    ") if ascii_only else ("├── ", "└── ", "│   ", "    ")
    root = _Renderer(full=full).node("", bundle)
    out: list[str] = []
    out.append(root.text)
    for i, child in enumerate(root.children):
        _draw(child, out, "", glyphs[1] if i == len(root.children) - 1 else glyphs[0], glyphs)
    if ascii_only:  # the labels use an ellipsis too
        out = [line.replace("\u2026", "...") for line in out]
    return out


def to_jsonable(value: Any) -> Any:
    """Turn a decoded bundle into JSON-ready data, as data: nothing is imported or called.

    Values JSON lacks become objects with a ``"$type"`` key (``future``, ``exception``,
    ``class``, ``enum``, ``uuid``, ``datetime``, ``bytes``, ``int`` beyond Python's
    int-to-decimal limit, as hex, ``object``...). A container met a second time (a
    shared reference or a cycle) becomes ``{"$type": "ref", "path": ...}``, the JSON
    pointer of its first occurrence, so the work is linear in the record.

    :param value: a decoded value
    :return: JSON-ready data
    """
    return _Jsonable().convert(value, "", 0)


class _Jsonable:
    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, Any]] = {}

    def convert(self, value: Any, path: str, depth: int) -> Any:
        if depth > 200:
            return {"$type": "truncated"}
        if isinstance(value, _PLAIN_VALUES) or value is None:
            return _jsonable_plain(value, self, path, depth)
        first = self.seen.get(id(value))
        if first is not None:
            return {"$type": "ref", "path": first[0]}
        self.seen[id(value)] = (path, value)
        return _jsonable_plain(value, self, path, depth)


def _pointer(path: str, key: Any) -> str:
    text = key if isinstance(key, str) else str(key)
    return f"{path}/{text.replace('~', '~0').replace('/', '~1')}"


def _jsonable_plain(value: Any, walk: _Jsonable, path: str, _depth: int) -> Any:
    d = _depth + 1

    def sub(child: Any, key: Any) -> Any:
        return walk.convert(child, _pointer(path, key), d)

    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value.bit_length() > _DECIMAL_BITS
    ):
        return {"$type": "int", "hex": hex(value)}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$type": "float", "value": repr(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"$type": "bytes", "hex": bytes(value).hex()}
    if isinstance(value, complex):
        return {"$type": "complex", "real": value.real, "imag": value.imag}
    if isinstance(value, FutureSnapshot):
        return {
            "$type": "future",
            "status": value.status.value,
            "result": sub(value.result, "result"),
            "exception": sub(value.exception, "exception"),
            "cancel_message": value.cancel_message,
        }
    if isinstance(value, ForeignException):
        return {"$type": "exception", "class": value.type_name, "message": value.message}
    if isinstance(value, BaseException):
        return {
            "$type": "exception",
            "class": f"{type(value).__module__}:{type(value).__qualname__}",
            "message": _exception_text(value).partition(": ")[2],
            "args": [walk.convert(arg, f"{path}/args/{i}", d) for i, arg in enumerate(value.args)],
        }
    if isinstance(value, type):
        return {"$type": "class", "name": f"{value.__module__}:{value.__qualname__}"}
    if isinstance(value, enum.Enum):
        cls = type(value)
        return {
            "$type": "enum",
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "name": value.name,
        }
    if isinstance(value, uuid.UUID):
        return {"$type": "uuid", "value": str(value)}
    if isinstance(value, (dt.date, dt.time)):
        return {"$type": type(value).__name__, "value": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$type": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, Mapping):
        out_map: dict[str, Any] = {}
        for k, v in value.items():
            name = k if isinstance(k, str) else _brepr(k)
            out_map[name] = sub(v, name)
        return out_map
    if isinstance(value, (set, frozenset)):
        return [sub(item, i) for i, item in enumerate(sorted(value, key=_brepr))]
    if isinstance(value, (list, tuple)):
        return [sub(item, i) for i, item in enumerate(value)]
    state = getattr(value, "__dict__", None)
    out: dict[str, Any] = {"$type": "object", "class": _type_name(type(value))}
    if isinstance(state, dict):
        out["state"] = sub(state, "state")
    else:
        out["repr"] = _brepr(value)
    return out
