"""The safe loader of AiiDA's checkpoint YAML: AiiDA's tags in, everything else out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plumpy
import pytest
from aiida import orm
from aiida.common import AttributeDict
from aiida.common.links import LinkType
from aiida.engine.processes.workchains.awaitable import (
    Awaitable,
    AwaitableAction,
    AwaitableTarget,
)
from aiida.orm.utils.managers import NodeLinksManager
from plumpy.utils import AttributesFrozendict

from loopaware_persist import CorruptCheckpointError, UnsafeCheckpointError
from loopaware_persist.aiida import make_registry
from loopaware_persist.aiida._yaml import dump_aiida_yaml, load_aiida_yaml, load_aiida_yaml_unsafe

pytestmark = pytest.mark.usefixtures("profile")


def _bundle(**items: Any) -> plumpy.Bundle:
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, items)
    return bundle


def test_what_aiidas_persister_writes_reads_back_as_aiidas_loader_reads_it() -> None:
    node = orm.Int(5).store()
    group = orm.Group(label=f"migrate-{node.uuid}").store()
    computer = orm.Computer.collection.get(label="localhost")
    awaitable = Awaitable(
        pk=node.pk,
        action=AwaitableAction.ASSIGN,
        target=AwaitableTarget.PROCESS,
        outputs=False,
        key="child",
    )
    bundle = _bundle(
        CONTEXT=AttributeDict(
            {"node": node, "nodes": [node, node], "child": awaitable, "t": (1, "a")}
        ),
        group=group,
        computer=computer,
        frozen=AttributesFrozendict({"a": 1}),
        links=NodeLinksManager(node=node, link_type=LinkType.CREATE, incoming=False),
        listener=plumpy.ProcessListener,
        kinds={1, 2},
        blob=b"\x00\x01",
        state=plumpy.ProcessState.WAITING,
    )
    text = dump_aiida_yaml(bundle)
    assert "!!python/object/apply:aiida.engine.processes.workchains.awaitable" in text
    safe = load_aiida_yaml(text, make_registry())
    assert type(safe) is plumpy.Bundle
    assert dump_aiida_yaml(safe) == dump_aiida_yaml(load_aiida_yaml_unsafe(text))
    ctx = safe["CONTEXT"]
    assert ctx["node"].pk == node.pk
    assert ctx["child"].action is AwaitableAction.ASSIGN
    assert ctx["child"].target is AwaitableTarget.PROCESS
    assert type(ctx["child"]) is Awaitable
    assert safe["group"].pk == group.pk
    assert safe["links"]._node.pk == node.pk
    assert safe["listener"] is plumpy.ProcessListener
    assert safe["state"] is plumpy.ProcessState.WAITING


def _touch(marker: Path) -> dict[str, str]:
    return {
        "apply": f'!!python/object/apply:os.system ["touch {marker}"]',
        "new": f'!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
        "object": "!!python/object:subprocess.Popen {}",
        "name": "!!python/name:os.system ''",
        "module": "!!python/module:os ''",
        "enum": f"!enum 'os:system|touch {marker}'",
        "enum apply": f'!!python/object/apply:os.system ["touch {marker}"]',
        "dataclass": (
            f'!dataclass {{__type__: "subprocess:run", __fields__: {{args: [touch, "{marker}"]}}}}'
        ),
        "unknown": "!whatever 1",
        "nested bundle": "!plumpy:bundle {a: 1}",
        "awaitable with args": (
            "!!python/object/apply:aiida.engine.processes.workchains.awaitable.Awaitable"
            f' {{args: ["touch {marker}"]}}'
        ),
    }


@pytest.mark.parametrize("name", list(_touch(Path("x"))))
def test_anything_else_is_refused_and_runs_nothing(marker: Path, name: str) -> None:
    text = f"!plumpy:bundle\nCONTEXT:\n  evil: {_touch(marker)[name]}\n"
    with pytest.raises(UnsafeCheckpointError):
        load_aiida_yaml(text, make_registry(), where="ProcessNode<1>")
    assert not marker.exists()


_LAUGHS = "\n".join(
    ["a0: &a0 [xxxxxxxx]", *(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 30))]
)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("- " * 100 + "x", "nests"),
        ("[" * 5000 + "]" * 5000, "not readable"),
        ("&a [*a]", "itself"),
        (_LAUGHS, "expands"),
        ("a: 1\n---\nb: 2\n", "not readable"),
        ("!aiida_node '00000000-0000-4000-8000-000000000000'", "does not hold"),
    ],
    ids=["deep", "deeper than libyaml", "cycle", "billion laughs", "two documents", "missing"],
)
def test_damaged_or_crafted_shapes_are_refused(text: str, why: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=why):
        load_aiida_yaml(text, make_registry())


def test_same_state_compares_types_values_and_rows() -> None:
    from loopaware_persist.aiida._migrate import same_state

    one, two = orm.Int(1).store(), orm.Int(1).store()
    a = _bundle(CONTEXT=AttributeDict({"n": one, "s": {1}}))
    a["CONTEXT"].d = {"k": (1, 2)}  # as a WorkChain sets self.ctx.d: a plain dict
    b = _bundle(CONTEXT=AttributeDict({"n": orm.load_node(one.pk), "s": {1}}))
    b["CONTEXT"].d = {"k": (1, 2)}
    assert type(a["CONTEXT"]["d"]) is dict
    assert same_state(a, b)
    assert not same_state(a, _bundle(CONTEXT=AttributeDict({**a["CONTEXT"], "n": two})))
    assert not same_state(a, _bundle(CONTEXT=AttributeDict({**a["CONTEXT"], "d": {"k": [1, 2]}})))
    assert not same_state(a, _bundle(CONTEXT=AttributeDict({**a["CONTEXT"], "s": {2}})))
    # AiiDA's loader turns the dicts inside an AttributeDict into AttributeDicts.
    read = load_aiida_yaml_unsafe(dump_aiida_yaml(a))
    assert type(read["CONTEXT"]["d"]) is AttributeDict
    assert not same_state(read, a)
    assert same_state(read, a, as_aiida_reads=True)


@pytest.mark.parametrize("tag", ["!aiida_node", "!aiida_group"])
def test_a_truncated_uuid_is_a_damaged_checkpoint_not_a_prefix_match(tag: str) -> None:
    """aiida-core's load_node(uuid=...)/load_group(uuid=...) match a partial UUID as a
    prefix: a damaged record could bring back another entity."""
    entity = (
        orm.Int(7).store()
        if tag == "!aiida_node"
        else orm.Group(label=f"lap-prefix-{orm.Int(0).store().uuid}").store()
    )
    text = f"!plumpy:bundle\nx: {tag} '{entity.uuid[:8]}'\n"
    with pytest.raises(CorruptCheckpointError, match=entity.uuid[:8]):
        load_aiida_yaml(text, make_registry())
