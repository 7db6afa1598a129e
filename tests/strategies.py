"""Hypothesis strategies every property test draws from, and the exact comparison they use.

* :func:`values` — nested trees of every type the default registry knows;
* :func:`user_values` — the same with a user's own classes (:mod:`tests.user_types`):
  subclasses of every built-in container and scalar, with instance attributes,
  namedtuples, enums, datetime subclasses, a plain class and a nested ``Savable``;
* :func:`exceptions`, :func:`snapshots`, :func:`bundles` — the pieces of a checkpoint;
* :func:`loop_kinds` / :func:`caller` — the five positions a restore can be called from;
* :func:`assert_same` — equality that also checks types, key order and exception chains.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import decimal
import enum
import errno
import math
import pathlib
import threading
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import plumpy
from hypothesis import strategies as st
from plumpy.utils import AttributesFrozendict, Frozendict

from loopaware_persist import FutureSnapshot, FutureStatus
from tests import user_types as ut
from tests.loops import loop_in_thread

__all__ = (
    "EXCEPTION_TYPES",
    "Caller",
    "CallerSetup",
    "assert_same",
    "bundles",
    "caller",
    "current_event_loop",
    "exceptions",
    "hashables",
    "loop_kinds",
    "scalars",
    "snapshots",
    "texts",
    "user_values",
    "values",
)

# Leaves.

#: Valid unicode only: lone surrogates cannot be stored as UTF-8 (that is an EncodeError).
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)

_big_ints = st.one_of(
    st.integers(min_value=2**64, max_value=2**200),
    st.integers(min_value=-(2**200), max_value=-(2**63) - 1),
    st.sampled_from([2**64, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1]),
)
ints = st.one_of(st.integers(), _big_ints)
floats = st.floats(allow_nan=False)

_offsets = st.timedeltas(
    min_value=dt.timedelta(hours=-23, minutes=-59), max_value=dt.timedelta(hours=23, minutes=59)
)
timezones = st.one_of(
    st.just(dt.UTC),
    _offsets.map(dt.timezone),
    st.builds(
        dt.timezone, _offsets, st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ+-0123", min_size=1)
    ),
    st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC"]).map(
        zoneinfo.ZoneInfo
    ),
)
datetimes = st.datetimes(timezones=st.none() | timezones, allow_imaginary=True)
# ZoneInfo has no utcoffset without a date; fixed offsets only for times.
times = st.times(timezones=st.none() | st.just(dt.UTC) | _offsets.map(dt.timezone))

_segment = st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=6).filter(
    lambda s: s not in {".", ".."}
)
_segments = st.lists(_segment, max_size=4)
paths = st.one_of(
    st.builds(
        lambda root, parts: pathlib.PurePosixPath(root, *parts),
        st.sampled_from(["", "/"]),
        _segments,
    ),
    st.builds(
        lambda root, parts: pathlib.PosixPath(root, *parts), st.sampled_from(["", "/"]), _segments
    ),
    st.builds(
        lambda root, parts: pathlib.PureWindowsPath(root, *parts),
        st.sampled_from(["", "C:\\", "C:", "\\\\server\\share\\", "\\"]),
        _segments,
    ),
)
enum_members = st.sampled_from(list(plumpy.ProcessState) + list(FutureStatus))
class_refs = st.sampled_from([plumpy.Process, plumpy.WorkChain])

#: Hashable leaves whose equality is by value (sets are compared element by element).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    floats,
    texts,
    st.binary(max_size=12),
    st.complex_numbers(allow_nan=False),
    st.uuids(),
    datetimes,
    st.dates(),
    times,
    st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=False),
    paths,
    enum_members,
    class_refs,
)


def hashables() -> st.SearchStrategy[Any]:
    """:return: hashable values (scalars, tuples and frozensets of them), usable as keys"""
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3).map(tuple), st.frozensets(children, max_size=3)
        ),
        max_leaves=6,
    )


# Exceptions and snapshots.

#: Builtin exception types whose constructor takes any positional arguments.
EXCEPTION_TYPES: tuple[type[BaseException], ...] = (
    Exception,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    LookupError,
    RuntimeError,
    ZeroDivisionError,
    ArithmeticError,
    AssertionError,
    NotImplementedError,
    AttributeError,
    PermissionError,
    TimeoutError,
    StopIteration,
    KeyboardInterrupt,
    plumpy.KilledError,
    plumpy.InvalidStateError,
)


def _os_errors() -> st.SearchStrategy[OSError]:
    def build(code: int, strerror: str, filename: str | None) -> OSError:
        return OSError(code, strerror) if filename is None else OSError(code, strerror, filename)

    return st.builds(
        build,
        st.sampled_from([errno.ENOENT, errno.EACCES, errno.EEXIST, errno.EPIPE, 9999]),
        texts,
        st.none() | texts,
    )


def _chain(
    exc: BaseException, cause: BaseException | None, context: BaseException | None, suppress: bool
) -> BaseException:
    exc.__cause__ = cause
    exc.__context__ = context
    exc.__suppress_context__ = suppress
    return exc


def exceptions(
    *,
    types: tuple[type[BaseException], ...] = EXCEPTION_TYPES,
    args: st.SearchStrategy[Any] | None = None,
    chains: bool = True,
) -> st.SearchStrategy[BaseException]:
    """Builtin (and plumpy) exceptions with arguments, OSErrors with errno, and chains.

    :param types: the exception classes to draw from (``OSError`` is always added)
    :param args: what each positional argument is drawn from (default: :data:`scalars`)
    :param chains: whether to set ``__cause__``/``__context__`` (one level of each, recursively)
    :return: a strategy of exception instances, never raised (so no traceback)
    """
    arg = scalars if args is None else args
    single = st.one_of(
        st.builds(lambda cls, a: cls(*a), st.sampled_from(types), st.lists(arg, max_size=3)),
        _os_errors(),
    )
    if not chains:
        return single
    return st.recursive(
        single,
        lambda inner: st.builds(
            _chain, single, st.none() | inner, st.none() | inner, st.booleans()
        ),
        max_leaves=4,
    )


def snapshots(
    results: st.SearchStrategy[Any] | None = None,
    errors: st.SearchStrategy[BaseException] | None = None,
) -> st.SearchStrategy[FutureSnapshot]:
    """:return: future snapshots in all four states"""
    return st.one_of(
        st.just(FutureSnapshot.pending()),
        st.builds(FutureSnapshot.finished, scalars if results is None else results),
        st.builds(FutureSnapshot.failed, exceptions() if errors is None else errors),
        st.builds(FutureSnapshot.cancelled, st.none() | texts),
    )


# Trees and bundles.


def _bundle(mapping: dict[str, Any]) -> plumpy.Bundle:
    # Bundle.__init__ wants a live Savable; a loaded bundle is built exactly like this.
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, mapping)
    return bundle


def _str_dicts(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(texts, children, max_size=4)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.sets(hashables(), max_size=4),
        st.frozensets(hashables(), max_size=4),
        _str_dicts(children),
        st.dictionaries(hashables(), children, max_size=4),
        _str_dicts(children).map(lambda d: collections.OrderedDict(reversed(d.items()))),
        _str_dicts(children).map(_bundle),
        _str_dicts(children).map(AttributesFrozendict),
        st.builds(FutureSnapshot.finished, children),
        exceptions(args=children, chains=False),
    )


def values() -> st.SearchStrategy[Any]:
    """:return: nested trees of every registered type (no cycles, no NaN, no lone surrogates)"""
    # No bytearray: msgpack writes it natively as bin, so it loads as bytes (documented;
    # test_codecs.test_bytearray_* pins both codecs' behaviour).
    leaves = st.one_of(
        scalars,
        exceptions(),
        snapshots(),
    )
    return st.recursive(leaves, _extend, max_leaves=12)


def bundles() -> st.SearchStrategy[plumpy.Bundle]:
    """:return: plumpy-shaped process bundles, as ``Bundle.__new__`` + ``dict.update`` build them"""
    meta = st.fixed_dictionaries(
        {"class_name": st.sampled_from(["plumpy.processes:Process", "plumpy.workchains:WorkChain"])}
    )
    # A state as plumpy's save makes it (a plain map holding '!!meta', maybe with its
    # command's under a key: format version 2 writes each as a record of its own), or
    # wrapped in a Bundle of its own.
    command = st.builds(
        lambda args: {"!!meta": {"class_name": "plumpy.process_states:Continue"}, "args": args},
        st.lists(values(), max_size=2),
    )
    state = st.builds(
        lambda name, in_state, args, ctx, wrap, command: (_bundle if wrap else dict)(
            {
                "!!meta": {"class_name": name},
                "in_state": in_state,
                "args": args,
                "kwargs": {},
                "ctx": ctx,
                **({} if command is None else {"command": command}),
            }
        ),
        st.sampled_from(
            [
                "plumpy.process_states:Created",
                "plumpy.process_states:Running",
                "plumpy.process_states:Waiting",
            ]
        ),
        st.booleans(),
        st.lists(values(), max_size=2).map(tuple),
        _str_dicts(values()),
        st.booleans(),
        st.none() | command,
    )
    return st.builds(
        lambda meta, pid, state, ctx, inputs, future, created: _bundle(
            {
                "!!meta": meta,
                "_pid": pid,
                "_state": state,
                "ctx": ctx,
                "INPUTS_RAW": inputs,
                "_future": future,
                "_paused": None,
                "_creation_time": created,
                "_status": None,
            }
        ),
        meta,
        st.uuids(),
        state,
        _str_dicts(values()),
        _str_dicts(scalars).map(AttributesFrozendict),
        snapshots(),
        floats,
    )


# A user's own classes.

#: What a persister must allow for :func:`user_values` to load.
USER_TYPES = ut.__name__

_ATTRIBUTE_NAMES = st.sampled_from(["note", "origin", "step", "meta"])


def _with_attributes(obj: Any, attributes: dict[str, Any]) -> Any:
    obj.__dict__.update(attributes)
    return obj


def _attributed(
    make: st.SearchStrategy[Any], attributes: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """``make``'s values, with a few instance attributes drawn from ``attributes``."""
    return st.builds(
        _with_attributes, make, st.dictionaries(_ATTRIBUTE_NAMES, attributes, max_size=2)
    )


def _stamp(value: dt.datetime) -> ut.Stamp:
    return ut.Stamp(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, value.tzinfo, fold=value.fold,
    )  # fmt: skip


def _clock(value: dt.time) -> ut.Clock:
    return ut.Clock(
        value.hour, value.minute, value.second, value.microsecond, value.tzinfo, fold=value.fold
    )


def _day(value: dt.date) -> ut.Day:
    return ut.Day(value.year, value.month, value.day)


def _span(value: dt.timedelta) -> ut.Span:
    return ut.Span(value.days, value.seconds, value.microseconds)


#: Hashable user scalars (usable in sets and as keys), without attributes.
_user_hashables = st.one_of(
    texts.map(ut.Label),
    ints.map(ut.Count),
    floats.map(ut.Ratio),
    st.complex_numbers(allow_nan=False).map(ut.Impedance),
    st.binary(max_size=8).map(ut.Blob),
    datetimes.map(_stamp),
    st.dates().map(_day),
    times.map(_clock),
    st.timedeltas().map(_span),
    st.decimals(allow_nan=False, allow_infinity=False).map(ut.Amount),
    st.sampled_from([*ut.Phase, *ut.Level, ut.Flags.READ, ut.Flags.READ | ut.Flags.WRITE]),
)


#: A user's own exceptions, whose ``__init__`` takes other arguments than ``args`` holds.
_user_exceptions = st.one_of(
    st.builds(ut.JobFailed, texts, ints),
    st.builds(lambda message, reason: ut.Rejected(message, reason=reason), texts, texts),
    st.builds(ut.MissingInput, texts),
    st.builds(ut.NoPlugin, texts),
)


def _user_leaves(attributes: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        _user_hashables,
        _user_exceptions,
        _attributed(
            st.one_of(
                texts.map(ut.Label),
                ints.map(ut.Count),
                floats.map(ut.Ratio),
                st.binary(max_size=8).map(ut.Blob),
                st.binary(max_size=8).map(ut.Buffer),
                datetimes.map(_stamp),
                st.timedeltas().map(_span),
                st.decimals(allow_nan=False, allow_infinity=False).map(ut.Amount),
            ),
            attributes,
        ),
    )


def _user_sets(items: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sets(items, max_size=3).map(ut.Tags), st.frozensets(items, max_size=3).map(ut.FrozenTags)
    )


def _user_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.one_of(texts, _user_hashables)
    return st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(texts, children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        _attributed(st.dictionaries(keys, children, max_size=3).map(ut.Structure), children),
        _attributed(st.dictionaries(texts, children, max_size=3).map(ut.Ordered), children),
        _attributed(st.lists(children, max_size=3).map(ut.Steps), children),
        _attributed(st.lists(children, max_size=3).map(ut.Pair), children),
        _attributed(_user_sets(st.one_of(hashables(), _user_hashables)), children),
        st.builds(ut.Point, children, children),
        st.builds(ut.Cell, children, children),
        st.builds(ut.Record, a=children, b=children),
        st.builds(ut.Note, a=children),
    )


def user_values() -> st.SearchStrategy[Any]:
    """:return: trees of a user's own classes (:mod:`tests.user_types`) mixed with
    built-in values; no snapshots, so a process context can hold any of them"""
    leaves = st.one_of(scalars, _user_leaves(scalars))
    return st.recursive(leaves, _user_containers, max_leaves=10)


def user_values_with_snapshots() -> st.SearchStrategy[Any]:
    """:return: :func:`user_values` with future snapshots (all four states) among the
    leaves, inside every kind of user container: what a load's walk must rebind"""
    leaves = st.one_of(scalars, _user_leaves(scalars), snapshots())
    return st.recursive(leaves, _user_containers, max_leaves=10)


# Caller positions.


class Caller(enum.Enum):
    """Where a restore onto target loop B can be called from (design.md, 'Loop binding')."""

    MAIN_OTHER_CURRENT = "main thread, another loop A set current"
    WORKER_NO_LOOP = "worker thread with no loop"
    COROUTINE_ON_OTHER_LOOP = "coroutine running on another loop A"
    TARGET_RUNS_ELSEWHERE = "main thread, B running in another thread"
    COROUTINE_ON_TARGET = "coroutine running on B itself"


def loop_kinds() -> st.SearchStrategy[Caller]:
    """:return: the five caller positions"""
    return st.sampled_from(list(Caller))


def current_event_loop() -> asyncio.AbstractEventLoop | None:
    """The loop ``asyncio.get_event_loop()`` gives in this thread, or ``None`` if none is
    current. Public API only (asyncio's policy is deprecated in 3.14); it never creates a
    loop because ``tests/conftest.py`` declared the main thread loopless up front.
    """
    try:
        return asyncio.get_event_loop()
    except RuntimeError:
        return None


@attrs.define
class CallerSetup:
    """A target loop B and a way to call a function from one caller position.

    :ivar target: the loop B every restore must land on
    :ivar other: the other loop A (current or running in the caller), if the position has one
    """

    kind: Caller
    target: asyncio.AbstractEventLoop
    other: asyncio.AbstractEventLoop | None = None
    seen_current: list[asyncio.AbstractEventLoop | None] = attrs.field(factory=list)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(*args)`` from this position and return (or raise) what it did."""
        kind = self.kind
        if kind is Caller.MAIN_OTHER_CURRENT:
            assert self.other is not None
            previous = current_event_loop()
            asyncio.set_event_loop(self.other)
            try:
                return fn(*args)
            finally:
                self.seen_current.append(current_event_loop())
                asyncio.set_event_loop(previous)
        if kind is Caller.WORKER_NO_LOOP:
            return _in_thread(fn, *args)
        if kind is Caller.TARGET_RUNS_ELSEWHERE:
            return fn(*args)

        async def coro() -> Any:
            return fn(*args)

        loop = self.other if kind is Caller.COROUTINE_ON_OTHER_LOOP else self.target
        assert loop is not None
        return loop.run_until_complete(coro())


def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(fn(*args))
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=target, name="caller-worker")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


@contextlib.contextmanager
def caller(kind: Caller) -> Iterator[CallerSetup]:
    """Set up a target loop B (and loop A where the position has one), closed afterwards.

    :param kind: the caller position
    :return: the setup; ``setup.call(fn, *args)`` calls from that position
    """
    with contextlib.ExitStack() as stack:
        if kind is Caller.TARGET_RUNS_ELSEWHERE:
            target = stack.enter_context(loop_in_thread())
        else:
            target = asyncio.new_event_loop()
            stack.callback(target.close)
        other = None
        if kind in {Caller.MAIN_OTHER_CURRENT, Caller.COROUTINE_ON_OTHER_LOOP}:
            other = asyncio.new_event_loop()
            stack.callback(other.close)
        yield CallerSetup(kind, target, other)


# Exact comparison.


def _fail(path: str, why: str) -> None:
    raise AssertionError(f"at {path or '<root>'}: {why}")


def _same_float(a: float, b: float, path: str) -> None:
    if math.isnan(a) and math.isnan(b):
        return
    if a != b or math.copysign(1.0, a) != math.copysign(1.0, b):
        _fail(path, f"{a!r} != {b!r}")


def _same_exception(a: BaseException, b: BaseException, path: str, depth: int) -> None:
    assert_same(a.args, b.args, f"{path}.args", depth=depth + 1)
    if isinstance(a, OSError):
        for attr in ("errno", "strerror", "filename", "filename2"):
            assert_same(getattr(a, attr), getattr(b, attr), f"{path}.{attr}", depth=depth + 1)
    if isinstance(a, StopIteration):
        assert_same(a.value, b.value, f"{path}.value", depth=depth + 1)
    if isinstance(a, ImportError):
        for attr in ("msg", "name", "path"):
            assert_same(getattr(a, attr), getattr(b, attr), f"{path}.{attr}", depth=depth + 1)
    if isinstance(a, SystemExit):
        assert_same(a.code, b.code, f"{path}.code", depth=depth + 1)
    state_a = {k: v for k, v in vars(a).items() if k != "__notes__"}
    state_b = {k: v for k, v in vars(b).items() if k != "__notes__"}
    assert_same(state_a, state_b, f"{path}.__dict__", depth=depth + 1)
    if a.__suppress_context__ != b.__suppress_context__:
        _fail(path, f"__suppress_context__ {a.__suppress_context__} != {b.__suppress_context__}")
    assert_same(a.__cause__, b.__cause__, f"{path}.__cause__", depth=depth + 1)
    assert_same(a.__context__, b.__context__, f"{path}.__context__", depth=depth + 1)


def _same_set(a: Any, b: Any, path: str, depth: int) -> None:
    if len(a) != len(b):
        _fail(path, f"{len(a)} elements != {len(b)}")
    for item in a:
        matches = [other for other in b if other == item]
        if len(matches) != 1:
            _fail(path, f"element {item!r} has {len(matches)} matches in {b!r}")
        assert_same(item, matches[0], f"{path}{{{item!r}}}", depth=depth + 1)


def assert_same(a: Any, b: Any, path: str = "", *, depth: int = 0) -> None:
    """Assert ``b`` is exactly ``a``: same type at every level, dict key order kept.

    Exceptions compare by type, args, ``OSError`` fields, ``__dict__`` (minus notes
    added on load) and their ``__cause__``/``__context__`` chain; snapshots field by
    field; floats including the sign of zero; Decimals by digits and exponent;
    ``PureWindowsPath`` by its exact text (its ``==`` ignores case).

    :raises AssertionError: naming the path of the first difference
    """
    if depth > 200:
        _fail(path, "nesting too deep to compare")
    if type(a) is not type(b):
        _fail(
            path, f"type {type(a).__qualname__} != {type(b).__qualname__} ({a!r:.80} vs {b!r:.80})"
        )
    if a is b or a is None:
        return
    if isinstance(a, (enum.Enum, type)):
        if a is not b:
            _fail(path, f"{a!r} is not {b!r}")
    elif isinstance(a, float):
        _same_float(a, b, path)
    elif isinstance(a, complex):
        _same_float(a.real, b.real, f"{path}.real")
        _same_float(a.imag, b.imag, f"{path}.imag")
    elif isinstance(a, decimal.Decimal):
        if a.as_tuple() != b.as_tuple():
            _fail(path, f"{a!r} != {b!r}")
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            _fail(path, f"length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]", depth=depth + 1)
    elif isinstance(a, (dict, Frozendict)):
        keys_a, keys_b = list(a.keys()), list(b.keys())
        if len(keys_a) != len(keys_b):
            _fail(path, f"keys {keys_a!r:.200} != {keys_b!r:.200}")
        for i, (ka, kb) in enumerate(zip(keys_a, keys_b, strict=True)):
            assert_same(ka, kb, f"{path}.keys()[{i}]", depth=depth + 1)
            assert_same(a[ka], b[kb], f"{path}[{ka!r}]", depth=depth + 1)
    elif isinstance(a, (set, frozenset)):
        _same_set(a, b, path, depth)
    elif isinstance(a, BaseException):
        _same_exception(a, b, path, depth)
    elif isinstance(a, FutureSnapshot):
        for field in attrs.fields(FutureSnapshot):
            name = field.name
            assert_same(getattr(a, name), getattr(b, name), f"{path}.{name}", depth=depth + 1)
    elif isinstance(a, (dt.datetime, dt.time)):
        fields = ("hour", "minute", "second", "microsecond", "fold")
        if isinstance(a, dt.datetime):
            fields = ("year", "month", "day", *fields)
        for name in fields:
            if getattr(a, name) != getattr(b, name):
                _fail(f"{path}.{name}", f"{getattr(a, name)!r} != {getattr(b, name)!r}")
        assert_same(a.tzinfo, b.tzinfo, f"{path}.tzinfo", depth=depth + 1)
    elif isinstance(a, dt.timezone):
        if a.utcoffset(None) != b.utcoffset(None) or a.tzname(None) != b.tzname(None):
            _fail(path, f"{a!r} != {b!r}")
    elif isinstance(a, zoneinfo.ZoneInfo):
        if a.key != b.key:
            _fail(path, f"{a!r} != {b!r}")
    elif isinstance(a, pathlib.PurePath):
        if str(a) != str(b):
            _fail(path, f"{str(a)!r} != {str(b)!r}")
    elif isinstance(a, (str, bytes, bytearray, int, uuid.UUID, dt.date, dt.timedelta)):
        if a != b:
            _fail(path, f"{a!r:.200} != {b!r:.200}")
    elif _by_attributes(a):
        pass  # a plain object: compared by its attributes below
    elif a != b:
        _fail(path, f"{a!r:.200} != {b!r:.200}")
    if _by_attributes(a) or _subclass_with_attributes(a):
        assert_same(vars(a), vars(b), f"{path}.__dict__", depth=depth + 1)


_VALUE_TYPES = (
    dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, complex,
    dt.date, dt.time, dt.timedelta, decimal.Decimal,
)  # fmt: skip


def _by_attributes(a: Any) -> bool:
    """Whether ``a`` is an instance of a plain class, with no ``__eq__`` of its own."""
    return (
        hasattr(a, "__dict__")
        # mypy types the two as different callables; at runtime it is the same function.
        and type(a).__eq__ is object.__eq__  # type: ignore[comparison-overlap]
        and not isinstance(a, (BaseException, enum.Enum, type))
    )


def _subclass_with_attributes(a: Any) -> bool:
    """Whether ``a`` is an instance of a subclass of a built-in value type with a ``__dict__``
    (a plumpy ``Bundle`` is compared by its items only)."""
    return (
        isinstance(a, _VALUE_TYPES)
        and type(a) not in _VALUE_TYPES
        and hasattr(a, "__dict__")
        and not isinstance(a, (enum.Enum, plumpy.Bundle))
    )
