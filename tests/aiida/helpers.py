"""Running the test WorkChain until it "crashes", with our persister installed."""

from __future__ import annotations

from typing import Any

import pytest
from aiida import orm
from aiida.manage import get_manager

from tests.aiida.workchains import CRASH, Crash, ParentChain

ALLOW = ("tests.aiida",)


def crashed_run(
    *, at: int = 1, big: bool = False, ctx_pks: dict[str, Any] | None = None
) -> orm.WorkChainNode:
    """Run ParentChain until its round ``at`` raises :class:`Crash`: the node stays
    unsealed, its last checkpoint taken by the installed persister.

    :param ctx_pks: filled with the pks of the context's nodes when it crashed (what its
        last checkpoint holds: the crash comes before the step changes anything)
    :return: the process node
    """
    runner = get_manager().get_runner()
    CRASH["at"] = at
    process = runner.instantiate_process(ParentChain, x=orm.Int(1), big=orm.Bool(big))
    with pytest.raises(Crash):
        process.execute()
    CRASH["at"] = None
    if ctx_pks is not None:
        ctx_pks["total"] = process.ctx.total.pk
        ctx_pks["history"] = [n.pk for n in process.ctx.history]
    node = process.node
    process.close()
    return node


def ctx_nodes(ctx: Any) -> list[orm.Node]:
    return [ctx["total"], *ctx["history"]]


def creator_chain_reaches(node: orm.Node, inputs: set[int]) -> bool:
    """Whether following creators and their inputs from ``node`` reaches one of ``inputs``."""
    todo, seen = [node], set()
    while todo:
        current = todo.pop()
        if current.pk in inputs:
            return True
        if current.pk in seen:
            continue
        seen.add(current.pk)
        creator = getattr(current, "creator", None)
        if creator is not None:
            todo.extend(link.node for link in creator.base.links.get_incoming().all())
    return False


__all__ = ("ALLOW", "ParentChain", "crashed_run", "creator_chain_reaches", "ctx_nodes")
