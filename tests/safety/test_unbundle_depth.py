"""``save_checkpoint(verify=True)`` is the promise "this will reload": depth and sharing.

Whatever verify accepts, ``load_process`` loads, with no bare ``RecursionError``:
the load's walk (audit, copy, snapshots made futures) recurses only so deep and
goes on iteratively, and verify runs that same walk. Deeper than a codec can
store is the codec's ``EncodeError`` at save, never a surprise at load.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import plumpy
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from loopaware_persist import (
    EncodeError,
    FutureSnapshot,
    LoopAwarePersister,
    LoopContext,
    UnsafeCheckpointError,
    check_loop_bound,
    open_persister,
    unbundle,
)
from loopaware_persist._unbundle import _Rebind
from tests.axes import CODECS
from tests.loops import new_loop, run_on
from tests.processes import EXPECTED_OUTPUTS, complete, drive
from tests.strategies import user_values_with_snapshots, values


@pytest.fixture
def store(codec_name: str) -> Iterator[LoopAwarePersister]:
    with open_persister("memory://", codec=codec_name, allow=["tests.processes"]) as s:
        yield s


def nested(depth: int, bottom: Any) -> list[Any]:
    """``[[[... [bottom] ...]]]``, ``depth`` lists deep, built without recursion."""
    tree: list[Any] = [bottom]
    for _ in range(depth - 1):
        tree = [tree]
    return tree


def depth_of(tree: Any) -> tuple[int, Any]:
    """:return: how many lists deep ``tree`` goes (one list per level), and what is at the bottom"""
    depth = 0
    while isinstance(tree, list):
        depth += 1
        (tree,) = tree
    return depth, tree


@pytest.mark.parametrize("depth", [300, 1000, 2000])
def test_whatever_verify_accepts_load_process_loads(store: LoopAwarePersister, depth: int) -> None:
    """Lists 1,000 deep passed verify=True, then load_process died with a RecursionError."""
    with new_loop() as a:
        chain = drive("chain", a)
        assert chain.ctx is not None
        chain.ctx.deep = nested(depth, {"leaf": (1, 2)})
        refused: EncodeError | None = None
        try:
            store.save_checkpoint(chain, verify=True)
        except EncodeError as error:
            refused = error
    if refused is not None:
        # Deeper than the codec stores (its encoder stops within the recursion limit):
        # refused at save, typed and saying why. The promise holds.
        assert "recursion" in str(refused)
        return
    for how in ("load_process", "bundle.unbundle"):
        with new_loop() as b:
            if how == "load_process":
                process = store.load_process(chain.pid, loop=b)
            else:
                bundle = store.load_checkpoint(chain.pid)
                process = bundle.unbundle(plumpy.LoadSaveContext(loop=b))
            assert process.ctx is not None
            assert depth_of(process.ctx.deep) == (depth, {"leaf": (1, 2)}), how
            check_loop_bound(process, b)
            assert run_on(b, complete(process)) == EXPECTED_OUTPUTS["chain"]


@pytest.mark.parametrize("copy", [True, False])
def test_the_walk_has_no_depth_limit(copy: bool) -> None:
    """Far deeper than any recursion limit (a crafted or pickle-decoded tree), with a
    snapshot at the bottom, a savable to audit on the way, and every container kind."""
    depth = 20 * sys.getrecursionlimit()
    bottom = {"snap": FutureSnapshot.finished("deep"), "t": (FutureSnapshot.pending(),)}
    tree: Any = bottom
    for i in range(depth):
        tree = [tree] if i % 3 == 0 else {"k": tree} if i % 3 == 1 else (tree, frozenset({i}))
    original = tree
    with new_loop() as b:
        walk = _Rebind(b, copy=copy, registry=None)
        out = walk.run(tree)
        for i in reversed(range(depth)):
            if i % 3 == 0:
                (out,) = out
                (tree,) = tree
            elif i % 3 == 1:
                out, tree = out["k"], tree["k"]
            else:
                out, tree = out[0], tree[0]
        assert out["snap"].get_loop() is b
        assert out["snap"].result() == "deep"
        assert out["t"][0].get_loop() is b
        assert not out["t"][0].done()
        # copy=True leaves the tree as it was; copy=False rebinds it in place.
        assert isinstance(bottom["snap"], FutureSnapshot) is copy
        assert (out is bottom) is not copy
    del original


def test_a_deep_refusal_names_its_path_and_runs_nothing() -> None:
    """The audit inside the walk refuses at any depth; the path comes from the iterative
    audit, so it is named however deep the culprit sits."""
    depth = 5 * sys.getrecursionlimit()
    bundle = {
        "!!meta": {"class_name": "tests.processes:Waiter"},
        "deep": nested(depth, {"!!meta": {"class_name": "os:system"}}),
    }
    with (
        open_persister("memory://", allow=["tests.processes"]) as s,
        new_loop() as b,
        pytest.raises(UnsafeCheckpointError, match="'os:system'") as caught,
    ):
        unbundle(bundle, LoopContext(b), registry=s.registry)
    assert "deep[0]" in str(caught.value)


def test_shared_references_are_walked_once() -> None:
    """``x = [x, x]`` 40 times: 2**40 paths, 40 lists. The walk keeps sharing and is linear."""
    tree: list[Any] = [FutureSnapshot.finished(1)]
    for _ in range(40):
        tree = [tree, tree]
    with new_loop() as b:
        out = _Rebind(b, copy=True, registry=None).run(tree)
        node = out
        for _ in range(40):
            assert node[0] is node[1]
            node = node[0]
        assert node[0].get_loop() is b


def test_verify_refuses_what_the_load_would_refuse(codec_name: str) -> None:
    """verify=True runs the load's own walk (audit included) on the record it will store."""
    with (
        open_persister("memory://", codec=codec_name) as narrow,
        open_persister("memory://", codec=codec_name, allow=["tests.processes"]) as wide,
        new_loop() as a,
    ):
        chain = drive("chain", a, listener=False)
        with pytest.raises(EncodeError, match=r"tests\.processes:Chain"):
            narrow.save_checkpoint(chain, verify=True)
        wide.save_checkpoint(chain, verify=True)
        with new_loop() as b:
            process = wide.load_process(chain.pid, loop=b)
            assert run_on(b, complete(process)) == EXPECTED_OUTPUTS["chain"]


@pytest.mark.parametrize("copy", [True, False])
def test_a_snapshot_shared_across_a_deep_tree_stays_one_future(copy: bool) -> None:
    """The recursive attempt makes the first future, then runs out of stack; the iterative
    walk that starts over must hand out that same future for the snapshot's other places."""
    shared = FutureSnapshot.pending()
    depth = 5 * sys.getrecursionlimit()
    tree = {"first": shared, "deep": nested(depth, {"again": shared}), "last": [shared]}
    with new_loop() as b:
        out = _Rebind(b, copy=copy, registry=None).run(tree)
        future = out["first"]
        assert future.get_loop() is b
        assert depth_of(out["deep"]) == (depth, {"again": future})
        assert out["deep"][0] is not tree["deep"][0] or not copy
        assert out["last"][0] is future


def test_shared_references_round_trip_through_the_pickle_codec() -> None:
    """pickle stores ``x = [x, x]`` 40 times as 41 objects; verify, load_process and
    bundle.unbundle keep it 41 objects (the walk and the check follow each once). The
    msgpack codec has no references: its encoder's side of this is the codec's."""
    with open_persister("memory://", codec="pickle", allow=["tests.processes"]) as store:
        with new_loop() as a:
            chain = drive("chain", a)
            assert chain.ctx is not None
            shared: list[Any] = [b"k" * 1024]
            for _ in range(40):
                shared = [shared, shared]
            chain.ctx.shared = shared
            store.save_checkpoint(chain, verify=True)
        with new_loop() as b:
            for process in (
                store.load_process(chain.pid, loop=b),
                store.load_checkpoint(chain.pid).unbundle(plumpy.LoadSaveContext(loop=b)),
            ):
                assert process.ctx is not None
                node = process.ctx.shared
                for _ in range(40):
                    assert node[0] is node[1]
                    node = node[0]
                assert node == [b"k" * 1024]
                check_loop_bound(process, b)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values(), codec=st.sampled_from(CODECS))
def test_property_what_verify_accepts_loads(value: Any, codec: str) -> None:
    """Any tree of registered types in a WorkChain's context: ``verify=True`` refuses it
    with an ``EncodeError``, or ``load_process`` and ``bundle.unbundle`` both load it onto
    the target loop and the WorkChain runs to the end."""
    with open_persister("memory://", codec=codec, allow=["tests.processes"]) as store:
        with new_loop() as a:
            chain = drive("chain", a, listener=False)
            assert chain.ctx is not None
            chain.ctx.drawn = value
            try:
                store.save_checkpoint(chain, verify=True)
            except EncodeError:
                return
        with new_loop() as b:
            first = store.load_process(chain.pid, loop=b)
            second = store.load_checkpoint(chain.pid).unbundle(plumpy.LoadSaveContext(loop=b))
            for process in (first, second):
                check_loop_bound(process, b)
                assert run_on(b, complete(process)) == EXPECTED_OUTPUTS["chain"]


@pytest.mark.parametrize("copy", [True, False])
def test_the_deep_walk_rebinds_futures_in_user_containers(copy: bool) -> None:
    """Below the recursion limit the iterative walk, too, makes the snapshot in a
    namedtuple, a tuple/set/frozenset subclass a future, keeping class and attributes."""
    from tests import user_types as ut

    pair, tags, frozen = (
        ut.Pair((FutureSnapshot.finished(1),)),
        ut.Tags({FutureSnapshot.finished(2)}),
        ut.FrozenTags({FutureSnapshot.finished(3)}),
    )
    for holder in (pair, tags, frozen):
        holder.kind = "fcc"
    bottom = {"held": [pair, tags, frozen, ut.Cell(FutureSnapshot.finished(4))]}
    depth = 5 * sys.getrecursionlimit()
    with new_loop() as b:
        out = _Rebind(b, copy=copy, registry=None).run(nested(depth, bottom))
        found, back = depth_of(out)
        assert found == depth
        for expected, holder in zip((1, 2, 3, 4), back["held"], strict=True):
            assert type(holder) is type(bottom["held"][expected - 1])
            assert getattr(holder, "kind", "fcc") == "fcc"
            future = next(iter(holder))
            assert future.get_loop() is b
            assert future.result() == expected


def _reachable(value: Any) -> Iterator[Any]:
    """Every value reachable from ``value`` through items and instance attributes."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, (str, bytes, int, float)):
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        stack.extend(getattr(item, "__dict__", {}).values())


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=user_values_with_snapshots(), copy=st.booleans(), deep=st.booleans())
def test_property_every_snapshot_in_user_containers_becomes_a_future(
    value: Any, copy: bool, deep: bool
) -> None:
    """Wherever a snapshot sits (a namedtuple, a tuple/set/dict/list subclass, an object's
    attributes), the walk, recursive or iterative, makes it a future on the target loop,
    keeps the classes and attributes around it."""
    tree = {"v": nested(2 * sys.getrecursionlimit(), value) if deep else value}
    snapshots = {id(x) for x in _reachable(tree) if isinstance(x, FutureSnapshot)}
    with new_loop() as b:
        out = _Rebind(b, copy=copy, registry=None).run(tree)
        after = list(_reachable(out))
        assert not [x for x in after if isinstance(x, FutureSnapshot)]
        futures = [x for x in after if isinstance(x, asyncio.Future)]
        assert len(futures) == len(snapshots)
        assert all(future.get_loop() is b for future in futures)
        for future in futures:
            future.cancel()  # a failed one unretrieved would only log
