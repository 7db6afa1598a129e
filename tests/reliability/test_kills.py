"""Figure 2: real kills. A forked writer saves in a loop and reports each acknowledged
version through a pipe; the parent SIGKILLs it at a random moment (after a random
number of acknowledgements, plus a random delay), then reopens the store.

Checked after every kill: the record decodes (0 corrupt), its version is at
least the last acknowledged one (0 acknowledged saves lost) and at most one more
(the save in flight), and the file storage holds no temp file after the open.
Every durable storage runs it, PostgreSQL too (marked ``integration``).
"""

from __future__ import annotations

import os
import random
import select
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from loopaware_persist import CheckpointNotFoundError, open_persister
from loopaware_persist.storage import CheckpointKey, open_storage
from loopaware_persist.storage.file import TEMP_PREFIX
from tests.axes import store_url

from ._support import ALLOW, HEAVY, HEAVY_TIMEOUT, Budget, figure, record_for

pytestmark = pytest.mark.timeout(HEAVY_TIMEOUT)

KILLS = 1000 if HEAVY else 100
#: Kills a loaded 2-core machine still reaches in the time budget, even if every writer
#: stalls for STALL_S (a busy PostgreSQL); fewer mean the figure says too little.
MIN_KILLS = 100 if HEAVY else 10
#: Longest wait for a writer's acknowledgements before it is killed anyway.
STALL_S = 5.0
KEY = CheckpointKey("killed")
ACK = struct.Struct(">Q")


def _writer(url: str, records: list[bytes], fd: int, durability: Any) -> None:  # pragma: no cover
    with open_storage(url, durability=durability) as storage:
        i = 0
        while True:
            version = storage.put(KEY, records[i % len(records)])
            os.write(fd, ACK.pack(version))
            i += 1


def _acks(fd: int, buffered: bytearray, want: int | None, deadline: float = float("inf")) -> bool:
    """Read acknowledgements: at least ``want`` more, or (None) all until EOF.

    :param deadline: when to stop waiting for ``want`` (``time.monotonic()``)
    :return: whether the wait ended by the deadline, the writer still silent
    """
    need = None if want is None else len(buffered) + want * ACK.size
    while need is None or len(buffered) < need:
        if need is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return True
        chunk = os.read(fd, 4096)
        if not chunk:
            return False
        buffered += chunk
    return False


@attrs.define
class KillTally:
    """What a kill campaign saw: acknowledgements, the last one, and the damage."""

    acked: int = 0
    last_ack: int = 0
    lost: int = 0
    corrupt: int = 0
    in_flight_landed: int = 0
    #: kills of a writer that had not acknowledged as many saves as wanted in STALL_S
    stalled: int = 0


def kill_campaign(
    url: str,
    records: list[bytes],
    durability: str,
    rng: random.Random,
    *,
    budget: Budget,
    first_acks: tuple[int, ...] = (0, 0, 1, 2, 5),
    after_open: Callable[[], None] | None = None,
) -> KillTally:
    """SIGKILL a forked writer of ``KEY`` up to ``budget.count`` times (fewer if its time
    runs out); check the store after each.

    :param url: the store
    :param records: what the writer saves, in turn
    :param durability: the writer's durability
    :param rng: when to kill (after how many acknowledgements, plus a short delay)
    :param budget: how many kills, and for how long
    :param first_acks: the acknowledgements to wait for before a kill, chosen from
    :param after_open: called after each reopen (which sweeps orphans), before the checks
    :return: the tally; a record that does not decode fails at once
    """
    tally = KillTally()
    for _ in budget:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(read_end)
            try:
                _writer(url, records, write_end, durability)
            finally:
                os._exit(1)
        os.close(write_end)
        buffered = bytearray()
        try:
            # Never wait on a writer past the budget (nor long at all): a stalled writer
            # is killed where it stands, which is a kill like any other.
            wait_until = min(time.monotonic() + STALL_S, budget.started + budget.seconds)
            tally.stalled += _acks(read_end, buffered, rng.choice(first_acks), wait_until)
            time.sleep(rng.random() * 0.004)  # a random moment, not a timing assertion
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            _acks(read_end, buffered, None)  # what was acknowledged before death
        finally:
            os.close(read_end)
        tally.acked += len(buffered) // ACK.size
        if buffered:
            tally.last_ack = ACK.unpack_from(buffered, len(buffered) - ACK.size)[0]
        with open_persister(url, allow=[ALLOW]) as per:
            if after_open is not None:
                after_open()
            try:
                record = per.storage.get(KEY)
            except CheckpointNotFoundError:
                tally.lost += tally.last_ack > 0
                continue
            try:
                per.loads(record.data)
            except Exception:
                tally.corrupt += 1
                raise
            assert record.data in records
            tally.lost += record.version < tally.last_ack
            tally.in_flight_landed += record.version == tally.last_ack + 1
            assert record.version <= tally.last_ack + 1
            assert [i.version for i in per.storage.list()] == [record.version]
            tally.last_ack = record.version
    return tally


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_sigkill_writer(tmp_path: Path, durable_storage: str, durability: str) -> None:
    storage = durable_storage
    rng = random.Random(f"kills-{storage}-{durability}")
    with open_persister("memory://", allow=[ALLOW]) as enc:
        records = [record_for(enc, KEY.pid, i) for i in range(3)]
    orphans = 0

    def count_orphans() -> None:
        nonlocal orphans
        if storage == "file":
            orphans += sum(n.startswith(TEMP_PREFIX) for n in os.listdir(tmp_path / "files"))

    with store_url(storage, tmp_path, "files" if storage == "file" else "kills") as url:
        if storage == "postgresql":
            with open_persister(url, allow=[ALLOW]):
                pass  # creates the schema once, before the writers race to
            # PostgreSQL takes longer to connect: wait for an acknowledgement more often.
            first_acks = (0, 1, 1, 2, 5)
        else:
            first_acks = (0, 0, 1, 2, 5)
        budget = Budget(KILLS, MIN_KILLS)
        tally = kill_campaign(
            url,
            records,
            durability,
            rng,
            budget=budget,
            first_acks=first_acks,
            after_open=count_orphans,
        )
    last_ack = tally.last_ack
    line = figure(
        "real_kills",
        storage=storage,
        durability=durability,
        sigkills=budget.ran,
        campaign=budget.report(),
        acknowledged_saves=tally.acked,
        final_version=last_ack,
        corrupt=tally.corrupt,
        acknowledged_saves_lost=tally.lost,
        unacknowledged_in_flight_save_landed=tally.in_flight_landed,
        writers_killed_while_stalled=tally.stalled,
        orphan_temp_files_after_open=orphans,
    )
    assert line["corrupt"] == line["acknowledged_saves_lost"] == 0
    assert line["orphan_temp_files_after_open"] == 0
    assert last_ack > 0
    budget.check()
