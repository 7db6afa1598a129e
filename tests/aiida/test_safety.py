"""Tampered checkpoints: this persister refuses them and runs nothing; AiiDA's runs them.

Each payload would create the ``marker`` file if any code ran.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import plumpy
import pytest
import yaml
from aiida.engine.persistence import AiiDAPersister
from aiida.manage import get_manager
from aiida.orm.utils.serialize import AiiDALoader, serialize

from loopaware_persist import LoopAwarePersistError, UnsafeCheckpointError
from loopaware_persist.aiida import installed
from loopaware_persist.storage import CheckpointKey
from tests.aiida.helpers import ALLOW, crashed_run

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


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("key", ["INPUTS_RAW", "INPUTS_PARSED"])
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
