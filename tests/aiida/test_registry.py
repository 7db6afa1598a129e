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
