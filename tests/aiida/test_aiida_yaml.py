"""The safe loader of AiiDA's checkpoint YAML: AiiDA's tags in, everything else out."""

from __future__ import annotations

import importlib
import importlib.metadata
import uuid
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
from loopaware_persist._audit import audit_bundle
from loopaware_persist.aiida import AIIDA_PROCESSES, make_registry
from loopaware_persist.aiida._yaml import dump_aiida_yaml, load_aiida_yaml, load_aiida_yaml_unsafe
from tests.aiida.helpers import ALLOW
from tests.aiida.hostile_yaml import NAMES, count_nodes, hostile, load_as_aiida_does

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


# The YAML strings AiiDA parses while loading a process (INPUTS_RAW, INPUTS_PARSED,
# OUTPUTS): what the registry's audit lets through, against AiiDA's own loader.

KEYS = ["INPUTS_RAW", "INPUTS_PARSED", "OUTPUTS"]


def _process_bundle(key: str, text: str) -> dict[str, Any]:
    """A bundle of aiida-core's MultiplyAddWorkChain holding ``text`` under ``key``."""
    return {
        "!!meta": {
            "class_name": "aiida.workflows.arithmetic.multiply_add:MultiplyAddWorkChain",
            "user": {"object_loader": "aiida.engine.persistence:ObjectLoader"},
        },
        key: text,
    }


def test_the_hostile_corpus_is_named_as_its_parameters(marker: Path) -> None:
    assert sorted(hostile(marker)) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_hostile_yaml_is_live_under_aiidas_loader(marker: Path, name: str) -> None:
    """The control: AiiDA's loader runs or builds each payload the audit refuses."""
    payload = hostile(marker)[name]
    before = count_nodes()
    value = load_as_aiida_does(payload.text)["x"]
    assert payload.live(value, count_nodes() - before, marker), value
    marker.unlink(missing_ok=True)
    if isinstance(value, plumpy.Process) and count_nodes() > before:
        value.close()  # launched: its node is stored


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key", KEYS)
def test_hostile_yaml_in_aiidas_keys_is_refused(marker: Path, key: str, name: str) -> None:
    payload = hostile(marker)[name]
    registry = make_registry(allow=ALLOW)
    before = count_nodes()
    with pytest.raises(UnsafeCheckpointError) as info:
        audit_bundle(_process_bundle(key, payload.text), registry)
    assert f"[{key!r}]" in str(info.value)
    assert count_nodes() == before
    assert not marker.exists()


def test_what_aiidas_dumper_writes_in_these_keys_passes() -> None:
    """Every kind of value an AiiDA process holds among its inputs and outputs, written by
    AiiDA's own ``Process.encode_input_args``."""
    from aiida.orm.utils.serialize import serialize

    node = orm.Int(5).store()
    computer = orm.Computer.collection.get(label="localhost")
    inputs = AttributesFrozendict(
        {
            "x": node,
            "nodes": [node, node],
            "metadata": AttributesFrozendict(
                {"computer": computer, "options": {"resources": {"num_machines": 1}}}
            ),
            "namespace": AttributeDict({"y": node}),
            "plain": {"t": (1, "a"), "s": {1, 2}, "b": b"\x00", "c": 1j, "n": None},
            "action": AwaitableAction.ASSIGN,  # an allowed enum: !!python/object/apply
            "listener": plumpy.ProcessListener,  # a class: !!python/name
            "uuid": uuid.uuid4(),  # plumpy's !uuid
        }
    )
    text = serialize(inputs)
    assert "!!python/object/apply:aiida.engine" in text
    assert "!!python/name:plumpy" in text
    registry = make_registry()
    for key in KEYS:
        audit_bundle(_process_bundle(key, text), registry)


def test_an_enum_member_of_a_class_not_allowed_as_an_enum_is_refused() -> None:
    from aiida.orm.utils.serialize import serialize

    text = serialize({"link": LinkType.CREATE})  # aiida.common.links is not allowed
    with pytest.raises(UnsafeCheckpointError, match=r"'INPUTS_RAW'.*LinkType"):
        audit_bundle(_process_bundle("INPUTS_RAW", text), make_registry())
    audit_bundle(_process_bundle("INPUTS_RAW", text), make_registry(allow=("aiida.common.links",)))


def _entry_points() -> set[str]:
    found = importlib.metadata.distribution("aiida-core").entry_points
    return {ep.value for ep in found if ep.group in ("aiida.calculations", "aiida.workflows")}


def test_aiida_processes_are_aiida_cores_own_entry_points() -> None:
    assert set(AIIDA_PROCESSES) == _entry_points()
    registry = make_registry()
    for name in AIIDA_PROCESSES:
        module, _, attribute = name.partition(":")
        obj = getattr(importlib.import_module(module), attribute)
        if isinstance(obj, type):  # not core.arithmetic.add_multiply, a process function
            assert registry.resolve(name, "savable") is obj
            assert registry.resolve(name, "class") is obj
        for kind in ("pickle", "object"):
            with pytest.raises(UnsafeCheckpointError):
                registry.resolve(name, kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        "aiida.calculations.importers.arithmetic.add:Node",
        "aiida.calculations.unstash:Path",
        "aiida.workflows.arithmetic.multiply_add:ArithmeticAddCalculation",
        "aiida.calculations.arithmetic.add:CalcJob",
    ],
)
def test_what_their_modules_reexport_is_not_allowed(name: str) -> None:
    with pytest.raises(UnsafeCheckpointError):
        make_registry().resolve(name, "class")


@pytest.mark.parametrize("spelling", ["!plumpy:bundle", "!plumpy:Bundle"])
def test_a_bundle_is_a_checkpoints_root_in_aiidas_spelling_only(spelling: str) -> None:
    """AiiDA's dumper writes ``!plumpy:bundle``; plumpy's (yaml.Dumper) ``!plumpy:Bundle``,
    which AiiDA's persister never writes: refused at the root, and nested in both."""
    text = f"{spelling}\nCONTEXT: !aiida_attributedict {{i: 1}}\n"
    if spelling == "!plumpy:bundle":
        assert type(load_aiida_yaml(text, make_registry())) is plumpy.Bundle
    else:
        with pytest.raises(UnsafeCheckpointError, match="plumpy:Bundle"):
            load_aiida_yaml(text, make_registry())
    assert type(load_aiida_yaml_unsafe(text)) is plumpy.Bundle  # AiiDA reads both
    with pytest.raises(UnsafeCheckpointError, match=spelling):
        load_aiida_yaml(f"!plumpy:bundle\nCONTEXT:\n  x: {spelling} {{a: 1}}\n", make_registry())


def test_an_excepted_future_s_exception_reads_back_without_its_init_or_refused() -> None:
    """plumpy's ``SavableFuture`` of an excepted process holds the exception itself."""
    text = (
        "!plumpy:bundle\n"
        "a: !!python/object/apply:builtins.ValueError [failed, 2]\n"
        "b: !!python/object/apply:builtins.KeyError {args: [k], state: {note: 1}}\n"
    )
    safe = load_aiida_yaml(text, make_registry())
    assert type(safe["a"]) is ValueError
    assert safe["a"].args == ("failed", 2)
    assert (type(safe["b"]), safe["b"].args, safe["b"].note) == (KeyError, ("k",), 1)
    for evil in (
        "!!python/object/apply:subprocess.CalledProcessError [1, [touch, x]]",
        "!!python/object/apply:builtins.ValueError {args: [x], kwds: {a: 1}}",
        "!!python/object/apply:builtins.ValueError {args: [x], state: [1]}",
    ):
        with pytest.raises(UnsafeCheckpointError):
            load_aiida_yaml(f"!plumpy:bundle\na: {evil}\n", make_registry())
