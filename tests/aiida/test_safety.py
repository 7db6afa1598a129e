"""Tampered checkpoints: this persister refuses them and runs nothing; AiiDA's runs them.

Each payload would create the ``marker`` file if any code ran.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plumpy
import pytest
import yaml
from aiida import orm
from aiida.engine.persistence import AiiDAPersister
from aiida.manage import get_manager
from aiida.orm.utils.serialize import AiiDALoader, serialize
from aiida.workflows.arithmetic.multiply_add import MultiplyAddWorkChain

from loopaware_persist import LoopAwarePersistError, UnsafeCheckpointError
from loopaware_persist._audit import audit_bundle
from loopaware_persist.aiida import installed, make_registry, migrate
from loopaware_persist.aiida._yaml import dump_aiida_yaml, load_aiida_yaml, load_aiida_yaml_unsafe
from loopaware_persist.storage import CheckpointKey
from tests.aiida.helpers import ALLOW, crashed_run
from tests.aiida.hostile_yaml import count_nodes, hostile
from tests.aiida.test_migrate import aiida_crashed
from tests.aiida.workchains import OutputThenFail

pytestmark = pytest.mark.usefixtures("profile")


def _payloads(marker: Path) -> dict[str, str]:
    """YAML for INPUTS_RAW that runs ``touch marker`` in AiiDA's unsafe loader."""
    return {
        "python/object/apply": f'!!python/object/apply:os.system ["touch {marker}"]',
        "enum os:system": f'x: !enum "os:system|touch {marker}"',
        "dataclass subprocess.run": (
            f'!dataclass {{__type__: "subprocess:run", __fields__: {{args: [touch, "{marker}"]}}}}'
        ),
    }


PAYLOADS = ["python/object/apply", "enum os:system", "dataclass subprocess.run"]


def _tamper(persister: Any, pk: int, change: Any) -> None:
    bundle = persister.load_checkpoint(pk)
    change(bundle)
    persister.storage.put(CheckpointKey(pid=pk), persister.dumps(bundle))


KEYS = ["INPUTS_RAW", "INPUTS_PARSED", "OUTPUTS"]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("key", KEYS)
def test_yaml_inside_the_bundle_is_refused(marker: Path, payload: str, key: str) -> None:
    with installed(allow=ALLOW) as persister:
        node = crashed_run(at=1)
        _tamper(persister, node.pk, lambda b: b.__setitem__(key, _payloads(marker)[payload]))
        runner = get_manager().get_runner()
        with pytest.raises(UnsafeCheckpointError) as caught:
            persister.load_process(node.pk, loop=runner.loop, runner=runner)
        with pytest.raises(UnsafeCheckpointError):
            persister.load_checkpoint(node.pk).unbundle(plumpy.LoadSaveContext(runner=runner))
    assert key in str(caught.value)
    assert not marker.exists()


#: Of the hostile corpus (tests/aiida/hostile_yaml.py, each payload's control there).
CORPUS = [
    "aiida-core's process class called (kwds)",
    "the user's allowed process class called",
    "Node under its own name",
    "nested !plumpy:Bundle",
]


@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("key", KEYS)
def test_hostile_yaml_is_refused_before_any_aiida_code_runs(
    marker: Path, key: str, name: str
) -> None:
    payload = hostile(marker)[name]
    with installed(allow=ALLOW) as persister:
        node = crashed_run(at=1)
        _tamper(persister, node.pk, lambda b: b.__setitem__(key, payload.text))
        runner = get_manager().get_runner()
        before = count_nodes()
        with pytest.raises(UnsafeCheckpointError, match=rf"\[{key!r}\]"):
            persister.load_process(node.pk, loop=runner.loop, runner=runner)
        assert count_nodes() == before


def test_aiida_own_tags_pass_and_an_allowed_enum_too() -> None:
    with installed(allow=ALLOW) as persister:
        node = crashed_run(at=1)
        raw = persister.load_checkpoint(node.pk)["INPUTS_RAW"]
        assert "!aiida_node" in raw

        def change(bundle: Any) -> None:
            bundle["OUTPUTS"] = (
                "a: !enum 'aiida.engine.processes.workchains.awaitable:AwaitableAction|assign'\n"
            )

        _tamper(persister, node.pk, change)
        runner = get_manager().get_runner()
        process = persister.load_process(node.pk, loop=runner.loop, runner=runner)
        process.close()


def test_class_names_and_excepted_yaml_are_refused(marker: Path) -> None:
    with installed(allow=ALLOW) as persister:
        node = crashed_run(at=1)
        runner = get_manager().get_runner()

        def excepted(bundle: Any) -> None:
            bundle["_state"] = {
                "!!meta": {"class_name": "plumpy.process_states:Excepted"},
                "ex_value": f'!!python/object/apply:os.system ["touch {marker}"]',
                "traceback": None,
            }

        _tamper(persister, node.pk, excepted)
        with pytest.raises(UnsafeCheckpointError):
            persister.load_process(node.pk, loop=runner.loop, runner=runner)

        def class_name(bundle: Any) -> None:
            bundle["!!meta"]["class_name"] = "os:system"

        _tamper(persister, node.pk, class_name)
        with pytest.raises(UnsafeCheckpointError):
            persister.load_process(node.pk, loop=runner.loop, runner=runner)
    assert not marker.exists()


def test_a_yaml_checkpoints_attribute_is_never_parsed(marker: Path) -> None:
    with installed(allow=ALLOW) as persister:
        node = crashed_run(at=1)
        node.set_checkpoint(f'!!python/object/apply:os.system ["touch {marker}"]')
        with pytest.raises(LoopAwarePersistError):
            persister.load_checkpoint(node.pk)
    assert not marker.exists()


# AiiDA's own persister, pinned: the same payloads run code (so the README can say so).


def _aiida_crashed_run() -> Any:
    get_manager().reset_runner()
    assert type(get_manager().get_persister()) is AiiDAPersister
    return crashed_run(at=1)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_aiida_persister_runs_yaml_inside_the_bundle(marker: Path, payload: str) -> None:
    node = _aiida_crashed_run()
    bundle = yaml.load(node.checkpoint, Loader=AiiDALoader)
    bundle["INPUTS_RAW"] = _payloads(marker)[payload]
    node.set_checkpoint(serialize(bundle))
    runner = get_manager().get_runner()
    with contextlib.suppress(Exception):
        AiiDAPersister().load_checkpoint(node.pk).unbundle(plumpy.LoadSaveContext(runner=runner))
    assert marker.exists()


def test_aiida_persister_runs_a_tampered_checkpoints_attribute(marker: Path) -> None:
    node = _aiida_crashed_run()
    node.set_checkpoint(f'!!python/object/apply:os.system ["touch {marker}"]')
    with contextlib.suppress(Exception):
        AiiDAPersister().load_checkpoint(node.pk)
    assert marker.exists()


@pytest.mark.parametrize("key", KEYS)
def test_aiida_persister_launches_a_process_named_inside_the_bundle(marker: Path, key: str) -> None:
    node = _aiida_crashed_run()
    text = hostile(marker)["aiida-core's process class called (kwds)"].text
    bundle = yaml.load(node.checkpoint, Loader=AiiDALoader)
    bundle[key] = text
    node.set_checkpoint(serialize(bundle))
    runner = get_manager().get_runner()
    before = count_nodes()
    with contextlib.suppress(Exception):
        AiiDAPersister().load_checkpoint(node.pk).unbundle(plumpy.LoadSaveContext(runner=runner))
    assert count_nodes() > before


# Method names plumpy getattr()s (or imports) on load: refused unless a method of the class.


def _running(run_fn: str) -> Callable[[Any], None]:
    def change(bundle: Any) -> None:
        bundle["_state"]["run_fn"] = run_fn

    return change


def _waiting(done_callback: str) -> Callable[[Any], None]:
    def change(bundle: Any) -> None:
        bundle["_state"] = {
            "!!meta": {"class_name": "plumpy.process_states:Waiting"},
            "in_state": True,
            "msg": None,
            "data": None,
            "DONE_CALLBACK": done_callback,
        }

    return change


def _continue(continue_fn: str, *args: Any) -> Callable[[Any], None]:
    def change(bundle: Any) -> None:
        bundle["_state"]["command"] = {
            "!!meta": {"class_name": "plumpy.process_states:Continue"},
            "continue_fn": continue_fn,
            "args": args,
            "kwargs": {},
        }

    return change


def _method_names(marker: Path) -> dict[str, Callable[[Any], None]]:
    return {
        "run_fn not a method": _running("no_such_step"),
        "run_fn a dunder": _running("__init__"),
        "run_fn a private class attribute holding a class": _running("_node_class"),
        "run_fn a dotted name": _running("os.system"),
        "awaiting callback a private class attribute": _waiting("_node_class"),
        "awaiting callback a dunder": _waiting("__class__"),
        "continuation subprocess.getoutput": _continue("subprocess.getoutput", f"touch {marker}"),
        "continuation a private class attribute": _continue("_node_class"),
        "continuation a dunder": _continue("__init_subclass__"),
    }


METHOD_NAMES = sorted(_method_names(Path("x")))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_names_that_are_no_method_of_the_process_are_refused(
    marker: Path, name: str
) -> None:
    with installed(allow=ALLOW) as persister:
        node = crashed_run(at=1)
        _tamper(persister, node.pk, _method_names(marker)[name])
        runner = get_manager().get_runner()
        before = count_nodes()
        with pytest.raises(UnsafeCheckpointError, match="not a plain method name"):
            persister.load_process(node.pk, loop=runner.loop, runner=runner)
        assert count_nodes() == before
    assert not marker.exists()


ENGINE_METHODS = {
    "run_fn submit": _running("submit"),
    "run_fn exposed_inputs": _running("exposed_inputs"),
    "awaiting callback on_finish": _waiting("on_finish"),
    "awaiting callback kill": _waiting("kill"),
    "continuation report": _continue("report", "%s", "tampered"),
    "continuation out": _continue("out", "x", 1),
}


@pytest.mark.parametrize("name", sorted(ENGINE_METHODS))
def test_the_engines_own_methods_are_no_steps(name: str) -> None:
    """plumpy calls a stored step with arguments the checkpoint also holds: ``submit``
    with a process class would launch a process. Only the user's own methods and the
    engine's steps (``run``, ``_do_step``, ``terminate``) are steps."""
    with installed(allow=ALLOW) as persister:
        node = crashed_run(at=1)
        _tamper(persister, node.pk, ENGINE_METHODS[name])
        runner = get_manager().get_runner()
        before = count_nodes()
        with pytest.raises(UnsafeCheckpointError, match="a method of the engine's own"):
            persister.load_process(node.pk, loop=runner.loop, runner=runner)
        assert count_nodes() == before


def test_a_private_method_the_engine_uses_passes(marker: Path) -> None:
    """``_do_step`` is private and what plumpy's WorkChain stores as its ``run_fn``."""
    with installed(allow=ALLOW) as persister:
        node = crashed_run(at=1)
        assert persister.load_checkpoint(node.pk)["_state"]["run_fn"] == "_do_step"
        _tamper(persister, node.pk, _continue("_do_step"))
        runner = get_manager().get_runner()
        persister.load_process(node.pk, loop=runner.loop, runner=runner).close()


def _aiida_tampered(change: Callable[[Any], None]) -> Any:
    """A crashed run's checkpoint, changed and loaded by AiiDA's persister."""
    node = _aiida_crashed_run()
    bundle = yaml.load(node.checkpoint, Loader=AiiDALoader)
    change(bundle)
    node.set_checkpoint(serialize(bundle))
    runner = get_manager().get_runner()
    return AiiDAPersister().load_checkpoint(node.pk).unbundle(plumpy.LoadSaveContext(runner=runner))


def test_aiida_persister_runs_a_continuation_naming_a_function(marker: Path) -> None:
    process = _aiida_tampered(_continue("subprocess.getoutput", f"touch {marker}"))
    with contextlib.suppress(Exception):
        process.execute()
    assert marker.exists()


@pytest.mark.parametrize(
    "change",
    [
        _running("__init__"),
        _running("_node_class"),
        _waiting("_node_class"),
        _running("submit"),
        _waiting("on_finish"),
    ],
    ids=[
        "run_fn __init__",
        "run_fn _node_class",
        "awaiting _node_class",
        "run_fn submit",
        "awaiting on_finish",
    ],
)
def test_aiida_persister_takes_any_attribute_as_a_method(change: Callable[[Any], None]) -> None:
    """The control of the refusals above: plumpy getattr()s whatever is named, a class
    included (``_node_class``: a step would build a WorkChainNode)."""
    process = _aiida_tampered(change)
    state = process._state
    found = getattr(state, "run_fn", None) or state.done_callback
    assert found is not None
    process.close()


# What AiiDA's own persister writes for real processes passes the migration's reading and
# audit (load_aiida_yaml, then audit_bundle), and the same checkpoints made hostile are
# refused there before any AiiDA code runs.


def _audit_as_migration_does(text: str, registry: Any) -> Any:
    bundle = load_aiida_yaml(text, registry, where="test")
    audit_bundle(bundle, registry)
    return bundle


def test_aiida_persisters_checkpoints_of_real_processes_pass() -> None:
    from aiida.engine.persistence import get_object_loader

    registry = make_registry(allow=ALLOW)
    # A WorkChain mid-run: Running, INPUTS_RAW and INPUTS_PARSED (metadata included).
    crashed = aiida_crashed(at=1)
    bundle = _audit_as_migration_does(crashed.checkpoint, registry)
    assert bundle["!!meta"]["class_name"] == "tests.aiida.workchains:ParentChain"
    assert "metadata" in bundle["INPUTS_PARSED"]
    (result,) = migrate(allow=ALLOW, pks=[crashed.pk], dry_run=True)
    assert result.status == "dry-run", result

    # Excepted, with OUTPUTS and the exception's YAML: the bundle AiiDAPersister.
    # save_checkpoint makes (aiida/engine/persistence.py), which it then serializes.
    get_manager().reset_runner()
    runner = get_manager().get_runner()
    assert type(runner.persister) is AiiDAPersister
    process = runner.instantiate_process(OutputThenFail, x=orm.Int(2))
    with pytest.raises(ValueError, match="after its output"):
        process.execute()
    text = serialize(plumpy.Bundle(process, plumpy.LoadSaveContext(loader=get_object_loader())))
    bundle = _audit_as_migration_does(text, registry)
    assert bundle["_state"]["!!meta"]["class_name"] == "plumpy.process_states:Excepted"
    assert "ValueError" in bundle["_state"]["ex_value"]
    assert "!aiida_node" in bundle["OUTPUTS"]

    # aiida-core's own WorkChain, named by no allow= entry: AIIDA_PROCESSES.
    inputs = _multiply_add_inputs()
    process = runner.instantiate_process(MultiplyAddWorkChain, **inputs)
    try:
        text = process.node.checkpoint
        assert "aiida.workflows.arithmetic.multiply_add:MultiplyAddWorkChain" in text
        _audit_as_migration_does(text, make_registry())
        (result,) = migrate(pks=[process.pid], dry_run=True)
        assert result.status == "dry-run", result
    finally:
        process.kill()
        process.close()


def _multiply_add_inputs() -> dict[str, Any]:
    code = orm.InstalledCode(
        label=f"bash-{uuid.uuid4().hex[:8]}",
        computer=orm.load_computer("localhost"),
        filepath_executable="/bin/bash",
    ).store()
    return {"x": orm.Int(1), "y": orm.Int(2), "z": orm.Int(3), "code": code}


@pytest.mark.parametrize("name", ["aiida-core's process class called (kwds)", "os.system"])
@pytest.mark.parametrize("key", KEYS)
def test_aiida_persisters_checkpoints_made_hostile_are_refused_by_the_migration(
    marker: Path, key: str, name: str
) -> None:
    payload = hostile(marker)[name]
    node = aiida_crashed(at=1)
    bundle = load_aiida_yaml_unsafe(node.checkpoint)
    bundle[key] = payload.text
    node.set_checkpoint(dump_aiida_yaml(bundle))
    before = count_nodes()
    (result,) = migrate(allow=ALLOW, pks=[node.pk])
    assert result.status == "refused", result
    assert key in str(result.reason)
    assert count_nodes() == before
    assert not marker.exists()
    # The control: AiiDA's own persister, loading it, runs the payload.
    runner = get_manager().get_runner()
    with contextlib.suppress(Exception):
        AiiDAPersister().load_checkpoint(node.pk).unbundle(plumpy.LoadSaveContext(runner=runner))
    assert marker.exists() if name == "os.system" else count_nodes() > before
    marker.unlink(missing_ok=True)
