"""Crash and resume: a daemon worker SIGKILLed right after its k-th checkpoint, for every
k of an uninterrupted run, and a fresh worker finishing the job; under RabbitMQ and
under AiiDA's ZeroMQ broker (each gives a dead worker's unacknowledged tasks to the next).

Each resumed run must give the uninterrupted run's outputs, and the same provenance:
the context's nodes come back as the same stored nodes (so each ``add`` takes the
previous one's result, the child takes the last one, and the outputs *are* those nodes)
and every output's creator chain leads back to the workchain's own input node.

The campaign is bounded: at most ``MAX_CHECKPOINTS`` kill points, each worker given
``WORKER_TIMEOUT`` seconds, the whole campaign ``BUDGET`` seconds (``LOOPAWARE_CRASH_BUDGET``
overrides); its timings are printed (``-s``) and recorded as test properties.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiida import orm
from aiida.engine import submit

from loopaware_persist.aiida import installed
from tests.aiida.daemon_support import (
    ALLOW,
    RMQ,
    ZMQ,
    Worker,
    ensure_profile,
    make_rabbitmq_profile,
    make_zeromq_profile,
    start_daemon,
    switched_to,
    verdi,
    wait_terminated,
)
from tests.aiida.daemon_workchains import TracedChain

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

MAX_CHECKPOINTS = 40
WORKER_TIMEOUT = 90.0
BUDGET = float(os.environ.get("LOOPAWARE_CRASH_BUDGET", "900"))


@pytest.fixture(scope="module", params=["rabbitmq", "zeromq"])
def broker_profile(request: pytest.FixtureRequest, profile: Any) -> Iterator[str]:
    """A profile of each broker, loaded, with our persister installed for ``submit``.

    ZeroMQ: ``submit`` requires a running daemon (it owns the broker service), so our
    daemon is started and brought down to no workers; the test's workers connect to
    its broker service.
    """
    if request.param == "rabbitmq":
        ensure_profile(RMQ, make_rabbitmq_profile)
        with switched_to(RMQ), installed(RMQ, allow=ALLOW):
            yield RMQ
        return
    ensure_profile(ZMQ, make_zeromq_profile)
    start_daemon(ZMQ)
    try:
        emptied = verdi("-p", ZMQ, "daemon", "decr", "1")
        assert emptied.returncode == 0, emptied.stdout + emptied.stderr
        with switched_to(ZMQ), installed(ZMQ, allow=ALLOW):
            yield ZMQ
    finally:
        verdi("-p", ZMQ, "daemon", "stop")


def _submit() -> orm.WorkflowNode:
    return submit(TracedChain, x=orm.Int(1), rounds=orm.Int(3), big=orm.Bool(True))


def _outputs(node: orm.ProcessNode) -> dict[str, Any]:
    out = node.outputs
    return {
        "state": (node.process_state.value, node.exit_status),
        "total": out.total.value,
        "child": out.child.value,
        "history": [out.history[f"n{i}"].value for i in range(len(out.history))],
        "context": out.context.get_dict(),
    }


def _signature(node: orm.Node, inputs: dict[str, str], seen: int = 0) -> Any:
    """What made ``node``, recursively: its creator's label and its inputs' signatures;
    the workchain's own inputs by name (so a copy of one would not match)."""
    if node.uuid in inputs:
        return ("input", inputs[node.uuid])
    creator = node.creator
    if creator is None:
        return ("orphan", getattr(node, "value", None))
    links = creator.base.links.get_incoming(link_type=_input_calc()).all()
    return (
        creator.process_label,
        tuple(sorted((link.link_label, _signature(link.node, inputs)) for link in links)),
        getattr(node, "value", None) if not isinstance(node, orm.Dict) else "dict",
    )


def _input_calc() -> Any:
    from aiida.common.links import LinkType

    return LinkType.INPUT_CALC


def _provenance(node: orm.WorkflowNode) -> dict[str, Any]:
    inputs = {link.node.uuid: link.link_label for link in node.base.links.get_incoming().all()}
    out = node.outputs
    history = [out.history[f"n{i}"] for i in range(len(out.history))]
    adds = sorted((c for c in node.called if c.process_label == "add"), key=lambda c: c.ctime)
    child = out.child.creator.caller
    # The context's nodes are the stored nodes themselves: history[0] is the input x,
    # each add takes the previous result and returns the next, the child takes the last.
    assert history[0].uuid == node.inputs.x.uuid
    assert [a.inputs.x.uuid for a in adds] == [h.uuid for h in history[:-1]]
    assert [a.outputs.result.uuid for a in adds] == [h.uuid for h in history[1:]]
    assert out.total.uuid == history[-1].uuid
    assert child.inputs.x.uuid == history[-1].uuid
    assert child.caller.uuid == node.uuid
    return {
        "outputs": {
            label: _signature(n, inputs)
            for label, n in [("total", out.total), ("child", out.child), ("context", out.context)]
        },
        "called": sorted(
            collections.Counter(c.process_label for c in node.called if c.is_terminated).items()
        ),
    }


def _orphans(node: orm.WorkflowNode) -> list[tuple[str | None, int | None, Any]]:
    return [
        (c.process_label, c.pk, c.process_state.value) for c in node.called if not c.is_terminated
    ]


def test_worker_killed_after_each_checkpoint_resumes_identically(
    broker_profile: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    baseline = Worker(broker_profile, tmp_path)
    try:
        reference_node = _submit()
        wait_terminated(reference_node, WORKER_TIMEOUT, [baseline])
    finally:
        baseline.stop()
    checkpoints = baseline.checkpoints
    reference = _outputs(reference_node)
    reference_provenance = _provenance(reference_node)
    assert reference["state"] == ("finished", 0)
    assert reference["history"] == [1, 2, 3, 4]
    assert reference["child"] == 8
    assert reference["context"]["attrs_types"] == ["AttributeDict", "AttributeDict"]
    assert len(reference["context"]["table"]) == 1000
    # Created, running and waiting states of the parent and the child, at least.
    assert 6 <= checkpoints <= MAX_CHECKPOINTS, baseline.saves.read_text()
    uninterrupted = time.monotonic() - started
    # The child's creation checkpoints: the first run of ChildChain saves in the log
    # (Process's own on entering CREATED, then Runner.submit's), before the parent's next.
    labels = [line.split()[1] for line in baseline.saves.read_text().splitlines()]
    first = labels.index("ChildChain") + 1
    creation = set(range(first, labels.index("TracedChain", first) + 1))

    per_kill = []
    for k in range(1, checkpoints + 1):
        t0 = time.monotonic()
        node = _submit()
        crashing = Worker(broker_profile, tmp_path, crash_at=k)
        crashing.wait_killed(WORKER_TIMEOUT)
        assert crashing.checkpoints == k
        assert not node.is_sealed, f"k={k}: the process finished before the crash"
        fresh = Worker(broker_profile, tmp_path)
        try:
            wait_terminated(node, WORKER_TIMEOUT, [crashing, fresh])
        finally:
            fresh.stop()
        assert _outputs(node) == reference, f"k={k}"
        assert _provenance(node) == reference_provenance, f"k={k}"
        # The one difference a crash may leave, as with AiiDA's own persister: killed
        # between a child's first checkpoint and the continue task Runner.submit sends
        # next, the child stays created and never runs, and the parent, resumed from
        # before it, submits another. Nothing else may be left unfinished.
        _, label, pid = crashing.saves.read_text().splitlines()[-1].split()
        expected = [(label, int(pid), "created")] if k in creation else []
        assert _orphans(node) == expected, f"k={k}"
        per_kill.append(time.monotonic() - t0)
        assert time.monotonic() - started < BUDGET, f"over the {BUDGET}s budget at k={k}"

    total = time.monotonic() - started
    record_property("checkpoints", checkpoints)
    record_property("campaign_seconds", round(total, 1))
    print(
        f"\ncrash campaign ({broker_profile}): {checkpoints} kill points, "
        f"uninterrupted run {uninterrupted:.1f}s, "
        f"per kill {min(per_kill):.1f}-{max(per_kill):.1f}s, total {total:.1f}s, "
        f"a never-run child left by the kills at {sorted(creation)}"
    )
