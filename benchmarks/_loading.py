"""Loading section (issue 15): a stored process back to a runnable one on loop ``B``.

*Load*: ``load_process(pid, loop=B)`` on ``sqlite://`` (msgpack) against plumpy's
``PicklePersister.load_checkpoint(pid).unbundle(LoadSaveContext(loop=B))``, on the
``small``, ``medium`` (100 KB) and ``big`` (1 MB) cases and on a WorkChain holding
``load_futures`` (1,000) future snapshots (plumpy leaves those as inert values; ours
makes a future on ``B`` of each).

*Restart*: what a daemon does when it starts: ``get_checkpoints()`` of a store holding
``restart_count`` (1,000) WAITING processes, then load every one onto ``B``; for the
``small`` process and for a WAITING process of ~100 KB (its inputs hold the ``medium``
records). Each store holds copies of one bundle under distinct pids, written as the
persister writes them.

Every load is called from a coroutine running on ``B`` (a launcher's position; plumpy's
plain unbundle with ``B`` idle would land futures on the wrong loop, design bug 1).
Each variant is timed in the same interleaved rounds with the cyclic GC off (as the rest
of the suite) and on (as a user's process runs); ratios divide medians of one run.
"""

from __future__ import annotations

import asyncio
import copy
import os
import pickle
import statistics
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plumpy
from plumpy.persistence import PersistedCheckpoint, PersistedPickle

from loopaware_persist import open_persister
from loopaware_persist.storage import CheckpointKey

from ._cases import Case, build_cases, build_waiting
from ._config import ALLOW, Config
from ._storage import PLUMPY, record_meta
from ._timing import Progress, interleaved, on_loop, summarise

__all__ = ("BASELINE", "GC_MODES", "LOAD_CASES", "OURS", "RESTART_CASES", "run_loading", "steps")

BASELINE = f"{PLUMPY} load + unbundle"
OURS = "load_process (sqlite)"
GC_MODES = ("off", "on")
#: The load cases, by name: the suite's cases, and ``futures`` rebuilt at ``load_futures``.
LOAD_CASES = ("small", "medium", "big", "futures")
#: The restart cases: the ``small`` process, and a WAITING process of this many bytes.
RESTART_CASES = ("small", "waiting")
WAITING_BYTES = 100_000
_CODEC = "msgpack"


def steps(config: Config) -> int:
    """:param config: the run's configuration
    :return: how many progress steps :func:`run_loading` takes
    """
    return config.rounds * len(LOAD_CASES) + config.restart_rounds * len(RESTART_CASES)


def _key(variant: str, mode: str) -> str:
    return f"{variant}, GC {mode}"


def _both_modes(fns: dict[str, Callable[[], Any]]) -> dict[str, Callable[[], Any]]:
    return {_key(name, mode): fn for name, fn in fns.items() for mode in GC_MODES}


def _summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    """:return: per variant and GC mode the statistics, and ours over the baseline's"""
    variants = {
        name: {mode: summarise(samples[_key(name, mode)]) for mode in GC_MODES}
        for name in (BASELINE, OURS)
    }
    return {
        "baseline": BASELINE,
        "variants": variants,
        "ratio": {
            f"gc_{mode}": statistics.median(samples[_key(OURS, mode)])
            / statistics.median(samples[_key(BASELINE, mode)])
            for mode in GC_MODES
        },
    }


def _gc_on_names(fns: dict[str, Any]) -> frozenset[str]:
    return frozenset(name for name in fns if name.endswith(_key("", "on")))


def _load_one(
    case: Case,
    root: Path,
    loop: asyncio.AbstractEventLoop,
    config: Config,
    progress: Progress,
    inside: Callable[[Callable[[], float]], float],
) -> dict[str, Any]:
    pid = case.process.pid
    pickled = plumpy.PicklePersister(str(root / f"pickle-{case.name}"))
    pickled.save_checkpoint(case.process)
    with open_persister(
        f"sqlite:///{root / f'load-{case.name}.db'}", codec=_CODEC, allow=ALLOW
    ) as ours:
        ours.save_checkpoint(case.process)

        def load_ours() -> Any:
            return ours.load_process(pid, loop=loop)

        def load_pickled() -> Any:
            return pickled.load_checkpoint(pid).unbundle(plumpy.LoadSaveContext(loop=loop))

        fns = _both_modes({BASELINE: load_pickled, OURS: load_ours})
        samples = interleaved(
            fns,
            rounds=config.rounds,
            sample_s=config.sample_s,
            progress=progress,
            label=f"loading: {case.name}",
            inside=inside,
            gc_on=_gc_on_names(fns),
        )
    return {
        "title": case.title,
        "detail": case.detail,
        "pickle_size": case.pickle_size,
        **_summary(samples),
    }


def _fill(root: Path, case: Case, count: int) -> tuple[Any, Any]:
    """:return: a ``sqlite://`` persister and a ``PicklePersister``, each holding ``count``
    copies of the case's bundle under distinct pids"""
    ours = open_persister(
        f"sqlite:///{root / f'restart-{case.name}.db'}", codec=_CODEC, allow=ALLOW
    )
    directory = root / f"restart-{case.name}"
    directory.mkdir()
    pickled = plumpy.PicklePersister(str(directory))
    meta = record_meta(case.process)
    for _ in range(count):
        pid = uuid.uuid4()
        bundle = copy.copy(case.bundle)
        bundle["_pid"] = pid
        ours.storage.put(CheckpointKey(pid=pid), ours.dumps(bundle, meta=meta))
        path = os.path.join(directory, plumpy.PicklePersister.pickle_filename(pid))
        with open(path, "wb") as handle:
            pickle.dump(PersistedPickle(PersistedCheckpoint(pid, None), bundle), handle)
    return ours, pickled


def _restart_one(
    case: Case,
    root: Path,
    loop: asyncio.AbstractEventLoop,
    config: Config,
    progress: Progress,
    inside: Callable[[Callable[[], float]], float],
) -> dict[str, Any]:
    ours, pickled = _fill(root, case, config.restart_count)
    try:
        context = plumpy.LoadSaveContext(loop=loop)

        def restart_ours() -> list[plumpy.Process]:
            return [ours.load_process(cp.pid, loop=loop) for cp in ours.get_checkpoints()]

        def restart_pickled() -> list[Any]:
            return [
                pickled.load_checkpoint(cp.pid).unbundle(context)
                for cp in pickled.get_checkpoints()
            ]

        loaded = inside(lambda: len(restart_ours())), inside(lambda: len(restart_pickled()))
        if loaded != (config.restart_count,) * 2:
            msg = f"restart loaded {loaded} processes, {config.restart_count} were stored"
            raise AssertionError(msg)
        fns = _both_modes({BASELINE: restart_pickled, OURS: restart_ours})
        samples = interleaved(
            fns,
            rounds=config.restart_rounds,
            sample_s=config.sample_s,
            progress=progress,
            label=f"restart: {case.name}",
            inside=inside,
            gc_on=_gc_on_names(fns),
        )
    finally:
        ours.close()
    return {
        "title": case.title,
        "pickle_size": case.pickle_size,
        "count": config.restart_count,
        **_summary(samples),
    }


def run_loading(
    cases: dict[str, Case], config: Config, loop: asyncio.AbstractEventLoop, progress: Progress
) -> dict[str, Any]:
    """:param cases: the built cases (``small``, ``medium``, ``big`` are used)
    :param config: rounds, sample length, snapshot and restart counts
    :param loop: an idle loop, ``B`` (the cases' processes live on it)
    :param progress: advanced once per round
    :return: the section's results (JSON-ready)
    """
    inside = on_loop(loop)
    load_cases = {name: cases[name] for name in LOAD_CASES[:-1] if name in cases}
    load_cases["futures"] = build_cases(
        config.evolve(futures=config.load_futures), loop, ("futures",)
    )["futures"]
    restart_cases = {
        "small": cases["small"],
        "waiting": build_waiting(loop, min(WAITING_BYTES, config.medium_bytes)),
    }
    with tempfile.TemporaryDirectory(prefix="loopaware-bench-") as tmp:
        root = Path(tmp)
        load = {
            name: _load_one(case, root, loop, config, progress, inside)
            for name, case in load_cases.items()
        }
        restart = {
            name: _restart_one(case, root, loop, config, progress, inside)
            for name, case in restart_cases.items()
        }
    return {
        "baseline": BASELINE,
        "ours": OURS,
        "load_futures": config.load_futures,
        "restart_count": config.restart_count,
        "load": load,
        "restart": restart,
        "note": (
            "called from a coroutine running on B; each sample timed with the cyclic GC off "
            "and on; ratios are medians over the baseline's from the same rounds"
        ),
    }
