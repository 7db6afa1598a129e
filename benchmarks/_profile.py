"""Profile what a missed target measures, with pyinstrument, into ``profile-<target>.txt``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loopaware_persist import LoopContext, get_codec, open_persister, restore_future, unbundle

from ._cases import Case, make_snapshots
from ._config import ALLOW
from ._output import write_text
from ._private import decode_envelope, encode_envelope

__all__ = ("profile_missed",)


def _repeat(fn: Callable[[], Any], seconds: float) -> Callable[[], None]:
    def run() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            fn()

    return run


def _codec_jobs(case: Case, compression: str | None) -> Iterator[tuple[str, Callable[[], Any]]]:
    codec = get_codec("msgpack", allow=ALLOW)
    payload = codec.encode(case.bundle)
    record = encode_envelope(payload, codec="msgpack", compression=compression)
    if compression is None:
        yield "encode", lambda: codec.encode(case.bundle)
        yield "decode", lambda: codec.decode(payload)
    else:
        yield (
            "encode",
            lambda: encode_envelope(
                codec.encode(case.bundle), codec="msgpack", compression=compression
            ),
        )
        yield "decode", lambda: codec.decode(decode_envelope(record).payload)


def _store_url(name: str, root: Path) -> tuple[str, str] | None:
    durability = "full" if "(full)" in name else "normal"
    if name.startswith("file"):
        return (root / "file").as_uri(), durability
    if name.startswith("sqlite"):
        return f"sqlite:///{root / 'profile.db'}", durability
    if name == "memory":
        return "memory://", durability
    return None


def _jobs(
    tid: str, cases: dict[str, Case], loop: asyncio.AbstractEventLoop, stack: contextlib.ExitStack
) -> Iterator[tuple[str, Callable[[], Any]]]:
    kind, _, rest = tid.partition(".")
    if kind == "i15":
        yield from _jobs_15(rest, cases, loop, stack)
    elif kind == "codec":
        case_name, _, what = rest.partition(".")
        if case_name in cases and what in ("time", "zstd.time"):
            yield from _codec_jobs(cases[case_name], "zstd" if what == "zstd.time" else None)
    elif kind == "unbundle" and rest in cases:
        memory = stack.enter_context(open_persister("memory://", allow=ALLOW))
        memory.save_checkpoint(cases[rest].process)
        bundle = dict(memory.load_checkpoint(cases[rest].process.pid))  # see _rematerialise
        yield "unbundle", lambda: unbundle(bundle, LoopContext(loop=loop), registry=memory.registry)
    elif kind == "restore":
        snapshots = make_snapshots(10_000)
        ctx = LoopContext(loop=loop)
        yield "restore", lambda: [restore_future(snap, ctx) for snap in snapshots]
    elif kind in ("save", "load") and "small" in cases:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loopaware-prof-")))
        found = _store_url(rest, root)
        if found is None:
            return
        url, durability = found
        persister = stack.enter_context(open_persister(url, durability=durability, allow=ALLOW))  # type: ignore[arg-type]
        process = cases["small"].process
        persister.save_checkpoint(process)
        if kind == "save":
            yield "save", lambda: persister.save_checkpoint(process)
        else:
            yield "load", lambda: persister.load_checkpoint(process.pid)


def _jobs_15(
    rest: str,
    cases: dict[str, Case],
    loop: asyncio.AbstractEventLoop,
    stack: contextlib.ExitStack,
) -> Iterator[tuple[str, Callable[[], Any]]]:
    """Issue 15's targets: ``load.<case>`` and ``save.<store>`` on the small process;
    ``codec.<case>``. (The futures and restart cases are built by the loading section.)"""
    kind, _, what = rest.partition(".")
    if kind == "codec" and what in cases:
        yield from _codec_jobs(cases[what], None)
    elif kind in ("load", "save") and (what in cases or kind == "save") and "small" in cases:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loopaware-prof-")))
        found = _store_url("sqlite" if kind == "load" else what, root)
        if found is None:
            return
        persister = stack.enter_context(open_persister(found[0], allow=ALLOW))
        process = cases[what if kind == "load" else "small"].process
        persister.save_checkpoint(process)
        if kind == "save":
            yield "save", lambda: persister.save_checkpoint(process)
        else:
            yield "load_process", lambda: persister.load_process(process.pid, loop=loop)


def profile_missed(
    targets: list[dict[str, Any]],
    cases: dict[str, Case],
    loop: asyncio.AbstractEventLoop,
    out_dir: Path,
    *,
    seconds: float = 1.5,
) -> dict[str, str]:
    """Profile the operation behind every missed target.

    :param targets: the evaluated targets
    :param cases: the built cases
    :param loop: the idle loop the cases live on (profiled loads run on it)
    :param out_dir: where ``profile-*.txt`` go
    :param seconds: how long to repeat each operation under the profiler
    :raises ModuleNotFoundError: without pyinstrument
    :return: target id (and part) -> file name written
    """
    try:
        from pyinstrument import Profiler
    except ImportError as error:
        msg = "Profiling needs pyinstrument: pip install pyinstrument"
        raise ModuleNotFoundError(msg) from error

    written: dict[str, str] = {}
    for target in targets:
        if target["met"] is not False:
            continue
        tid = target["id"]
        with contextlib.ExitStack() as stack:
            for part, fn in _jobs(tid, cases, loop, stack):
                profiler = Profiler(interval=0.0002)
                job = _repeat(fn, seconds)

                async def on_loop(job: Callable[[], None] = job) -> None:
                    job()

                profiler.start()
                loop.run_until_complete(on_loop())
                profiler.stop()
                name = "profile-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{tid}-{part}") + ".txt"
                text = profiler.output_text(unicode=True, color=False, show_all=False)
                write_text(out_dir / name, text)
                written[f"{tid}:{part}"] = name
    return written
