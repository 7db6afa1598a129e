"""A hypothesis state machine against a dict model: :func:`storage_state_machine`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from loopaware_persist._errors import (
    CheckpointNotFoundError,
    StaleCheckpointError,
)
from loopaware_persist.storage._base import (
    CheckpointKey,
    Pid,
    Storage,
)

if TYPE_CHECKING:
    from hypothesis.stateful import RuleBasedStateMachine

__all__ = ("storage_state_machine",)


def storage_state_machine(factory: Callable[[], Storage]) -> type[RuleBasedStateMachine]:
    """A hypothesis state machine checking a storage against a dict model.

    Each example opens a storage with ``factory``, clears a fixed set of pids,
    then runs random put / compare-and-set put / get / read_prefix / delete /
    delete_pid / list / list_key_tokens steps, comparing every answer with the
    model. The pids
    it uses are fixed, so no one else may write them to that store meanwhile.
    Needs hypothesis installed.

    :param factory: opens the storage under test
    :return: a ``RuleBasedStateMachine`` subclass; run it with
        ``run_state_machine_as_test`` or expose its ``TestCase`` to pytest
    """
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, rule

    pids: tuple[Pid, ...] = (
        0,
        7,
        "7",
        "..",
        "a/b",
        "a.b",
        "a",
        uuid.UUID(int=7),
        f"machine-{uuid.uuid4().hex}",
    )
    tokens = {CheckpointKey(pid).token for pid in pids}
    keys = st.builds(CheckpointKey, st.sampled_from(pids), st.sampled_from((None, "", "b", "x/y")))
    payloads = st.binary(max_size=64)

    def expect(condition: bool, detail: str) -> None:
        if not condition:
            msg = f"storage_state_machine: {detail}"
            raise AssertionError(msg)

    class StorageMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.storage = factory()
            for pid in pids:
                self.storage.delete_pid(pid)
            self.model: dict[CheckpointKey, tuple[bytes, int]] = {}

        def version(self, key: CheckpointKey) -> int:
            return self.model[key][1] if key in self.model else 0

        @rule(key=keys, data=payloads)
        def put(self, key: CheckpointKey, data: bytes) -> None:
            version = self.storage.put(key, data)
            expect(version == self.version(key) + 1, f"put({key!r}) returned {version}")
            self.model[key] = (data, version)

        @rule(key=keys, data=payloads, expected=st.integers(0, 3))
        def put_if(self, key: CheckpointKey, data: bytes, expected: int) -> None:
            current = self.version(key)
            try:
                version = self.storage.put(key, data, expected_version=expected)
            except StaleCheckpointError as exc:
                expect(expected != current, f"put expecting the current {current} failed")
                expect(exc.actual == current, f"StaleCheckpointError.actual {exc.actual}")
                return
            expect(expected == current, f"put expecting {expected} succeeded at {current}")
            expect(version == current + 1, f"put_if({key!r}) returned {version}")
            self.model[key] = (data, version)

        @rule(key=keys)
        def get(self, key: CheckpointKey) -> None:
            try:
                record = self.storage.get(key)
            except CheckpointNotFoundError:
                expect(key not in self.model, f"get({key!r}) found nothing")
                return
            expect(key in self.model, f"get({key!r}) found a deleted record")
            expect(
                (record.data, record.version) == self.model[key],
                f"get({key!r}) gave {(record.data, record.version)}, not {self.model[key]}",
            )

        @rule(key=keys, size=st.integers(0, 80))
        def read_prefix(self, key: CheckpointKey, size: int) -> None:
            try:
                data = self.storage.read_prefix(key, size)
            except CheckpointNotFoundError:
                expect(key not in self.model, f"read_prefix({key!r}) found nothing")
                return
            expect(key in self.model, f"read_prefix({key!r}) found a deleted record")
            expect(data == self.model[key][0][:size], f"read_prefix({key!r}, {size})")

        @rule(key=keys)
        def delete(self, key: CheckpointKey) -> None:
            deleted = self.storage.delete(key)
            expect(deleted == (key in self.model), f"delete({key!r}) returned {deleted}")
            self.model.pop(key, None)

        @rule(pid=st.sampled_from(pids))
        def delete_pid(self, pid: Pid) -> None:
            doomed = [key for key in self.model if key.token == CheckpointKey(pid).token]
            count = self.storage.delete_pid(pid)
            expect(count == len(doomed), f"delete_pid({pid!r}) returned {count}")
            for key in doomed:
                del self.model[key]

        @rule(pid=st.one_of(st.none(), st.sampled_from(pids)))
        def list_records(self, pid: Pid | None) -> None:
            listed = [
                (info.key, info.version, info.size)
                for info in self.storage.list(pid)
                if info.key.token in tokens
            ]
            wanted = sorted(
                (
                    (key, version, len(data))
                    for key, (data, version) in self.model.items()
                    if pid is None or key.token == CheckpointKey(pid).token
                ),
                key=lambda item: item[0].sort_key(),
            )
            expect(listed == wanted, f"list({pid!r}) gave {listed}, expected {wanted}")

        @rule(pid=st.one_of(st.none(), st.sampled_from(pids)))
        def list_key_tokens(self, pid: Pid | None) -> None:
            listed = [pair for pair in self.storage.list_key_tokens(pid) if pair[0] in tokens]
            wanted = [
                (key.token, key.tag)
                for key in sorted(self.model, key=CheckpointKey.sort_key)
                if pid is None or key.token == CheckpointKey(pid).token
            ]
            expect(listed == wanted, f"list_key_tokens({pid!r}) gave {listed}, expected {wanted}")

        def teardown(self) -> None:
            self.storage.close()

    return StorageMachine
