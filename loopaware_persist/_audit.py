"""The load audit: check, as data, that a bundle names only what the allow-list permits.

Before plumpy sees a bundle, every ``!!meta`` class name and object loader, every
method name plumpy ``getattr``s (or even imports) on load, and the YAML that plumpy's
``Excepted`` state reads with the *unsafe* ``yaml.Loader`` (:mod:`._yaml_audit`) must
name only what the registry's allow-list permits; nothing is imported that is not
allowed. :func:`audit_bundle` walks a whole bundle; the load's own walk
(:class:`._unbundle._Rebind`) calls :func:`_audit_savable` on each savable it meets
instead, so a load walks the bundle once. :class:`SafeObjectLoader` is the plumpy
``ObjectLoader`` a load resolves names with, checking what any caller's loader
(AiiDA's, say) returns.
"""

from __future__ import annotations

import datetime as dt
import decimal
import inspect
import sys
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import plumpy
from plumpy import loaders
from plumpy.persistence import META, META__CLASS_NAME, META__OBJECT_LOADER, META__TYPES

from ._allowlist import Kind
from ._errors import CorruptCheckpointError, LoopAwarePersistError, UnsafeCheckpointError
from ._hooks import default_registry
from ._registry import HookRegistry
from ._yaml_audit import audit_yaml as _audit_yaml

__all__ = ("SafeObjectLoader", "audit_bundle")

# Values that can neither be nor hold a future or a savable (immutable, no references
# out): the audit and the load's walks never descend into them. Checked by exact type
# on the hot paths.
_ATOMS = (
    type(None), bool, int, float, complex, str, bytes, bytearray,
    uuid.UUID, dt.datetime, dt.date, dt.time, dt.timedelta, decimal.Decimal,
)  # fmt: skip
_ATOM_TYPES = frozenset(_ATOMS)


#: ``resolve(name, kind)``: the class a stored name stands for, checked against an allow-list.
Resolver = Callable[[str, Kind], type]


def _resolver(registry: HookRegistry, loader: loaders.ObjectLoader | None) -> Resolver:
    """How a load turns the names a bundle stores into classes.

    :param registry: whose allow-list decides
    :param loader: a plumpy ``ObjectLoader`` that knows the identifiers (AiiDA has its
        own), or ``None`` for ``module:name`` through the registry alone
    :return: a resolver; what ``loader`` returns is still checked against the allow-list
    """
    if isinstance(loader, SafeObjectLoader):
        loader = loader._loader  # what it wraps, checked against this registry
    if loader is None or isinstance(loader, loaders.DefaultObjectLoader):
        return registry.resolve
    found: dict[tuple[str, Kind], type] = {}

    def resolve(identifier: str, kind: Kind = "class") -> type:
        cls = found.get((identifier, kind))
        if cls is not None:
            return cls
        try:
            obj = loader.load_object(identifier)
        except (LoopAwarePersistError, RecursionError):
            raise  # a RecursionError: the walk's cue to go iterative, not a refusal
        except Exception as error:
            msg = (
                f"Checkpoint names {identifier!r}, which the object loader {loader!r} cannot "
                f"load ({type(error).__name__}: {error}). Load with the loader that saved it."
            )
            raise UnsafeCheckpointError(msg, name=str(identifier)) from error
        if not isinstance(obj, type) or not registry.may_revive(obj, kind):
            what = f"{obj.__module__}:{obj.__qualname__}" if isinstance(obj, type) else repr(obj)
            msg = (
                f"Checkpoint names {identifier!r}, which the object loader {loader!r} resolves "
                f"to {what}: not allowed as {kind!r}. Refused; nothing was run. If it is "
                f"yours, allow it: open_persister(..., allow=[{what.partition(':')[0]!r}])."
            )
            raise UnsafeCheckpointError(msg, name=str(identifier))
        found[(identifier, kind)] = obj
        return obj

    return resolve


class SafeObjectLoader(loaders.ObjectLoader):
    """A plumpy ``ObjectLoader`` that imports only what the allow-list permits.

    :param registry: the registry whose allow-list decides
    :param loader: another ``ObjectLoader`` that resolves the stored identifiers (AiiDA's,
        say); what it returns is checked against the allow-list. Default: ``module:Name``
        names, imported through the registry.
    """

    def __init__(self, registry: HookRegistry, loader: loaders.ObjectLoader | None = None) -> None:
        self._registry = registry
        self._loader = loader
        self._resolve = _resolver(registry, loader)

    def load_object(self, identifier: str) -> Any:
        """:raises UnsafeCheckpointError: if ``identifier`` is not allowed"""
        return self._resolve(identifier, "class")

    def identify_object(self, obj: Any) -> str:
        """:return: the identifier plumpy stores for ``obj`` (the wrapped loader's, if any)"""
        if self._loader is not None:
            return self._loader.identify_object(obj)
        return f"{obj.__module__}:{obj.__name__}"


def _is_method(owner: type, name: str) -> bool:
    """Whether ``owner.name`` is a method (a function, or a classmethod bound to the class):
    not merely callable, as a class attribute holding a class is (AiiDA's processes keep
    their node class in ``_node_class``: calling that builds a node)."""
    attribute = getattr(owner, name, None)
    return inspect.isfunction(attribute) or (
        inspect.ismethod(attribute) and inspect.isfunction(attribute.__func__)
    )


#: The engine's own methods that plumpy and aiida-core store as a step to continue with:
#: ``Process.run`` (plumpy's ``Created`` state), ``WorkChain._do_step`` (``Wait`` and
#: ``Continue``, in plumpy and aiida-core) and ``CalcJob.terminate`` (aiida-core's
#: ``Waiting`` state of a calculation job moves to ``Running`` with it).
_ENGINE_STEPS = frozenset({"run", "_do_step", "terminate"})
#: Where the engine's classes live: a method one of them defines is the engine's API.
_ENGINE_MODULES = ("plumpy.", "aiida.engine.")

# Per class, once (AiiDA makes process classes on the fly: weak).
_ENGINE_NAMES: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()


def _engine_names(owner: type) -> frozenset[str]:
    """:return: the names ``owner`` gets from the engine's classes (plumpy's and
    aiida-core's ``Process``, ``WorkChain``, ``StateMachine``...), but its steps: those
    that resolve to the engine's definition, not to one of the user's classes (a user's
    ``done`` step overrides ``Process.done`` and is the user's)"""
    names = _ENGINE_NAMES.get(owner)
    if names is None:
        users: set[str] = set()
        engines: set[str] = set()
        for klass in owner.__mro__:  # the first class defining a name is its definition
            ours = klass.__module__.startswith(_ENGINE_MODULES)
            for name in vars(klass):
                if name not in users and name not in engines:
                    (engines if ours else users).add(name)
        names = _ENGINE_NAMES[owner] = frozenset(engines - _ENGINE_STEPS)
    return names


def _check_method(value: Any, owner: type | None, path: str, what: str) -> None:
    """A name plumpy ``getattr``s (or even imports) on load must be a method of ``owner``:
    one of the user's own, or one of the steps the engine itself stores.

    The engine's other methods are refused, public or not, unless the user's class
    overrides them: plumpy calls the named method with arguments the checkpoint also
    holds, so a tampered ``run_fn`` naming ``submit``, ``kill`` or ``on_finish`` would
    run it.
    """
    if (
        not isinstance(value, str)
        or not value.isidentifier()
        or value.startswith("__")
        or (owner is not None and not _is_method(owner, value))
    ):
        where = f" of {owner.__qualname__}" if owner is not None else ""
        msg = (
            f"{what} at {path} is {value!r}, not a plain method name{where}. Refused; "
            "nothing was run. The checkpoint was damaged or tampered with."
        )
        raise UnsafeCheckpointError(msg, name=str(value))
    if owner is not None and value in _engine_names(owner):
        steps = ", ".join(sorted(_ENGINE_STEPS))
        msg = (
            f"{what} at {path} is {value!r}, a method of the engine's own "
            f"{owner.__qualname__} API, not a step: plumpy would call it on load with "
            f"arguments from the checkpoint. Refused; nothing was run. A step is one of "
            f"the process class's own methods, or the engine's {steps}; the checkpoint "
            "was damaged or tampered with."
        )
        raise UnsafeCheckpointError(msg, name=value)


# Fields in which plumpy stores a *method* by name and getattr()s it back on load:
# (state class, key, owner) where owner "process" is the root process class and
# "self" the class of the savable holding the field. Continue.continue_fn is worse:
# plumpy first tries utils.load_function(name), which imports any dotted name.
_METHOD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("plumpy.process_states:Created", "run_fn", "process"),
    ("plumpy.process_states:Running", "run_fn", "process"),
    ("plumpy.process_states:Waiting", "DONE_CALLBACK", "process"),
    ("plumpy.process_states:Continue", "continue_fn", "process"),
    ("plumpy.workchains:_FunctionStepper", "_fn", "process"),
)


def _method_fields(cls: type) -> list[tuple[str, str]]:
    found = _METHOD_FIELDS_OF.get(cls)
    if found is not None:
        return found
    found = []
    for owner_name, key, owner in _METHOD_FIELDS:
        module, _, qualname = owner_name.partition(":")
        base = getattr(sys.modules.get(module), qualname, None)
        if isinstance(base, type) and issubclass(cls, base):
            found.append((key, owner))
    _METHOD_FIELDS_OF[cls] = found
    return found


# Per class, once: every savable of every load asks (plumpy's modules are imported with
# plumpy, so the answer never changes). Weak: AiiDA makes process classes on the fly.
_METHOD_FIELDS_OF: weakref.WeakKeyDictionary[type, list[tuple[str, str]]] = (
    weakref.WeakKeyDictionary()
)


def _audit_savable(
    state: dict[Any, Any],
    registry: HookRegistry,
    path: str,
    root: list[type],
    resolve: Resolver | None = None,
) -> None:
    resolve = resolve if resolve is not None else registry.resolve
    meta = state[META]
    if not isinstance(meta, dict):
        msg = f"'!!meta' at {path} is {type(meta).__name__}, not a mapping."
        raise CorruptCheckpointError(msg)
    try:
        if META__OBJECT_LOADER in meta:
            resolve(str(meta[META__OBJECT_LOADER]), "class")
        if META__CLASS_NAME not in meta:
            return
        cls = resolve(str(meta[META__CLASS_NAME]), "savable")
    except UnsafeCheckpointError as error:
        if path == "<bundle>":
            raise  # the walk's audit: unbundle audits again to name the path
        msg = f"{error} (at {path})"
        raise UnsafeCheckpointError(msg, name=error.name) from error
    if not root:
        root.append(cls)  # the first savable met is the process being loaded
    process_cls = root[0]
    for member, kind in (meta.get(META__TYPES) or {}).items():
        if kind == "m":  # plumpy stores bound methods by name and getattr()s them back
            _check_method(state.get(member), cls, f"{path}[{member!r}]", "Method name")
    for key, owner in _method_fields(cls):
        if key in state or key == "run_fn":
            target = process_cls if owner == "process" else cls
            _check_method(state.get(key), target, f"{path}.{key}", f"{cls.__name__}.{key}")
    if issubclass(cls, plumpy.process_states.Excepted):
        _audit_yaml(state.get(plumpy.process_states.Excepted.EXC_VALUE), registry, path)
    # YAML an application's loading code parses unsafely (AiiDA's INPUTS_RAW...).
    for key, tags, python_objects in registry.yaml_fields(cls):
        if key in state:
            _audit_yaml(
                state[key],
                registry,
                f"{path}[{key!r}]",
                tags=tags,
                what=f"{cls.__qualname__}.{key}",
                python_objects=python_objects,
            )


def audit_bundle(
    bundle: Any,
    registry: HookRegistry = default_registry,
    *,
    loader: loaders.ObjectLoader | None = None,
) -> None:
    """Check, as data, that loading ``bundle`` imports and runs only allowed code.

    :param bundle: a decoded bundle
    :param registry: whose allow-list decides
    :param loader: the plumpy ``ObjectLoader`` the load will resolve class names with
        (default: ``module:Name`` names); what it resolves is checked all the same
    :raises UnsafeCheckpointError: naming the first class, loader, method or YAML tag refused
    :raises CorruptCheckpointError: if plumpy's metadata is malformed
    """
    # Entries are (value, parent entry, key); a path string is built only for the
    # savables audited, and atoms are filtered by exact type before being pushed.
    atoms = _ATOM_TYPES
    stack: list[tuple[Any, Any, Any]] = [(bundle, None, None)]
    seen: set[int] = set()  # pickle keeps shared references and cycles
    root: list[type] = []
    resolve = _resolver(registry, loader)
    while stack:
        entry = stack.pop()
        value = entry[0]
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            if META in value:
                _audit_savable(value, registry, _bundle_path(entry) or "<root>", root, resolve)
            children = [
                (child, entry, key) for key, child in value.items() if type(child) not in atoms
            ]
            # Depth-first in key order, so the root's own '!!meta' is met first.
            stack.extend(reversed(children))
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(
                (child, entry, i) for i, child in enumerate(value) if type(child) not in atoms
            )


def _bundle_path(entry: tuple[Any, Any, Any]) -> str:
    parts = []
    while entry[1] is not None:
        key = entry[2]
        parts.append(
            f".{key}" if isinstance(key, str) and isinstance(entry[1][0], dict) else f"[{key!r}]"
        )
        entry = entry[1]
    return "".join(reversed(parts)).lstrip(".")
