"""Operator operations on checkpoint stores: list, inspect, verify, convert, delete, prune.

These are the library calls behind the ``loopaware-persist`` command line; they
print nothing and know nothing of click, so they can be scripted and tested
directly. Every read goes through the persister's safe path: the envelope is
verified, the payload decoded with the allow-list, and the bundle audited as
data with :func:`audit_bundle` -- nothing a checkpoint names is imported unless
the allow-list permits it, and nothing is run.

The one exception is :class:`PickleSource`, which reads a plumpy
``PicklePersister`` directory: unpickling runs whatever code the files name, so
it must be constructed with ``trusted=True``.

Convert's resume marker
-----------------------

Every record :class:`Converter` writes carries two extra header meta entries:
``converted_from`` (the source store and record, as JSON: ``["<store>", "<pid
token>", <tag>]`` for a store, ``["plumpy-pickle:///abs/dir", "<file name>"]``
for a pickle; the store is its real path for ``sqlite:``/``file:`` and its URL,
password redacted, otherwise) and ``converted_sha256`` (the SHA-256 of the
source record's bytes). A later run reads the destination's headers once, and
skips a source record whose marker matches, whose format is the one asked for
and whose envelope still verifies. Content hashes, not versions, because two
stores number their versions independently and a store that was emptied and
refilled starts again at version 1. The store is part of the marker because
pids repeat across stores (AiiDA's are ints): converting a second store into
the same destination reports each key the first one wrote as a conflict
(unless ``overwrite``) instead of replacing it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import fnmatch
import hashlib
import json
import math
import os
import pickle
import re
import reprlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import attrs
import plumpy
import yaml
from plumpy.persistence import META, META__CLASS_NAME

from ._audit import audit_bundle
from ._envelope import Header, decode_envelope, read_header
from ._errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    DecodeError,
    LoopAwarePersistError,
    OpsError,
    StaleCheckpointError,
    StorageError,
    UnsafeCheckpointError,
)
from ._hooks import ForeignException
from ._loop import LoopContext
from ._persister import CheckpointInfo, LoopAwarePersister
from ._registry import HookRegistry
from ._snapshot import FutureSnapshot
from ._unbundle import unbundle
from ._yaml_audit import audit_yaml
from .storage import CheckpointKey, Pid, pid_from_token, pid_token
from .storage._url import redact_url

__all__ = (
    "CONVERTED_FROM",
    "CONVERTED_SHA256",
    "PLUMPY_PICKLE_SCHEME",
    "ConvertResult",
    "Converter",
    "Entry",
    "Inspection",
    "OpsError",
    "PickleSource",
    "Problem",
    "Source",
    "SourceItem",
    "Status",
    "StoreSource",
    "check_store_exists",
    "delete_keys",
    "inspect_record",
    "list_entries",
    "parse_duration",
    "pickle_dir_from_url",
    "plan_prune",
    "render_tree",
    "resolve_pid",
    "same_store",
    "to_jsonable",
)

#: Header meta key naming the source record a converted record was copied from.
CONVERTED_FROM: Final = "converted_from"
#: Header meta key holding the SHA-256 (hex) of the source record's bytes.
CONVERTED_SHA256: Final = "converted_sha256"
#: The URL scheme of a plumpy ``PicklePersister`` directory as a convert source.
PLUMPY_PICKLE_SCHEME: Final = "plumpy-pickle"

#: What can be wrong with a stored checkpoint.
Problem = Literal["corrupt", "unsafe", "undecodable", "unreadable", "unloadable"]

_ATOMS = (type(None), bool, int, float, str, bytes, bytearray, complex)


# region small helpers

_DURATION_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Parse a duration such as ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or ``1d12h``.

    :param text: the duration
    :raises ValueError: if it is not one
    :return: the duration in seconds
    """
    compact = text.strip().lower().replace(" ", "")
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        msg = (
            f"{text!r} is not a duration. Write a number and a unit (s, m, h, d, w), "
            "e.g. 30m, 12h, 7d or 1d12h."
        )
        raise ValueError(msg)
    return total


def _local_path(url: str) -> str | None:
    """:return: the file or directory a ``sqlite:``/``file:`` URL names, else ``None``"""
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        from .storage.sqlite import path_from_url

        return path_from_url(url)
    if scheme == "file":
        from .storage.file import path_from_url as file_path

        return file_path(url)
    return None


def check_store_exists(url: str) -> None:
    """Refuse to open a local store that does not exist (opening would create it).

    :param url: the store URL
    :raises OpsError: if it names a local file or directory that is missing
    :raises StorageError: if the URL is malformed
    """
    path = _local_path(url)
    if path is not None and not os.path.exists(path):
        msg = (
            f"No checkpoint store at {url!r} ({path} does not exist). Check --store or "
            "LOOPAWARE_PERSIST_STORE; the default is sqlite:///checkpoints.db in the "
            "working directory."
        )
        raise OpsError(msg)


def same_store(a: str, b: str) -> bool:
    """:return: whether two URLs name the same store (same local path, or same URL)"""
    path_a, path_b = _local_path(a), _local_path(b)
    if path_a is not None and path_b is not None:
        return os.path.realpath(path_a) == os.path.realpath(path_b)
    return a == b


def pickle_dir_from_url(url: str) -> str:
    """The directory a ``plumpy-pickle:///abs/dir`` URL names.

    :param url: the URL
    :raises StorageError: if it is not a local absolute URL
    :return: the directory
    """
    from .storage.file import path_from_url

    scheme, sep, rest = url.partition(":")
    if scheme.lower() != PLUMPY_PICKLE_SCHEME or not sep:
        msg = (
            f"Not a {PLUMPY_PICKLE_SCHEME}: URL: {url!r}. Use '{PLUMPY_PICKLE_SCHEME}:///abs/dir'."
        )
        raise StorageError(msg)
    return path_from_url("file:" + rest)


def _pid_matches(pid: Pid, text: str) -> bool:
    return text in (str(pid), pid_token(pid))


def _pid_kind(pid: Pid) -> str:
    return {int: "int", str: "str"}.get(type(pid), "uuid")


def resolve_pid(persister: LoopAwarePersister, text: str) -> Pid:
    """Find the stored pid an operator typed (``str(pid)`` or its token ``i:7``/``s:7``/``u:…``).

    :param persister: the store
    :param text: what was typed
    :raises CheckpointNotFoundError: if no stored pid matches
    :raises CorruptStoredRecordError: if only a damaged record (one the listing
        skips) matches: it says which file or row, and what to do
    :raises OpsError: if several do (an int and a str pid with the same digits)
    :return: the pid, with its stored type
    """
    found: dict[str, Pid] = {}
    for record in persister.storage.list():
        if _pid_matches(record.key.pid, text):
            found[pid_token(record.key.pid)] = record.key.pid
    if not found:
        # "No checkpoint" would be wrong for a record that is there but damaged (a
        # torn file header): name the damage instead.
        for token, _tag in persister.storage.list_key_tokens():
            pid = pid_from_token(token)
            if _pid_matches(pid, text):
                damaged = persister.storage.find_damaged(pid)
                if damaged:
                    raise damaged[0]
        msg = (
            f"No checkpoint for pid {text!r} in {persister.storage.url!r}. "
            "Run 'loopaware-persist ls' to see the stored pids."
        )
        raise CheckpointNotFoundError(msg, pid=text)
    if len(found) > 1:
        forms = ", ".join(f"{token} ({_pid_kind(pid)})" for token, pid in sorted(found.items()))
        msg = (
            f"Pid {text!r} matches several stored pids: {forms}. "
            f"Pass the typed form, e.g. {min(found)}."
        )
        raise OpsError(msg)
    return next(iter(found.values()))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _classify(error: BaseException) -> Problem:
    if isinstance(error, CorruptCheckpointError):
        return "corrupt"
    if isinstance(error, UnsafeCheckpointError):
        return "unsafe"
    if isinstance(error, DecodeError):
        return "undecodable"
    return "unreadable"


def _reason(error: BaseException) -> str:
    text = _one_line(error)
    if isinstance(error, UnsafeCheckpointError) and "allow=[" in text:
        text += " On the command line: --allow MODULE."
    return text


# endregion

# region listing


@attrs.frozen(kw_only=True)
class Entry:
    """One checkpoint as a listing shows it (header only, no payload read).

    :param info: the persister's listing entry
    """

    info: CheckpointInfo

    @property
    def key(self) -> CheckpointKey:
        """:return: where it is stored"""
        return self.info.record.key

    @property
    def meta(self) -> Mapping[str, Any]:
        """:return: the header meta (empty if the header is damaged)"""
        return self.info.header.meta if self.info.header is not None else {}

    @property
    def process_class(self) -> str | None:
        """:return: ``module:qualname`` of the process, as its header says"""
        value = self.meta.get("process_class")
        return value if isinstance(value, str) else None

    @property
    def state(self) -> str | None:
        """:return: the process state label, ``"damaged"`` if the header is unreadable"""
        if self.info.error is not None:
            return "damaged"
        value = self.meta.get("state")
        return value if isinstance(value, str) else None

    @property
    def saved_at(self) -> float:
        """When the process was checkpointed: the header's ``saved_at``, which survives a
        convert, else when the storage stored the record.

        :return: a Unix timestamp
        """
        value = self.meta.get("saved_at")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return self.info.record.saved_at

    def as_dict(self) -> dict[str, Any]:
        """:return: a JSON-ready summary (``saved_at`` as above, ``stored_at`` the storage's)"""
        out = self.info.as_dict()
        out["pid_token"] = pid_token(self.key.pid)
        out["state"] = self.state
        out["stored_at"] = self.info.record.saved_at
        out["saved_at"] = self.saved_at
        return out


def _class_matches(name: str | None, patterns: Sequence[str]) -> bool:
    if name is None:
        return False
    short = name.rpartition(":")[2]
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(short, pattern):
                return True
        elif pattern in (name, short):
            return True
    return False


def list_entries(
    persister: LoopAwarePersister,
    *,
    pids: Sequence[str] = (),
    states: Sequence[str] = (),
    classes: Sequence[str] = (),
) -> list[Entry]:
    """List checkpoints from their headers, filtered.

    Within one filter any value matches; across filters all must.

    :param persister: the store
    :param pids: pids as typed (``str(pid)`` or a token such as ``i:7``)
    :param states: state labels (``waiting``, ``excepted``...; ``damaged`` for unreadable headers)
    :param classes: process classes: ``module:Name``, ``Name``, or a glob (``myapp.*``)
    :return: the entries, in key order
    """
    wanted_states = {state.lower() for state in states}
    entries = []
    for info in persister.list_info():
        entry = Entry(info=info)
        if pids and not any(_pid_matches(entry.key.pid, text) for text in pids):
            continue
        if wanted_states and (entry.state or "").lower() not in wanted_states:
            continue
        if classes and not _class_matches(entry.process_class, classes):
            continue
        entries.append(entry)
    return entries


# endregion

# region inspecting and verifying


@attrs.frozen(kw_only=True)
class Inspection:
    """What reading one checkpoint in safe mode found.

    :param key: where it is stored
    :param version: its storage version (0 if it could not be read)
    :param size: its size in bytes
    :param header: its envelope header, if readable
    :param bundle: the decoded bundle, if it decoded (even when the audit refused it)
    :param problem: what is wrong, or ``None``
    :param reason: why, in one line
    """

    key: CheckpointKey
    version: int = 0
    size: int = 0
    header: Header | None = None
    bundle: Any = None
    problem: Problem | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """:return: whether nothing is wrong"""
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        """:return: a JSON-ready summary (without the bundle)"""
        return {
            "pid": str(self.key.pid),
            "pid_token": pid_token(self.key.pid),
            "tag": self.key.tag,
            "version": self.version,
            "size": self.size,
            "process_class": self.header.meta.get("process_class") if self.header else None,
            "state": self.header.meta.get("state") if self.header else None,
            "ok": self.ok,
            "problem": self.problem,
            "reason": self.reason,
        }


def _try_load(bundle: Any, registry: HookRegistry) -> None:
    """Unbundle onto a private loop and throw the result away (runs allowed code only)."""
    loop = asyncio.new_event_loop()
    # A loaded EXCEPTED process holds a failed future nobody awaits; asyncio would log
    # "exception was never retrieved" when it is collected. Nothing here is lost.
    loop.set_exception_handler(lambda _loop, _context: None)
    try:
        unbundle(bundle, LoopContext(loop=loop), registry=registry)
    finally:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def inspect_record(
    persister: LoopAwarePersister, key: CheckpointKey, *, load: bool = False
) -> Inspection:
    """Read one checkpoint safely: verify its envelope, decode it, audit it.

    :param persister: the store (its allow-list decides what is safe)
    :param key: which checkpoint
    :param load: also unbundle it onto a private loop, as a restart would; this runs the
        ``load_instance_state`` code of allowed classes (never anything else)
    :raises CheckpointNotFoundError: if it does not exist
    :return: what was found; damage is reported, not raised
    """
    try:
        record = persister.storage.get(key)
    except CheckpointNotFoundError:
        raise
    except StorageError as error:
        return Inspection(key=key, problem=_classify(error), reason=_reason(error))
    found = Inspection(key=key, version=record.version, size=len(record.data))
    try:
        found = attrs.evolve(found, header=read_header(record.data))
        found = attrs.evolve(found, bundle=persister.loads(record.data, key=key))
        audit_bundle(found.bundle, persister.registry)
    except LoopAwarePersistError as error:
        return attrs.evolve(found, problem=_classify(error), reason=_reason(error))
    except (RecursionError, MemoryError, ValueError, TypeError) as error:
        # An untyped failure of a decoder on hostile bytes is still this record's
        # problem: report it and let verify go on to the next record.
        reason = f"unexpected {type(error).__name__} while decoding: {_one_line(error)}"
        return attrs.evolve(found, problem="undecodable", reason=reason)
    if load:
        try:
            _try_load(found.bundle, persister.registry)
        except Exception as error:  # a restart would fail the same way: report, go on
            return attrs.evolve(found, problem="unloadable", reason=_reason(error))
    return found


# endregion

# region rendering


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
    if args and all(isinstance(arg, _ATOMS) for arg in args):
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


_PLAIN_VALUES = (*_ATOMS, type, enum.Enum, uuid.UUID, dt.date, dt.time, dt.timedelta, Path)


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
        if isinstance(value, _ATOMS):
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
        if all(isinstance(item, _ATOMS) for item in items) and len(items) <= 80:
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


# endregion

# region deleting and pruning


def plan_prune(
    entries: Iterable[Entry],
    *,
    keep: int | None = None,
    older_than: float | None = None,
    now: float,
    include_untagged: bool = False,
) -> list[Entry]:
    """Choose the checkpoints a prune deletes.

    Per pid, candidates are the tagged checkpoints (and the untagged one, the checkpoint a
    restart continues from, only with ``include_untagged``), newest first by ``saved_at``.
    A candidate is deleted if it is beyond the newest ``keep`` *and* older than
    ``older_than`` seconds; a criterion not given always holds.

    :param entries: the listing to prune from
    :param keep: how many candidates to keep per pid
    :param older_than: only delete candidates saved longer ago than this, in seconds
    :param now: the current time (Unix)
    :param include_untagged: let untagged checkpoints be pruned too
    :raises ValueError: if neither criterion is given, or ``keep`` is negative
    :return: the entries to delete, in listing order
    """
    if keep is None and older_than is None:
        msg = "Say what to prune: keep=N (newest per pid) and/or older_than=SECONDS."
        raise ValueError(msg)
    if keep is not None and keep < 0:
        msg = f"keep must be >= 0, got {keep}."
        raise ValueError(msg)
    by_pid: dict[str, list[Entry]] = {}
    ordered = list(entries)
    for entry in ordered:
        if entry.key.tag is None and not include_untagged:
            continue
        by_pid.setdefault(pid_token(entry.key.pid), []).append(entry)
    doomed: set[CheckpointKey] = set()
    for group in by_pid.values():
        group.sort(key=lambda e: (e.saved_at, e.key.tag or ""), reverse=True)
        for rank, entry in enumerate(group):
            beyond = keep is None or rank >= keep
            old = older_than is None or entry.saved_at < now - older_than
            if beyond and old:
                doomed.add(entry.key)
    return [entry for entry in ordered if entry.key in doomed]


def delete_keys(persister: LoopAwarePersister, keys: Iterable[CheckpointKey]) -> int:
    """Delete exactly these checkpoints (not whatever a pid gained since they were listed).

    :param persister: the store
    :param keys: what to delete
    :return: how many existed and were deleted
    """
    return sum(1 for key in keys if persister.storage.delete(key))


# endregion

# region converting


@attrs.frozen(kw_only=True)
class SourceItem:
    """One record a convert source offers.

    :param ref: stable name of the record in its source, stored as the resume marker
    :param label: how to show it
    :param key: its key, if known without decoding it (pickles are keyed inside)
    :param saved_at: when it was saved, if the source knows
    """

    ref: str
    label: str
    key: CheckpointKey | None = None
    saved_at: float | None = None


class Source(Protocol):
    """Where a convert reads from."""

    url: str

    def items(self) -> list[SourceItem]:
        """:return: the records, in a stable order"""

    def read(self, item: SourceItem) -> bytes:
        """:return: the record's bytes, exactly as stored"""

    def decode(self, item: SourceItem, data: bytes) -> tuple[CheckpointKey, Any, dict[str, Any]]:
        """:return: the key, the decoded bundle and the header meta to carry over"""


def _store_id(url: str) -> str:
    """What names a store in a resume marker: its real path when local, else its URL."""
    path = _local_path(url)
    if path is not None:
        return f"{url.partition(':')[0].lower()}:{os.path.realpath(path)}"
    return redact_url(url)


def _store_ref(store: str, key: CheckpointKey) -> str:
    return json.dumps([store, pid_token(key.pid), key.tag])


class StoreSource:
    """Read the records of a loopaware_persist store, decoding them in safe mode.

    :param persister: the source store (never written to)
    """

    def __init__(self, persister: LoopAwarePersister) -> None:
        self.persister = persister
        self.url = persister.storage.url
        self._store = _store_id(self.url)

    def items(self) -> list[SourceItem]:
        """:return: every record, in key order"""
        return [
            SourceItem(
                ref=_store_ref(self._store, record.key),
                label=str(record.key.pid)
                + ("" if record.key.tag is None else f" tag={record.key.tag}"),
                key=record.key,
                saved_at=record.saved_at,
            )
            for record in self.persister.storage.list()
        ]

    def read(self, item: SourceItem) -> bytes:
        """:return: the record's bytes"""
        assert item.key is not None
        return self.persister.storage.get(item.key).data

    def decode(self, item: SourceItem, data: bytes) -> tuple[CheckpointKey, Any, dict[str, Any]]:
        """:raises DecodeError: if the record is damaged or not safe to decode
        :return: the key, the bundle and its header meta
        """
        assert item.key is not None
        bundle = self.persister.loads(data, key=item.key)
        meta = dict(read_header(data).meta)
        if "saved_at" not in meta and item.saved_at is not None:
            meta["saved_at"] = item.saved_at
        return item.key, bundle, meta


_STATE_CLASSES: Final = {
    f"plumpy.process_states:{name}": name.lower()
    for name in ("Created", "Running", "Waiting", "Finished", "Excepted", "Killed")
}


class PickleSource:
    """Read a plumpy ``PicklePersister`` directory. Unpickling runs the code the files name.

    :param directory: the pickle directory (its top-level ``*.pickle`` files)
    :param trusted: must be ``True``: the caller vouches for every file in it
    :raises OpsError: if not trusted, or the directory does not exist
    """

    def __init__(self, directory: str, *, trusted: bool = False) -> None:
        if not trusted:
            msg = (
                f"Refusing to read the plumpy pickle directory {directory}: unpickling runs "
                "any code the files name. Pass --trust-pickle (trusted=True) only for files "
                "that you alone wrote."
            )
            raise OpsError(msg)
        if not os.path.isdir(directory):
            msg = f"The plumpy pickle directory {directory} does not exist or is not a directory."
            raise OpsError(msg)
        self.directory = directory
        self.url = (
            Path(directory).absolute().as_uri().replace("file:", PLUMPY_PICKLE_SCHEME + ":", 1)
        )

    def items(self) -> list[SourceItem]:
        """:return: the ``*.pickle`` files, sorted by name (plumpy writes no others)"""
        items = []
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.endswith(".pickle") and os.path.isfile(path):
                items.append(
                    SourceItem(
                        ref=json.dumps([self.url, name]),
                        label=name,
                        saved_at=os.stat(path).st_mtime,
                    )
                )
        return items

    def read(self, item: SourceItem) -> bytes:
        """:return: the file's bytes"""
        return Path(self.directory, item.label).read_bytes()

    def decode(self, item: SourceItem, data: bytes) -> tuple[CheckpointKey, Any, dict[str, Any]]:
        """Unpickle (trusted) a plumpy ``PersistedPickle``.

        :raises CorruptCheckpointError: if the file is not one
        :return: its key, its bundle and meta built from the bundle
        """
        try:
            persisted = pickle.loads(data)  # the caller passed trusted=True
        except Exception as error:
            msg = f"{item.label} does not unpickle ({type(error).__name__}: {error})."
            raise CorruptCheckpointError(msg) from error
        checkpoint = getattr(persisted, "checkpoint", None)
        bundle = getattr(persisted, "bundle", None)
        if not isinstance(bundle, dict) or checkpoint is None or not hasattr(checkpoint, "pid"):
            msg = (
                f"{item.label} holds a {type(persisted).__name__}, not plumpy's "
                "PersistedPickle(checkpoint, bundle)."
            )
            raise CorruptCheckpointError(msg)
        key = CheckpointKey(pid=checkpoint.pid, tag=getattr(checkpoint, "tag", None))
        process_meta = bundle.get(META)
        state = bundle.get("_state")
        state_meta = state.get(META) if isinstance(state, dict) else None
        meta: dict[str, Any] = {
            "process_class": (
                str(process_meta.get(META__CLASS_NAME))
                if isinstance(process_meta, dict) and META__CLASS_NAME in process_meta
                else None
            ),
            "state": (
                _STATE_CLASSES.get(str(state_meta.get(META__CLASS_NAME)))
                if isinstance(state_meta, dict)
                else None
            ),
            "saved_at": item.saved_at,
        }
        return key, bundle, meta


def _foreign_exceptions(bundle: Any) -> list[str]:
    """Names of exception classes that decoded as :class:`ForeignException` stand-ins."""
    found: list[str] = []
    seen: set[int] = set()
    stack = [bundle]
    while stack:
        value = stack.pop()
        if isinstance(value, _ATOMS) or id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, ForeignException):
            found.append(value.type_name)
        if isinstance(value, BaseException):
            stack.extend(v for v in (value.__cause__, value.__context__) if v is not None)
            stack.extend(value.args)
        elif isinstance(value, FutureSnapshot):
            stack.extend((value.result, value.exception))
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)
    return sorted(set(found))


#: A tree larger than this, and this many times larger than the distinct
#: objects in it, is refused before a tree codec expands it.
_MAX_EXPANDED: Final = 1_000_000
_MAX_EXPANSION: Final = 16


def _tree_expansion(bundle: Any) -> tuple[int, int] | None:
    """How many values a tree codec would write for ``bundle``, if shared references
    blow it up (``x = [x, x]`` forty levels deep is 2**40 values from a 1 KiB
    pickle), and how many distinct containers it holds; ``None`` when a tree
    codec writes about one value per object.

    Counted bottom-up with a memo, so linear in the distinct objects. A cycle
    counts as one value: the codec refuses cycles itself.
    """
    sizes: dict[int, int] = {}
    keep: list[Any] = []  # ids stay unique while counted
    on_path: set[int] = set()

    def children(value: Any) -> Iterable[Any]:
        if isinstance(value, Mapping):
            for k, v in value.items():
                yield k
                yield v
        elif isinstance(value, (list, tuple, set, frozenset)):
            yield from value
        elif isinstance(value, FutureSnapshot):
            yield value.result
            yield value.exception
        elif isinstance(value, BaseException):
            yield from value.args
        else:
            state = getattr(value, "__dict__", None)
            if isinstance(state, dict):
                yield from state.values()

    # Iterative post-order: a deep bundle must not hit the recursion limit.
    stack: list[tuple[Any, bool]] = [(bundle, False)]
    while stack:
        value, expanded = stack.pop()
        if isinstance(value, _ATOMS):
            continue
        ident = id(value)
        if expanded:
            total = 1
            for child in children(value):
                if not isinstance(child, _ATOMS):
                    total += sizes.get(id(child), 1)
            sizes[ident] = min(total, _MAX_EXPANDED * _MAX_EXPANSION + 1)
            on_path.discard(ident)
            continue
        if ident in sizes or ident in on_path:
            continue
        keep.append(value)
        on_path.add(ident)
        stack.append((value, True))
        stack.extend((child, False) for child in children(value))
    total = sizes.get(id(bundle), 1)
    if total > _MAX_EXPANDED and total > _MAX_EXPANSION * max(len(sizes), 1):
        return total, len(sizes)
    return None


Status = Literal["copied", "updated", "skipped", "failed", "conflict"]


@attrs.frozen(kw_only=True)
class ConvertResult:
    """What happened to one source record.

    :param source: the source record, as shown
    :param status: ``copied`` (new in the destination), ``updated`` (an earlier copy of a
        changed source replaced), ``skipped`` (already converted), ``failed``, ``conflict``
        (the destination holds another record under that key)
    :param key: the destination key, once known
    :param reason: why it failed or conflicted
    """

    source: str
    status: Status
    key: CheckpointKey | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """:return: a JSON-ready summary"""
        return {
            "source": self.source,
            "status": self.status,
            "pid": None if self.key is None else str(self.key.pid),
            "tag": None if self.key is None else self.key.tag,
            "reason": self.reason,
        }


@attrs.define
class _Existing:
    version: int
    ref: str | None
    sha256: str | None
    codec: str | None
    compression: str | None


class Converter:
    """Copy every record of a source into a destination store, resumably.

    The source is only read. Each record is decoded in safe mode and audited,
    re-encoded with the destination's codec and compression, written with a
    compare-and-set on the version seen, read back and decoded again. A record
    that fails any step is reported and the rest go on. See the module docstring
    for the resume marker.

    :param source: what to read
    :param dst: where to write (its codec, compression and allow-list apply)
    :param overwrite: replace destination records that were not converted from this
        source record (default: report them as conflicts)
    """

    def __init__(self, source: Source, dst: LoopAwarePersister, *, overwrite: bool = False) -> None:
        self.source = source
        self.dst = dst
        self.overwrite = overwrite
        self._by_key: dict[CheckpointKey, _Existing] = {}
        self._by_ref: dict[str, CheckpointKey] = {}
        for info in dst.list_info():
            meta = info.header.meta if info.header is not None else {}
            ref = meta.get(CONVERTED_FROM)
            existing = _Existing(
                version=info.record.version,
                ref=ref if isinstance(ref, str) else None,
                sha256=meta.get(CONVERTED_SHA256) if isinstance(ref, str) else None,
                codec=info.header.codec if info.header is not None else None,
                compression=info.header.compression if info.header is not None else None,
            )
            self._by_key[info.record.key] = existing
            if existing.ref is not None:
                self._by_ref[existing.ref] = info.record.key

    def items(self) -> list[SourceItem]:
        """:return: the source records, in order"""
        return self.source.items()

    def _up_to_date(self, item: SourceItem, sha256: str) -> CheckpointKey | None:
        key = self._by_ref.get(item.ref)
        if key is None:
            return None
        existing = self._by_key[key]
        if (
            existing.sha256 != sha256
            or existing.codec != self.dst.codec.name
            or existing.compression != self.dst.compression
        ):
            return None
        try:  # an interrupted or damaged copy is converted again, not trusted
            decode_envelope(self.dst.storage.get(key).data)
        except LoopAwarePersistError:
            return None
        return key

    def convert(self, item: SourceItem) -> ConvertResult:
        """Convert one source record.

        :param item: from :meth:`items`
        :return: what happened; failures are reported, not raised
        """
        try:
            data = self.source.read(item)
        except (LoopAwarePersistError, OSError) as error:
            return ConvertResult(
                source=item.label, status="failed", key=item.key, reason=_reason(error)
            )
        sha256 = hashlib.sha256(data).hexdigest()
        done = self._up_to_date(item, sha256)
        if done is not None:
            return ConvertResult(source=item.label, status="skipped", key=done)
        try:
            key, bundle, meta = self.source.decode(item, data)
            audit_bundle(bundle, self.dst.registry)
        except LoopAwarePersistError as error:
            return ConvertResult(
                source=item.label,
                status="failed",
                key=item.key,
                reason=f"{_classify(error)}: {_reason(error)}",
            )
        foreign = _foreign_exceptions(bundle)
        if foreign:
            modules = sorted({name.partition(":")[0] for name in foreign})
            reason = (
                f"lossy: exception class(es) {', '.join(foreign)} are not on the allow-list and "
                "decoded as stand-ins; converting would lose their type. Pass "
                + " ".join(f"--allow {m}" for m in modules)
                + " if you trust them."
            )
            return ConvertResult(source=item.label, status="failed", key=key, reason=reason)
        expanded = _tree_expansion(bundle) if self.dst.codec.name == "msgpack" else None
        if expanded is not None:
            values, distinct = expanded
            reason = (
                f"encode: the checkpoint's {distinct} containers share references so that "
                f"msgpack, which writes trees, would write at least {values:,} values for it; "
                "it was not converted. Convert it with --codec pickle, which keeps shared "
                "references."
            )
            return ConvertResult(source=item.label, status="failed", key=key, reason=reason)
        existing = self._by_key.get(key)
        if existing is not None and existing.ref != item.ref and not self.overwrite:
            what = "was not converted" if existing.ref is None else f"came from {existing.ref}"
            reason = (
                f"the destination already holds a checkpoint for this key that {what}; "
                "left untouched. Pass --overwrite to replace it."
            )
            return ConvertResult(source=item.label, status="conflict", key=key, reason=reason)
        return self._write(item, key, bundle, meta, sha256, existing)

    def _write(
        self,
        item: SourceItem,
        key: CheckpointKey,
        bundle: Any,
        meta: dict[str, Any],
        sha256: str,
        existing: _Existing | None,
    ) -> ConvertResult:
        out_meta = {
            k: v
            for k, v in meta.items()
            if k not in (CONVERTED_FROM, CONVERTED_SHA256) and v is not None
        }
        out_meta[CONVERTED_FROM] = item.ref
        out_meta[CONVERTED_SHA256] = sha256
        if isinstance(bundle, dict) and type(bundle) is not plumpy.Bundle:
            # What save_checkpoint encodes is a plain plumpy.Bundle; a decoded
            # LoopAwareBundle also carries its registry, which pickle cannot store.
            plain = plumpy.Bundle.__new__(plumpy.Bundle)
            dict.update(plain, bundle)
            bundle = plain
        try:
            data = self.dst.dumps(bundle, meta=out_meta)
            version = self.dst.storage.put(
                key, data, expected_version=existing.version if existing is not None else 0
            )
        except StaleCheckpointError as error:
            reason = f"another writer changed the destination meanwhile: {_reason(error)}"
            return ConvertResult(source=item.label, status="failed", key=key, reason=reason)
        except (LoopAwarePersistError, ModuleNotFoundError) as error:
            return ConvertResult(source=item.label, status="failed", key=key, reason=_reason(error))
        problem = self._read_back(key, data, version)
        if problem is not None:
            return ConvertResult(source=item.label, status="failed", key=key, reason=problem)
        self._by_key[key] = _Existing(
            version=version,
            ref=item.ref,
            sha256=sha256,
            codec=self.dst.codec.name,
            compression=self.dst.compression,
        )
        self._by_ref[item.ref] = key
        status: Status = "updated" if existing is not None else "copied"
        return ConvertResult(source=item.label, status=status, key=key)

    def _read_back(self, key: CheckpointKey, data: bytes, version: int) -> str | None:
        """Verify a written record; delete it if it is ours and bad, so no resume skips it."""
        try:
            record = self.dst.storage.get(key)
        except LoopAwarePersistError as error:
            return f"written but not readable back: {_reason(error)}"
        if record.version != version:
            return "another writer replaced the record right after it was written"
        problem: str | None = None
        if record.data != data:
            problem = "the destination returned different bytes than were written"
        else:
            try:
                audit_bundle(self.dst.loads(record.data), self.dst.registry)
            except LoopAwarePersistError as error:
                problem = f"written record does not decode: {_reason(error)}"
        if problem is not None:
            self.dst.storage.delete(key)
        return problem
