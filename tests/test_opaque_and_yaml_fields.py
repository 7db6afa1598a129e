"""HookRegistry.declare_opaque and declare_yaml: the two ways an application (AiiDA)
tells the load what not to walk and which YAML it parses unsafely."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loopaware_persist import (
    ArgumentTypeError,
    HookRegistry,
    LoopBoundaryError,
    UnsafeCheckpointError,
    check_loop_bound,
    default_registry,
)
from loopaware_persist._yaml_audit import audit_yaml


class Backend:
    """Stands for a database layer: a large graph, and here a foreign future in it."""

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.session = {"rows": list(range(10)), "pending": future}


class Holder:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend


def test_check_loop_bound_skips_opaque_types() -> None:
    loop, other = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        holder = Holder(Backend(other.create_future()))
        with pytest.raises(LoopBoundaryError, match=r"backend\.session"):
            check_loop_bound(holder, loop)
        registry = default_registry.copy()
        registry.declare_opaque(Backend)
        check_loop_bound(holder, loop, registry=registry)  # not walked into
        assert registry.copy().opaque == (Backend,)
        assert default_registry.opaque == ()
    finally:
        loop.close()
        other.close()


def test_declarations_refuse_non_classes() -> None:
    registry = HookRegistry()
    with pytest.raises(ArgumentTypeError):
        registry.declare_opaque("Backend")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        registry.declare_yaml("Holder", "k")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        registry.declare_yaml(Holder, 3)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        registry.declare_yaml(Holder, "k", python_objects="no")  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ArgumentTypeError):
            check_loop_bound(object(), loop, registry="r")  # type: ignore[arg-type]
    finally:
        loop.close()


def test_yaml_fields_apply_to_subclasses_and_copies() -> None:
    class Sub(Holder):
        pass

    registry = HookRegistry()
    registry.declare_yaml(Holder, "INPUTS", tags={"!x": None})
    registry.declare_yaml(Holder, "OUTPUTS", python_objects=False)
    assert registry.copy().yaml_fields(Sub) == [
        ("INPUTS", {"!x": None}, True),
        ("OUTPUTS", {}, False),
    ]
    assert registry.yaml_fields(Backend) == []


def _seen() -> tuple[list[Any], Any]:
    calls: list[Any] = []

    def check(value: Any, registry: HookRegistry, path: str) -> None:
        calls.append(value)
        if value == "bad" or (isinstance(value, dict) and value.get("__type__") == "bad"):
            raise UnsafeCheckpointError("refused", name="bad")

    return calls, check


def test_application_tags_are_checked_scalars_and_mappings() -> None:
    calls, check = _seen()
    tags = {"!s": check, "!m": check, "!free": None}
    text = "a: !s good\nb: !m {__type__: ok, __fields__: {x: [1]}, y: 2}\nc: !free anything\n"
    audit_yaml(text, default_registry, "<p>", tags=tags, what="X.INPUTS")
    assert calls == ["good", {"__type__": "ok", "y": "2"}]
    with pytest.raises(UnsafeCheckpointError, match=r"X.INPUTS at <p>"):
        audit_yaml("a: !s bad\n", default_registry, "<p>", tags=tags, what="X.INPUTS")
    with pytest.raises(UnsafeCheckpointError):
        audit_yaml("a: !m {__type__: bad}\n", default_registry, "<p>", tags=tags)


def test_unknown_application_tags_and_python_tags_are_refused() -> None:
    tags = {"!s": None}
    for text in ("a: !other 1\n", "!!python/object/apply:os.system [echo]\n"):
        with pytest.raises(UnsafeCheckpointError, match=r"X\.INPUTS at <p>"):
            audit_yaml(text, default_registry, "<p>", tags=tags, what="X.INPUTS")


def test_an_alias_in_a_checked_mapping_is_not_a_scalar() -> None:
    calls, check = _seen()
    text = "k: &t bad\nm: !m {__type__: *t}\n"
    audit_yaml(text, default_registry, "<p>", tags={"!m": check})
    assert calls == [{}]  # the check sees no plain __type__ (AiiDA's refuses that)
