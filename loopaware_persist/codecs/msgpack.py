"""The ``"msgpack"`` codec: safe, compact, the default.

Everything msgpack writes natively (None, bool, 64-bit ints, floats, str, bytes,
lists, dicts with any native keys, in order) goes through the C packer without a
Python call. Every other value is one msgpack *ext* value, written in the same pass,
whose data is the registry hook's fields packed by the same rules::

    (1, 2)         ->  Ext(16, packb([1, 2]))                   a built-in tag: its own code
    UUID(...)      ->  Ext(22, <the 16 bytes>)                  uuid: the bytes themselves
    Point(1, 2)    ->  Ext(2, packb(["myapp.point", 1, 2]))     any other tag, spelled out

Ext codes: ``2`` is a tagged value (``[tag, *fields]``); ``16``-``40`` are the built-in
tags of :data:`WELL_KNOWN_CODES`, whose data is the field list (the one bytes field
itself for ``uuid``, or code ``2`` if a hook gives anything else); ``41``
(:data:`RECORD_CODE`, since format version 2) is a savable's record that plumpy keeps
under another's key (a process's ``_state``, a state's command, a WorkChain's
steppers), whose data is the record's map::

    Bundle(process)  ->  Ext(19, packb([{"!!meta": ..., "_state": Ext(41, packb({...})), ...}]))

Every other code is refused, ``0`` included, and ``1``, the marker of a list-headed layout
(``[Ext(1, tag), *fields]``) that development builds wrote before the first release;
``-1`` (msgpack's Timestamp, never written) is decoded by the decoder itself into an
inert value: a ``msgpack.Timestamp`` (msgpack-python) or an aware ``datetime`` (msgspec).

Decoding needs only an ``ext_hook``, called for ext values alone, so plain lists and
dicts decode at C speed, with msgspec's decoder if it is installed (it caches map keys)
or msgpack-python's (see :class:`MsgpackCodec`). Each ext value's data is unpacked by a
decoder of its depth (msgpack-python's is an ``Unpacker``, whose state is on the heap:
a ``unpackb`` keeps ~40 KB on the C stack, and nesting them would overflow small thread
stacks; msgspec's keeps little, and stops at the recursion limit), then handed to the
registry's decode hook: the only place a class is revived, and only if the allow-list
says so.

Nesting is bounded on both sides, so that a crafted payload can neither exhaust the C
stack while decoding nor decode into a value that would while being re-encoded: at
most :data:`MAX_EXT_DEPTH` ext values inside one another and, below the third of
them, at most 32 lists and maps inside one another within one value's fields
(msgpack's own limit, 1024, holds in the first three).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Container, Mapping
from types import MappingProxyType
from typing import Any, Final, cast

import msgpack
import plumpy

try:  # the faster decoder, if installed (the ``fast`` extra)
    import msgspec.msgpack as _msgspec_msgpack
except ImportError:  # pragma: no cover - msgpack-python decodes then
    _msgspec_msgpack = None  # type: ignore[assignment]

from .._errors import (
    ConfigurationError,
    CorruptCheckpointError,
    DecodeError,
    EncodeError,
    LoopAwarePersistError,
)
from .._hooks import _dec_uuid, default_registry
from .._registry import HookRegistry
from .._snapshot import FutureSnapshot
from .._uuid import uuid_from_int
from . import _gc_pause
from ._base import Binding, check_payload, decode_errors
from ._paths import NestingError, SharedValueError, encode_error
from ._sharing import TRAVERSED, WRITTEN_AS_IS, SharingGuard, path_deeper_than, written_as_is

__all__ = (
    "DECODERS",
    "MAX_EXT_DEPTH",
    "RECORD_CODE",
    "WELL_KNOWN_CODES",
    "MsgpackCodec",
    "configure_registry",
    "make_codec",
)

#: The libraries a :class:`MsgpackCodec` can read bytes with.
DECODERS: Final = ("msgspec", "msgpack")

# The key of a savable's record in plumpy's bundles: a decode for a load
# (MsgpackCodec.decode_bound) hands each map holding it to the load's Binding.
_META: Final = "!!meta"
_META_BYTES: Final = _META.encode()

_TAGGED: Final = 2
#: The ext code of a savable's record that plumpy keeps under another's (its ``_state``,
#: a WorkChain's stepper...): a map holding ``!!meta``. Written since format version 2,
#: so that a decode meets every record as an ext value, with no hook per map.
RECORD_CODE: Final = 41

#: One-byte ext codes of the built-in tags: part of the stored format, never renumbered.
WELL_KNOWN_CODES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "tuple": 16,
        "set": 17,
        "frozenset": 18,
        "bundle": 19,
        "attrdict": 20,
        "frozendict": 21,
        "uuid": 22,
        "future": 23,
        "future-live": 24,
        "exception": 25,
        "class": 26,
        "enum": 27,
        "object": 28,
        "bigint": 29,
        "complex": 30,
        "odict": 31,
        "datetime": 32,
        "date": 33,
        "time": 34,
        "timedelta": 35,
        "timezone": 36,
        "zoneinfo": 37,
        "decimal": 38,
        "path": 39,
        "subclass": 40,
    }
)
_TAG_OF: Final[dict[int, str]] = {code: tag for tag, code in WELL_KNOWN_CODES.items()}
# Codes of future snapshots, which a decode for a load hands to its binding.
_SNAPSHOT_CODES: Final = frozenset({WELL_KNOWN_CODES["future"], WELL_KNOWN_CODES["future-live"]})
# Codes whose data is the hook's one bytes field itself, not a packed field list.
_RAW_CODES: Final = frozenset({WELL_KNOWN_CODES["uuid"]})
_BUNDLE_CODE: Final = WELL_KNOWN_CODES["bundle"]

#: How many non-native values may sit inside one another (a tuple in a tuple in an
#: exception's cause...). An encode refuses a deeper value and a decode a deeper
#: payload; each level costs a decode ~1.3 KB of C stack.
MAX_EXT_DEPTH: Final = 32
# Each packer and unpacker allows 1024 levels of lists and maps, and every ext level has
# its own, so 33 levels could nest ~34,000 deep: packing that (recursively, ~470 bytes
# of C stack a level) would overflow even an 8 MB stack. Hence ext values deeper than
# _FREE_LEVELS may nest at most _DEEP_NESTING lists and maps within their own fields:
# checked before packing and after unpacking, it bounds any value either side accepts
# to ~4,000 levels (~2 MB of C stack to pack; 1024 levels, ~0.5 MB, before this layout).
# Three levels are free: a bundle, a savable's record in it and one in that (a process,
# its state and the state's command), so that records (format version 2) leave the
# values they hold as free as when they were plain maps inside the bundle.
_FREE_LEVELS: Final = 3
# Lists and maps a value may nest at the top levels: msgpack's unpacker takes 1,024,
# one of which is the field list of the ext value that holds them.
_MAX_NESTING: Final = 1000
_DEEP_NESTING: Final = 32

# Pooled encoders and decoders serve payloads up to this size, so the buffers a pool
# keeps (one per ext depth in use) stay under twice it each. A bigger payload gets an
# encoder or decoder of its own, dropped after. Reuse matters: fresh buffers for a
# 100 KB payload cost page faults worth ~15 % of its encode and decode.
_POOLED_BYTES: Final = 256 * 1024
_POOL_SIZE: Final = 4

# msgpack.ExtType validates its arguments in Python; ours are valid by construction.
_ExtType = msgpack.ExtType
_new_ext = cast(Callable[[type, tuple[int, bytes]], msgpack.ExtType], tuple.__new__)


# type -> (ext code, tag, encode hook, whether the code's data is one raw bytes field,
# when the fields may hold containers the sharing guard has not walked)
_Entry = tuple[int, str, Callable[[Any], list[Any]], bool, int]


class _Record(dict):  # type: ignore[type-arg]
    """A savable's record in a bundle, written as a :data:`RECORD_CODE` ext value.

    Only an encode makes these, on its own copies of plumpy's maps (see
    :func:`_mark_records`); as a ``dict`` subclass, the packer hands it to ``default``.
    """

    __slots__ = ()


def _mark_records(state: dict[Any, Any], levels: int = 16) -> None:
    """Replace, in ``state`` (an encode's own copy of a bundle's map), each savable's
    record plumpy keeps under a key of it, and of those under theirs, by a
    :class:`_Record` copy: where plumpy's ``save`` puts every one (``_state``, a
    state's command, a WorkChain's steppers). A record anywhere else, or more than
    ``levels`` records down (16: a WorkChain's outline nested far deeper than any seen),
    stays a map, which a load notices (it counts ``!!meta`` in the bytes) and walks.
    """
    if levels <= 0:
        return
    for key, value in state.items():  # replacing values only: the keys stay as they are
        if type(value) is dict and _META in value:
            record = _Record(value)
            _mark_records(record, levels - 1)
            state[key] = record


# (Its encode hook is never called: the encoder packs a record's map itself.)
_RECORD_ENTRY: Final[_Entry] = (RECORD_CODE, "record", list, False, 0)

# When the encoder walks a value's fields for shared containers (and encodes it once per
# depth): never, always, or for a future snapshot, when its result is a container.
_NEVER, _ALWAYS, _RESULT = 0, 1, 2
# Tags whose fields are scalars: nothing in them can be shared.
_SCALAR_TAGS: Final = frozenset(
    {"bigint", "class", "complex", "date", "datetime", "decimal", "enum", "path", "time",
     "timedelta", "timezone", "uuid", "zoneinfo"}
)  # fmt: skip
#: How many bytes an encode may write again for objects (not lists, dicts, tuples...)
#: that are referenced more than once, before it refuses them as exploding.
MAX_DUPLICATED_BYTES: Final = 64 * 1024 * 1024


class _Encoder:
    """One encode at a time: one packer per ext depth, each writing the fields of the
    values the packer above it met.

    Each level's ``default`` is a closure that knows its depth, so the hot path keeps
    no counter; past :data:`MAX_EXT_DEPTH` the ``default`` only refuses.
    """

    __slots__ = (
        "_dirty",
        "_generation",
        "_hooks",
        "_packer",
        "big",
        "duplicated",
        "guard",
        "memo",
        "registry",
    )

    def __init__(self, registry: HookRegistry) -> None:
        self.registry = registry
        self._generation = registry.generation
        self._hooks: dict[type, _Entry] = {_Record: _RECORD_ENTRY}
        self.big = False
        self.guard = SharingGuard()
        # Per ext depth, id -> (value, its ext): objects the guard does not walk into are
        # encoded once per depth (what a value may hold depends on how deep it sits).
        self.memo: list[dict[int, tuple[Any, msgpack.ExtType]]] = [
            {} for _ in range(MAX_EXT_DEPTH + 1)
        ]
        self._dirty: list[dict[int, tuple[Any, msgpack.ExtType]]] = []  # memos in use
        self.duplicated = 0
        self._packer = self._level(0)

    def encode(self, value: Any) -> bytes:
        if self._generation != self.registry.generation:
            self._hooks.clear()
            self._hooks[_Record] = _RECORD_ENTRY
            self._generation = self.registry.generation
        # (A failed encode drops its encoder, so the memos are empty here.)
        self.guard = SharingGuard()
        self.duplicated = 0
        self.guard.check([value])
        data: bytes = self._pack(self._packer, value)
        for memo in self._dirty:
            memo.clear()
        del self._dirty[:]
        # Every nested packer wrote a part of ``data``: none grew its buffer past this.
        self.big = len(data) > _POOLED_BYTES
        return data

    def _pack(self, packer: msgpack.Packer, value: Any) -> bytes:
        if not self.guard.deep:  # nothing nests near the limit: the common case
            return packer.pack(value)  # type: ignore[no-any-return]
        # Packed one level down, then the wrapper's 1-byte header dropped: msgpack's packer
        # accepts one more level of lists and maps than its unpacker, and what an encode
        # accepts a decode must accept.
        return packer.pack([value])[1:]  # type: ignore[no-any-return]

    def _level(self, depth: int) -> msgpack.Packer:
        return msgpack.Packer(
            default=self._default_at(depth + 1),
            strict_types=True,
            use_bin_type=True,
            datetime=False,
            buf_size=4096,  # not msgpack's 256 KB up front: most levels pack a few bytes
        )

    def _learn(self, cls: type) -> _Entry:
        tag, encode = self.registry.encoder(cls)
        code = WELL_KNOWN_CODES.get(tag, _TAGGED)
        walk = _NEVER
        if tag in {"future", "future-live"}:
            walk = _RESULT
        elif tag not in _SCALAR_TAGS and cls not in TRAVERSED:
            walk = _ALWAYS
        entry = self._hooks[cls] = (code, tag, encode, code in _RAW_CODES, walk)
        return entry

    def _default_at(self, depth: int) -> Callable[[Any], msgpack.ExtType]:
        if depth > MAX_EXT_DEPTH:

            def too_deep(value: Any) -> msgpack.ExtType:
                raise _too_deep(value)

            return too_deep

        hooks, learn, memo, dirty = self._hooks, self._learn, self.memo[depth], self._dirty
        packer: msgpack.Packer | None = None

        def default(value: Any) -> msgpack.ExtType:
            nonlocal packer
            try:
                code, tag, encode, raw, walk = hooks[type(value)]
            except KeyError:
                code, tag, encode, raw, walk = learn(type(value))
            if walk is _ALWAYS:
                known = memo.get(id(value))
                if known is not None and known[0] is value:
                    return self._again(value, known[1])
            if code == RECORD_CODE:
                # A record's map, packed as a plain one. The guard walked it as part of its
                # bundle, and nothing but that bundle's copy holds it: no memo either.
                if packer is None:
                    packer = self._level(depth)
                state = dict(value)
                if deep and _nests_deeper(state, _DEEP_NESTING):
                    raise _too_nested(value)
                data = packer.pack(state) if deep else self._pack(packer, state)
                return _new_ext(_ExtType, (RECORD_CODE, data))
            fields = encode(value)
            if walk is _RESULT:
                # A snapshot is a leaf unless its result is a container (its exception
                # and a result of any other kind are ext values of their own).
                if type(fields[1]) not in TRAVERSED:
                    if type(fields[1]) in WRITTEN_AS_IS:
                        raise written_as_is(fields[1])
                    walk = _NEVER
                else:
                    known = memo.get(id(value))
                    if known is not None and known[0] is value:
                        return self._again(value, known[1])
            if walk:
                self.guard.check(fields)
            if code == _BUNDLE_CODE and type(fields[0]) is dict:
                _mark_records(fields[0])  # the hook's own copy (walked above as it was)
            if raw:
                if len(fields) == 1 and type(fields[0]) is bytes:
                    return _new_ext(_ExtType, (code, fields[0]))
                code = _TAGGED
            if packer is None:
                packer = self._level(depth)
            if code == _TAGGED:
                fields = [tag, *fields]
            elif type(fields) is not list:
                fields = list(fields)
            # Checked before packing, so that packing never recurses deeper than the
            # decoder accepts (the decoder skips the walk for data too short to nest).
            if deep and _nests_deeper(fields, _DEEP_NESTING):
                raise _too_nested(value)
            # Below the free levels, _nests_deeper bounds the nesting far lower.
            data = packer.pack(fields) if deep else self._pack(packer, fields)
            ext = _new_ext(_ExtType, (code, data))
            if walk:
                if not memo:
                    dirty.append(memo)
                memo[id(value)] = (value, ext)
            return ext

        deep = depth > _FREE_LEVELS
        return default

    def _again(self, value: Any, ext: msgpack.ExtType) -> msgpack.ExtType:
        self.duplicated += len(ext.data)
        if self.duplicated > MAX_DUPLICATED_BYTES:
            msg = (
                f"A {type(value).__name__} referenced from many places would be written "
                f"again and again (more than {MAX_DUPLICATED_BYTES:,} bytes of copies): "
                "msgpack stores trees. Store it once, or use codec='pickle', which keeps "
                "shared references."
            )
            raise SharedValueError(msg, value=value)
        return ext


def _counts_as_ext(value: Any) -> bool:
    """Whether msgpack writes ``value`` as an ext value (nested at most MAX_EXT_DEPTH deep):
    every value but lists and maps, and a savable's record (as a record wherever plumpy
    puts one; a record elsewhere may be counted once too often)."""
    kind = type(value)
    return (kind is not dict and kind is not list) or (kind is dict and _META in value)


def _too_deep(value: Any) -> EncodeError:
    msg = (
        f"Values nest more than {MAX_EXT_DEPTH} deep (a {type(value).__name__} inside "
        "tuples, sets, exceptions or other values msgpack has no type of its own for); "
        "msgpack checkpoints refuse deeper nesting. Flatten the value or use codec='pickle'."
    )
    return NestingError(msg, limit=MAX_EXT_DEPTH, counts=_counts_as_ext)


def _too_nested(value: Any) -> EncodeError:
    msg = (
        f"A {type(value).__name__} nested {_FREE_LEVELS + 1} or more values deep holds lists "
        f"and dicts nested more than {_DEEP_NESTING} deep; msgpack checkpoints refuse that "
        "much nesting there. Flatten the value or use codec='pickle'."
    )
    return NestingError(msg, limit=MAX_EXT_DEPTH, counts=_counts_as_ext, target=value)


def _too_deeply_nested(value: Any) -> EncodeError:
    path = path_deeper_than([value], _MAX_NESTING)
    msg = (
        f"Lists and dicts nest more than {_MAX_NESTING:,} deep at {path or '<root>'}: "
        "msgpack checkpoints refuse that (msgpack's decoder stops at 1,024 levels, and "
        "pickle at Python's recursion limit). Flatten the value, e.g. into rows."
    )
    return EncodeError(msg, path=path)


def _nests_deeper(
    container: list[Any] | dict[Any, Any], limit: int, records: Container[int] = ()
) -> bool:
    """Whether lists and dicts nest more than ``limit`` deep in ``container`` (itself 1).

    Other values are ext values, each checked at its own level, so the walk never enters
    them; it visits each list and dict of one level at most once. On decode, a savable's
    record is an ext value that decodes to a dict: the decode passes the ids of those it
    made as ``records``, which are not entered either (an encode meets them as
    :class:`_Record`). No other built-in hook returns a plain list or dict.
    """
    if limit <= 0:
        return True
    items = container.values() if type(container) is dict else container
    if len(items) > 64:  # a long flat list is ruled out at C speed
        kinds = set(map(type, items))
        if list not in kinds and dict not in kinds:
            return False
    for item in items:
        kind = type(item)
        if (
            (kind is list or kind is dict)
            and id(item) not in records
            and _nests_deeper(item, limit - 1, records)
        ):
            return True
    return False


class _Decoder:
    """One decode at a time: one unpacker per ext depth, each reading the data of the ext
    values the level above it met.

    As in :class:`_Encoder`, each level's ``ext_hook`` is a closure that knows its depth.
    Two backends read the bytes, the same way: msgspec's decoder (``"msgspec"``, which
    caches map keys and builds containers faster) and msgpack-python's ``Unpacker``
    (``"msgpack"``, whose state is on the heap); each calls Python only for ext values.

    A *bound* decoder decodes for a load (:meth:`MsgpackCodec.decode_bound`): every
    savable's record it meets (a bundle's map, or a :data:`RECORD_CODE` ext value) goes
    to :attr:`binding` as soon as its values are decoded, its snapshots become what the
    binding makes of them, and a value a hook outside the built-in ones decoded marks
    the binding unsure unless it is opaque.
    """

    __slots__ = (
        "_by_code",
        "_by_tag",
        "_hook",
        "_maps",
        "_top",
        "backend",
        "binding",
        "bound",
        "capacity",
        "inert",
        "met",
        "records",
        "registry",
    )

    def __init__(
        self,
        registry: HookRegistry,
        capacity: int,
        *,
        bound: bool = False,
        inert: bool = False,
        backend: str = "msgpack",
    ) -> None:
        self.registry = registry
        # Ext data is part of the payload, so no Unpacker ever needs a bigger buffer (or
        # a longer str, bin or array) than the payloads this decoder takes.
        self.capacity = capacity
        self.bound = bound
        #: decode the structure only (:meth:`MsgpackCodec.decode_inert`): no hook runs
        self.inert = inert
        #: ``"msgspec"`` or ``"msgpack"``: which library reads the bytes
        self.backend = backend
        #: the load this decode is for (set around each decode of a bound decoder)
        self.binding: Binding | None = None
        #: how many savables' records the binding was handed in this decode
        self.met = 0
        #: the ids of the records this decode made (see :func:`_nests_deeper`)
        self.records: set[int] = set()
        self._by_code: dict[int, Callable[[list[Any]], Any]] = {}
        self._by_tag: dict[str, Callable[[list[Any]], Any]] = {}
        self._maps = _map_options()
        self._hook = self._hook_at(1)
        self._top: Callable[[bytes], Any] | None = None
        if backend == "msgspec":
            self._top = _msgspec_decoder(self._hook)

    def decode(self, data: bytes) -> Any:
        try:  # (records is empty here: every decode clears it on its way out)
            if self._top is not None:
                return self._top(data)
            return msgpack.unpackb(
                data, ext_hook=self._hook, strict_map_key=False, raw=False, **self._maps
            )
        finally:
            self.records.clear()

    def _learn(self, code: int) -> Callable[[list[Any]], Any]:
        decode: Callable[[list[Any]], Any]
        if code == RECORD_CODE:
            decode = self._decode_record
        elif code == _TAGGED:
            decode = _nothing if self.inert else self._decode_tagged
        elif code in _TAG_OF and self.inert:
            decode = _INERT.get(code, _nothing)
        elif code in _TAG_OF:
            decode = self.registry.decoder(_TAG_OF[code])
            if self.bound and code in _SNAPSHOT_CODES:
                decode = self._binding_of(decode)
            elif self.bound and code == _BUNDLE_CODE:
                decode = self._bundle_of(decode)
        else:
            msg = (
                f"Unknown msgpack ext type {code} in checkpoint; this codec writes "
                f"{_TAGGED}, {min(_TAG_OF)}-{max(_TAG_OF)} and {RECORD_CODE}. The record is "
                "damaged or crafted."
            )
            raise CorruptCheckpointError(msg)
        self._by_code[code] = decode
        return decode

    def _decode_record(self, state: Any) -> dict[Any, Any]:
        if type(state) is not dict or _META not in state:
            msg = f"Malformed savable's record in checkpoint: {state!r:.100}."
            raise CorruptCheckpointError(msg)
        self.records.add(id(state))  # alive until the decode ends: part of its tree
        if self.bound:
            self.met += 1
            cast(Binding, self.binding).savable(state)
        return state

    def _bundle_of(self, decode: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
        """``decode`` (the bundle hook), handing the bundle's map to the binding first."""

        def bind(fields: list[Any]) -> Any:
            if len(fields) == 1 and type(fields[0]) is dict and _META in fields[0]:
                self.met += 1
                self.binding.savable(fields[0])  # type: ignore[union-attr]  # set by now
            return decode(fields)

        return bind

    def _binding_of(self, decode: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
        """``decode`` (a snapshot's hook), handing what it decodes to the binding."""

        def bind(fields: list[Any]) -> Any:
            value = decode(fields)
            if type(value) is FutureSnapshot:
                return self.binding.future(value)  # type: ignore[union-attr]  # set by now
            return value  # a subclass of the user's: the load's walk decides

        return bind

    def _unpack_at(self, depth: int) -> Callable[[bytes], Any]:
        """:return: what reads one ext value's data at ``depth`` (its ext values go to the
        hook of the level below), refusing trailing bytes"""
        hook = self._hook_at(depth + 1)
        if self.backend == "msgspec":
            return _msgspec_decoder(hook)
        unpacker = _unpacker(hook, self.capacity, self._maps)
        end = 0  # where the Unpacker's stream must stand after each value

        def unpack(data: bytes) -> Any:
            nonlocal end
            end += len(data)
            unpacker.feed(data)
            fields = unpacker.unpack()
            if unpacker.tell() != end:
                return _TRAILING  # the hook names the ext type
            return fields

        return unpack

    def _hook_at(self, depth: int) -> Callable[[int, bytes], Any]:
        if depth > MAX_EXT_DEPTH:

            def too_deep(code: int, data: bytes) -> Any:
                msg = (
                    f"Checkpoint nests values more than {MAX_EXT_DEPTH} deep, more than this "
                    "codec ever writes. The record is damaged or crafted."
                )
                raise CorruptCheckpointError(msg)

            return too_deep

        by_code, learn = self._by_code, self._learn
        unpack: Callable[[bytes], Any] | None = None

        def ext_hook(code: int, data: bytes) -> Any:
            nonlocal unpack
            try:
                decode = by_code[code]
            except KeyError:
                decode = learn(code)
            if decode is _dec_uuid and len(data) == 16:
                # The built-in UUID hook, inline: a field list and a call less per UUID.
                return uuid_from_int(int.from_bytes(data, "big"))
            if code in _RAW_CODES:
                fields: Any = [bytes(data)]  # (msgspec hands over a memoryview)
            else:
                if unpack is None:
                    unpack = self._unpack_at(depth)
                fields = unpack(data)
                kind = type(fields)
                if kind is not list and (kind is not dict or code != RECORD_CODE):
                    if fields is _TRAILING:
                        msg = f"Trailing bytes inside an ext value of type {code} in checkpoint."
                        raise CorruptCheckpointError(msg)
                    msg = f"Malformed ext value of type {code} in checkpoint: {fields!r:.100}."
                    raise CorruptCheckpointError(msg)
                if (
                    deep
                    and len(data) > _DEEP_NESTING
                    and _nests_deeper(fields, _DEEP_NESTING, self.records)
                ):
                    msg = (
                        f"Checkpoint nests lists and maps more than {_DEEP_NESTING} deep inside "
                        f"a value {depth} levels down, more than this codec ever writes. The "
                        "record is damaged or crafted."
                    )
                    raise CorruptCheckpointError(msg)
            try:
                return decode(fields)
            except LoopAwarePersistError:
                raise
            except Exception as error:
                tag = "record" if code == RECORD_CODE else _TAG_OF.get(code) or str(fields[0])
                raise _malformed(tag, error) from error

        deep = depth > _FREE_LEVELS
        return ext_hook

    def _decode_tagged(self, fields: list[Any]) -> Any:
        if not fields or type(fields[0]) is not str:
            msg = f"Malformed tagged value in checkpoint: {fields!r:.100}."
            raise CorruptCheckpointError(msg)
        tag = fields[0]
        decode = self._by_tag.get(tag)
        if decode is None:
            decode = self._by_tag[tag] = self.registry.decoder(tag)
        value = decode(fields[1:])
        if self.bound and not isinstance(value, self.registry.opaque):
            # A user's hook may build dicts from anything, a database row say: only a
            # walk can tell whether plumpy would read one as a savable.
            cast(Binding, self.binding).unsure = True
        return value


def _count_meta(data: bytes | bytearray | memoryview) -> int:
    """:return: how many times ``!!meta`` occurs in ``data`` (without overlaps): by
    ``bytes.count`` in short data, by a compiled pattern in longer (half its time there)"""
    if len(data) < 4096:
        raw = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        return raw.count(_META_BYTES)
    return len(_find_meta(data))


_find_meta = re.compile(re.escape(_META_BYTES)).findall


#: What msgpack-python's per-level reader returns for ext data with bytes after its value
#: (msgspec refuses those itself).
_TRAILING: Final = object()


def _nothing(fields: list[Any]) -> None:
    del fields


def _inert_bundle(fields: list[Any]) -> plumpy.Bundle:
    (mapping,) = fields
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, mapping)
    return bundle


# What an inert decode makes of the built-in containers (no class is revived, no hook of
# the registry's runs); every other ext value becomes None.
_INERT: Final[dict[int, Callable[[list[Any]], Any]]] = {
    WELL_KNOWN_CODES["tuple"]: tuple,
    WELL_KNOWN_CODES["set"]: set,
    WELL_KNOWN_CODES["frozenset"]: frozenset,
    WELL_KNOWN_CODES["bundle"]: _inert_bundle,
    WELL_KNOWN_CODES["attrdict"]: lambda fields: MappingProxyType(fields[0]),
    WELL_KNOWN_CODES["frozendict"]: lambda fields: MappingProxyType(fields[0]),
    WELL_KNOWN_CODES["odict"]: lambda fields: collections.OrderedDict(fields[0]),
}


def _unpacker(
    ext_hook: Callable[[int, bytes], Any], capacity: int, maps: dict[str, Any]
) -> msgpack.Unpacker:
    # Every limit is the capacity, as unpackb derives them from its input: a length
    # field can never make it allocate more than the payload could hold.
    return msgpack.Unpacker(
        ext_hook=ext_hook,
        strict_map_key=False,
        raw=False,
        read_size=min(capacity, 4096),
        max_buffer_size=capacity,
        **maps,
    )


def _map_options() -> dict[str, Any]:
    """msgpack-python's pure-Python fallback (PyPy, or no C extension) passes every map
    key that is an instance of ``str`` to ``sys.intern`` (msgpack-python PR #381), which fails for
    a ``str`` subclass such as a ``FutureStatus`` key decoded from an ext value. Building
    maps from their pairs skips that; the C extension interns exact ``str`` keys only.

    :return: the Unpacker options for maps
    """
    if msgpack.Unpacker.__module__ == "msgpack.fallback":
        return {"object_pairs_hook": dict}
    return {}


def _msgspec_decoder(ext_hook: Callable[[int, bytes], Any]) -> Callable[[bytes], Any]:
    """:param ext_hook: called for each ext value met
    :return: the ``decode`` of a msgspec decoder of untyped msgpack (reentrant: its state
        is on the C stack, so a hook may decode with another, or the same, decoder)"""
    assert _msgspec_msgpack is not None  # chosen only when importable
    hook = cast(Callable[[int, memoryview], Any], ext_hook)  # (data is a memoryview)
    return _msgspec_msgpack.Decoder(ext_hook=hook).decode


def _malformed(tag: str, error: Exception) -> CorruptCheckpointError:
    msg = (
        f"Malformed {tag!r} value in checkpoint ({type(error).__name__}: "
        f"{error}). The record was damaged or crafted."
    )
    return CorruptCheckpointError(msg)


class MsgpackCodec:
    """The msgpack codec.

    Safe to share between threads and to call from its own hooks: each encode and decode
    takes an encoder or decoder of its own from a small pool (and only one that finished
    cleanly goes back). Changes to the registry apply to the next call.

    :param registry: the hooks and allow-list; ``default_registry`` if not given
    :param decoder: which library reads the bytes: ``"msgspec"`` (faster: it caches map
        keys; the ``fast`` extra installs it) or ``"msgpack"`` (msgpack-python); by
        default msgspec if it is installed. Both read the same bytes into the same
        values, and the encoder is msgpack-python's either way.
    :raises ConfigurationError: if ``decoder`` is unknown, or ``"msgspec"`` and it is not
        installed
    """

    name = "msgpack"

    def __init__(self, *, registry: HookRegistry | None = None, decoder: str | None = None) -> None:
        if decoder is None:
            decoder = "msgpack" if _msgspec_msgpack is None else "msgspec"
        elif decoder not in DECODERS:
            msg = f"Unknown msgpack decoder {decoder!r}; choose one of {', '.join(DECODERS)}."
            raise ConfigurationError(msg)
        elif decoder == "msgspec" and _msgspec_msgpack is None:
            msg = (
                "decoder='msgspec' needs msgspec, which is not installed: "
                "pip install 'loopaware-persist[fast]', or leave decoder unset."
            )
            raise ConfigurationError(msg)
        #: which library reads the bytes (``"msgspec"`` or ``"msgpack"``); setting it
        #: applies from the next decode
        self.decoder = decoder
        self.registry = registry if registry is not None else default_registry
        self._encoders: list[_Encoder] = []
        self._decoders: list[_Decoder] = []
        self._bound_decoders: list[_Decoder] = []

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` in one pass.

        :param value: the tree to encode
        :raises EncodeError: naming the path of the first value it cannot store
        :return: the msgpack bytes
        """
        try:
            encoder = self._encoders.pop()
        except IndexError:
            encoder = _Encoder(self.registry)
        else:
            if encoder.registry is not self.registry:
                self._encoders.clear()
                encoder = _Encoder(self.registry)
        try:
            data = encoder.encode(value)
        except (
            TypeError,
            ValueError,
            OverflowError,
            UnicodeEncodeError,
            LoopAwarePersistError,
        ) as error:
            # The encoder is dropped rather than pooled: its packers stopped mid-way.
            if isinstance(error, ValueError) and str(error).startswith("recursion limit exceeded"):
                raise _too_deeply_nested(value) from error
            raise encode_error(value, self.registry, error) from error
        if not encoder.big and len(self._encoders) < _POOL_SIZE:
            self._encoders.append(encoder)
        return data

    def decode(self, data: bytes) -> Any:
        """Decode bytes written by :meth:`encode`.

        :param data: msgpack bytes
        :raises DecodeError: a :class:`CorruptCheckpointError`, :class:`UnknownTagError` or
            :class:`UnsafeCheckpointError`; never any other exception type
        :return: the tree
        """
        try:
            return self._decode(data)[0]
        except DecodeError:
            raise
        except Exception as error:
            # Only on failure: decode_errors turns it into the typed error callers expect
            # (a context manager around every decode costs more than a small one's hooks).
            check_payload(data, "msgpack")
            with decode_errors("msgpack"):
                raise error

    def decode_bound(self, data: bytes, binding: Binding) -> Any:
        """Decode bytes written by :meth:`encode` for a load, telling ``binding`` as it goes.

        Each savable's record (a bundle's map, or a record the encoder wrote as one: all
        those plumpy's ``save`` puts under another's keys) goes to ``binding.savable``
        as soon as its values are decoded, so a name the load refuses stops the decode
        before anything after it in the record is decoded; each future snapshot becomes
        ``binding.future(snapshot)`` where it sits. ``binding.unsure`` is set if a value
        some hook outside the built-in ones decoded is not opaque, or if the bytes hold
        ``!!meta`` anywhere but in the records the binding was handed (a map elsewhere,
        a string, or a record of format version 1, which wrote records as plain maps).

        :param data: msgpack bytes
        :param binding: the load's
        :raises DecodeError: as :meth:`decode`, or what ``binding`` raises
        :return: the tree
        """
        try:
            value, met = self._decode(data, binding)
        except DecodeError:
            raise
        except Exception as error:
            check_payload(data, "msgpack")
            with decode_errors("msgpack"):
                raise error
        # In a string, a bytes value, a list of pairs: anywhere but the records met.
        if _count_meta(data) != met:
            binding.unsure = True
        return value

    def decode_inert(self, data: bytes) -> Any:
        """Decode the structure of bytes written by :meth:`encode`, running no hook.

        Lists, dicts, tuples, sets, frozensets, plumpy bundles and ordered dicts come
        back as themselves, frozendicts as read-only mappings, every other value msgpack
        has no type of its own for as ``None``: what a load needs to name the path of a
        name it refused, without reviving anything.

        :param data: msgpack bytes
        :raises DecodeError: if the bytes are damaged
        :return: the structure
        """
        check_payload(data, "msgpack")
        decoder = _Decoder(self.registry, max(len(data), _POOLED_BYTES), inert=True)
        with decode_errors("msgpack"):
            return decoder.decode(data)

    def _decode(self, data: bytes, binding: Binding | None = None) -> tuple[Any, int]:
        size = len(data)
        pool = self._decoders if binding is None else self._bound_decoders
        decoder = None
        if size <= _POOLED_BYTES:
            try:
                decoder = pool.pop()
            except IndexError:
                pass
            else:
                if decoder.registry is not self.registry or decoder.backend != self.decoder:
                    pool.clear()
                    decoder = None
        if decoder is None:
            decoder = _Decoder(
                self.registry,
                max(size, _POOLED_BYTES),
                bound=binding is not None,
                backend=self.decoder,
            )
        decoder.binding, decoder.met = binding, 0
        paused = _gc_pause.MIN_BYTES <= size <= _gc_pause.MAX_BYTES
        if paused:
            _gc_pause.pause()
        try:
            value = decoder.decode(data)
        except RecursionError:
            if decoder.backend != "msgspec":
                raise
            # msgspec counts its nesting against the interpreter's recursion limit, which
            # the caller's frames share; msgpack-python's unpackers keep theirs on the heap
            # and take the 1,000 levels of lists and maps an encode accepts.
            if binding is not None:
                binding.reset()
            decoder = _Decoder(self.registry, max(size, _POOLED_BYTES), bound=binding is not None)
            decoder.binding = binding
            value = decoder.decode(data)
        finally:
            if paused:
                _gc_pause.resume()
        decoder.binding = None
        # Only a decoder that succeeded is reused (a failed one may hold half-read data),
        # and only a small one: its buffers stay under _POOLED_BYTES each.
        if decoder.capacity == _POOLED_BYTES and len(pool) < _POOL_SIZE:
            pool.append(decoder)
        return value, decoder.met


def configure_registry(registry: HookRegistry) -> None:
    """msgpack needs no hooks beyond the built-in ones; kept for the one-module-per-format shape.

    :param registry: the registry to configure
    """
    del registry


def make_codec(*, registry: HookRegistry | None = None) -> MsgpackCodec:
    """:param registry: hooks and allow-list to use (default: ``default_registry``)
    :return: a msgpack codec, decoding with msgspec if it is installed
    """
    return MsgpackCodec(registry=registry)
