"""``verdi process repair`` on a process whose checkpoint is ours (RabbitMQ profile)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiida import orm
from aiida.manage import get_manager

from loopaware_persist import LoopAwarePersister
from loopaware_persist.aiida import installed
from tests.aiida.daemon_support import (
    ALLOW,
    RMQ,
    Worker,
    ensure_profile,
    make_rabbitmq_profile,
    switched_to,
    verdi,
    wait_terminated,
)
from tests.aiida.daemon_workchains import TracedChain

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_verdi_process_repair_requeues_a_stuck_process_our_worker_then_runs(
    profile: Any, tmp_path: Path
) -> None:
    """A process with a checkpoint (ours) but no task -- what a worker killed inside
    ``Runner.submit`` leaves -- is found by ``verdi process repair`` and finished by
    our worker from that checkpoint."""
    ensure_profile(RMQ, make_rabbitmq_profile)
    with switched_to(RMQ), installed(RMQ, allow=ALLOW) as persister:
        runner = get_manager().get_runner()
        process = runner.instantiate_process(TracedChain, x=orm.Int(5), rounds=orm.Int(1))
        assert isinstance(runner.persister, LoopAwarePersister)
        assert runner.persister is persister
        runner.persister.save_checkpoint(process)  # Runner.submit's save, without its task
        process.close()
        node = process.node

        repaired = verdi("-p", RMQ, "process", "repair")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert str(node.pk) in repaired.stdout

        worker = Worker(RMQ, tmp_path)
        try:
            wait_terminated(node, 120, [worker])
        finally:
            assert worker.stop() == 0, worker.output()
        assert node.is_finished_ok
        assert node.outputs.total.value == 6
        assert node.outputs.child.value == 12
