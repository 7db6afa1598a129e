"""Inspecting and verifying: read one checkpoint in safe mode and say what is wrong."""

from __future__ import annotations

from typing import Any

import attrs

from .._audit import audit_bundle
from .._envelope import Header, read_header
from .._errors import (
    CheckpointNotFoundError,
    LoopAwarePersistError,
    StorageError,
)
from .._loop import LoopContext
from .._persister import LoopAwarePersister
from .._registry import HookRegistry
from .._unbundle import unbundle
from ..storage import CheckpointKey, pid_token
from ._common import Problem, classify, one_line, reason_for, throwaway_loop


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
    with throwaway_loop() as loop:
        unbundle(bundle, LoopContext(loop=loop), registry=registry)


def inspect_record(
    persister: LoopAwarePersister, key: CheckpointKey, *, load: bool = False
) -> Inspection:
    """Read one checkpoint safely: check its envelope, decode it, audit it.

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
        return Inspection(key=key, problem=classify(error), reason=reason_for(error))
    found = Inspection(key=key, version=record.version, size=len(record.data))
    try:
        found = attrs.evolve(found, header=read_header(record.data))
        found = attrs.evolve(found, bundle=persister.loads(record.data, key=key))
        audit_bundle(found.bundle, persister.registry)
    except LoopAwarePersistError as error:
        return attrs.evolve(found, problem=classify(error), reason=reason_for(error))
    except (RecursionError, MemoryError, ValueError, TypeError) as error:
        # An untyped failure of a decoder on hostile bytes is still this record's
        # problem: report it and let verify go on to the next record.
        reason = f"unexpected {type(error).__name__} while decoding: {one_line(error)}"
        return attrs.evolve(found, problem="undecodable", reason=reason)
    if load:
        try:
            _try_load(found.bundle, persister.registry)
        except Exception as error:  # a restart would fail the same way: report, go on
            return attrs.evolve(found, problem="unloadable", reason=reason_for(error))
    return found
