"""Shared references that a tree format would expand beyond measure, found in linear time.

msgpack stores trees: a list referenced twice is written twice. Ordinarily that costs a
little space, but sharing compounds: ``x = []; for _ in range(40): x = [x, x]`` is 41
lists and would be written 2**40 times, and msgpack's C packer, which has no memo, would
run for hours. Before packing, :class:`SharingGuard` walks the containers a packer
expands (each distinct one once, in C-speed batches of :func:`gc.get_referents`), notes
any reached twice, and only then, if a shared container holds containers itself, counts
the paths to every container (in topological order, each container once); a cycle, or
more than :func:`expansion_budget` of them, is an :class:`EncodeError` naming a path to
a shared container.
"""

from __future__ import annotations

import gc
import itertools
import operator
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Final

import msgpack
import plumpy
from plumpy.utils import AttributesFrozendict, Frozendict

from .._errors import EncodeError
from .._snapshot import FutureSnapshot
from ._paths import UnstorableValueError

__all__ = (
    "DEEP",
    "TRAVERSED",
    "WRITTEN_AS_IS",
    "SharingGuard",
    "expansion_budget",
    "path_deeper_than",
    "written_as_is",
)

#: The containers the guard walks into: those a packer writes item by item, natively or
#: through a built-in hook whose fields are the items. Other values (a user's object,
#: an exception, a future snapshot whose result is a container) have their hook's fields
#: walked when the encoder meets them.
TRAVERSED: Final = frozenset(
    {
        list, dict, tuple, set, frozenset, plumpy.Bundle, Frozendict, AttributesFrozendict,
    }
)  # fmt: skip
_traversed = TRAVERSED.__contains__
_get_referents, _is_tracked, _compress = gc.get_referents, gc.is_tracked, itertools.compress
_getrefcount = sys.getrefcount


#: Levels of containers from which :attr:`SharingGuard.deep` is set: near the nesting
#: a codec must check precisely (msgpack's 1,024), whatever the levels between them.
DEEP: Final = 900


def expansion_budget(distinct: int) -> int:
    """:param distinct: how many distinct containers a value holds
    :return: how many a tree of it may hold: duplicates of shared parts are fine up to
        16 times the real data (or a million containers, whichever is more)
    """
    return 16 * distinct + (1 << 20)


#: Values msgpack's packer writes natively but that would not load back as themselves,
#: with what to store instead. The guard refuses them where it meets them: they are all
#: tracked by the garbage collector, so its walk sees them at C speed. (A plain
#: ``bytearray`` is not, and stays written as bytes; see the README's limitations.)
WRITTEN_AS_IS: Final[dict[type, tuple[str, str]]] = {
    memoryview: (
        "memoryview",
        "a view of another object's memory, which msgpack writes as its bytes: it would "
        "load back as bytes. Store bytes(view) instead",
    ),
    msgpack.ExtType: (
        "msgpack.ExtType",
        "msgpack's own extension value, whose codes this format uses for its own types: "
        "it would load back as another value, or be refused. Store its code and data "
        "(a tuple) instead",
    ),
    msgpack.Timestamp: (
        "msgpack.Timestamp",
        "msgpack's own timestamp, which msgpack writes as its timestamp extension: it "
        "would load back as a datetime. Store timestamp.to_datetime() instead",
    ),
}


def written_as_is(value: Any) -> UnstorableValueError:
    """:param value: a value of a type in :data:`WRITTEN_AS_IS`
    :return: the error refusing it (:func:`~._paths.encode_error` finds its path)
    """
    name, why = WRITTEN_AS_IS[type(value)]
    return UnstorableValueError(f"A {name} is {why}.", value=value)


_WRITTEN: Final = frozenset(WRITTEN_AS_IS)


def _single_parent() -> int:
    """:return: what :func:`sys.getrefcount` says, in :meth:`SharingGuard.check`, of a
    container that one other container alone refers to (measured, not assumed: it
    depends on how the interpreter counts a call's own arguments)"""
    parent: list[list[Any]] = [[]]
    found = _children([parent])
    return max(map(_getrefcount, found))


def _children(objects: Iterable[Any]) -> list[Any]:
    """The containers directly inside ``objects`` (with repeats), at C speed; a value of
    :data:`WRITTEN_AS_IS` among them is refused (looked for only where some of the
    tracked objects are not containers).

    Untracked objects are skipped first: the garbage collector does not track atoms
    (numbers, strings) nor dicts and tuples of atoms only, which can hold no container.
    """
    inner = list(filter(_is_tracked, _get_referents(*objects)))
    kinds = list(map(type, inner))
    found = list(_compress(inner, map(_traversed, kinds)))
    if len(found) != len(inner) and not _WRITTEN.isdisjoint(kinds):
        raise written_as_is(next(item for item in inner if type(item) in _WRITTEN))
    return found


_SINGLE: Final = _single_parent()


class SharingGuard:
    """One encode's walk of its containers: each distinct one is visited once.

    A container with a single parent in the whole process is referenced by that parent
    and by the walk's own list only: it cannot be reached twice, and needs no entry in
    any set. Only the others (a reference count above :data:`_SINGLE`: shared, or also
    held outside the value) are remembered by id, so the walk costs little more than
    :func:`gc.get_referents` of each container.

    :ivar distinct: how many distinct containers were visited
    :ivar deep: whether containers may nest :data:`DEEP` levels or more (the walk met that
        many levels, or shared containers whose depth it does not measure)
    """

    __slots__ = ("_alive", "_seen", "_shared", "deep", "distinct")

    def __init__(self) -> None:
        self.distinct = 0
        self.deep = False
        self._seen: dict[int, Any] = {}  # id -> container held from more than one place
        self._shared: list[Any] = []
        # Hooks' fields are often fresh lists and dicts: kept alive for the encode, so
        # that no later one can take over the id of one walked already.
        self._alive: list[list[Any]] = []

    def check(self, roots: list[Any]) -> None:
        """Walk the containers in ``roots`` not yet visited; refuse an exploding tree.

        :param roots: values about to be packed (the whole value, or a hook's fields)
        :raises EncodeError: if shared containers would make the tree too big to write
        """
        self._alive.append(roots)
        seen, shared = self._seen, self._shared
        del shared[:]
        frontier: list[Any] = []
        for root in roots:
            if _traversed(type(root)):
                if id(root) in seen:
                    shared.append(root)
                else:
                    seen[id(root)] = root
                    frontier.append(root)
            elif type(root) in WRITTEN_AS_IS:
                raise written_as_is(root)
        levels = 0
        while frontier:
            levels += 1
            self.distinct += len(frontier)
            found = _children(frontier)
            if found and max(map(_getrefcount, found)) > _SINGLE:
                found = self._sift(found)
            frontier = found
        if levels >= DEEP:
            self.deep = True
        if any(_children([item]) for item in shared):
            self.deep = True  # reached first by a short path, maybe again by a longer one
            self._count_paths(roots)

    def _sift(self, found: list[Any]) -> list[Any]:
        """``found`` without the containers seen before, which are noted as shared."""
        suspect = list(map(_SINGLE.__lt__, map(_getrefcount, found)))
        kept = list(_compress(found, map(operator.not_, suspect)))
        seen, shared = self._seen, self._shared
        for item in _compress(found, suspect):  # a Python loop, over these only
            key = id(item)
            if key in seen:
                shared.append(item)
            else:
                seen[key] = item
                kept.append(item)
        return kept

    def _count_paths(self, roots: list[Any]) -> None:
        """Count the containers a packer would write: the paths to each, added up in
        topological order (each container once); refuse a cycle, or a count past the budget.
        """
        budget = expansion_budget(self.distinct)
        state: dict[int, bool] = {}  # id -> finished (False: still on the DFS stack)
        order: list[Any] = []  # post-order
        tops = [root for root in roots if _traversed(type(root))]
        for top in tops:
            if id(top) in state:
                continue
            state[id(top)] = False
            stack: list[tuple[Any, Iterator[Any]]] = [(top, iter(_children([top])))]
            while stack:
                node, pending = stack[-1]
                for child in pending:
                    finished = state.get(id(child))
                    if finished is None:
                        state[id(child)] = False
                        stack.append((child, iter(_children([child]))))
                        break
                    if not finished:
                        raise _cycle(roots, child)
                else:
                    stack.pop()
                    state[id(node)] = True
                    order.append(node)
        paths: dict[int, int] = {}
        for top in tops:
            paths[id(top)] = paths.get(id(top), 0) + 1
        total = 0
        for node in reversed(order):
            count = paths.get(id(node), 0)
            total += count
            if total > budget:
                raise _exploding(roots, total, self.distinct)
            for child in _children([node]):
                paths[id(child)] = paths.get(id(child), 0) + count


def _cycle(roots: list[Any], value: Any) -> EncodeError:
    path = _path_to_shared(roots)
    msg = (
        f"Reference cycle at {path or '<root>'}: {type(value).__name__} contains itself. "
        "msgpack stores trees; break the cycle or use codec='pickle'."
    )
    return EncodeError(msg, path=path)


def _exploding(roots: list[Any], total: int, distinct: int) -> EncodeError:
    path = _path_to_shared(roots)
    where = path or "<root>"
    msg = (
        f"Shared references at {where}: the value holds {distinct:,} distinct lists, dicts "
        f"and tuples but, written as a tree (msgpack has no references), more than "
        f"{total:,}. Store each shared part once (or copies, if they are small), or use "
        "codec='pickle', which keeps shared references."
    )
    return EncodeError(msg, path=path)


def _items(value: Any) -> Iterator[tuple[Any, Any, bool]]:
    if isinstance(value, dict):
        bundle = isinstance(value, plumpy.Bundle)
        yield from ((key, child, bundle) for key, child in value.items())
    elif isinstance(value, (list, tuple)):
        yield from ((i, child, False) for i, child in enumerate(value))
    elif isinstance(value, Frozendict):
        yield from ((key, child, False) for key, child in value.items())
    elif isinstance(value, FutureSnapshot):
        yield "result", value.result, True
    else:
        yield from (("<item>", child, False) for child in value)


def _path_to_shared(roots: list[Any]) -> str:
    """The path of the first container (breadth first) that is reached twice."""
    from ._paths import _render

    paths: dict[int, str] = {}
    frontier: list[tuple[Any, str]] = []
    for root in roots:
        if _traversed(type(root)):
            paths[id(root)] = ""
            frontier.append((root, ""))
    while frontier:
        nxt = []
        for value, path in frontier:
            for key, child, attribute_style in _items(value):
                if not _traversed(type(child)):
                    continue
                child_path = _render(path, key, attribute_style)
                if id(child) in paths:
                    return child_path
                paths[id(child)] = child_path
                nxt.append((child, child_path))
        frontier = nxt
    return ""


# What path_deeper_than descends into: subclasses too (a dict subclass's items).
_NESTABLE = (list, dict, tuple, set, frozenset, Frozendict, FutureSnapshot)


def path_deeper_than(roots: list[Any], limit: int) -> str:
    """:return: the path of a container nested more than ``limit`` containers deep in
    ``roots`` (depth first, each container once), or ``""`` if there is none
    """
    from ._paths import _render

    done: set[int] = set()
    for root in roots:
        if not isinstance(root, _NESTABLE):
            continue
        stack: list[tuple[Iterator[tuple[Any, Any, bool]], str]] = [(_items(root), "")]
        done.add(id(root))
        while stack:
            pending, path = stack[-1]
            for key, child, attribute_style in pending:
                if isinstance(child, _NESTABLE) and id(child) not in done:
                    done.add(id(child))
                    child_path = _render(path, key, attribute_style)
                    if len(stack) >= limit:
                        return child_path
                    stack.append((_items(child), child_path))
                    break
            else:
                stack.pop()
    return ""
