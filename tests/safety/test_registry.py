"""HookRegistry: registration, dispatch, memo, copy, the allow-list and the object fallback."""

from __future__ import annotations

from typing import Any

import msgpack
import plumpy
import pytest

from loopaware_persist import (
    ArgumentTypeError,
    EncodeError,
    Hook,
    HookRegistry,
    UnknownTagError,
    UnsafeCheckpointError,
    default_registry,
    get_codec,
)
from tests.strategies import assert_same


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None  # type: ignore[assignment]


class Base:
    pass


class Sub(Base):
    pass


class Leaf(Sub):
    pass


def _fields(value: Any) -> list[Any]:
    return [type(value).__name__]


def _hook(tag: str) -> dict[str, Any]:
    """encode/decode that record which hook ran."""
    return {"encode": lambda v: [tag], "decode": lambda f: (tag, f)}


@pytest.fixture
def registry() -> HookRegistry:
    return HookRegistry()


# Registration and dispatch.


def test_register_roundtrip(registry: HookRegistry) -> None:
    registry.register(Point, tag="point", encode=lambda p: [p.x, p.y], decode=lambda f: Point(*f))
    assert registry.encode_value(Point(1, 2)) == ("point", [1, 2])
    assert registry.decode_value("point", [1, 2]) == Point(1, 2)
    assert "point" in registry.tags


def test_duplicate_tag_is_value_error(registry: HookRegistry) -> None:
    registry.register(Base, tag="t", **_hook("a"))
    with pytest.raises(ValueError, match="'t'"):
        registry.register(Sub, tag="t", **_hook("b"))
    with pytest.raises(ValueError, match="'t'"):
        registry.register_predicate(lambda cls: True, tag="t", **_hook("c"))
    # the failed registrations changed nothing
    assert registry.encode_value(Sub()) == ("t", ["a"])


def test_builtin_tag_cannot_be_taken() -> None:
    registry = default_registry.copy()
    with pytest.raises(ValueError, match="uuid"):
        registry.register(Point, tag="uuid", **_hook("x"))


def test_an_empty_tag_is_value_error(registry: HookRegistry) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the contract is the builtin type
        registry.register(Point, tag="", **_hook("x"))


@pytest.mark.parametrize("tag", [None, 3])
def test_a_tag_of_another_type_is_type_error(registry: HookRegistry, tag: Any) -> None:
    with pytest.raises(TypeError, match="as tag"):
        registry.register(Point, tag=tag, **_hook("x"))


def test_exact_class_beats_mro(registry: HookRegistry) -> None:
    registry.register(Base, tag="base", **_hook("base"))
    assert registry.hook_for(Sub).tag == "base"  # type: ignore[union-attr]
    assert registry.hook_for(Leaf).tag == "base"  # type: ignore[union-attr]
    registry.register(Sub, tag="sub", **_hook("sub"))
    assert registry.hook_for(Base).tag == "base"  # type: ignore[union-attr]
    assert registry.hook_for(Sub).tag == "sub"  # type: ignore[union-attr]
    assert registry.hook_for(Leaf).tag == "sub"  # nearest in the MRO  # type: ignore[union-attr]
    assert registry.encode_value(Leaf()) == ("sub", ["sub"])


def test_class_hook_beats_predicate(registry: HookRegistry) -> None:
    registry.register_predicate(lambda cls: issubclass(cls, Base), tag="pred", **_hook("pred"))
    registry.register(Sub, tag="sub", **_hook("sub"))
    assert registry.hook_for(Sub).tag == "sub"  # type: ignore[union-attr]
    assert registry.hook_for(Base).tag == "pred"  # type: ignore[union-attr]


def test_predicates_newest_first(registry: HookRegistry) -> None:
    registry.register_predicate(lambda cls: issubclass(cls, Base), tag="old", **_hook("old"))
    registry.register_predicate(lambda cls: issubclass(cls, Sub), tag="new", **_hook("new"))
    assert registry.hook_for(Leaf).tag == "new"  # type: ignore[union-attr]
    assert registry.hook_for(Base).tag == "old"  # type: ignore[union-attr]
    registry.register_predicate(lambda cls: cls is Base, tag="newest", **_hook("newest"))
    assert registry.hook_for(Base).tag == "newest"  # type: ignore[union-attr]


class PredicateBoom(Exception):
    pass


def _boom_on_sub(cls: type) -> bool:
    """A predicate that raises for :class:`Sub` and matches nothing else."""
    if cls is Sub:
        raise PredicateBoom(cls)
    return False


def test_predicate_exception_propagates(registry: HookRegistry) -> None:
    registry.register_predicate(_boom_on_sub, tag="p", **_hook("p"))
    with pytest.raises(PredicateBoom):
        registry.hook_for(Sub)
    with pytest.raises(PredicateBoom):
        registry.encode_value(Sub())
    # not memoised as "no hook": it raises again
    with pytest.raises(PredicateBoom):
        registry.hook_for(Sub)
    assert registry.hook_for(Base) is None


def test_predicate_exception_propagates_through_codec() -> None:
    registry = default_registry.copy()
    registry.register_predicate(_boom_on_sub, tag="p", **_hook("p"))
    with pytest.raises(PredicateBoom):
        get_codec("msgpack", registry=registry).encode({"x": Sub()})


def test_lookup_is_memoised(registry: HookRegistry) -> None:
    calls: list[type] = []

    def predicate(cls: type) -> bool:
        calls.append(cls)
        return cls is Base

    registry.register_predicate(predicate, tag="p", **_hook("p"))
    for _ in range(3):
        registry.hook_for(Base)
        registry.hook_for(Sub)
    assert calls == [Base, Sub]


def test_memo_cleared_on_registration(registry: HookRegistry) -> None:
    assert registry.hook_for(Point) is None  # memoised as "no hook"
    registry.register(Point, tag="point", **_hook("point"))
    assert registry.hook_for(Point).tag == "point"  # type: ignore[union-attr]
    assert registry.hook_for(Sub) is None
    registry.register_predicate(lambda cls: cls is Sub, tag="sub", **_hook("sub"))
    assert registry.hook_for(Sub).tag == "sub"  # type: ignore[union-attr]


def test_memo_cleared_on_allow() -> None:
    registry = default_registry.copy()
    assert registry.hook_for(Point) is None
    registry.allow(Point)
    hook = registry.hook_for(Point)
    assert hook is not None
    assert hook.tag == "object"


def test_copy_is_independent(registry: HookRegistry) -> None:
    registry.register(Base, tag="base", **_hook("base"))
    registry.register_predicate(lambda cls: cls is Point, tag="old", **_hook("old"))
    registry.register_predicate(lambda cls: cls is Point, tag="new", **_hook("new"))
    registry.allow("myapp")
    clone = registry.copy()
    assert clone.tags == registry.tags
    assert clone.hook_for(Point).tag == "new"  # predicate order kept  # type: ignore[union-attr]
    assert clone.allowed == ("myapp",)

    clone.register(Sub, tag="sub", **_hook("sub"))
    clone.allow("otherapp")
    registry.register(Leaf, tag="leaf", **_hook("leaf"))
    registry.allow("thirdapp")

    assert registry.hook_for(Sub).tag == "base"  # type: ignore[union-attr]
    assert "sub" not in registry.tags
    assert clone.hook_for(Leaf).tag == "sub"  # type: ignore[union-attr]
    assert "leaf" not in clone.tags
    # list(): mypy narrowed .allowed to a 1-tuple at the assert above.
    assert list(registry.allowed) == ["myapp", "thirdapp"]
    assert list(clone.allowed) == ["myapp", "otherapp"]


def test_copy_of_default_registry_is_independent() -> None:
    clone = default_registry.copy()
    clone.register(Point, tag="point-copy-only", **_hook("p"))
    assert "point-copy-only" not in default_registry.tags
    assert default_registry.hook_for(Point) is None
    assert clone.tags > default_registry.tags


def test_decorator_form(registry: HookRegistry) -> None:
    @registry.hook(Point, tag="point")
    class PointHook:
        @staticmethod
        def encode(p: Point) -> list[Any]:
            return [p.x, p.y]

        @staticmethod
        def decode(fields: list[Any]) -> Point:
            return Point(*fields)

    assert isinstance(PointHook, type)  # the holder is returned unchanged
    assert PointHook.__name__ == "PointHook"
    hook = registry.hook_for(Point)
    assert isinstance(hook, Hook)
    assert hook.tag == "point"
    assert hook.cls is Point
    assert registry.decode_value(*registry.encode_value(Point(3, 4))) == Point(3, 4)


def test_unknown_tag_on_decode(registry: HookRegistry) -> None:
    with pytest.raises(UnknownTagError) as info:
        registry.decode_value("no-such-tag", [])
    assert info.value.tag == "no-such-tag"


def test_unsupported_type_on_encode_is_encode_error(registry: HookRegistry) -> None:
    with pytest.raises(EncodeError, match="register"):
        registry.encode_value(Point(1, 2))


def test_user_hook_round_trips_through_codec(codec_name: str) -> None:
    registry = default_registry.copy()
    registry.register(
        Point,
        tag="myapp.point",
        encode=lambda p: [p.x, (p.y,)],
        decode=lambda f: Point(f[0], f[1][0]),
    )
    codec = get_codec(codec_name, registry=registry)
    value = {"p": [Point(1, 2), {"q": Point(-(2**70), 3)}]}
    data = codec.encode(value)
    if codec_name == "msgpack":
        # stored under the stable tag, never under the module path
        point = msgpack.unpackb(data, strict_map_key=False)["p"][0]
        assert point.code == 2
        assert msgpack.unpackb(point.data)[:2] == ["myapp.point", 1]
        assert b"test_registry" not in data
    assert_same(codec.decode(data), value)


class Stack:
    def __init__(self, items: list[Any]) -> None:
        self.items = items


def test_encoding_leaves_hook_result_untouched() -> None:
    """A hook may hand back a list the value owns; encoding must not modify it."""
    registry = default_registry.copy()
    registry.register(Stack, tag="myapp.stack", encode=lambda s: s.items, decode=Stack)
    codec = get_codec("msgpack", registry=registry)
    stack = Stack([1, 2])
    first = codec.encode({"s": stack})
    assert stack.items == [1, 2]
    assert codec.encode({"s": stack}) == first
    assert codec.decode(first)["s"].items == [1, 2]


def test_user_hook_needed_to_decode() -> None:
    registry = default_registry.copy()
    registry.register(
        Point, tag="myapp.point2", encode=lambda p: [p.x, p.y], decode=lambda f: Point(*f)
    )
    data = get_codec("msgpack", registry=registry).encode([Point(1, 2)])
    with pytest.raises(UnknownTagError):
        get_codec("msgpack").decode(data)


class Plugin:
    """Holds a class: its hook stores the class name and resolves it on load."""

    def __init__(self, cls: type) -> None:
        self.cls = cls


def _enc_plugin(plugin: Plugin, registry: HookRegistry) -> list[Any]:
    assert isinstance(registry, HookRegistry)
    return [f"{plugin.cls.__module__}:{plugin.cls.__qualname__}"]


def _dec_plugin(fields: list[Any], registry: HookRegistry) -> Plugin:
    return Plugin(registry.resolve(fields[0]))


@pytest.mark.parametrize("how", ["class", "predicate"])
def test_a_hook_that_takes_the_registry_gets_the_one_in_use(codec_name: str, how: str) -> None:
    """takes_registry=True: the hook resolves names through the allow-list of the registry
    the codec uses (a copy made after registration included), never another one."""
    base = default_registry.copy()
    if how == "class":
        base.register(
            Plugin, tag="myapp.plugin", encode=_enc_plugin, decode=_dec_plugin, takes_registry=True
        )
    else:
        base.register_predicate(
            lambda cls: cls is Plugin,
            tag="myapp.plugin",
            encode=_enc_plugin,
            decode=_dec_plugin,
            takes_registry=True,
        )
    base.allow(Plugin)  # pickle revives a class with a predicate hook only if allowed
    allowing = base.copy()
    allowing.allow(Point)
    data = get_codec(codec_name, registry=allowing).encode({"p": Plugin(Point)})
    assert get_codec(codec_name, registry=allowing).decode(data)["p"].cls is Point
    with pytest.raises(UnsafeCheckpointError, match="test_registry:Point"):
        get_codec(codec_name, registry=base).decode(data)


@pytest.mark.parametrize("method", ["register", "register_predicate"])
def test_takes_registry_must_be_a_bool(registry: HookRegistry, method: str) -> None:
    target: Any = Plugin if method == "register" else (lambda cls: cls is Plugin)
    with pytest.raises(ArgumentTypeError, match="takes_registry"):
        getattr(registry, method)(
            target, tag="myapp.plugin", encode=_enc_plugin, decode=_dec_plugin, takes_registry=1
        )
    assert "myapp.plugin" not in registry.tags


def test_a_class_hook_for_the_class_only_leaves_subclasses_to_the_allow_list() -> None:
    registry = default_registry.copy()
    registry.register(Base, tag="myapp.base", encode=_fields, decode=tuple, subclasses=False)
    assert registry.hook_for(Base) is not None
    assert registry.hook_for(Sub) is None
    with pytest.raises(EncodeError, match="Sub"):
        get_codec("msgpack", registry=registry).encode({"s": Sub()})


# Object fallback.


class Plain:
    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b


class SlottedWithDict:
    __slots__ = ("__dict__", "a")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b


class Custom:
    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b
        self.log: list[str] = []

    def __getstate__(self) -> Any:
        return {"pair": (self.a, self.b)}

    def __setstate__(self, state: Any) -> None:
        self.a, self.b = state["pair"]
        self.log = ["restored"]


def _state(obj: Any) -> dict[str, Any]:
    names = [n for n in ("a", "b", "log") if hasattr(obj, n)]
    return {n: getattr(obj, n) for n in names}


@pytest.mark.parametrize("cls", [Plain, Slotted, SlottedWithDict, Custom])
def test_object_fallback_for_allowed_class(codec_name: str, cls: type) -> None:
    codec = get_codec(codec_name, allow=[cls])
    original = cls((1, 2**70), {"k": frozenset({"v"})})
    decoded = codec.decode(codec.encode({"obj": [original]}))["obj"][0]
    assert type(decoded) is cls
    expected = _state(original)
    if cls is Custom:
        expected["log"] = ["restored"]
    assert_same(_state(decoded), expected)


def test_object_fallback_by_module_allow() -> None:
    codec = get_codec("msgpack", allow=[__name__])
    decoded = codec.decode(codec.encode(Plain(1, "x")))
    assert type(decoded) is Plain
    assert (decoded.a, decoded.b) == (1, "x")


class Counted:
    inits = 0

    def __init__(self, a: Any) -> None:
        type(self).inits += 1
        self.a = a


def test_object_fallback_does_not_call_init(codec_name: str) -> None:
    codec = get_codec(codec_name, allow=[Counted])
    data = codec.encode(Counted([1, 2]))
    before = Counted.inits
    decoded = codec.decode(data)
    assert Counted.inits == before  # revived like pickle does: no __init__
    assert type(decoded) is Counted
    assert decoded.a == [1, 2]


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"x": [0, {"y": Plain(1, 2)}]}, "['x'][1]['y']"),
        ([Plain(1, 2)], "[0]"),
        ({"x": (1, {2: [Plain(1, 2)]})}, "['x'][1][2][0]"),
    ],
)
def test_non_allowed_class_is_encode_error_with_path(value: Any, path: str) -> None:
    with pytest.raises(EncodeError) as info:
        get_codec("msgpack").encode(value)
    assert info.value.path == path
    assert path in str(info.value)
    assert "Plain" in str(info.value)
    assert "allow" in str(info.value)


def test_non_allowed_class_path_in_bundle() -> None:
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    inner = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(inner, {"ctx": {"x": [0, 1, 2, Plain(1, 2)]}})
    dict.update(bundle, {"_state": inner})
    with pytest.raises(EncodeError) as info:
        get_codec("msgpack").encode(bundle)
    assert info.value.path == "_state.ctx['x'][3]"


def test_non_allowed_class_refused_by_pickle_on_save_and_load() -> None:
    codec = get_codec("pickle")
    with pytest.raises(EncodeError, match="Plain"):
        codec.encode({"x": [Plain(1, 2)]})  # refused when saving, not at the restart
    data = get_codec("pickle", allow=[Plain]).encode({"x": [Plain(1, 2)]})
    with pytest.raises(UnsafeCheckpointError, match="Plain"):
        codec.decode(data)  # and a safe load without the allow will not revive it
