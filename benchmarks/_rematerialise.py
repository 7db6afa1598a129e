"""Loop benchmark: snapshots back into futures, and whole-graph loading against plumpy's.

*Restore*: 10,000 finished snapshots turned into futures on the loop, through
``restore_future`` (the public call) and ``_materialise`` (what it runs on the
loop), against creating and resolving 10,000 futures directly with
``loop.create_future()`` / ``set_result``.

*Unbundle*: this package's ``unbundle(bundle, LoopContext(loop=L))`` (audit,
rebind, load where ``L`` is current, loop check) against plumpy's plain
``bundle.unbundle(LoadSaveContext(loop=L))``, both called from a coroutine
running on ``L`` (a launcher's position); plus ``unbundle`` with ``L`` idle,
which loads on the calling thread with ``L`` installed as its running loop; and
``load_process`` end to end (memory store, msgpack) against
``PicklePersister.load_checkpoint(pid).unbundle(...)``.

plumpy's plain unbundle is only timed with ``L`` running: with ``L`` idle it
creates futures on whatever loop is current (or a new one), bug 1 of the design.
"""

from __future__ import annotations

import asyncio
import pickle
import statistics
import tempfile
from collections.abc import Callable
from typing import Any

import plumpy

from loopaware_persist import (
    LoopContext,
    open_persister,
    restore_future,
    restore_futures,
    unbundle,
)

from ._cases import Case, make_snapshots
from ._config import ALLOW, Config
from ._private import materialise
from ._timing import Progress, interleaved, on_loop, summarise

__all__ = ("UNBUNDLE_CASES", "run_loop", "steps")

UNBUNDLE_CASES = ("small", "medium", "futures")
RESTORE_BASELINE = "direct"
UNBUNDLE_BASELINE = "plumpy unbundle"
LOAD_BASELINE = "PicklePersister load + unbundle"


def steps(config: Config, cases: dict[str, Case]) -> int:
    """:param config: the run's configuration
    :param cases: the built cases
    :return: how many progress steps :func:`run_loop` takes
    """
    return config.rounds * (1 + sum(1 for name in UNBUNDLE_CASES if name in cases))


def _rounds(
    fns: dict[str, Callable[[], Any]],
    config: Config,
    progress: Progress,
    label: str,
    *,
    inside: Callable[[Callable[[], float]], float],
    outside: frozenset[str] = frozenset(),
) -> dict[str, list[float]]:
    """Interleaved rounds; ``inside`` runs a sample where the loop is running."""
    return interleaved(
        fns,
        rounds=config.rounds,
        sample_s=config.sample_s,
        progress=progress,
        label=f"loop: {label}",
        inside=inside,
        outside=outside,
    )


def _summary(samples: dict[str, list[float]], baseline: str) -> dict[str, Any]:
    base = statistics.median(samples[baseline])
    return {
        "baseline": baseline,
        "variants": {
            name: {**summarise(values), "ratio": statistics.median(values) / base}
            for name, values in samples.items()
        },
    }


def run_loop(
    cases: dict[str, Case],
    config: Config,
    loop: asyncio.AbstractEventLoop,
    progress: Progress,
) -> dict[str, Any]:
    """:param cases: the built cases (``small``, ``medium``, ``futures`` are used if present)
    :param config: rounds, sample length, snapshot count
    :param loop: an idle loop (the cases' processes live on it)
    :param progress: advanced once per round
    :return: the loop results (JSON-ready)
    """

    inside = on_loop(loop)

    snapshots = make_snapshots(config.restore_count)
    values = [snap.result for snap in snapshots]
    ctx = LoopContext(loop=loop)

    def direct() -> list[asyncio.Future[Any]]:
        futures = []
        for value in values:
            future = loop.create_future()
            future.set_result(value)
            futures.append(future)
        return futures

    variants: dict[str, Callable[[], Any]] = {
        RESTORE_BASELINE: direct,
        "restore_future": lambda: [restore_future(snap, ctx) for snap in snapshots],
        "restore_futures": lambda: restore_futures(snapshots, ctx),
        "_materialise": lambda: [materialise(snap, loop) for snap in snapshots],
    }
    skipped: dict[str, str] = {}
    try:
        # A private function: its signature may change under us; then say so, do not fail.
        inside(lambda: float(len(variants["_materialise"]())))
    except TypeError as error:
        skipped["_materialise"] = f"{type(error).__name__}: {error}"
        del variants["_materialise"]
    restore = _rounds(variants, config, progress, "restore", inside=inside)
    results: dict[str, Any] = {
        "restore": {
            "count": config.restore_count,
            "skipped": skipped,
            **_summary(restore, RESTORE_BASELINE),
        },
        "unbundle": {},
    }

    with tempfile.TemporaryDirectory(prefix="loopaware-bench-") as tmp:
        memory = open_persister("memory://", codec="msgpack", allow=ALLOW)
        pickled = plumpy.PicklePersister(tmp)
        for name in UNBUNDLE_CASES:
            if name not in cases:
                continue
            case = cases[name]
            pid = case.process.pid
            memory.save_checkpoint(case.process)
            pickled.save_checkpoint(case.process)
            plain = pickle.loads(pickle.dumps(case.bundle, protocol=5))
            # The tree of a LoopAwareBundle: each call then times what the first load of
            # a bundle does (walk and copy it); later loads of one bundle decode afresh.
            ours = dict(memory.load_checkpoint(pid))

            def load_plain(plain: Any = plain) -> Any:
                return plain.unbundle(plumpy.LoadSaveContext(loop=loop))

            def load_ours(ours: Any = ours) -> Any:
                return unbundle(ours, LoopContext(loop=loop), registry=memory.registry)

            def load_process(pid: Any = pid) -> Any:
                return memory.load_process(pid, loop=loop)

            def load_pickled(pid: Any = pid) -> Any:
                return pickled.load_checkpoint(pid).unbundle(plumpy.LoadSaveContext(loop=loop))

            samples = _rounds(
                {
                    UNBUNDLE_BASELINE: load_plain,
                    "unbundle": load_ours,
                    "unbundle (loop idle)": load_ours,
                    LOAD_BASELINE: load_pickled,
                    "load_process": load_process,
                },
                config,
                progress,
                f"unbundle {name}",
                inside=inside,
                outside=frozenset({"unbundle (loop idle)"}),
            )
            unbundled = _summary(
                {k: samples[k] for k in (UNBUNDLE_BASELINE, "unbundle", "unbundle (loop idle)")},
                UNBUNDLE_BASELINE,
            )
            loaded = _summary(
                {k: samples[k] for k in (LOAD_BASELINE, "load_process")}, LOAD_BASELINE
            )
            results["unbundle"][name] = {
                "title": case.title,
                "unbundle": unbundled,
                "load": loaded,
            }
        memory.close()
    return results
