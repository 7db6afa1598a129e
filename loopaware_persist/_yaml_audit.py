"""The audit of the YAML inside a bundle, which plumpy reads with the *unsafe* loader.

plumpy's ``Excepted`` state stores its exception as ``yaml.dump(exception)`` and
reads it back with ``yaml.load(text, Loader=yaml.Loader)`` (plumpy 0.26
``process_states.Excepted.load_instance_state``): a loader that imports and calls
whatever a ``!!python/...`` tag names, that recurses once per level of nesting,
and that follows aliases. So before plumpy sees it, :func:`audit_yaml` walks the
text's parse events (PyYAML's own pure-Python parser, the one ``yaml.Loader``
uses, iterative, so any depth is safe to *parse*) and refuses, without building
anything:

* a tag the unsafe loader would act on, unless the allow-list permits the class
  it names (an ``UnsafeCheckpointError``); in YAML declared with
  ``python_objects=False`` (AiiDA's ``INPUTS_RAW``...), any ``!!python/object...`` tag
  but an enum member's, ``!!python/object/apply:module.Enum [value]``;
* nesting deeper than :data:`MAX_YAML_DEPTH` collections: the loader and
  ``repr`` recurse per level (a ``CorruptCheckpointError``, never a bare
  ``RecursionError``);
* undefined, duplicate and self-referring anchors (the loader refuses them too);
* aliases (and ``<<`` merges, which copy through them) that expand the document
  beyond :data:`MAX_YAML_EXPANSION` times its length plus :data:`YAML_SLACK`
  characters, counting every scalar once per path that reaches it. "Billion
  laughs" builds a small shared graph, but ``str(process.exception())`` and
  merges walk it as a tree, in exponential time (a ``CorruptCheckpointError``).

What passes is constructed by plumpy's loader in time and memory linear in the
text and at bounded depth, and renders (``str``/``repr``) in time linear in it.
"""

from __future__ import annotations

from typing import Any, Final

import yaml
from yaml import events

from ._errors import CorruptCheckpointError, UnsafeCheckpointError
from ._registry import HookRegistry, YamlTags

__all__ = ("MAX_YAML_DEPTH", "MAX_YAML_EXPANSION", "YAML_SLACK", "audit_yaml")

#: Collections nested inside one another at most (``yaml.dump`` of an exception nests
#: as deep as its arguments do; plumpy's loader spends several frames on each level).
MAX_YAML_DEPTH: Final = 64
#: Characters a document may expand to through aliases, per character of its text...
MAX_YAML_EXPANSION: Final = 2
#: ...plus this many, so a short document may still share a value or two.
YAML_SLACK: Final = 4096

_PREFIX: Final = "tag:yaml.org,2002:"

_YAML_PLAIN: Final = {
    _PREFIX + t
    for t in (
        "str", "int", "float", "bool", "null", "seq", "map", "binary", "timestamp", "set",
        "omap", "pairs", "merge", "value", "python/none", "python/bool", "python/str",
        "python/unicode", "python/bytes", "python/int", "python/long", "python/float",
        "python/complex", "python/list", "python/tuple", "python/dict",
    )
} | {"!uuid", "!plumpy:Bundle"}  # fmt: skip


def _yaml_python_name(tag: str) -> str | None:
    for prefix in ("python/object/apply:", "python/object/new:", "python/object:", "python/name:"):
        if tag.startswith(_PREFIX + prefix):
            return tag[len(_PREFIX + prefix) :]
    return None


def _short(tag: str) -> str:
    """``tag:yaml.org,2002:python/...`` as written: ``!!python/...``."""
    return "!!" + tag[len(_PREFIX) :] if tag.startswith(_PREFIX) else tag


#: An open sequence tagged ``!!python/object/apply:`` that must hold an enum member's one
#: value: (its tag, the line it starts on).
_EnumMember = tuple[str, int]


def _check_tag(
    event: events.ScalarEvent | events.CollectionStartEvent,
    registry: HookRegistry | None,
    path: str,
    tags: YamlTags,
    what: str,
    python_objects: bool,
) -> _EnumMember | None:
    """Refuse a tag the unsafe loader would act on unless the allow-list permits it.

    :param python_objects: ``False``: refuse every ``!!python/object...`` tag but an enum
        member's, and resolve ``!!python/name:`` as a class reference
    :return: for an enum member's ``!!python/object/apply:`` (``python_objects=False``),
        what its sequence's end must check; else ``None``
    """
    tag = event.tag
    # The loader resolves an absent or non-specific ("!") tag itself, to a plain type.
    if registry is None or tag is None or tag == "!" or tag in _YAML_PLAIN or tag in tags:
        return None
    name = _yaml_python_name(tag)
    if name is None or "." not in name:
        msg = (
            f"{what} at {path} holds YAML tag {tag!r}, which the unsafe YAML loader "
            "reading it would act on. Refused; nothing was run."
        )
        raise UnsafeCheckpointError(msg, name=tag)
    module, _, qualname = name.rpartition(".")
    if python_objects:
        registry.resolve(f"{module}:{qualname}", "pickle")
        return None
    if tag.startswith(_PREFIX + "python/name:"):
        registry.resolve(f"{module}:{qualname}", "class")  # a reference: nothing is called
        return None
    line = event.start_mark.line + 1 if event.start_mark is not None else 0
    if not tag.startswith(_PREFIX + "python/object/apply:") or not isinstance(
        event, events.SequenceStartEvent
    ):
        raise _not_an_enum_member(what, path, tag, line)
    try:
        registry.resolve(f"{module}:{qualname}", "enum")
    except UnsafeCheckpointError as error:
        raise _not_an_enum_member(what, path, tag, line, str(error)) from error
    return (tag, line)


def _not_an_enum_member(
    what: str, path: str, tag: str, line: int, why: str | None = None
) -> UnsafeCheckpointError:
    because = f" ({why})" if why else ""
    msg = (
        f"{what} at {path} holds the YAML tag {_short(tag)!r} on line {line}, with which the "
        f"unsafe loader reading it would build or call a class{because}. Only an enum member "
        "('!!python/object/apply:module.Enum [value]', of an enum the allow-list permits) "
        "may name a class there. Refused; nothing was run. If your process stores such a "
        "value there, store it as plain data (or, in AiiDA, as a node) instead."
    )
    return UnsafeCheckpointError(msg, name=_short(tag))


def _refuse(path: str, why: str, what: str = "Excepted state") -> CorruptCheckpointError:
    msg = (
        f"{what} at {path} holds YAML that {why}; plumpy's loader (or printing the "
        "exception) would not finish in bounded time and memory. The record is damaged or "
        "crafted; nothing was loaded."
    )
    return CorruptCheckpointError(msg)


def audit_yaml(
    text: Any,
    registry: HookRegistry | None,
    path: str,
    *,
    tags: YamlTags | None = None,
    what: str = "Excepted state",
    python_objects: bool = True,
) -> None:
    """Refuse YAML that would make ``yaml.Loader`` import or call anything not allowed, or
    that it could not construct (and print) in linear time at bounded depth.

    :param text: the stored YAML
    :param registry: whose allow-list decides the ``!!python/...`` tags; ``None`` checks
        only the shape (depth, expansion), for readers that never construct the tags
    :param path: where it sits in the bundle, for messages
    :param tags: application tags the loader knows (AiiDA's ``!aiida_node``...), each
        with the check its value must pass (see :meth:`HookRegistry.declare_yaml`); any
        other tag outside YAML's own and ``!!python/...`` names the allow-list permits
        is refused
    :param what: what holds the text, for messages
    :param python_objects: whether ``!!python/object...`` tags naming classes the
        allow-list lets unpickling call may pass; ``False`` refuses all but an enum
        member's (see :meth:`HookRegistry.declare_yaml`)
    :raises UnsafeCheckpointError: for a tag naming what the allow-list refuses
    :raises CorruptCheckpointError: for text that is not YAML, is more than one
        document, nests deeper than :data:`MAX_YAML_DEPTH` or expands beyond the bound
    """
    if not isinstance(text, str):
        msg = f"{what} at {path} stores {type(text).__name__}, not YAML text."
        raise CorruptCheckpointError(msg)
    tags = tags if tags is not None else {}
    checked = {tag for tag, check in tags.items() if check is not None}
    budget = MAX_YAML_EXPANSION * len(text) + YAML_SLACK
    # One open collection per level: [anchor, expanded size so far, tag to check or None,
    # its scalar children so far (a tagged mapping's pairs, for its check)].
    open_: list[list[Any]] = []
    sizes: dict[str, int] = {}  # anchor -> expanded size, once its node is complete
    total = documents = 0
    try:
        for event in yaml.parse(text, Loader=yaml.Loader):
            if isinstance(event, events.ScalarEvent | events.AliasEvent):
                if isinstance(event, events.AliasEvent):
                    alias = str(event.anchor)
                    if alias not in sizes:
                        # Inside its own anchor, a cycle: plumpy's loader cannot build one
                        # in an exception's arguments ("unconstructable recursive node").
                        inside = any(o[0] == alias for o in open_)
                        why = "refers to itself through" if inside else "uses the undefined"
                        raise _refuse(path, f"{why} alias {alias!r}", what)
                    size = sizes[alias]
                else:
                    # A scalar is never an enum member's [value]: refused by _check_tag.
                    _check_tag(event, registry, path, tags, what, python_objects)
                    if event.tag in checked and registry is not None:
                        check = tags[event.tag]
                        assert check is not None
                        check(event.value, registry, path)
                    size = len(event.value) + 1
                    if event.anchor is not None:
                        _anchor(sizes, open_, event.anchor, path)
                        sizes[event.anchor] = size
            elif isinstance(event, events.CollectionStartEvent):
                member = _check_tag(event, registry, path, tags, what, python_objects)
                if len(open_) >= MAX_YAML_DEPTH:
                    raise _refuse(path, f"nests collections more than {MAX_YAML_DEPTH} deep", what)
                if event.anchor is not None:
                    _anchor(sizes, open_, event.anchor, path)
                _note_child(open_, None)
                tagged: str | _EnumMember | None = member
                if member is None and event.tag in checked and registry is not None:
                    tagged = event.tag
                open_.append([event.anchor, 1, tagged, []])
                continue
            elif isinstance(event, events.CollectionEndEvent):
                anchor, size, tagged, children = open_.pop()
                if anchor is not None:
                    sizes[anchor] = size
                if isinstance(tagged, tuple):
                    # An enum member: Enum(value), one plain value; no alias, no collection.
                    if len(children) != 1 or children[0] is None:
                        raise _not_an_enum_member(what, path, *tagged, "not one plain value")
                elif tagged is not None:
                    check = tags[tagged]
                    assert check is not None
                    assert registry is not None
                    check(_pairs(children), registry, path)
            else:
                if isinstance(event, events.DocumentStartEvent):
                    documents += 1
                    if documents > 1:
                        raise _refuse(path, "holds more than one document", what)
                continue
            if not isinstance(event, events.CollectionEndEvent):
                _note_child(open_, event.value if isinstance(event, events.ScalarEvent) else None)
            if open_:
                open_[-1][1] += size
                grown = open_[-1][1]
            else:
                total += size
                grown = total
            # Sizes only grow outwards, so checking where they grow bounds the document.
            if grown > budget:
                raise _refuse(path, f"expands through aliases beyond {budget} characters", what)
    except yaml.YAMLError as error:
        msg = f"{what} at {path} holds unreadable YAML ({error})."
        raise CorruptCheckpointError(msg) from error
    except UnsafeCheckpointError as error:
        if f" at {path} " in str(error):
            raise
        msg = f"{what} at {path} holds YAML naming what a load may not run: {error}"
        raise UnsafeCheckpointError(msg, name=error.name) from error


def _note_child(open_: list[list[Any]], scalar: str | None) -> None:
    """Record a child of the innermost open collection (``None``: not a scalar, or an
    alias), if that collection's tag has a check."""
    if open_ and open_[-1][2] is not None:
        open_[-1][3].append(scalar)


def _pairs(children: list[str | None]) -> dict[str, str]:
    """A mapping's children, key and value alternating, as the pairs of scalars."""
    return {
        k: v
        for k, v in zip(children[::2], children[1::2], strict=False)
        if k is not None and v is not None
    }


def _anchor(sizes: dict[str, int], open_: list[list[Any]], anchor: str, path: str) -> None:
    # yaml.Loader's composer refuses a second anchor of the same name; so do we, or an
    # alias would be measured against the wrong node.
    if anchor in sizes or any(o[0] == anchor for o in open_):
        raise _refuse(path, f"defines the anchor {anchor!r} twice")
