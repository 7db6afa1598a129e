"""Converting: copy every record of a store, or of a plumpy ``PicklePersister``
directory, into another store, re-encoded and resumable.

The sources it reads are in :mod:`._sources`.

Convert's resume marker
-----------------------

Every record :class:`Converter` writes carries two extra header meta entries:
``converted_from`` (the source store and record, as JSON: ``["<store>", "<pid
token>", <tag>]`` for a store, ``["plumpy-pickle:///abs/dir", "<file name>"]``
for a pickle; the store is its real path for ``sqlite:``/``file:`` and its URL,
password redacted, otherwise) and ``converted_sha256`` (the SHA-256 of the
source record's bytes). A later run reads the destination's headers once, and
skips a source record whose marker matches, whose format is the one asked for
and whose envelope still decodes (checksums intact). Content hashes, not
versions, because two stores number their versions independently and a store that was emptied and
refilled starts again at version 1. The store is part of the marker because
pids repeat across stores (AiiDA's are ints): converting a second store into
the same destination reports each key the first one wrote as a conflict
(unless ``overwrite``) instead of replacing it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import attrs
import plumpy

from .._audit import audit_bundle
from .._envelope import decode_envelope
from .._errors import (
    LoopAwarePersistError,
    StaleCheckpointError,
)
from .._hooks import ForeignException
from .._persister import LoopAwarePersister
from .._snapshot import FutureSnapshot
from ..storage import CheckpointKey
from ._common import ATOMS, classify, one_line, reason_for
from ._sources import Source, SourceItem, StoreSource

#: Header meta key naming the source record a converted record was copied from.
CONVERTED_FROM: Final = "converted_from"
#: Header meta key holding the SHA-256 (hex) of the source record's bytes.
CONVERTED_SHA256: Final = "converted_sha256"


def _foreign_exceptions(bundle: Any) -> list[str]:
    """Names of exception classes that decoded as :class:`ForeignException` stand-ins."""
    found: list[str] = []
    seen: set[int] = set()
    stack = [bundle]
    while stack:
        value = stack.pop()
        if isinstance(value, ATOMS) or id(value) in seen:
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
        if isinstance(value, ATOMS):
            continue
        ident = id(value)
        if expanded:
            total = 1
            for child in children(value):
                if not isinstance(child, ATOMS):
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
                version=info.version,
                ref=ref if isinstance(ref, str) else None,
                sha256=meta.get(CONVERTED_SHA256) if isinstance(ref, str) else None,
                codec=info.header.codec if info.header is not None else None,
                compression=info.header.compression if info.header is not None else None,
            )
            self._by_key[info.key] = existing
            if existing.ref is not None:
                self._by_ref[existing.ref] = info.key

    def items(self) -> list[SourceItem]:
        """:return: the source records, in order"""
        return self.source.items()

    def damaged(self) -> list[ConvertResult]:
        """:return: a failure for each record of a store source that its listing skipped
        as damaged: it cannot be converted, and a report must say so"""
        if not isinstance(self.source, StoreSource):
            return []
        return [
            ConvertResult(source="(a damaged record)", status="failed", reason=one_line(error))
            for error in self.source.damaged()
        ]

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
                source=item.label, status="failed", key=item.key, reason=reason_for(error)
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
                reason=f"{classify(error)}: {reason_for(error)}",
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
            reason = f"another writer changed the destination meanwhile: {reason_for(error)}"
            return ConvertResult(source=item.label, status="failed", key=key, reason=reason)
        except (LoopAwarePersistError, ModuleNotFoundError) as error:
            return ConvertResult(
                source=item.label, status="failed", key=key, reason=reason_for(error)
            )
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
            return f"written but not readable back: {reason_for(error)}"
        if record.version != version:
            return "another writer replaced the record right after it was written"
        problem: str | None = None
        if record.data != data:
            problem = "the destination returned different bytes than were written"
        else:
            try:
                audit_bundle(self.dst.loads(record.data), self.dst.registry)
            except LoopAwarePersistError as error:
                problem = f"written record does not decode: {reason_for(error)}"
        if problem is not None:
            self.dst.storage.delete(key)
        return problem
