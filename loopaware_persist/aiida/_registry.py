"""The registry configured for AiiDA: ORM entities by UUID, AiiDA's dicts, its YAML.

:func:`configure_registry` teaches a :class:`~loopaware_persist.HookRegistry` what an
AiiDA process's checkpoint holds beyond plumpy's types:

* **stored ORM entities** (nodes, groups, computers; users by email, which is how AiiDA
  identifies them) are stored by identity only and reloaded from the loaded profile as
  the stored objects themselves (``Node.collection.get(uuid=...)``: the exact UUID, never
  a prefix of one), never copies, so provenance links made after a resume point at the
  original nodes. A ``NodeLinksManager`` (``self.ctx.res = child.outputs``) is stored as
  AiiDA's own YAML stores it, its node's UUID, direction and link type, and reloaded
  bound to that stored node. An **unstored** node is
  refused at save with :class:`~loopaware_persist.EncodeError` naming its path: AiiDA's
  own persister refuses it too (``represent_node`` raises ``ValueError``, which AiiDA
  only logs, leaving the process without a checkpoint); here the save fails, and
  ``save_checkpoint(verify=True)`` callers learn of it at once;
* AiiDA's ``AttributeDict`` (and its subclasses, by class name through the allow-list)
  and the engine's ``Awaitable``, exactly: class, items, nothing else;
* the names a checkpoint of an AiiDA process uses (``AwaitableAction``,
  ``AwaitableTarget``, the ``ObjectLoader`` plumpy records, the CalcJob ``Waiting``
  state) on the allow-list, each by its exact name, and aiida-core's own process
  plugins (:data:`AIIDA_PROCESSES`) as processes and class references only;
* the YAML AiiDA parses with its unsafe loader while loading (``INPUTS_RAW``,
  ``INPUTS_PARSED``, ``OUTPUTS``) declared for the audit
  (:meth:`~loopaware_persist.HookRegistry.declare_yaml`), with AiiDA's own tags
  (:data:`AIIDA_YAML_TAGS`): ``!enum`` and ``!dataclass`` resolve their class only
  through the allow-list, and no ``!!python/object...`` tag passes but an enum
  member's (``!!python/object/apply:module.Enum [value]``, how AiiDA's dumper writes
  one), its enum on the allow-list;
* ORM entities, storage backends, SQLAlchemy sessions, runners, managers and
  communicators declared opaque (:meth:`~loopaware_persist.HookRegistry.declare_opaque`):
  the post-load loop check does not walk AiiDA's database layer.

Identifiers: AiiDA 2.9's ``ObjectLoader`` identifies classes as ``module:name``, the
same strings the allow-list checks; a load resolves each through the allow-list before
AiiDA's loader imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Final

from .._errors import CorruptCheckpointError, EncodeError, UnsafeCheckpointError
from .._hooks import default_registry
from .._registry import HookRegistry, YamlTagCheck, class_name

__all__ = (
    "AIIDA_ALLOW",
    "AIIDA_PROCESSES",
    "AIIDA_YAML_TAGS",
    "configure_registry",
    "make_registry",
)

#: What of aiida-core a checkpoint of an AiiDA process names besides its process class,
#: each class by its exact name.
AIIDA_ALLOW: Final = (
    "aiida.engine.persistence:ObjectLoader",
    "aiida.engine.processes.workchains.awaitable:AwaitableAction",
    "aiida.engine.processes.workchains.awaitable:AwaitableTarget",
    "aiida.engine.processes.calcjobs.tasks:Waiting",
    "aiida.common.extendeddicts:FixedFieldsAttributeDict",
    "aiida.common.extendeddicts:DefaultFieldsAttributeDict",
)

#: The process plugins aiida-core 2.9 ships (its ``aiida.calculations`` and
#: ``aiida.workflows`` entry points: ``core.arithmetic.add``, ``core.templatereplacer``,
#: ``core.arithmetic.multiply_add``...), allowed by exact name and only as what a
#: checkpoint names them as: its process (``"savable"``) and a class reference
#: (``"class"``). Never as something YAML or unpickling may call (``"pickle"``): calling a
#: process class launches a process (its node is created and stored). Whole modules are
#: not allowed: ``aiida.workflows``' modules re-export ``Node`` and ``Path``.
#: ``core.arithmetic.add_multiply`` is a process function (its process class has the
#: function's name), which neither AiiDA nor this package resumes.
AIIDA_PROCESSES: Final = (
    "aiida.calculations.arithmetic.add:ArithmeticAddCalculation",
    "aiida.calculations.stash:StashCalculation",
    "aiida.calculations.templatereplacer:TemplatereplacerCalculation",
    "aiida.calculations.transfer:TransferCalculation",
    "aiida.calculations.unstash:UnstashCalculation",
    "aiida.workflows.arithmetic.add_multiply:add_multiply",
    "aiida.workflows.arithmetic.multiply_add:MultiplyAddWorkChain",
)

#: The keys under which AiiDA's ``Process.encode_input_args`` stores YAML in a bundle
#: (plumpy's ``BundleKeys``), read back by ``decode_input_args`` with ``yaml.Loader``.
AIIDA_YAML_KEYS: Final = ("INPUTS_RAW", "INPUTS_PARSED", "OUTPUTS")


def _dataclass_name(value: Any, registry: HookRegistry, path: str) -> None:
    """AiiDA's ``!dataclass`` calls ``load_object(__type__)(**fields)``."""
    name = value.get("__type__") if isinstance(value, Mapping) else None
    if not isinstance(name, str):
        msg = (
            f"AiiDA YAML at {path} holds a '!dataclass' without a plain '__type__' name; "
            "AiiDA's loader could not build it. Refused; nothing was run."
        )
        raise UnsafeCheckpointError(msg, name="!dataclass")
    cls = registry.resolve(name, "object")
    if not dataclasses.is_dataclass(cls):
        msg = (
            f"AiiDA YAML at {path} names {name!r} as a '!dataclass', which it is not. "
            "Refused; nothing was run."
        )
        raise UnsafeCheckpointError(msg, name=name)


def _enum_name(value: Any, registry: HookRegistry, path: str) -> None:
    """AiiDA's ``!enum`` calls ``load_object(identifier)(value)`` for ``identifier|value``."""
    parts = value.split("|") if isinstance(value, str) else []
    if len(parts) != 2:
        msg = (
            f"AiiDA YAML at {path} holds an '!enum' that is not 'module:Name|value' "
            f"({value!r}). Refused; nothing was run."
        )
        raise UnsafeCheckpointError(msg, name="!enum")
    registry.resolve(parts[0], "enum")


def _no_bundle(spelling: str) -> YamlTagCheck:
    """AiiDA's loader builds a bundle from both ``!plumpy:bundle`` (AiiDA's dumper) and
    ``!plumpy:Bundle`` (plumpy's); neither is ever an input or output."""

    def refuse(_value: Any, _registry: HookRegistry, path: str) -> None:
        msg = (
            f"AiiDA YAML at {path} holds a {spelling!r}: a nested bundle, which AiiDA never "
            "writes among inputs or outputs, and whose class names would be loaded later, "
            "past the audit. Refused; nothing was run. The checkpoint was tampered with: "
            "delete it (or the process)."
        )
        raise UnsafeCheckpointError(msg, name=spelling)

    return refuse


#: The tags of ``aiida.orm.utils.serialize.AiiDALoader`` (aiida-core 2.9), with the check
#: each must pass; every other application tag is refused. The ORM tags only look an
#: entity up by UUID; ``!enum`` and ``!dataclass`` import and call a named class.
AIIDA_YAML_TAGS: Final[Mapping[str, YamlTagCheck | None]] = {
    "!aiida_node": None,
    "!aiida_group": None,
    "!aiida_computer": None,
    "!aiida_node_links_manager": None,
    "!aiida_attributedict": None,
    "!plumpy:attributes_frozendict": None,
    "!enum": _enum_name,
    "!dataclass": _dataclass_name,
    "!plumpy:bundle": _no_bundle("!plumpy:bundle"),
    "!plumpy:Bundle": _no_bundle("!plumpy:Bundle"),
}


def _unstored(what: str, entity: Any) -> EncodeError:
    msg = (
        f"Cannot store the unstored {what} {entity!r}: a checkpoint refers to AiiDA "
        "entities by UUID, so they must be stored first (call .store() on it before the "
        "step returns, as AiiDA's own persister requires)."
    )
    return EncodeError(msg)


def _enc_stored(what: str, key: str = "uuid") -> Callable[[Any], list[Any]]:
    """The encoder of a stored AiiDA entity, ``[entity.KEY]``; it refuses an unstored one.

    :param what: the entity's kind, for the message (``"node"``)
    :param key: the attribute that names it in its collection
    :return: the encoder
    """

    def encode(entity: Any) -> list[Any]:
        if not entity.is_stored:
            raise _unstored(what, entity)
        return [getattr(entity, key)]

    return encode


def _exactly(what: str, collection: Any, uuid: str) -> Any:
    """The stored entity whose UUID is exactly ``uuid``.

    Not ``load_node(uuid=...)``/``load_group(uuid=...)``: aiida-core 2.9's loaders match
    an identifier that is not a whole UUID as a prefix (``orm/utils/loaders.py``,
    ``_get_query_builder_uuid_identifier``), so a truncated UUID in a damaged record
    could bring back another entity. ``collection.get`` filters by equality.

    :param what: the entity's kind, for the message (``"node"``)
    :param collection: the class's ``collection`` (``orm.Node.collection``)
    :param uuid: the UUID the record holds
    :raises CorruptCheckpointError: if the profile holds no entity with that UUID
    :return: the entity
    """
    from aiida.common.exceptions import MultipleObjectsError, NotExistent

    try:
        return collection.get(uuid=uuid)
    except (NotExistent, MultipleObjectsError) as error:
        msg = (
            f"Checkpoint refers to the AiiDA {what} with UUID {uuid!r}, which the loaded "
            f"profile does not hold ({type(error).__name__}); the record is damaged or "
            "from another profile, and cannot be resumed here."
        )
        raise CorruptCheckpointError(msg) from error


def _dec_node(fields: list[Any]) -> Any:
    from aiida.orm import Node

    return _exactly("node", Node.collection, _uuid_field(fields, "node"))


def _dec_group(fields: list[Any]) -> Any:
    from aiida.orm import Group

    return _exactly("group", Group.collection, _uuid_field(fields, "group"))


def _dec_computer(fields: list[Any]) -> Any:
    from aiida.orm import Computer

    return _exactly("computer", Computer.collection, _uuid_field(fields, "computer"))


def _dec_user(fields: list[Any]) -> Any:
    from aiida.orm import User

    return User.collection.get(email=_uuid_field(fields, "user"))


def _enc_links_manager(manager: Any) -> list[Any]:
    """``[node UUID, incoming, link type value]``: what AiiDA's own
    ``represent_node_links_manager`` (``orm/utils/serialize.py``) stores."""
    node = manager._node
    if not node.is_stored:
        raise _unstored("node (of a NodeLinksManager)", node)
    return [node.uuid, bool(manager._incoming), manager._link_type.value]


def _dec_links_manager(fields: list[Any]) -> Any:
    from aiida.common.links import LinkType
    from aiida.orm import Node
    from aiida.orm.utils.managers import NodeLinksManager

    if (
        len(fields) != 3
        or not isinstance(fields[0], str)
        or not isinstance(fields[1], bool)
        or not isinstance(fields[2], str)
    ):
        msg = (
            f"Malformed NodeLinksManager {fields!r} in checkpoint: expected "
            "[node uuid, incoming, link type]."
        )
        raise CorruptCheckpointError(msg)
    try:
        link_type = LinkType(fields[2])
    except ValueError as error:
        msg = f"NodeLinksManager in checkpoint has an unknown link type ({error})."
        raise CorruptCheckpointError(msg) from error
    node = _exactly("node", Node.collection, fields[0])
    return NodeLinksManager(node=node, link_type=link_type, incoming=fields[1])  # type: ignore[no-untyped-call]


def _uuid_field(fields: list[Any], what: str) -> str:
    if len(fields) != 1 or not isinstance(fields[0], str):
        msg = f"Malformed AiiDA {what} reference {fields!r} in checkpoint: expected [str]."
        raise CorruptCheckpointError(msg)
    return fields[0]


def _enc_attribute_dict(value: Any, registry: HookRegistry) -> list[Any]:
    cls = type(value)
    registry.check_importable(cls, "an AttributeDict of class")
    return [class_name(cls), dict.copy(value)]


def _dec_attribute_dict(fields: list[Any], registry: HookRegistry) -> Any:
    from aiida.common import AttributeDict

    if len(fields) != 2 or not isinstance(fields[1], dict):
        msg = f"Malformed AttributeDict {fields!r} in checkpoint: expected [class, items]."
        raise CorruptCheckpointError(msg)
    cls = registry.resolve(fields[0], "class")
    if not issubclass(cls, AttributeDict):
        msg = f"Checkpoint names {fields[0]!r} as an AttributeDict, which it is not. Refused."
        raise UnsafeCheckpointError(msg, name=str(fields[0]))
    # As pickle does (AttributeDict.__setstate__): no __init__ of a subclass runs.
    new = dict.__new__(cls)
    dict.update(new, fields[1])
    return new


def _enc_awaitable(value: Any) -> list[Any]:
    return [dict(vars(value))]  # plumpy's AttributesDict: a SimpleNamespace


def _dec_awaitable(fields: list[Any]) -> Any:
    from aiida.engine.processes.workchains.awaitable import Awaitable

    if len(fields) != 1 or not isinstance(fields[0], dict):
        msg = f"Malformed Awaitable {fields!r} in checkpoint: expected [attributes]."
        raise CorruptCheckpointError(msg)
    return Awaitable(**fields[0])


def _opaque_types() -> tuple[type, ...]:
    from aiida.engine.runners import Runner
    from aiida.manage.manager import Manager
    from aiida.orm import Entity
    from aiida.orm.implementation import StorageBackend
    from aiida.orm.implementation.entities import BackendEntity
    from aiida.orm.utils.managers import NodeLinksManager
    from sqlalchemy.orm import Session

    return (
        Entity,
        BackendEntity,
        StorageBackend,
        Session,
        Runner,  # its communicator is a kiwipy.Communicator, which no walk enters
        Manager,
        NodeLinksManager,  # saved by its hook; the walk need not enter the node it holds
    )


def configure_registry(registry: HookRegistry) -> None:
    """Teach ``registry`` AiiDA's types, allow-list entries, YAML and opaque types.

    :param registry: a registry (usually a copy of ``default_registry``); changed in place
    :raises ValueError: if it already has AiiDA's tags
    """
    from aiida.common import AttributeDict
    from aiida.engine.processes.process import Process
    from aiida.engine.processes.workchains.awaitable import Awaitable
    from aiida.orm import Computer, Group, Node, User
    from aiida.orm.utils.managers import NodeLinksManager

    registry.register(Node, tag="aiida.node", encode=_enc_stored("node"), decode=_dec_node)
    registry.register(Group, tag="aiida.group", encode=_enc_stored("group"), decode=_dec_group)
    registry.register(
        Computer, tag="aiida.computer", encode=_enc_stored("computer"), decode=_dec_computer
    )
    registry.register(User, tag="aiida.user", encode=_enc_stored("user", "email"), decode=_dec_user)
    registry.register(
        NodeLinksManager,
        tag="aiida.node_links_manager",
        encode=_enc_links_manager,
        decode=_dec_links_manager,
        subclasses=False,
    )
    registry.register(
        AttributeDict,
        tag="aiida.attributedict",
        encode=_enc_attribute_dict,
        decode=_dec_attribute_dict,
        takes_registry=True,
    )
    registry.register(
        Awaitable,
        tag="aiida.awaitable",
        encode=_enc_awaitable,
        decode=_dec_awaitable,
        subclasses=False,
    )
    registry.allow(*AIIDA_ALLOW)
    registry.allow(*AIIDA_PROCESSES, kinds=("class", "savable"))
    # AiiDA's dumper writes no !!python/object... there but an enum member's.
    registry.declare_yaml(Process, *AIIDA_YAML_KEYS, tags=AIIDA_YAML_TAGS, python_objects=False)
    registry.declare_opaque(*_opaque_types())


def make_registry(*, allow: tuple[str | type, ...] = ()) -> HookRegistry:
    """:param allow: the user's modules or classes (their process classes, plugins...)
    :return: a copy of ``default_registry`` configured for AiiDA
    """
    registry = default_registry.copy()
    configure_registry(registry)
    registry.allow(*allow)
    return registry
