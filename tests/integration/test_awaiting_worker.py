"""A WorkChain checkpointed while it waits on its children (``ToContext``), continued
with them by a real worker process over RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import loopaware_persist as lp
from loopaware_persist import WorkerClient
from tests import awaiting_processes as ap
from tests.integration.conftest import DEADLINE, Workers
from tests.loops import close_loop


@pytest.fixture
def saved(tmp_path: Path) -> Iterator[tuple[str, object, list[object]]]:
    """A SQLite store holding a ChildChain WAITING on its two CREATED children."""
    url = f"sqlite:///{tmp_path / 'checkpoints.db'}"
    loop = asyncio.new_event_loop()
    try:
        with lp.open_persister(url, allow=["tests.awaiting_processes"]) as persister:
            ap.SAVE_CHILDREN_WITH[:] = [persister]
            parent = ap.save_child_chain(loop, persister)
            yield url, parent.pid, [child.pid for child in ap.LAUNCHED]
    finally:
        ap.SAVE_CHILDREN_WITH.clear()
        ap.LAUNCHED.clear()
        close_loop(loop)


@pytest.mark.parametrize("n_workers", [1, 2])
def test_workers_continue_the_parent_and_its_children(
    saved: tuple[str, object, list[object]], workers: Workers, client: WorkerClient, n_workers: int
) -> None:
    """With one worker the children are linked in memory; with two, a child may run
    on the other worker, and the parent finds it terminated in the store."""
    url, parent, children = saved
    workers.start(n_workers, store=url, prefetch=3)
    # The parent first: the worker loads it before the children it waits for.
    replies = [client.continue_(pid) for pid in [parent, *children]]
    outputs = [reply.result(timeout=DEADLINE) for reply in replies]
    assert outputs == [{"total": 30}, {"y": 10}, {"y": 20}]
    with lp.open_persister(url, allow=["tests.awaiting_processes"]) as persister:
        states = {info.pid: info.as_dict()["state"] for info in persister.list_info()}
    assert states == dict.fromkeys([parent, *children], "finished")
