"""Save a real WorkChain with this persister, reload it as AiiDA does and as we do."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import plumpy
import pytest
from aiida import orm
from aiida.manage import get_manager

import loopaware_persist
from loopaware_persist._loop_check import _check_loop_bound
from loopaware_persist.aiida import install, installed, uninstall
from tests.aiida.helpers import ALLOW, crashed_run, creator_chain_reaches, ctx_nodes

pytestmark = pytest.mark.usefixtures("profile")


@pytest.fixture(params=["aiida://", "sqlite"])
def persister(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    store = None if request.param == "aiida://" else f"sqlite:///{tmp_path}/ck.db"
    with installed(store=store, allow=ALLOW) as persister:
        yield persister


def test_install_makes_aiida_use_it_and_uninstall_undoes_it() -> None:
    manager = get_manager()
    before = manager.get_persister()
    ours = install(allow=ALLOW)
    try:
        assert cast(object, manager.get_persister()) is ours
        assert manager.get_runner().persister is ours
    finally:
        uninstall()
    assert manager.get_persister() is before
    assert manager.get_runner().persister is before


def _check_resumed(process: Any, node: orm.WorkChainNode, before: dict[str, Any]) -> None:
    ctx = process.ctx
    # The same stored nodes as before the crash, not copies.
    assert ctx["total"].pk == before["total"]
    assert ctx["total"].uuid == orm.load_node(before["total"]).uuid
    assert all(n.is_stored for n in ctx_nodes(ctx))
    assert [n.pk for n in ctx["history"]] == before["history"]
    assert ctx["history"][0].pk == node.inputs.x.pk
    assert dict(ctx["plain"]) == {"a": 1, "b": [1, 2, 3], "c": "text"}
    assert type(ctx["attrs"]).__name__ == "AttributeDict"
    assert ctx["attrs"].nested.n == 2
    process.execute()
    assert node.is_finished_ok, node.exit_status
    total = node.outputs.total
    assert total.value == 3
    assert node.outputs.child.value == 6
    assert creator_chain_reaches(total, {node.inputs.x.pk})


@pytest.mark.parametrize("how", ["bundle.unbundle", "load_process"])
def test_resume_keeps_the_stored_nodes_and_provenance(persister: Any, how: str) -> None:
    before: dict[str, Any] = {}
    node = crashed_run(at=1, big=True, ctx_pks=before)
    bundle = persister.load_checkpoint(node.pk)
    runner = get_manager().get_runner()
    if how == "bundle.unbundle":  # what aiida's ProcessLauncher._continue does
        process = bundle.unbundle(plumpy.LoadSaveContext(runner=runner))
    else:
        process = persister.load_process(node.pk, loop=runner.loop, runner=runner)
    assert process.loop is runner.loop
    assert len(process.ctx["table"]) == 1000
    assert process.ctx["total"].creator is not None  # made by the calcfunction of round 0
    loopaware_persist.check_loop_bound(process, runner.loop, registry=persister.registry)
    # The loop check does not walk AiiDA's ORM, storage backend and runner: about 20,000
    # objects per load before the AiiDA registry declared them opaque.
    walked: set[int] = set()
    _check_loop_bound(process, runner.loop, walked, persister.registry.opaque)
    assert len(walked) < 500
    _check_resumed(process, node, before)


def test_load_from_the_main_thread_inside_another_loop(persister: Any) -> None:
    """The load runs on the caller's (main) thread, in AiiDA's database session of that
    thread, while another loop runs there."""
    node = crashed_run(at=1)
    runner = get_manager().get_runner()
    other = asyncio.new_event_loop()
    try:

        async def load() -> Any:
            return persister.load_process(node.pk, loop=runner.loop, runner=runner)

        process = other.run_until_complete(load())
    finally:
        other.close()
    assert process.loop is runner.loop
    assert process.ctx["total"].is_stored
    process.execute()
    assert node.is_finished_ok


def test_checkpoint_goes_when_the_process_ends(persister: Any) -> None:
    node = crashed_run(at=1)
    assert persister.get_process_checkpoints(node.pk)
    process = persister.load_process(
        node.pk, loop=get_manager().get_runner().loop, runner=get_manager().get_runner()
    )
    process.execute()
    assert node.is_finished_ok
    assert persister.get_process_checkpoints(node.pk) == []
    assert node.checkpoint is None


def test_a_context_holding_node_links_managers_checkpoints_and_resumes(persister: Any) -> None:
    """``self.ctx.res = child.outputs``: before, every save of it failed (AiiDA only logs
    that) and the process ran without a checkpoint."""
    from aiida.common.links import LinkType
    from aiida.orm.utils.managers import NodeLinksManager

    from tests.aiida.workchains import CRASH, Crash, LinksChain

    runner = get_manager().get_runner()
    CRASH["at"] = 0
    process = runner.instantiate_process(LinksChain, x=orm.Int(4))
    try:
        with pytest.raises(Crash):
            process.execute()
    finally:
        CRASH["at"] = None
    child = process.ctx.child
    node: orm.WorkChainNode = process.node
    process.close()
    assert persister.get_process_checkpoints(node.pk)

    resumed = persister.load_process(node.pk, loop=runner.loop, runner=runner)
    res, ins = resumed.ctx["res"], resumed.ctx["ins"]
    assert type(res) is NodeLinksManager
    assert type(ins) is NodeLinksManager
    assert res._node.uuid == ins._node.uuid == child.uuid
    assert (res._link_type, res._incoming) == (LinkType.RETURN, False)
    assert (ins._link_type, ins._incoming) == (LinkType.INPUT_WORK, True)
    assert res.result.value == 8
    assert ins.x.pk == node.inputs.x.pk
    resumed.execute()
    assert node.is_finished_ok, node.exit_status
    assert node.outputs.result.pk == child.outputs.result.pk
