"""The registry configured for AiiDA: entities by UUID, AiiDA's dicts, its YAML tags."""

from __future__ import annotations

from typing import Any

import pytest
from aiida import orm
from aiida.common import AttributeDict
from aiida.common.extendeddicts import DefaultFieldsAttributeDict
from aiida.engine.processes.workchains.awaitable import (
    Awaitable,
    AwaitableAction,
    AwaitableTarget,
)

from loopaware_persist import EncodeError, UnsafeCheckpointError, get_codec
from loopaware_persist._yaml_audit import audit_yaml
from loopaware_persist.aiida import AIIDA_YAML_TAGS, make_registry

pytestmark = pytest.mark.usefixtures("profile")


class Fields(DefaultFieldsAttributeDict):
    _default_fields = ("a", "b")


@pytest.fixture(scope="module")
def codec() -> Any:
    return get_codec("msgpack", registry=make_registry(allow=("tests.aiida",)))


def test_stored_entities_come_back_as_the_stored_rows(codec: Any) -> None:
    node = orm.Int(5).store()
    group = orm.Group(label="loopaware-test-group").store()
    computer = orm.load_computer("localhost")
    user = orm.User.collection.get_default()
    value = {"node": node, "group": group, "computer": computer, "user": user}
    back = codec.decode(codec.encode(value))
    for key, entity in value.items():
        assert type(back[key]) is type(entity)
        assert back[key].pk == entity.pk
        assert back[key].is_stored
    assert back["node"].uuid == node.uuid
    assert back["node"].value == 5


def test_an_unstored_node_is_refused_at_save(codec: Any) -> None:
    with pytest.raises(EncodeError, match=r"unstored node.*store\(\)"):
        codec.encode({"x": orm.Int(1)})


def test_attribute_dicts_and_awaitables_come_back_exactly(codec: Any) -> None:
    plain = AttributeDict({"k": 1, "nested": AttributeDict({"n": [1, 2]})})
    fields = Fields({"a": 1})
    awaitable = Awaitable(
        pk=3, action=AwaitableAction.APPEND, target=AwaitableTarget.PROCESS, outputs=False, key="k"
    )
    back = codec.decode(codec.encode([plain, fields, awaitable]))
    assert type(back[0]) is AttributeDict
    assert back[0] == plain
    assert type(back[0].nested) is AttributeDict
    assert type(back[1]) is Fields
    assert dict(back[1]) == {"a": 1}
    assert type(back[2]) is Awaitable
    assert vars(back[2]) == vars(awaitable)


def test_an_attribute_dict_naming_another_class_is_refused(codec: Any) -> None:
    from loopaware_persist.aiida._registry import _dec_attribute_dict

    with pytest.raises(UnsafeCheckpointError):
        _dec_attribute_dict(["os:system", {}], codec.registry)
    with pytest.raises(UnsafeCheckpointError):
        _dec_attribute_dict(["builtins:dict", {}], codec.registry)


@pytest.mark.parametrize(
    "text",
    [
        "!enum 'os:system|echo'",
        "!enum 'nohash'",
        "!dataclass {__type__: 'subprocess:run', __fields__: {args: [echo]}}",
        "!dataclass {__fields__: {}}",
        "!dataclass {__type__: 'aiida.engine.processes.workchains.awaitable:AwaitableAction'}",
        "!plumpy:bundle {}",
        "!aiida_unknown x",
    ],
)
def test_aiida_yaml_refusals(text: str) -> None:
    registry = make_registry()
    with pytest.raises(UnsafeCheckpointError):
        audit_yaml(text, registry, "<p>", tags=AIIDA_YAML_TAGS, what="P.INPUTS_RAW")


def test_aiida_yaml_that_passes() -> None:
    registry = make_registry()
    text = (
        "!plumpy:attributes_frozendict\n"
        "x: !aiida_node 'f3f6eb4f-e3d5-4a86-8aa1-6ec5f02a260d'\n"
        "g: !aiida_group 'f3f6eb4f-e3d5-4a86-8aa1-6ec5f02a260d'\n"
        "d: !aiida_attributedict {a: 1}\n"
        "e: !enum 'aiida.engine.processes.workchains.awaitable:AwaitableAction|assign'\n"
    )
    audit_yaml(text, registry, "<p>", tags=AIIDA_YAML_TAGS)


def test_node_links_managers_come_back_bound_to_the_same_node(codec: Any) -> None:
    """As AiiDA's ``!aiida_node_links_manager`` (the YAML side: test_aiida_yaml.py)."""
    from aiida.common.links import LinkType
    from aiida.orm.utils.managers import NodeLinksManager

    node = orm.WorkflowNode().store()
    managers = [
        NodeLinksManager(node=node, link_type=LinkType.RETURN, incoming=False),
        NodeLinksManager(node=node, link_type=LinkType.INPUT_WORK, incoming=True),
    ]
    back = codec.decode(codec.encode({"res": managers[0], "ins": managers[1]}))
    for got, want in zip((back["res"], back["ins"]), managers, strict=True):
        assert type(got) is NodeLinksManager
        assert got._node.uuid == node.uuid
        assert got._node.is_stored
        assert (got._link_type, got._incoming) == (want._link_type, want._incoming)


def test_a_node_links_manager_of_an_unstored_node_is_refused_at_save(codec: Any) -> None:
    from aiida.common.links import LinkType
    from aiida.orm.utils.managers import NodeLinksManager

    manager = NodeLinksManager(node=orm.WorkflowNode(), link_type=LinkType.RETURN, incoming=False)
    with pytest.raises(EncodeError, match=r"unstored node"):
        codec.encode({"res": manager})


@pytest.mark.parametrize(
    "fields",
    [
        ["not-a-uuid", False, "return"],
        [None, False, "return"],
        ["x", "no", "return"],
        ["x", False],
    ],
)
def test_a_malformed_node_links_manager_is_a_corrupt_checkpoint(fields: list[Any]) -> None:
    from loopaware_persist import CorruptCheckpointError
    from loopaware_persist.aiida._registry import _dec_links_manager

    with pytest.raises(CorruptCheckpointError):
        _dec_links_manager(fields)


def test_a_node_links_manager_with_an_unknown_link_type_is_a_corrupt_checkpoint() -> None:
    from loopaware_persist import CorruptCheckpointError
    from loopaware_persist.aiida._registry import _dec_links_manager

    node = orm.WorkflowNode().store()
    with pytest.raises(CorruptCheckpointError, match="link type"):
        _dec_links_manager([node.uuid, False, "nope"])


@pytest.mark.parametrize("what", ["node", "group", "computer"])
def test_a_truncated_uuid_is_refused_not_matched_as_a_prefix(what: str) -> None:
    """aiida-core's load_node(uuid=...) would load the entity a prefix matches."""
    from loopaware_persist import CorruptCheckpointError
    from loopaware_persist.aiida._registry import _dec_computer, _dec_group, _dec_node

    entity: Any
    if what == "node":
        entity, decode = orm.Int(7).store(), _dec_node
    elif what == "group":
        entity = orm.Group(label=f"lap-prefix-{orm.Int(0).store().uuid}").store()
        decode = _dec_group
    else:
        entity, decode = orm.load_computer("localhost"), _dec_computer
    assert decode([entity.uuid]).pk == entity.pk
    with pytest.raises(CorruptCheckpointError, match=entity.uuid[:8]):
        decode([entity.uuid[:8]])
