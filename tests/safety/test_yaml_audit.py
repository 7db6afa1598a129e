"""The YAML in an ``Excepted`` state: what passes the audit, plumpy's unsafe loader builds
(and ``str`` renders) in linear time at bounded depth; the rest is a typed refusal.

The bombs run in a fresh interpreter under a timeout (``tests/_peak.py``): before the
bound, "billion laughs" passed the audit and ``str(process.exception())`` froze the
interpreter, and deep nesting raised a bare ``RecursionError``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import plumpy
import pytest
import yaml

from loopaware_persist import (
    CorruptCheckpointError,
    HookRegistry,
    UnsafeCheckpointError,
    open_persister,
)
from loopaware_persist._hooks import default_registry
from loopaware_persist._ops._render import _yaml_exception
from loopaware_persist._yaml_audit import MAX_YAML_DEPTH, audit_yaml
from tests._peak import MIB, run_peak
from tests.loops import new_loop
from tests.processes import Raiser

HEAD = "!!python/object/apply:builtins.ValueError\n"


def laughs(levels: int = 10, width: int = 10) -> str:
    rows = [f"  - &a0 [{', '.join(['lol'] * width)}]"]
    rows += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return HEAD + "- - x\n" + "\n".join(rows) + "\n"


def merges(levels: int = 40) -> str:
    rows = ["  - &m0 {k0: v}"]
    rows += [f"  - &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: v}}" for i in range(1, levels)]
    return HEAD + "- - x\n" + "\n".join(rows) + "\n"


BOMBS = {
    "billion laughs": laughs(),
    "one big scalar aliased": HEAD
    + "- - &s "
    + "x" * 100_000
    + "\n  - ["
    + ", ".join(["*s"] * 2000)
    + "]\n",
    "deep flow nesting": HEAD + "- " + "[" * 5000 + "]" * 5000 + "\n",
    "deep block nesting": HEAD + "".join("  " * i + "- \n" for i in range(3000)),
}


def _excepted_record(ex_value: str) -> bytes:
    with new_loop() as loop:
        process = Raiser(loop=loop)
        loop.run_until_complete(process.step_until_terminated())
    bundle = plumpy.Bundle(process)
    bundle["_state"]["ex_value"] = ex_value
    return open_persister("memory://", allow=["tests.processes"]).dumps(bundle)


_SETUP = """
import asyncio
from pathlib import Path
from loopaware_persist import open_persister
from loopaware_persist.storage import CheckpointKey
per = open_persister("memory://", allow=["tests.processes"])
per.storage.put(CheckpointKey("p"), Path({path!r}).read_bytes())
loop = asyncio.new_event_loop()
"""


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_yaml_bombs_are_refused_before_plumpy_loads_them(name: str, tmp_path: Any) -> None:
    path = tmp_path / "record"
    path.write_bytes(_excepted_record(BOMBS[name]))
    result = run_peak(
        """
        process = per.load_process("p", loop=loop)
        _extra["rendered"] = len(str(process.exception()))
        """,
        setup=_SETUP.format(path=str(path)),
        timeout=60,  # the old audit let "billion laughs" through; str() then never returned
    )
    assert result["outcome"].startswith("loopaware_persist.CorruptCheckpointError:"), result
    assert result["peak"] < 64 * MIB


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_the_show_renderer_falls_back_to_the_text(name: str) -> None:
    assert _yaml_exception(BOMBS[name]) is None


def test_an_exception_with_a_shared_value_still_loads(loop: asyncio.AbstractEventLoop) -> None:
    shared = [1, 2, {"k": "v"}]
    text = yaml.dump(ValueError(shared, shared))
    assert "&id" in text  # yaml.dump anchors what is referenced twice
    per = open_persister("memory://", allow=["tests.processes"])
    per.storage.put(per._key("p", None), _excepted_record(text))
    process = per.load_process("p", loop=loop)
    error = process.exception()
    assert isinstance(error, ValueError)
    assert error.args == (shared, shared)
    assert error.args[0] is error.args[1]


@pytest.mark.parametrize(
    "text",
    [
        HEAD + "- " + "[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1),
        HEAD + "- &b {k: v}\n- {<<: *b, j: w}",
        laughs(levels=2),
    ],
)
def test_what_the_bound_admits(text: str) -> None:
    audit_yaml(text, default_registry, "_state")
    str(yaml.load(text, Loader=yaml.Loader))  # plumpy's loader, and printing it


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (HEAD + "- " + "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH, "more than 64 deep"),
        (HEAD + "- *nowhere", "uses the undefined alias 'nowhere'"),
        (HEAD + "- &a [x, *a]", "refers to itself"),
        (HEAD + "- [&a x, &a y]", "anchor 'a' twice"),
        ("a\n---\nb\n", "more than one document"),
        ("[unclosed", "unreadable YAML"),
        (7, "not YAML text"),
    ],
)
def test_malformed_yaml_is_corrupt(text: object, match: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=match):
        audit_yaml(text, default_registry, "_state")


def test_merges_count_as_the_aliases_they_copy() -> None:
    # PyYAML 6 builds this one fast (it flattens each merged mapping once), but the audit
    # counts what a merge copies, as it does for an alias, rather than rely on that.
    with pytest.raises(CorruptCheckpointError, match="expands through aliases"):
        audit_yaml(merges(), default_registry, "_state")


def test_tags_are_still_audited_at_any_position() -> None:
    with pytest.raises(UnsafeCheckpointError):
        audit_yaml(HEAD + "- [a, &x !!python/object/apply:os.system [ls]]", default_registry, "s")
    with pytest.raises(UnsafeCheckpointError):
        audit_yaml("? !!python/name:os.system\n: 1", default_registry, "s")


# python_objects=False: what AiiDA's keys get. Color is on the allow-list for every kind
# (so python_objects=True lets each of these through), to show the refusal is the flag's.


def _strict_registry(make_module: Any) -> tuple[HookRegistry, str]:
    name = make_module(
        "import enum\n\nclass Color(enum.Enum):\n    RED = 'red'\n\n"
        "class Thing:\n    def __init__(self, *a, **k):\n        pass\n"
    )
    registry = default_registry.copy()
    registry.allow(name)
    return registry, name


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object/apply:{m}.Thing [1]",
        "!!python/object/apply:{m}.Thing {{args: [1]}}",
        "!!python/object/new:{m}.Thing [1]",
        "!!python/object:{m}.Thing {{a: 1}}",
        "!!python/object/apply:{m}.Color {{args: [red]}}",
        "!!python/object/apply:{m}.Color [red, blue]",
        "!!python/object/apply:{m}.Color [[red]]",
        "!!python/object/apply:{m}.Color []",
        "!!python/object/apply:{m}.Color red",
    ],
)
def test_without_python_objects_only_an_enum_member_names_a_class(
    make_module: Any, value: str
) -> None:
    registry, name = _strict_registry(make_module)
    text = f"a: {value.format(m=name)}\n"
    audit_yaml(text, registry, "<p>", what="X.OUTPUTS")  # permitted for unpickling
    refused = r"X\.OUTPUTS at <p> holds the YAML tag"
    with pytest.raises(UnsafeCheckpointError, match=refused) as info:
        audit_yaml(text, registry, "<p>", what="X.OUTPUTS", python_objects=False)
    assert "!!python/object" in str(info.value)
    assert "line 1" in str(info.value)


def test_without_python_objects_enum_members_and_names_pass(make_module: Any) -> None:
    registry, name = _strict_registry(make_module)
    text = (
        f"a: !!python/object/apply:{name}.Color\n- red\n"
        f"b: !!python/object/apply:{name}.Color [red]\n"
        f"c: !!python/name:{name}.Thing ''\n"
    )
    audit_yaml(text, registry, "<p>", python_objects=False)
    with pytest.raises(UnsafeCheckpointError, match="line 1"):  # not an allowed enum
        audit_yaml("!!python/object/apply:enum.Enum [x]\n", registry, "<p>", python_objects=False)


def test_a_bundle_passes_the_excepted_audit_in_plumpys_spelling_only() -> None:
    """plumpy's yaml.Dumper writes a bundle as ``!plumpy:Bundle``, and plumpy's loader
    (``yaml.Loader``) builds only that; AiiDA's ``!plumpy:bundle`` is refused here."""
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, {"a": 1})
    text = yaml.dump(ValueError(bundle))
    assert "!plumpy:Bundle" in text
    audit_yaml(text, default_registry, "<p>")
    assert type(yaml.load(text, Loader=yaml.Loader).args[0]) is plumpy.Bundle
    other = text.replace("!plumpy:Bundle", "!plumpy:bundle")
    with pytest.raises(UnsafeCheckpointError, match="plumpy:bundle"):
        audit_yaml(other, default_registry, "<p>")
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load(other, Loader=yaml.Loader)


def test_the_excepted_yaml_never_calls_a_process_class(make_module: Any) -> None:
    """Even one the user allowed: plumpy's loader would launch the process."""
    name = make_module(
        "import plumpy\n\nclass Launched(plumpy.Process):\n    pass\n\n"
        "class Boom(Exception):\n    pass\n"
    )
    registry = default_registry.copy()
    registry.allow(name)
    text = f"!!python/object/apply:{name}.Boom\n- !!python/object/apply:{name}.Launched []\n"
    with pytest.raises(UnsafeCheckpointError, match="Launched"):
        audit_yaml(text, registry, "<p>")
    with new_loop() as loop:  # the control: plumpy's loader builds (launches) it
        asyncio.set_event_loop(loop)
        try:
            built = yaml.load(text, Loader=yaml.Loader)
        finally:
            asyncio.set_event_loop(None)
    assert type(built.args[0]).__name__ == "Launched"
