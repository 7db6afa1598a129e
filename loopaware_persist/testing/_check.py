"""One storage check's context: its storage, a namespace for pids, failure reporting."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import NoReturn, TypeVar

from loopaware_persist._errors import CheckpointNotFoundError
from loopaware_persist.storage._base import (
    CheckpointKey,
    Storage,
    StoredRecord,
)

_E = TypeVar("_E", bound=BaseException)

_TIMEOUT = 120.0  # for barriers and joins: a deadlock fails instead of hanging


class _Check:
    """One check's context: its storage, a namespace for pids, failure reporting."""

    def __init__(self, name: str, storage: Storage, factory: Callable[[], Storage]) -> None:
        self.name = name
        self.storage = storage
        self.factory = factory
        self.namespace = uuid.uuid4().hex[:12]

    def fail(self, detail: str) -> NoReturn:
        msg = f"check_storage: {self.name} failed on {self.storage!r}: {detail}"
        raise AssertionError(msg)

    def expect(self, condition: bool, detail: str) -> None:
        if not condition:
            self.fail(detail)

    def expect_equal(self, actual: object, expected: object, what: str) -> None:
        if actual != expected:
            self.fail(f"{what}: expected {_short(expected)}, got {_short(actual)}")

    def raises(self, exc_type: type[_E], call: Callable[[], object], what: str) -> _E:
        try:
            result = call()
        except exc_type as exc:
            return exc
        except BaseException as exc:
            self.fail(f"{what}: expected {exc_type.__name__}, got {type(exc).__name__}: {exc}")
        self.fail(f"{what}: expected {exc_type.__name__}, but it returned {_short(result)}")

    def str_pid(self, label: str) -> str:
        return f"{self.namespace}-{label}"

    def int_pid(self) -> int:
        # Random 62-bit ints: unique across checks sharing a store, and within
        # the range every SQL database stores as an integer.
        return uuid.uuid4().int >> 66

    def key(self, label: str, tag: str | None = None) -> CheckpointKey:
        return CheckpointKey(self.str_pid(label), tag)

    def get(self, key: CheckpointKey, what: str) -> StoredRecord:
        try:
            record = self.storage.get(key)
        except CheckpointNotFoundError:
            self.fail(f"{what}: get({key!r}) raised CheckpointNotFoundError")
        self.expect(
            isinstance(record, StoredRecord),
            f"{what}: get() returned {type(record)!r}, not a StoredRecord",
        )
        self.expect(
            type(record.data) is bytes, f"{what}: get().data is {type(record.data)!r}, not bytes"
        )
        self.expect_equal(record.key, key, f"{what}: get().key")
        return record


def _short(value: object) -> str:
    text = repr(value)
    if isinstance(value, (bytes, bytearray)) and len(value) > 40:
        digest = hashlib.sha256(value).hexdigest()[:12]
        text = f"<{len(value)} bytes, sha256 {digest}..., starting {bytes(value[:16])!r}>"
    return text if len(text) <= 300 else text[:300] + "..."
