"""Subprocess worker of the hostile-corpus figure (``python -m tests.reliability._hostile_worker``).

A fresh interpreter, so ``sys.modules`` can be compared before and after: it
warms every load path up with benign checkpoints, snapshots ``sys.modules``,
then stores >= 50 crafted checkpoints in the storage it is given and drives each
through every read path (``load_checkpoint``, ``Bundle.unbundle``, ``load_process``,
the worker's ``FencingPersister.load_process``, listings) and crafted launch
bodies through ``LoopAwareLauncher``. Every gadget creates a marker file if it
runs; the hostile module creates one when imported. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import json
import pickle
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plumpy

from loopaware_persist import (
    LoopAwareLauncher,
    LoopAwarePersistError,
    UnknownTagError,
    UnsafeCheckpointError,
    open_persister,
)
from loopaware_persist._envelope import encode_envelope
from loopaware_persist.storage import CheckpointKey
from tests.axes import local_store_url
from tests.msgpack_wire import ext, pack

from ._support import ALLOW, CODECS, make_process, new_loop

# Modules a load of these records may legitimately import (lazily) after warm-up.
ALLOWED_NEW_MODULES: frozenset[str] = frozenset()


def _pickle_gadgets(marker: str, evil: str) -> dict[str, bytes]:
    touch = f"touch {marker}"
    code = f"open({marker!r}, 'w').close()"
    g = {
        "GLOBAL os.system": f"cos\nsystem\n(S'{touch}'\ntR.",
        "GLOBAL posix.system": f"cposix\nsystem\n(S'{touch}'\ntR.",
        "GLOBAL builtins.exec": f'cbuiltins\nexec\n(S"{code}"\ntR.',
        "GLOBAL builtins.eval": f'cbuiltins\neval\n(S"{code}"\ntR.',
        "GLOBAL __builtin__.eval": f'c__builtin__\neval\n(S"{code}"\ntR.',
        "getattr(__import__)": (
            f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'{touch}'\ntR."
        ),
        "INST os.system": f"(S'{touch}'\nios\nsystem\n.",
        "OBJ os.system": f"(cos\nsystem\nS'{touch}'\no.",
        "subprocess.Popen": f"csubprocess\nPopen\n((lp0\nS'touch'\naS'{marker}'\natR.",
        "nested in a dict": f"(dp0\nS'ctx'\ncos\nsystem\n(S'{touch}'\ntRs.",
        "copyreg._reconstructor": f"ccopyreg\n_reconstructor\n(cos\nsystem\n(S'{touch}'\ntR.",
        "importlib.import_module evil": f"cimportlib\nimport_module\n(S'{evil}'\ntR.",
        "GLOBAL evil.Thing": f"c{evil}\nThing\n)R.",
        "GLOBAL evil.f": f"c{evil}\nf\n)R.",
        "plumpy PicklePersister": f"cplumpy.persistence\nPicklePersister\n(S'{marker}'\ntR.",
        "plumpy Process()": "cplumpy.processes\nProcess\n)R.",
        "shutil.rmtree": f"cshutil\nrmtree\n(S'{marker}'\ntR.",
        "getattr(Path, touch)": (
            f"cbuiltins\ngetattr\n(cpathlib\nPath\n(S'{marker}'\ntRS'touch'\ntR)R."
        ),
    }
    out = {name: text.encode() for name, text in g.items()}

    class Reduce:
        def __init__(self, fn: Any, *args: Any) -> None:
            self.fn, self.args = fn, args

        def __reduce__(self) -> Any:
            return self.fn, self.args

    import builtins
    import os
    import subprocess

    for protocol in (2, 4, 5):
        out[f"reduce os.system p{protocol}"] = pickle.dumps(Reduce(os.system, touch), protocol)
        out[f"reduce exec p{protocol}"] = pickle.dumps(Reduce(builtins.exec, code), protocol)
        out[f"reduce Popen in list p{protocol}"] = pickle.dumps(
            [1, {"x": Reduce(subprocess.Popen, ["touch", marker])}], protocol
        )
    return out


def _msgpack_payloads(marker: str, evil: str) -> dict[str, tuple[bytes, type[Exception]]]:
    u, k = UnsafeCheckpointError, UnknownTagError
    return {
        "class os:system": (pack(ext("class", "os:system")), u),
        "class builtins:eval": (pack(ext("class", "builtins:eval")), u),
        "class builtins:exec": (pack(ext("class", "builtins:exec")), u),
        "class subprocess:Popen": (pack(ext("class", "subprocess:Popen")), u),
        "class dunder": (pack(ext("class", "plumpy:Process.__init__")), u),
        "class evil": (pack(ext("class", f"{evil}:Thing")), u),
        "enum os:system": (pack(ext("enum", "os:system", "x")), u),
        "enum evil": (pack(ext("enum", f"{evil}:Color", 1)), u),
        "object Popen": (pack(ext("object", "subprocess:Popen", {"args": [marker]})), u),
        "object evil": (pack(ext("object", f"{evil}:Thing", {})), u),
        "object plumpy Process": (pack(ext("object", "plumpy.processes:Process", {})), u),
        "object PicklePersister": (
            pack(ext("object", "plumpy.persistence:PicklePersister", {"x": marker})),
            u,
        ),
        "deep in a bundle": (
            pack(ext("bundle", {"_state": {"ctx": [{"x": ext("object", "os:system", {})}]}})),
            u,
        ),
        "unknown tag os.system": (pack(ext("os.system", marker)), k),
        "unknown tag pickle": (pack(ext("pickle", b"cos\nsystem\n.")), k),
        "unknown tag eval": (pack({"x": ext("eval", "__import__('os')")}), k),
    }


YAML = {
    "apply-os-system": '!!python/object/apply:os.system ["touch {marker}"]',
    "new-popen": '!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
    "name-os-system": "!!python/name:os.system",
    "module-os": "!!python/module:os",
    "apply-evil": "!!python/object/apply:{evil}.f []",
    "name-evil": "!!python/name:{evil}.Thing",
    "object-evil": "!!python/object:{evil}.Thing {{}}",
    "tag-directive": (
        '%TAG !e! tag:yaml.org,2002:python/object/apply:\n--- !e!os.system ["touch {marker}"]'
    ),
    "verbatim-tag": '!<tag:yaml.org,2002:python/object/apply:os.system> ["touch {marker}"]',
    "nested": 'a: [1, {{b: !!python/object/apply:os.system ["touch {marker}"]}}]',
    "mapping-key": '? !!python/object/apply:os.system ["touch {marker}"]\n: 1',
    "builtins-exec": "!!python/object/apply:builtins.exec [\"open('{marker}', 'w')\"]",
    "state-on-exception": (
        "!!python/object/apply:builtins.ValueError\nargs: [x]\n"
        'state: {{y: !!python/object/apply:os.system ["touch {marker}"]}}'
    ),
}


def _bundle_of(kind: str, loop: asyncio.AbstractEventLoop) -> plumpy.Bundle:
    bundle = plumpy.Bundle.__new__(plumpy.Bundle)
    dict.update(bundle, copy.deepcopy(dict(plumpy.Bundle(make_process(kind, loop, uuid.uuid4())))))
    return bundle


def _tampered_bundles(marker: str, evil: str) -> dict[str, plumpy.Bundle]:
    out = {}
    with new_loop() as a:
        for name, text in YAML.items():
            bundle = _bundle_of("excepted", a)
            bundle["_state"]["ex_value"] = text.format(marker=marker, evil=evil)
            out[f"excepted yaml {name}"] = bundle
        for name in ("os:system", "subprocess:Popen", "builtins:eval", f"{evil}:Thing"):
            bundle = _bundle_of("waiting", a)
            bundle["!!meta"]["class_name"] = name
            out[f"process class {name}"] = bundle
            bundle = _bundle_of("waiting", a)
            bundle["_state"]["!!meta"]["class_name"] = name
            out[f"state class {name}"] = bundle
            bundle = _bundle_of("created", a)
            bundle["!!meta"]["object_loader"] = name
            out[f"object loader {name}"] = bundle
        for name in ("__class__", "__init__", "__reduce_ex__", "resumed.__func__"):
            bundle = _bundle_of("waiting", a)
            bundle["_state"]["DONE_CALLBACK"] = name
            out[f"done callback {name}"] = bundle
        for name in ("__class__", "__init__"):
            bundle = _bundle_of("created", a)
            bundle["_state"]["run_fn"] = name
            out[f"run_fn {name}"] = bundle
    return out


def _warm_up(per: Any, b: asyncio.AbstractEventLoop) -> None:
    """Exercise every read path once with benign records, refusals included."""
    with new_loop() as a:
        for kind in ("created", "finished", "excepted", "waiting"):
            process = make_process(kind, a, uuid.uuid4())
            per.save_checkpoint(process)
            per.load_checkpoint(process.pid).unbundle(plumpy.LoadSaveContext(loop=b))
            per.load_process(process.pid, loop=b)
    per.list_info()
    per.get_checkpoints()
    for payload in (pack(ext("class", "os:system")), b"cos\nsystem\n."):
        for codec in CODECS:
            with contextlib.suppress(LoopAwarePersistError):
                per.loads(encode_envelope(payload, codec=codec))


def plant_evil_module(tmp: Path) -> tuple[Path, str]:
    """Write a module whose import, or a call of its ``f``, writes a marker file, and put
    it on ``sys.path``: a corpus naming it shows whether a load imported or ran it.

    :param tmp: a fresh directory
    :return: the marker's path and the module's name
    """
    marker = tmp / "MARKER"
    site = tmp / "site"
    site.mkdir()
    evil = f"evil_{uuid.uuid4().hex}"
    (site / f"{evil}.py").write_text(
        textwrap.dedent(f"""
        import enum, pathlib
        pathlib.Path({str(marker)!r}).write_text("imported")
        class Thing:
            pass
        class Color(enum.Enum):
            RED = 1
        def f(*args):
            pathlib.Path({str(marker)!r}).write_text("called")
        """)
    )
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return marker, evil


def corpus(marker: str, evil: str) -> dict[str, tuple[str, bytes, type[Exception]]]:
    """:param marker: the marker file's path
    :param evil: the planted module's name
    :return: every hostile record by name: its codec, its stored bytes and the error a
        load must raise
    """
    records: dict[str, tuple[str, bytes, type[Exception]]] = {}
    for name, payload in _pickle_gadgets(marker, evil).items():
        records[f"pickle gadget: {name}"] = (
            "pickle",
            encode_envelope(payload, codec="pickle"),
            UnsafeCheckpointError,
        )
    for name, (payload, expected) in _msgpack_payloads(marker, evil).items():
        records[f"msgpack ext: {name}"] = (
            "msgpack",
            encode_envelope(payload, codec="msgpack"),
            expected,
        )
    bundles = _tampered_bundles(marker, evil)
    for codec in CODECS:
        with open_persister("memory://", codec=codec, allow=[ALLOW]) as enc:
            for name, bundle in bundles.items():
                records[f"{codec} bundle: {name}"] = (
                    codec,
                    enc.dumps(bundle),
                    UnsafeCheckpointError,
                )
    return records


def judge(
    label: str,
    expected: type[Exception],
    attempts: dict[str, Callable[[], Any]],
    outcomes: Counter[str],
    wrong: list[str],
) -> int:
    """Run each way of loading one hostile record and tally how it ended.

    :param label: names the record in ``wrong``
    :param expected: the refusal every attempt must raise
    :param attempts: how (``load_checkpoint``, ``Bundle.unbundle``...) -> the attempt
    :param outcomes: counts by outcome, extended
    :param wrong: what went wrong, extended
    :return: how many attempts ran
    """
    for how, attempt in attempts.items():
        try:
            result = attempt()
        except LoopAwarePersistError as error:
            outcomes[type(error).__name__] += 1
            if not isinstance(error, expected):
                wrong.append(f"{label}: {type(error).__name__}: {error}"[:300])
        except BaseException as error:
            outcomes[f"untyped {type(error).__name__}"] += 1
            wrong.append(f"{label}: {type(error).__name__}: {error}"[:300])
        else:
            if how == "load_checkpoint" and " bundle: " in label:
                # A tampered bundle is plain data until it is unbundled, and
                # load_checkpoint() returns it lazily: inert, audited later.
                assert isinstance(result, dict)
                outcomes["inert bundle returned (audited on unbundle)"] += 1
            else:
                outcomes["LOADED"] += 1
                wrong.append(f"{label} via {how}: loaded")
    return len(attempts)


def run(tmp: Path, storage: str, url: str = "") -> dict[str, Any]:
    """The corpus stored in one storage and driven through every read path.

    :param tmp: a directory for the planted module, its marker and a local store
    :param storage: the storage's kind
    :param url: the store (a PostgreSQL one is made by the caller); empty for a local one
    :return: the counts, JSON-able
    """
    from loopaware_persist._fencing import open_fencing_persister

    marker, evil = plant_evil_module(tmp)
    records = corpus(str(marker), evil)
    classes = ("os:system", "builtins:exec", "subprocess:Popen", f"{evil}:Thing", f"{evil}:f")
    launch_bodies = {
        f"{kind} {cls}": {"task": kind, "args": {"process_class": cls}}
        for kind in ("launch", "create")
        for cls in classes
    }
    launch_bodies["launch plumpy.persistence:PicklePersister"] = {
        "task": "launch",
        "args": {"process_class": "plumpy.persistence:PicklePersister"},
    }
    # A named memory store, so that the fencing persister reads the same records.
    url = url or (
        "memory://hostile-corpus" if storage == "memory" else local_store_url(storage, tmp)
    )

    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    paths = 0
    with (
        new_loop() as b,
        # Both codecs accepted, so pickle gadgets reach the restricted unpickler (a default
        # persister refuses them by codec before that: tests/test_accept.py); the worker's
        # persister accepts msgpack only and refuses them by codec.
        open_persister(url, allow=[ALLOW], accept=CODECS) as per,
        open_fencing_persister(url, allow=[ALLOW]) as fencing,
    ):
        _warm_up(per, b)
        _warm_up(fencing, b)
        launcher = LoopAwareLauncher(per, loop=b)
        before = set(sys.modules)
        for name, (_codec, data, expected) in records.items():
            key = CheckpointKey(name)
            per.storage.put(key, data)
            attempts = {
                "load_checkpoint": lambda key=key: per.load_checkpoint(key.pid),
                "Bundle.unbundle": lambda key=key: per.load_checkpoint(key.pid).unbundle(
                    plumpy.LoadSaveContext(loop=b)
                ),
                "load_process": lambda key=key: per.load_process(key.pid, loop=b),
                # The worker's read path: a claim must never follow a refused load.
                "FencingPersister.load_process": lambda key=key: fencing.load_process(
                    key.pid, loop=b
                ),
            }
            paths += judge(f"{storage} {name}", expected, attempts, outcomes, wrong)
            # A refused load claimed nothing: the record is the one written.
            if per.storage.get(key).data != data:
                wrong.append(f"{name}: the stored record changed")
        # Listing reads headers only: it must list every hostile record, running nothing.
        listed = {c.pid for c in per.get_checkpoints()}
        if not all(name in listed for name in records):
            wrong.append("listing lost a record")
        if [i for i in per.list_info() if i.error]:
            wrong.append("a hostile payload broke a header read")
        for name, body in launch_bodies.items():
            paths += 1
            try:
                launcher(None, body)
            except UnsafeCheckpointError:
                outcomes["UnsafeCheckpointError"] += 1
            except BaseException as error:
                outcomes[f"untyped {type(error).__name__}"] += 1
                wrong.append(f"{name}: {type(error).__name__}: {error}"[:300])
            else:
                wrong.append(f"{name}: accepted")
        new_modules = sorted(set(sys.modules) - before - ALLOWED_NEW_MODULES)
    return {
        "storage": storage,
        "checkpoints": len(records),
        "launch_bodies": len(launch_bodies),
        "load_attempts": paths,
        "outcomes": dict(outcomes),
        "executions": int(marker.exists()),
        "evil_module_imported": evil in sys.modules,
        "new_modules": new_modules,
        "wrong": wrong[:20],
        "wrong_count": len(wrong),
    }


def main() -> None:
    """``TMP STORAGE [URL]``: print :func:`run`'s counts as one JSON line."""
    tmp, storage, *url = sys.argv[1:]
    print(json.dumps(run(Path(tmp), storage, *url), default=str))


if __name__ == "__main__":
    main()
