"""Hostile YAML for the strings AiiDA parses with its unsafe loader while loading a
process (``INPUTS_RAW``, ``INPUTS_PARSED``, ``OUTPUTS``).

Each payload comes with its control, :attr:`Payload.live`: what AiiDA's own loader
(``AiiDALoader``) does with it, a ProcessNode it stores, an object it builds or a file
it creates, so a test that sees the audit refuse it knows the refusal mattered.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import plumpy
from aiida import orm
from aiida.engine.processes.workchains.awaitable import AwaitableAction
from aiida.orm.utils.serialize import deserialize_unsafe
from aiida.workflows.arithmetic.multiply_add import MultiplyAddWorkChain

#: aiida-core's own WorkChain, allowed by exact name (``AIIDA_PROCESSES``)
PROCESS = "aiida.workflows.arithmetic.multiply_add.MultiplyAddWorkChain"
#: the tests' own WorkChain, allowed with its module (``allow=("tests.aiida",)``)
USER_PROCESS = "tests.aiida.workchains.ParentChain"


@attrs.frozen
class Payload:
    #: the YAML, a mapping whose key ``x`` holds the hostile value
    text: str
    #: given what AiiDA's loader built for ``x``, how many nodes it created and the
    #: marker file: whether it ran or built what the audit refuses
    live: Callable[[Any, int, Path], bool]


def count_nodes() -> int:
    return orm.QueryBuilder().append(orm.Node).count()


def _launch_inputs() -> str:
    """Stored inputs for MultiplyAddWorkChain, as AiiDA's YAML refers to them."""
    one = orm.Int(1).store()
    code = orm.InstalledCode(
        label=f"bash-{uuid.uuid4().hex[:8]}",
        computer=orm.load_computer("localhost"),
        filepath_executable="/bin/bash",
    ).store()
    node = f"!aiida_node '{one.uuid}'"
    return f"{{x: {node}, y: {node}, z: {node}, code: !aiida_node '{code.uuid}'}}"


def _stores_a_node(value: Any, created: int, _marker: Path) -> bool:
    """A process launched: its node stored (with the defaults of its inputs)."""
    return created >= 1 and value.node.is_stored


def _builds(cls: type) -> Callable[[Any, int, Path], bool]:
    return lambda value, _created, _marker: isinstance(value, cls)


def _touches(_value: Any, _created: int, marker: Path) -> bool:
    return marker.exists()


def _sets_attributes_on_a_member(value: Any, _created: int, _marker: Path) -> bool:
    try:
        return value is AwaitableAction.ASSIGN and vars(value).get("pwned") == 1
    finally:
        vars(AwaitableAction.ASSIGN).pop("pwned", None)


def hostile(marker: Path) -> dict[str, Payload]:
    """The corpus; its launch payloads need the profile (they refer to stored nodes)."""
    inputs = _launch_inputs()
    touch = f"touch {marker}"
    return {
        "aiida-core's process class called (kwds)": Payload(
            f"x: !!python/object/apply:{PROCESS} {{kwds: {{inputs: {inputs}}}}}\n",
            _stores_a_node,
        ),
        "aiida-core's process class called (args)": Payload(
            f"x: !!python/object/apply:{PROCESS} [{inputs}]\n", _stores_a_node
        ),
        "the user's allowed process class called": Payload(
            f"x: !!python/object/apply:{USER_PROCESS} {{kwds: {{inputs: {{x: "
            f"!aiida_node '{orm.Int(1).store().uuid}'}}}}}}\n",
            _stores_a_node,
        ),
        "aiida-core's process class built (new)": Payload(
            f"x: !!python/object/new:{PROCESS} []\n", _builds(MultiplyAddWorkChain)
        ),
        "aiida-core's process class built (object)": Payload(
            f"x: !!python/object:{PROCESS} {{_pid: 1}}\n", _builds(MultiplyAddWorkChain)
        ),
        "Node re-exported by aiida.calculations": Payload(
            "x: !!python/object/apply:aiida.calculations.importers.arithmetic.add.Node []\n",
            _builds(orm.Node),
        ),
        "Path re-exported by aiida.calculations": Payload(
            "x: !!python/object/apply:aiida.calculations.unstash.Path [/etc/passwd]\n",
            _builds(Path),
        ),
        "Node under its own name": Payload(
            "x: !!python/object/apply:aiida.orm.nodes.node.Node []\n", _builds(orm.Node)
        ),
        "allowed enum member given a state": Payload(
            "x: !!python/object/apply:aiida.engine.processes.workchains.awaitable."
            "AwaitableAction {args: [assign], state: {pwned: 1}}\n",
            _sets_attributes_on_a_member,
        ),
        "os.system": Payload(f'x: !!python/object/apply:os.system ["{touch}"]\n', _touches),
        "!enum os:system": Payload(f"x: !enum 'os:system|{touch}'\n", _touches),
        "!dataclass subprocess.run": Payload(
            f'x: !dataclass {{__type__: "subprocess:run", __fields__: '
            f'{{args: [touch, "{marker}"]}}}}\n',
            _touches,
        ),
        "nested !plumpy:bundle": Payload("x: !plumpy:bundle {a: 1}\n", _builds(plumpy.Bundle)),
        "nested !plumpy:Bundle": Payload("x: !plumpy:Bundle {a: 1}\n", _builds(plumpy.Bundle)),
    }


#: The corpus's names, known without a profile (for parametrize); a test checks them.
NAMES = [
    "aiida-core's process class called (kwds)",
    "aiida-core's process class called (args)",
    "the user's allowed process class called",
    "aiida-core's process class built (new)",
    "aiida-core's process class built (object)",
    "Node re-exported by aiida.calculations",
    "Path re-exported by aiida.calculations",
    "Node under its own name",
    "allowed enum member given a state",
    "os.system",
    "!enum os:system",
    "!dataclass subprocess.run",
    "nested !plumpy:bundle",
    "nested !plumpy:Bundle",
]


def load_as_aiida_does(text: str) -> Any:
    """What AiiDA's ``Process.decode_input_args`` returns for ``text``."""
    return deserialize_unsafe(text)
