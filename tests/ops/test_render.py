"""Rendering: how ``show`` draws and serialises decoded values.

Everything rendered here is decoded data: the renderers must describe it without
importing or calling anything, and must never fail on a value they do not know.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import uuid
from pathlib import Path
from typing import Any

from loopaware_persist._hooks import ForeignException
from loopaware_persist._ops import (
    render_tree,
    to_jsonable,
)
from loopaware_persist._snapshot import FutureSnapshot, FutureStatus


class Colour(enum.Enum):
    RED = 1


class Plain:
    """An object that is neither an atom nor a container: shown by its state."""

    def __init__(self) -> None:
        self.a = 1
        self.b = "two"


class Slotted:
    """An object without a ``__dict__``: shown by its repr."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<Slotted>"


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_to_jsonable_tags_every_value_json_lacks_and_the_result_dumps() -> None:
    cause = ValueError("inner")
    outer = RuntimeError("outer")
    outer.__cause__ = cause
    value = {
        "bytes": b"\x00\xff",
        "bytearray": bytearray(b"ab"),
        "complex": 1 + 2j,
        "nan": float("nan"),
        "enum": Colour.RED,
        "date": dt.date(2024, 1, 2),
        "datetime": dt.datetime(2024, 1, 2, 3, 4, 5),
        "time": dt.time(1, 2, 3),
        "delta": dt.timedelta(minutes=1, seconds=30),
        "uuid": uuid.UUID(int=5),
        "foreign": ForeignException("secret.module:Boom", "it broke"),
        "future": FutureSnapshot(status=FutureStatus.FINISHED, result=[1, b"x"]),
        "failed": FutureSnapshot(status=FutureStatus.FAILED, exception=cause),
        "cancelled": FutureSnapshot(status=FutureStatus.CANCELLED, cancel_message="stop"),
        "object": Plain(),
        "slotted": Slotted(),
        "frozen": frozenset({3, 1}),
        7: (1, 2),
    }

    out = to_jsonable(value)

    json.dumps(out)  # every value became JSON-ready
    assert out["bytes"] == {"$type": "bytes", "hex": "00ff"}
    assert out["bytearray"] == {"$type": "bytes", "hex": "6162"}
    assert out["complex"] == {"$type": "complex", "real": 1.0, "imag": 2.0}
    assert out["nan"] == {"$type": "float", "value": "nan"}
    assert out["enum"] == {"$type": "enum", "class": f"{__name__}:Colour", "name": "RED"}
    assert out["date"] == {"$type": "date", "value": "2024-01-02"}
    assert out["datetime"] == {"$type": "datetime", "value": "2024-01-02T03:04:05"}
    assert out["time"] == {"$type": "time", "value": "01:02:03"}
    assert out["delta"] == {"$type": "timedelta", "seconds": 90.0}
    assert out["foreign"] == {
        "$type": "exception",
        "class": "secret.module:Boom",
        "message": "it broke",
    }
    assert out["future"] == {
        "$type": "future",
        "status": "finished",
        "result": [1, {"$type": "bytes", "hex": "78"}],
        "exception": None,
        "cancel_message": None,
    }
    assert out["failed"]["exception"]["class"] == "builtins:ValueError"
    assert out["cancelled"]["cancel_message"] == "stop"
    assert out["object"] == {
        "$type": "object",
        "class": f"{__name__}:Plain",
        "state": {"a": 1, "b": "two"},
    }
    assert out["slotted"] == {
        "$type": "object",
        "class": f"{__name__}:Slotted",
        "repr": "<Slotted>",
    }
    assert out["frozen"] == [1, 3]
    assert out["7"] == [1, 2]  # non-str keys are shown by repr


def test_to_jsonable_truncates_absurd_nesting_instead_of_recursing_forever() -> None:
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    out = to_jsonable(deep)
    for _ in range(201):
        (out,) = out
    assert out == {"$type": "truncated"}


def test_to_jsonable_survives_an_exception_whose_str_raises() -> None:
    out = to_jsonable(BadStr("a", 1))
    assert out["class"] == f"{__name__}:BadStr"
    assert out["message"] == "('a', 1)"
    assert out["args"] == ["a", 1]


def test_render_tree_describes_futures_enums_objects_and_causes() -> None:
    cause = KeyError("missing")
    error = ValueError("bad value")
    error.__cause__ = cause
    bundle = {
        "done": FutureSnapshot(status=FutureStatus.FINISHED, result=3),
        "failed": FutureSnapshot(status=FutureStatus.FAILED, exception=error),
        "cancelled": FutureSnapshot(status=FutureStatus.CANCELLED, cancel_message="bye"),
        "colour": Colour.RED,
        "plain": Plain(),
        "empty": Slotted(),
        "foreign": ForeignException("secret.module:Boom", "it broke"),
        "long": list(range(100)),
        "mixed": [1, Plain()],
    }

    lines = render_tree(bundle, ascii_only=True)
    text = "\n".join(lines)

    assert "|-- done: future finished" in text
    assert "result: 3" in text
    assert "failed: future failed" in text
    assert "exception: ValueError: bad value" in text
    assert "caused by: KeyError: 'missing'" in text
    assert "cancelled: future cancelled" in text
    assert "message: 'bye'" in text
    assert "colour: Colour.RED" in text
    assert f"plain: {__name__}:Plain object" in text
    assert "a: 1" in text
    assert f"empty: {__name__}:Slotted object" in text
    assert "secret.module:Boom: it broke (class not on the allow-list; not imported)" in text
    # A long list of atoms is not printed on one line: it becomes a node of its items.
    assert "long: list of 100" in text
    assert "mixed: list of 2" in text
    assert not any(glyph in text for glyph in "├└│")  # drawn with ASCII only


def test_render_tree_shortens_long_text_unless_full() -> None:
    traceback = "\n".join(f"line {i}" for i in range(100))
    bundle = {"tb": traceback, "word": "x" * 500}

    short = render_tree(bundle)
    assert "tb: (100 lines)" in short[1]
    assert any("… 60 earlier lines" in line for line in short)
    assert not any(line.endswith("line 0") for line in short)
    assert any("… (502 chars)" in line for line in short)

    full = render_tree(bundle, full=True)
    assert any(line.endswith("line 0") for line in full)
    assert not any("earlier lines" in line for line in full)
    assert any("x" * 500 in line for line in full)


def test_render_tree_stops_at_absurd_nesting() -> None:
    deep: dict[str, Any] = {}
    for _ in range(80):
        deep = {"k": deep, "pad": Plain()}
    text = "\n".join(render_tree(deep))
    assert "… (nested too deep)" in text


def test_render_tree_shows_unparseable_excepted_yaml_as_plain_text() -> None:
    """plumpy stores an Excepted state's exception as YAML; damaged YAML is shown as is."""
    meta = {"class_name": "plumpy.process_states:Excepted"}
    for ex_value, shown in (
        (
            "!!python/object/apply:builtins.ValueError ['boom', 42]",
            "ex_value: ValueError: boom, 42",
        ),
        ("!!python/object/apply:app.mod.Err {args: [x, 1]}", "ex_value: app.mod:Err: x, 1"),
        ("[unclosed", "ex_value: '[unclosed'"),
        ("", "ex_value: ''"),
    ):
        state = {"!!meta": meta, "ex_value": ex_value}
        lines = render_tree({"_state": _with_meta(state)})
        assert lines[1].endswith("_state: Excepted [plumpy.process_states:Excepted]")
        assert lines[2].endswith(shown), (ex_value, lines)


def _with_meta(state: dict[str, Any]) -> dict[str, Any]:
    from plumpy.persistence import META

    meta = state.pop("!!meta")
    return {META: meta, **state}


# -- shared references and cycles: linear time, in a child under a timeout -------------------

_SHARED_SCRIPT = """
import json
from loopaware_persist import open_persister
from loopaware_persist._ops import Converter, SourceItem, render_tree, to_jsonable
from loopaware_persist.storage import CheckpointKey

x = ["leaf"]
for _ in range(40):          # 2**40 paths through 41 lists
    x = [x, x]
cycle = {"name": "loop"}
cycle["self"] = cycle
bundle = {"x": x, "cycle": cycle, "big": 2**20000}

lines = render_tree(bundle, full=True)
assert len(lines) < 200, len(lines)
assert any("*1 (the same object as &1)" in line for line in lines), lines
assert any("*" in line and "&" in line for line in lines if "self" in line), lines
data = to_jsonable(bundle)
text = json.dumps(data)
assert len(text) < 10_000, len(text)
assert data["cycle"]["self"] == {"$type": "ref", "path": "/cycle"}, data["cycle"]
assert data["x"][1] == {"$type": "ref", "path": "/x/0"}, data["x"]
assert int(data["big"]["hex"], 16) == 2**20000


class Source:
    url = "test://shared"

    def items(self):
        return [SourceItem(ref="shared", label="shared", key=CheckpointKey(1))]

    def read(self, item):
        return b"raw"

    def decode(self, item, data):
        return item.key, {"x": x}, {}


with open_persister("memory://", codec="msgpack") as dst:
    converter = Converter(Source(), dst)
    (result,) = [converter.convert(item) for item in converter.items()]
assert result.status == "failed", result
assert "share references" in result.reason, result
print("ok")
"""


def test_shared_references_and_cycles_render_and_convert_in_linear_time() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _SHARED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
