"""AiiDA's own checkpoint YAML, read without running anything: :func:`load_aiida_yaml`.

aiida-core 2.9's ``AiiDAPersister`` stores ``serialize(Bundle(process))`` (PyYAML's
``yaml.Dumper`` with AiiDA's representers) in the ProcessNode's ``checkpoints``
attribute and reads it back with ``deserialize_unsafe``: ``yaml.Loader``, which imports
and calls whatever a ``!!python/object/apply:`` tag names, and AiiDA's ``!enum`` and
``!dataclass`` constructors, which import and call any ``module:name``.

:class:`AiidaCheckpointLoader` is a :class:`yaml.SafeLoader` that knows, besides YAML's
own safe tags, only what such a checkpoint holds:

* the root ``!plumpy:bundle`` (a nested one is refused: nothing writes it);
* ``!aiida_node``, ``!aiida_group``, ``!aiida_computer``, ``!aiida_node_links_manager``:
  looked up in the loaded profile by UUID (a missing one is a damaged checkpoint);
* ``!aiida_attributedict`` (``AttributeDict``), ``!plumpy:attributes_frozendict``;
* ``!enum`` and ``!dataclass``, their class resolved only through the registry's
  allow-list (a ``!dataclass`` must be one), then called with the stored value or fields;
* ``!!python/tuple`` and the other plain ``!!python/`` scalars and collections;
  ``!!python/name:`` (plumpy's ``EventHelper`` stores its listener class so), resolved
  through the allow-list as a class reference;
* ``!!python/object/apply:`` of exactly the engine's ``Awaitable`` (a ``ToContext`` a
  WorkChain waits on), rebuilt from its attributes; of an enum on the allow-list with
  one value (``yaml.Dumper`` writes the engine's ``AwaitableAction`` so); or of an
  exception the allow-list permits (builtins' included), with its args and state (the
  ``SavableFuture`` of an excepted process), built without calling its ``__init__``.

The root is AiiDA's ``!plumpy:bundle``; plumpy's own spelling, ``!plumpy:Bundle``, which
``AiiDAPersister`` never writes, is refused like any other unknown tag.

Every other tag (any other ``!!python/object/apply:``, ``!!python/object/new:``,
``!!python/object:``, unknown application tags) is an :class:`UnsafeCheckpointError`
naming it. Before anything is built, the text is checked for depth and alias expansion
(:func:`~loopaware_persist._yaml_audit.audit_yaml`). The nested YAML strings AiiDA parses
later (``INPUTS_RAW``, ``INPUTS_PARSED``, ``OUTPUTS``) stay strings here: the bundle's
audit checks them (:meth:`~loopaware_persist.HookRegistry.declare_yaml`).

:func:`dump_aiida_yaml` writes a bundle exactly as ``AiiDAPersister`` would.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import plumpy
import yaml
from aiida.common import AttributeDict
from plumpy.utils import AttributesFrozendict

from .._errors import CorruptCheckpointError, UnsafeCheckpointError
from .._named_hooks import _dec_exception
from .._registry import HookRegistry, class_name
from .._yaml_audit import MAX_YAML_DEPTH, MAX_YAML_EXPANSION, YAML_SLACK, audit_yaml

__all__ = ("AiidaCheckpointLoader", "dump_aiida_yaml", "load_aiida_yaml", "load_aiida_yaml_unsafe")

_PY: Final = "tag:yaml.org,2002:python/"
_AWAITABLE: Final = "aiida.engine.processes.workchains.awaitable.Awaitable"
#: The plain ``!!python/`` tags, built as ``yaml.Loader`` builds them: no import, no call.
_PLAIN_PYTHON: Final = (
    "none", "bool", "str", "unicode", "bytes", "int", "long", "float", "complex", "list",
    "dict", "tuple",
)  # fmt: skip


#: libyaml's parser when PyYAML has it: ten times the pure-Python one, its nesting bounded
#: at 1,000 levels by libyaml itself; the depth and expansion are checked on the composed
#: node graph (:func:`_check_shape`). Without it, the pure-Python parser, audited first.
_C_PARSER: Final = bool(getattr(yaml, "__with_libyaml__", False))
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader  # the C one has the same API
else:
    _SafeLoader = yaml.CSafeLoader if _C_PARSER else yaml.SafeLoader


def _refused(loader: AiidaCheckpointLoader, node: yaml.Node, why: str) -> UnsafeCheckpointError:
    mark = node.start_mark
    msg = (
        f"AiiDA checkpoint YAML of {loader.where} holds {node.tag!r} at line {mark.line + 1}, "
        f"column {mark.column + 1}: {why}. Refused; nothing was run."
    )
    return UnsafeCheckpointError(msg, name=str(node.tag))


class AiidaCheckpointLoader(_SafeLoader):
    """A safe loader for the YAML ``AiiDAPersister`` writes (see the module docstring).

    :param text: the YAML
    :param registry: whose allow-list resolves ``!enum``, ``!dataclass`` and
        ``!!python/name:``
    :param where: what the text belongs to, for messages (``ProcessNode<12>``)
    """

    def __init__(self, text: str, registry: HookRegistry, where: str) -> None:
        super().__init__(text)
        self.registry = registry
        self.where = where
        self._root: yaml.Node | None = None
        self._entities: dict[tuple[str, str], Any] = {}

    def construct_document(self, node: yaml.Node) -> Any:
        self._root = node
        return super().construct_document(node)

    def construct_undefined(self, node: yaml.Node) -> Any:
        raise _refused(self, node, "not a tag AiiDA's checkpoints use")

    def _uuid(self, node: yaml.Node) -> str:
        value = self.construct_scalar(node)  # type: ignore[arg-type]
        if not isinstance(value, str) or not value:
            msg = f"AiiDA checkpoint YAML of {self.where} holds {node.tag} {value!r}: not a UUID."
            raise CorruptCheckpointError(msg)
        return value

    def _entity(self, node: yaml.Node, what: str, get: Callable[[str], Any]) -> Any:
        from aiida.common.exceptions import MultipleObjectsError, NotExistent

        uuid = self._uuid(node)
        # One query per entity: a context names its latest node twice or more (a total,
        # and the last of a list), each reference a scalar of its own.
        found = self._entities.get((what, uuid))
        if found is not None:
            return found
        try:
            found = self._entities[what, uuid] = get(uuid)
            return found
        except (NotExistent, MultipleObjectsError) as error:
            msg = (
                f"AiiDA checkpoint YAML of {self.where} refers to the {what} {uuid}, which "
                f"this profile does not hold ({error}); the checkpoint cannot be resumed."
            )
            raise CorruptCheckpointError(msg) from error


def _bundle(loader: AiidaCheckpointLoader, node: yaml.Node) -> plumpy.Bundle:
    if node is not loader._root:
        raise _refused(loader, node, "a nested bundle, which AiiDA never writes")
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]
    return bundle


def _node(loader: AiidaCheckpointLoader, node: yaml.Node) -> Any:
    from aiida.orm import Node

    # By equality: load_node(uuid=...) matches a partial UUID as a prefix.
    return loader._entity(node, "node", lambda uuid: Node.collection.get(uuid=uuid))


def _group(loader: AiidaCheckpointLoader, node: yaml.Node) -> Any:
    from aiida.orm import Group

    return loader._entity(node, "group", lambda uuid: Group.collection.get(uuid=uuid))


def _computer(loader: AiidaCheckpointLoader, node: yaml.Node) -> Any:
    from aiida.orm import Computer

    return loader._entity(node, "computer", lambda uuid: Computer.collection.get(uuid=uuid))


def _links_manager(loader: AiidaCheckpointLoader, node: yaml.Node) -> Any:
    from aiida.common.links import LinkType
    from aiida.orm.utils.managers import NodeLinksManager

    fields = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if set(fields) != {"incoming", "link_type", "node"}:
        msg = f"AiiDA checkpoint YAML of {loader.where} holds a malformed {node.tag}: {fields!r}."
        raise CorruptCheckpointError(msg)
    target = _node(loader, yaml.ScalarNode("!aiida_node", fields["node"], node.start_mark))
    try:
        link_type = LinkType(fields["link_type"])
    except ValueError as error:
        msg = f"AiiDA checkpoint YAML of {loader.where} holds an unknown link type ({error})."
        raise CorruptCheckpointError(msg) from error
    return NodeLinksManager(node=target, link_type=link_type, incoming=bool(fields["incoming"]))  # type: ignore[no-untyped-call]


def _mapping(cls: Callable[[dict[Any, Any]], Any]) -> Any:
    def construct(loader: AiidaCheckpointLoader, node: yaml.Node) -> Any:
        return cls(loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]

    return construct


def _enum(loader: AiidaCheckpointLoader, node: yaml.Node) -> Any:
    text = loader.construct_scalar(node)  # type: ignore[arg-type]
    identifier, sep, value = str(text).partition("|")
    if not sep or "|" in value:
        raise _refused(loader, node, f"{text!r} is not 'module:Name|value'")
    cls = loader.registry.resolve(identifier, "enum")
    try:
        return cls(value)
    except ValueError as error:
        msg = f"AiiDA checkpoint YAML of {loader.where} holds an unknown {identifier} ({error})."
        raise CorruptCheckpointError(msg) from error


def _dataclass(loader: AiidaCheckpointLoader, node: yaml.Node) -> Any:
    fields = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    name, values = fields.get("__type__"), fields.get("__fields__")
    if not isinstance(name, str) or not isinstance(values, dict) or len(fields) != 2:
        raise _refused(loader, node, "not {'__type__': 'module:Name', '__fields__': {...}}")
    cls = loader.registry.resolve(name, "object")
    if not dataclasses.is_dataclass(cls):
        raise _refused(loader, node, f"{name} is not a dataclass")
    return cls(**values)


def _python_name(loader: AiidaCheckpointLoader, suffix: str, node: yaml.Node) -> Any:
    module, _, qualname = suffix.rpartition(".")
    if not module:
        raise _refused(loader, node, "not a module.Name")
    return loader.registry.resolve(f"{module}:{qualname}", "class")


def _python_apply(loader: AiidaCheckpointLoader, suffix: str, node: yaml.Node) -> Any:
    """What ``yaml.Dumper`` writes through ``__reduce_ex__``: the engine's ``Awaitable``
    (its attributes as ``state``) and members of enums AiiDA's ``!enum`` representer does
    not reach (subclasses: ``AwaitableAction``...), as ``[value]``."""
    if suffix == _AWAITABLE:
        fields = (
            loader.construct_mapping(node, deep=True)
            if isinstance(node, yaml.MappingNode)
            else None
        )
        state = fields.get("state") if fields is not None and set(fields) == {"state"} else None
        if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
            raise _refused(loader, node, "not an Awaitable's attributes")
        from aiida.engine.processes.workchains.awaitable import Awaitable

        return Awaitable(**state)
    module, _, qualname = suffix.rpartition(".")
    if not module:
        raise _refused(loader, node, "not a module.Name")
    try:
        error_cls = loader.registry.resolve(f"{module}:{qualname}", "exception")
    except UnsafeCheckpointError:
        pass  # not an exception the allow-list permits: an enum, or refused below
    else:
        return _exception(loader, error_cls, node)
    if not isinstance(node, yaml.SequenceNode) or len(node.value) != 1:
        raise _refused(loader, node, "it would call a class with arbitrary arguments")
    cls = loader.registry.resolve(f"{module}:{qualname}", "enum")
    if not issubclass(cls, enum.Enum):
        raise _refused(loader, node, f"{module}:{qualname} is not an enum")
    (value,) = loader.construct_sequence(node, deep=True)
    try:
        return cls(value)
    except ValueError as error:
        what = cls.__qualname__
        msg = f"AiiDA checkpoint YAML of {loader.where} holds an unknown {what} ({error})."
        raise CorruptCheckpointError(msg) from error


def _exception(loader: AiidaCheckpointLoader, cls: type, node: yaml.Node) -> BaseException:
    """An exception ``yaml.Dumper`` wrote through ``__reduce_ex__``: ``[args...]``, or
    ``{args: [...], state: {...}}`` when it has attributes (plumpy's ``SavableFuture`` of
    an excepted process holds one). Built as this package's exception hook builds one:
    ``__new__`` and its args, no ``__init__`` but a builtin's, the state set after."""
    if isinstance(node, yaml.SequenceNode):
        args, state = loader.construct_sequence(node, deep=True), None
    elif isinstance(node, yaml.MappingNode):
        fields = loader.construct_mapping(node, deep=True)
        args, state = fields.get("args", []), fields.get("state")
        if not set(fields) <= {"args", "state"} or not isinstance(args, list):
            raise _refused(loader, node, "not an exception's args and state")
        if state is not None and not isinstance(state, dict):
            raise _refused(loader, node, "not an exception's args and state")
    else:
        raise _refused(loader, node, "not an exception's args")
    name = class_name(cls)
    return _dec_exception([name, list(args), name, state, None, None, False, None], loader.registry)


for _tag, _construct in {
    "!plumpy:bundle": _bundle,
    "!aiida_node": _node,
    "!aiida_group": _group,
    "!aiida_computer": _computer,
    "!aiida_node_links_manager": _links_manager,
    "!enum": _enum,
    "!dataclass": _dataclass,
    "!aiida_attributedict": _mapping(AttributeDict),
    "!plumpy:attributes_frozendict": _mapping(AttributesFrozendict),
}.items():
    AiidaCheckpointLoader.add_constructor(_tag, _construct)
for _name in _PLAIN_PYTHON:
    AiidaCheckpointLoader.add_constructor(
        _PY + _name, yaml.FullLoader.yaml_constructors[_PY + _name]
    )
AiidaCheckpointLoader.add_multi_constructor(_PY + "name:", _python_name)
AiidaCheckpointLoader.add_multi_constructor(_PY + "object/apply:", _python_apply)
AiidaCheckpointLoader.add_constructor(None, AiidaCheckpointLoader.construct_undefined)
del _tag, _construct, _name


def load_aiida_yaml(text: str, registry: HookRegistry, *, where: str = "a process") -> Any:
    """Read a checkpoint ``AiiDAPersister`` wrote, running nothing it names.

    :param text: the ``checkpoints`` attribute of a ProcessNode
    :param registry: whose allow-list resolves the classes it names (an AiiDA registry)
    :param where: what it belongs to, for messages
    :raises UnsafeCheckpointError: for a tag outside AiiDA's, or a class the allow-list
        refuses
    :raises CorruptCheckpointError: for text that is not YAML, too deep, expanding
        through aliases, or referring to entities this profile does not hold
    :return: the bundle (a ``plumpy.Bundle`` if the root is AiiDA's ``!plumpy:bundle``)
    """
    what = f"The AiiDA checkpoint of {where}"
    if not _C_PARSER:
        audit_yaml(text, None, "checkpoints", what=what)
    loader = AiidaCheckpointLoader(text, registry, where)
    try:
        node = loader.get_single_node()
        if node is None:
            msg = f"{what} is empty."
            raise CorruptCheckpointError(msg)
        _check_shape(node, len(text), what)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        msg = f"{what} is not readable YAML ({error})."
        raise CorruptCheckpointError(msg) from error
    finally:
        loader.dispose()


def _check_shape(root: yaml.Node, length: int, what: str) -> None:
    """Refuse a composed document nested deeper than ``MAX_YAML_DEPTH`` collections, with
    a cycle, or whose aliases expand it beyond what :func:`audit_yaml` allows: counted
    once per path that reaches each node (what a tree codec would write), in linear time."""
    budget = MAX_YAML_EXPANSION * length + YAML_SLACK
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        ident = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if done:
            on_path.discard(ident)
            sizes[ident] = min(1 + sum(sizes[id(child)] for child in children), budget + 1)
            continue
        if ident in sizes:
            continue
        if ident in on_path:
            msg = f"{what} refers to itself through an alias; nothing was loaded."
            raise CorruptCheckpointError(msg)
        if isinstance(node, yaml.ScalarNode):
            sizes[ident] = len(node.value) + 1
            continue
        if depth > MAX_YAML_DEPTH:
            msg = f"{what} nests collections more than {MAX_YAML_DEPTH} deep; nothing was loaded."
            raise CorruptCheckpointError(msg)
        on_path.add(ident)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children)
    if sizes[id(root)] > budget:
        msg = (
            f"{what} expands through aliases beyond {budget} characters; the record is "
            "damaged or crafted, nothing was loaded."
        )
        raise CorruptCheckpointError(msg)


def load_aiida_yaml_unsafe(text: str) -> Any:
    """Read a checkpoint the way ``AiiDAPersister`` does: runs whatever it names.

    :param text: the ``checkpoints`` attribute of a ProcessNode
    :return: the bundle
    """
    from aiida.orm.utils.serialize import deserialize_unsafe

    return deserialize_unsafe(text)


def dump_aiida_yaml(bundle: Any) -> str:
    """Write ``bundle`` exactly as ``AiiDAPersister.save_checkpoint`` does.

    :param bundle: a bundle (a plain ``plumpy.Bundle`` is made of any dict subclass)
    :return: the YAML for the ``checkpoints`` attribute
    """
    from aiida.orm.utils.serialize import serialize

    if type(bundle) is not plumpy.Bundle:
        plain = plumpy.Bundle.__new__(plumpy.Bundle)
        dict.update(plain, bundle)
        bundle = plain
    return serialize(bundle)
