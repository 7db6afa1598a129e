"""Operator operations: how ``inspect`` renders and serialises decoded values, prune's
argument checks, store URL helpers, and the convert paths that must refuse, not copy.

Everything rendered here is decoded data: the renderers must describe it without
importing or calling anything, and must never fail on a value they do not know.
"""

from __future__ import annotations

import datetime as dt
import enum
import errno
import json
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import attrs
import plumpy
import pytest

from loopaware_persist import (
    CheckpointNotFoundError,
    DurabilityError,
    LoopAwarePersister,
    StorageError,
    open_persister,
)
from loopaware_persist._envelope import encode_envelope
from loopaware_persist._hooks import ForeignException
from loopaware_persist._ops import (
    Converter,
    OpsError,
    PickleSource,
    StoreSource,
    inspect_record,
    list_entries,
    open_store,
    pickle_dir_from_url,
    plan_prune,
    render_tree,
    same_store,
    to_jsonable,
)
from loopaware_persist._snapshot import FutureSnapshot, FutureStatus
from loopaware_persist.storage import CheckpointKey
from loopaware_persist.storage.file import FileIO, FileStorage
from loopaware_persist.storage.memory import MemoryStorage
from tests.processes import drive, new_loop


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


# region to_jsonable


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


# endregion

# region render_tree


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


# endregion

# region prune, URLs, sources


def test_plan_prune_refuses_an_unbounded_or_negative_prune() -> None:
    with pytest.raises(ValueError, match="Say what to prune"):
        plan_prune([], now=0.0)
    with pytest.raises(ValueError, match="keep must be >= 0, got -1"):
        plan_prune([], keep=-1, now=0.0)


def test_url_helpers(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    assert same_store(f"sqlite:///{db}", f"sqlite:///{tmp_path}/./a.db")
    assert not same_store("memory://", f"sqlite:///{db}")
    assert same_store("postgresql://h/db", "postgresql://h/db")
    # Non-local stores cannot be checked for existence; they are not refused.
    open_store("memory://", read_only=False).close()
    # A missing local store is refused by its storage, and nothing is created.
    for missing in ((tmp_path / "nope").as_uri(), f"sqlite:///{tmp_path}/nope.db"):
        with pytest.raises(StorageError, match=r"does not exist\. Nothing was created"):
            open_store(missing, read_only=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert pickle_dir_from_url(f"plumpy-pickle://{tmp_path}") == str(tmp_path)
    for bad in (f"file://{tmp_path}", "plumpy-pickle", "sqlite:///x.db"):
        with pytest.raises(StorageError, match="Not a plumpy-pickle: URL"):
            pickle_dir_from_url(bad)


def test_pickle_source_refuses_untrusted_and_missing_directories(tmp_path: Path) -> None:
    with pytest.raises(OpsError, match="unpickling runs any code"):
        PickleSource(str(tmp_path))
    with pytest.raises(OpsError, match="does not exist or is not a directory"):
        PickleSource(str(tmp_path / "missing"), trusted=True)


def test_pickle_source_reports_files_that_are_not_plumpy_pickles(tmp_path: Path) -> None:
    (tmp_path / "garbage.pickle").write_bytes(b"not a pickle at all")
    (tmp_path / "wrong.pickle").write_bytes(pickle.dumps({"just": "a dict"}))
    (tmp_path / "subdir.pickle").mkdir()  # not a file: ignored
    (tmp_path / "notes.txt").write_text("ignored")
    source = PickleSource(str(tmp_path), trusted=True)
    items = source.items()
    assert [item.label for item in items] == ["garbage.pickle", "wrong.pickle"]

    with open_persister("memory://") as dst:
        converter = Converter(source, dst)
        results = {item.label: converter.convert(item) for item in items}
        assert dst.storage.list() == []
    assert results["garbage.pickle"].status == "failed"
    assert "garbage.pickle does not unpickle" in (results["garbage.pickle"].reason or "")
    assert results["wrong.pickle"].status == "failed"
    assert "holds a dict, not plumpy's PersistedPickle" in (results["wrong.pickle"].reason or "")


def test_convert_refuses_to_drop_the_type_of_exceptions_not_on_the_allow_list() -> None:
    """A stored exception of a class the source may not import decodes as a stand-in;
    converting it would silently lose its type, so the record is refused with the fix."""
    with (
        new_loop() as loop,
        open_persister("memory://", allow=["tests.processes"]) as writer,
    ):
        process = drive("excepted", loop, pid="p", custom=True)
        writer.save_checkpoint(process)
        data = writer.storage.get(CheckpointKey("p")).data
    with (
        open_persister(
            "memory://", allow=["tests.processes:Raiser", "tests.processes:RecordingListener"]
        ) as src,
        open_persister("memory://", allow=["tests.processes"]) as dst,
    ):
        src.storage.put(CheckpointKey("p"), data)
        converter = Converter(StoreSource(src), dst)
        (item,) = converter.items()
        result = converter.convert(item)
        assert result.status == "failed"
        assert "tests.processes:CustomError" in (result.reason or "")
        assert "--allow tests.processes" in (result.reason or "")
        assert dst.storage.list() == []


def test_convert_reports_a_record_deleted_after_the_listing() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as src:
        src.save_checkpoint(drive("finished", loop, pid="gone"))
        with open_persister("memory://", allow=["tests.processes"]) as dst:
            converter = Converter(StoreSource(src), dst)
            (item,) = converter.items()
            src.storage.delete(CheckpointKey("gone"))
            result = converter.convert(item)
    assert result.status == "failed"
    assert "gone" in (result.reason or "")


def test_inspect_and_list_of_a_missing_or_class_filtered_store() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as per:
        per.save_checkpoint(drive("finished", loop, pid="a"))
        with pytest.raises(CheckpointNotFoundError):
            inspect_record(per, CheckpointKey("nope"))
        assert [e.key.pid for e in list_entries(per, classes=["Finisher"])] == ["a"]
        assert list_entries(per, classes=["Waiter"]) == []


# region inspect and convert outcomes


class _PreadFails(FileIO):
    def pread(self, fd: int, size: int, offset: int) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_inspect_classifies_each_kind_of_problem(tmp_path: Path) -> None:
    """verify reports, per record: unreadable (I/O), undecodable (codec not installed),
    unloadable (decodes and audits, but plumpy cannot load it)."""
    root = tmp_path / "files"
    with new_loop() as loop, open_persister(root.as_uri(), allow=["tests.processes"]) as per:
        per.save_checkpoint(drive("waiting", loop, pid="w"))
        per.storage.put(CheckpointKey("alien"), encode_envelope(b"x", codec="cbor-next"))
        broken = dict(per.load_checkpoint("w"))
        del broken["_state"]
        per.storage.put(CheckpointKey("broken"), per.dumps(_as_bundle(broken)))

        alien = inspect_record(per, CheckpointKey("alien"))
        assert (alien.ok, alien.problem) == (False, "undecodable")
        assert "cbor-next" in (alien.reason or "")
        unloadable = inspect_record(per, CheckpointKey("broken"), load=True)
        assert unloadable.problem == "unloadable"
        assert "plumpy could not load the checkpoint" in (unloadable.reason or "")
        assert inspect_record(per, CheckpointKey("broken")).ok  # without load=True it looks fine
        assert inspect_record(per, CheckpointKey("w"), load=True).ok

    failing = LoopAwarePersister(FileStorage(root.as_uri(), io=_PreadFails()))
    with failing:
        unreadable = inspect_record(failing, CheckpointKey("w"))
    assert unreadable.problem == "unreadable"
    assert "Input/output error" in (unreadable.reason or "")
    assert unreadable.as_dict()["ok"] is False


def _as_bundle(tree: dict[str, Any]) -> plumpy.Bundle:
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, tree)
    return bundle


def test_class_filter_never_matches_a_record_whose_header_is_unreadable() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as per:
        per.save_checkpoint(drive("finished", loop, pid="a"))
        per.storage.put(CheckpointKey("damaged"), b"not an envelope")
        assert {e.key.pid for e in list_entries(per)} == {"a", "damaged"}
        assert [e.key.pid for e in list_entries(per, classes=["*"])] == ["a"]


def test_convert_keeps_the_source_time_of_a_record_saved_without_one() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as src:
        bundle = plumpy.Bundle(drive("finished", loop, pid="a"))
        src.storage.put(CheckpointKey("a"), src.dumps(bundle))  # no meta: no saved_at
        (record,) = src.storage.list()
        with open_persister("memory://", allow=["tests.processes"]) as dst:
            converter = Converter(StoreSource(src), dst)
            (item,) = converter.items()
            assert converter.convert(item).status == "copied"
            (info,) = dst.list_info()
    assert info.header is not None
    assert info.header.meta["saved_at"] == record.saved_at


def test_convert_does_not_overwrite_a_record_another_writer_just_stored() -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as src:
        src.save_checkpoint(drive("finished", loop, pid="a"))
        with open_persister("memory://", allow=["tests.processes"]) as dst:
            converter = Converter(StoreSource(src), dst)
            dst.storage.put(CheckpointKey("a"), b"written meanwhile")
            (item,) = converter.items()
            result = converter.convert(item)
            assert result.status == "failed"
            assert "another writer changed the destination meanwhile" in (result.reason or "")
            assert dst.storage.get(CheckpointKey("a")).data == b"written meanwhile"


# endregion


class _FlipsBytes(MemoryStorage):
    """A faulty destination: hands back a different last byte than was stored."""

    def _get(self, key: CheckpointKey) -> Any:
        record = super()._get(key)
        return attrs.evolve(record, data=record.data[:-1] + bytes([record.data[-1] ^ 1]))


class _UnreadableAfterWrite(MemoryStorage):
    def _get(self, key: CheckpointKey) -> Any:
        msg = "the disk went away"
        raise StorageError(msg)


class _RefusesWrites(MemoryStorage):
    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        msg = "No space left on device"
        raise DurabilityError(msg)


@pytest.mark.parametrize(
    ("storage", "reason", "left"),
    [
        (_FlipsBytes, "the destination returned different bytes than were written", 0),
        (_UnreadableAfterWrite, "written but not readable back: the disk went away", 1),
        (_RefusesWrites, "No space left on device", 0),
    ],
)
def test_convert_reads_every_copy_back_and_removes_a_bad_one(
    storage: type[MemoryStorage], reason: str, left: int
) -> None:
    with new_loop() as loop, open_persister("memory://", allow=["tests.processes"]) as src:
        src.save_checkpoint(drive("finished", loop, pid="a"))
        with LoopAwarePersister(storage(), allow=["tests.processes"]) as dst:
            converter = Converter(StoreSource(src), dst)
            (item,) = converter.items()
            result = converter.convert(item)
            assert result.status == "failed"
            assert reason in (result.reason or "")
            # A copy that reads back different is deleted; one the store cannot read back
            # at all is left for the next run, which re-checks it before skipping it.
            assert len(dst.storage.list()) == left


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
