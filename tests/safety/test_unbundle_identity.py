"""What a load hands plumpy: hook-decoded values as decoded, with the bundle's own allow-list.

* A value a registry hook decoded keeps its identity (design.md, "Fidelity"): an ORM
  node must stay the stored node, not come back as an unstored clone. Only
  containers of plain data are copied when a bundle must stay reusable.
* A :class:`LoopAwareBundle` carries the registry it was decoded with: the
  module-level ``unbundle(bundle, ctx)`` loads what ``load_process`` loads.
* A plumpy ``ObjectLoader`` in the load context resolves the stored identifiers (AiiDA
  has its own), and what it resolves is still checked against the allow-list.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Callable, Iterator
from typing import Any

import plumpy
import pytest
from plumpy import loaders

from loopaware_persist import (
    FutureSnapshot,
    HookRegistry,
    LoopAwarePersister,
    LoopContext,
    UnsafeCheckpointError,
    check_loop_bound,
    default_registry,
    open_persister,
    unbundle,
)
from loopaware_persist._audit import SafeObjectLoader
from loopaware_persist._unbundle import _Rebind
from tests.axes import CODECS
from tests.loops import new_loop, run_on
from tests.processes import EXPECTED_OUTPUTS, RESUME_VALUE, Opaque, Waiter, complete, drive

# Identity of hook-decoded values.


class Node:
    """Stands for an ORM node: one object per stored row, handed out by a session."""

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid


#: The "session": what the decode hook returns from, by uuid.
TABLE = {uuid: Node(uuid) for uuid in ("n1", "n2")}


def node_registry() -> HookRegistry:
    registry = default_registry.copy()
    registry.register(
        Node,
        tag="tests.node",
        encode=lambda node: [node.uuid],
        decode=lambda fields: TABLE[fields[0]],
    )
    return registry


@pytest.fixture(scope="module")
def node_store() -> Iterator[LoopAwarePersister]:
    with open_persister("memory://", registry=node_registry(), allow=["tests.processes"]) as s:
        yield s


@pytest.fixture
def node_pid(node_store: LoopAwarePersister) -> Any:
    """A WorkChain mid-outline whose context holds stored nodes, one of them twice."""
    with new_loop() as a:
        chain = drive("chain", a)
        assert chain.ctx is not None
        chain.ctx.node = TABLE["n1"]
        chain.ctx.nodes = [TABLE["n2"], {"again": TABLE["n1"]}, (TABLE["n2"],)]
        node_store.save_checkpoint(chain, verify=True)
    return chain.pid


LOADS: dict[str, Callable[[LoopAwarePersister, Any, Any], plumpy.Process]] = {
    "load_process": lambda store, pid, b: store.load_process(pid, loop=b),
    "bundle.unbundle": lambda store, pid, b: store.load_checkpoint(pid).unbundle(
        plumpy.LoadSaveContext(loop=b)
    ),
    "unbundle": lambda store, pid, b: unbundle(store.load_checkpoint(pid), LoopContext(b)),
}


@pytest.mark.parametrize("how", list(LOADS))
def test_hook_decoded_values_keep_their_identity(
    node_store: LoopAwarePersister, node_pid: Any, how: str
) -> None:
    with new_loop() as b:
        process = LOADS[how](node_store, node_pid, b)
        ctx = process.ctx
        assert ctx is not None
        assert ctx.node is TABLE["n1"], "the stored node came back as a clone"
        assert ctx.nodes[0] is TABLE["n2"]
        assert ctx.nodes[1]["again"] is TABLE["n1"]
        assert ctx.nodes[2][0] is TABLE["n2"]
        assert run_on(b, complete(process)) == EXPECTED_OUTPUTS["chain"]


def test_a_bundle_loaded_twice_still_hands_over_the_stored_nodes(
    node_store: LoopAwarePersister, node_pid: Any
) -> None:
    """The second load of one bundle decodes its record again (the hooks run again), so the
    two processes share no mutable value, and both hold the stored nodes themselves."""
    bundle = node_store.load_checkpoint(node_pid)
    with new_loop() as b1, new_loop() as b2:
        first = bundle.unbundle(plumpy.LoadSaveContext(loop=b1))
        second = unbundle(bundle, LoopContext(b2))
        assert first.ctx is not None
        assert second.ctx is not None
        assert first.ctx.node is second.ctx.node is TABLE["n1"]
        assert first.ctx.nodes is not second.ctx.nodes
        assert first.ctx.nested is not second.ctx.nested
        first.ctx.nested["a"]["b"].append("only in the first")
        assert second.ctx.nested["a"]["b"] == [1.5, 2.25, -0.0]
        check_loop_bound(first, b1)
        check_loop_bound(second, b2)


class Tagged(dict[str, Any]):
    """A dict subclass with attributes, as a hook would decode it (AiiDA's AttributeDict)."""


def test_the_walk_copies_plain_containers_only() -> None:
    node = TABLE["n1"]
    inner = Tagged(value=1, node=node)
    inner.label = "kept"
    with_snapshot = Tagged(pending=FutureSnapshot.finished(5), node=node)
    with_snapshot.label = "copied, faithfully"
    tree = {"plain": [{"x": 1}, node], "inner": inner, "snap": with_snapshot}
    with new_loop() as b:
        out = _Rebind(b, copy=True, registry=None).run(tree)
        assert out is not tree
        assert out["plain"] is not tree["plain"]  # plain data: copied
        assert out["plain"][0] is not tree["plain"][0]
        assert out["plain"][1] is node  # what a hook decoded: handed over as is
        assert out["inner"] is inner  # a hook's container with nothing to rebind: as is
        snap = out["snap"]
        # A hook's container holding a snapshot is copied rather than changed in place,
        # class, items and attributes included, so the bundle stays reusable.
        assert snap is not with_snapshot
        assert type(snap) is Tagged
        assert snap.label == "copied, faithfully"
        assert snap["node"] is node
        assert snap["pending"].get_loop() is b
        assert snap["pending"].result() == 5
        assert isinstance(with_snapshot["pending"], FutureSnapshot)  # the bundle: untouched
        # Without copy (a bundle just decoded, held by nobody else) it is updated in place.
        same = _Rebind(b, copy=False, registry=None).run(tree)
        assert same is tree
        assert same["snap"] is with_snapshot
        assert with_snapshot["pending"].get_loop() is b


# The bundle's own allow-list.


@pytest.fixture(scope="module")
def store() -> Iterator[LoopAwarePersister]:
    with open_persister("memory://", allow=["tests.processes"]) as s:
        yield s


def test_unbundle_uses_the_registry_the_bundle_was_decoded_with(
    store: LoopAwarePersister,
) -> None:
    """tests.processes is on the persister's allow-list, not on default_registry's."""
    with new_loop() as a:
        process = drive("waiting", a)
        store.save_checkpoint(process)
    with new_loop() as b:
        restored = unbundle(store.load_checkpoint(process.pid), LoopContext(b))
        assert type(restored) is Waiter
        assert run_on(b, complete(restored)) == EXPECTED_OUTPUTS["waiting"]
        # A registry passed explicitly still decides.
        with pytest.raises(UnsafeCheckpointError, match=r"tests\.processes:Waiter"):
            unbundle(store.load_checkpoint(process.pid), LoopContext(b), registry=default_registry)


# A plumpy ObjectLoader in the load context.

#: Every Forbidden plumpy rebuilt: must stay empty.
FORBIDDEN_LOADED: list[Any] = []


class Forbidden(plumpy.Process):
    """A process class of a module no test persister allows."""

    def load_instance_state(self, saved_state: Any, load_context: Any) -> None:
        FORBIDDEN_LOADED.append(self)
        super().load_instance_state(saved_state, load_context)


class ShortNames(loaders.ObjectLoader):
    """Like AiiDA's loader: short identifiers for some classes, ``module:name`` for others.

    :param names: identifier -> class
    """

    def __init__(self, names: dict[str, type]) -> None:
        self.names = names
        self.default = loaders.DefaultObjectLoader()

    def load_object(self, identifier: str) -> Any:
        if identifier in self.names:
            return self.names[identifier]
        return self.default.load_object(identifier)

    def identify_object(self, obj: Any) -> str:
        for name, cls in self.names.items():
            if cls is obj:
                return name
        return self.default.identify_object(obj)


@pytest.fixture
def short_pid(store: LoopAwarePersister) -> Any:
    """A WAITING Waiter saved while the global loader (as AiiDA sets it) names it 'waiter'."""
    previous = loaders.get_object_loader()
    loaders.set_object_loader(ShortNames({"waiter": Waiter}))
    try:
        with new_loop() as a:
            process = drive("waiting", a)
            store.save_checkpoint(process)
    finally:
        loaders.set_object_loader(previous)
    assert store.load_checkpoint(process.pid)["!!meta"]["class_name"] == "waiter"
    return process.pid


SHORT_LOADS: dict[str, Callable[[LoopAwarePersister, Any, Any, Any], plumpy.Process]] = {
    "load_process": lambda s, pid, b, loader: s.load_process(pid, loop=b, loader=loader),
    "bundle.unbundle": lambda s, pid, b, loader: s.load_checkpoint(pid).unbundle(
        plumpy.LoadSaveContext(loop=b, loader=loader)
    ),
    "unbundle": lambda s, pid, b, loader: unbundle(
        s.load_checkpoint(pid), LoopContext(b), loader=loader
    ),
    "unbundle, SafeObjectLoader": lambda s, pid, b, loader: unbundle(
        s.load_checkpoint(pid), LoopContext(b), loader=SafeObjectLoader(s.registry, loader=loader)
    ),
}


@pytest.mark.parametrize("how", list(SHORT_LOADS))
def test_an_object_loader_in_the_context_resolves_identifiers(
    store: LoopAwarePersister, short_pid: Any, how: str
) -> None:
    with new_loop() as b:
        process = SHORT_LOADS[how](store, short_pid, b, ShortNames({"waiter": Waiter}))
        assert type(process) is Waiter
        check_loop_bound(process, b)

        async def finish() -> Any:
            process.resume(RESUME_VALUE)
            return await complete(process)

        assert run_on(b, finish()) == EXPECTED_OUTPUTS["waiting"]


@pytest.mark.parametrize("how", list(SHORT_LOADS))
def test_what_an_object_loader_resolves_is_still_checked(
    store: LoopAwarePersister, short_pid: Any, how: str
) -> None:
    FORBIDDEN_LOADED.clear()
    with new_loop() as b, pytest.raises(UnsafeCheckpointError) as caught:
        SHORT_LOADS[how](store, short_pid, b, ShortNames({"waiter": Forbidden}))
    assert "'waiter'" in str(caught.value)
    assert f"{__name__}:Forbidden" in str(caught.value)
    assert FORBIDDEN_LOADED == []  # refused before plumpy rebuilt anything


def test_an_object_loader_that_cannot_resolve_is_a_typed_error(
    store: LoopAwarePersister, short_pid: Any
) -> None:
    with new_loop() as b, pytest.raises(UnsafeCheckpointError, match="'waiter'"):
        store.load_process(short_pid, loop=b, loader=ShortNames({}))


def test_concurrent_loads_of_one_bundle_share_nothing(
    node_store: LoopAwarePersister, node_pid: Any
) -> None:
    """Only one load can be a bundle's first (the one handed its decoded values); the
    others, however they interleave, decode afresh."""
    bundle = node_store.load_checkpoint(node_pid)
    loops = [asyncio.new_event_loop() for _ in range(4)]
    try:
        with concurrent.futures.ThreadPoolExecutor(len(loops)) as pool:
            processes = list(
                pool.map(lambda b: bundle.unbundle(plumpy.LoadSaveContext(loop=b)), loops)
            )
        contexts = [process.ctx for process in processes]
        assert len({id(ctx.nested) for ctx in contexts}) == len(loops)
        assert len({id(ctx.nodes) for ctx in contexts}) == len(loops)
        assert all(ctx.node is TABLE["n1"] for ctx in contexts)
        for process, b in zip(processes, loops, strict=True):
            check_loop_bound(process, b)
    finally:
        for b in loops:
            b.close()


# Futures held by objects.


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("how", list(LOADS))
def test_futures_inside_an_object_come_back_as_futures(codec: str, how: str) -> None:
    """A future held by an allowed object (in an attribute, a list, a dict) was stored as a
    snapshot and came back as a FutureSnapshot: the walk did not look inside objects."""
    with open_persister("memory://", codec=codec, allow=["tests.processes"]) as s:
        with new_loop() as a:
            chain = drive("chain", a, listener=False)
            assert chain.ctx is not None
            done = a.create_future()
            done.set_result(3)
            chain.ctx.holder = Opaque([done, {"again": done, "pending": a.create_future()}])
            s.save_checkpoint(chain, verify=True)
        with new_loop() as b:
            process = LOADS[how](s, chain.pid, b)
            assert process.ctx is not None
            first, inner = process.ctx.holder.value
            assert isinstance(first, asyncio.Future)
            assert first.get_loop() is b
            assert first.result() == 3
            assert isinstance(inner["pending"], asyncio.Future)
            assert not inner["pending"].done()
            if codec == "pickle":  # pickle keeps the reference shared
                assert inner["again"] is first
            check_loop_bound(process, b)
            assert run_on(b, complete(process)) == EXPECTED_OUTPUTS["chain"]


def test_an_objects_insides_are_walked_in_place_never_copied() -> None:
    """An ORM object's own containers stay its own: only a snapshot is ever replaced."""
    node = TABLE["n2"]
    own = {"columns": [1, 2], "nested": {"x": (1, "y")}}
    node.__dict__["state"] = own
    holder = Opaque({"snap": FutureSnapshot.finished(1)})
    tree = {"node": node, "nodes": [node], "holder": holder}
    try:
        with new_loop() as b:
            out = _Rebind(b, copy=True, registry=None).run(tree)
            assert out["node"] is node
            assert out["nodes"][0] is node
            assert node.__dict__["state"] is own
            assert own["columns"] == [1, 2]
            assert out["holder"] is holder
            assert holder.value["snap"].get_loop() is b
    finally:
        del node.__dict__["state"]


class Link:
    """One link of a chain of objects, as deep as a test likes."""

    def __init__(self, following: Any) -> None:
        self.following = following


@pytest.mark.parametrize("copy", [True, False])
def test_a_deep_chain_of_objects_is_walked_without_recursion(copy: bool) -> None:
    depth = 5 * sys.getrecursionlimit()
    chain: Any = [FutureSnapshot.finished("end")]
    for _ in range(depth):
        chain = Link({"next": chain})
    with new_loop() as b:
        out = _Rebind(b, copy=copy, registry=None).run({"chain": chain})
        link = out["chain"]
        assert link is chain  # objects are handed over, never copied
        for _ in range(depth):
            link = link.following["next"]
        assert link[0].get_loop() is b
        assert link[0].result() == "end"


def test_the_bundle_check_save_returns_still_loads_anywhere() -> None:
    """check_save (verify) runs the load's walk on the bundle it returns; unbundling that
    bundle afterwards, onto any loop, starts from a fresh decode."""
    with open_persister("memory://", allow=["tests.processes"]) as s:
        with new_loop() as a:
            chain = drive("chain", a, listener=False)
            assert chain.ctx is not None
            chain.ctx.holder = Opaque([a.create_future()])
            bundle = s.check_save(chain)
        with new_loop() as b:
            process = bundle.unbundle(plumpy.LoadSaveContext(loop=b))
            assert process.ctx is not None
            assert process.ctx.holder.value[0].get_loop() is b
