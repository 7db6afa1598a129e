"""The ``aiida`` section's measurements, run in their own interpreter.

``python -m benchmarks._aiida_run ROUNDS PER_ROUND STORE_DIR`` with ``AIIDA_PATH`` set
to a folder holding a throwaway profile (:mod:`benchmarks._aiida` makes both): AiiDA
reads ``AIIDA_PATH`` when it is first imported, so the suite's own process never
imports it. Prints the results as JSON on stdout.

For each case (:class:`~benchmarks._aiida_chain.BenchChain` stopped mid-run, small and
with a 1,000-item dict) the one process object is saved and loaded by every persister:
aiida-core's ``AiiDAPersister`` (YAML in the node's ``checkpoints`` attribute) and ours,
made by :func:`loopaware_persist.aiida.make_persister`, on ``aiida://`` (the same
attribute) and ``sqlite://``. A load is ``load_checkpoint(pk)`` then
``bundle.unbundle(LoadSaveContext(runner=runner))``, as AiiDA's ``ProcessLauncher``
continues a process; the loaded process is closed outside the timing. Each round times
every persister in turn, ``PER_ROUND`` single calls each, once with the cyclic GC off
(as the rest of the suite) and once with it on; ratios divide medians of the same run.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._timing import summarise, time_each

__all__ = ("AIIDA", "CHAIN_ALLOW", "main")

#: The baseline's name in the results.
AIIDA = "AiiDAPersister"
#: What our persisters allow beyond AiiDA's own classes: the bench WorkChain's module.
CHAIN_ALLOW = ("benchmarks._aiida_chain",)
CASES = {"small": False, "table": True}
#: Seconds of each call, by persister, then ``"off"``/``"on"`` (the cyclic GC).
_Samples = dict[str, dict[str, list[float]]]


def _times(fn: Callable[[], Any], count: int, *, gc_on: bool) -> list[float]:
    """:return: seconds of each of ``count`` calls (:func:`~benchmarks._timing.time_each`),
    after a collection, the cyclic GC on or off during them"""
    gc.collect()
    return time_each(fn, count, gc_on=gc_on)


def _stopped_process(big: bool) -> Any:
    """:return: a :class:`BenchChain` left mid-run by :class:`Stop` (its node unsealed)"""
    from aiida import orm
    from aiida.manage import get_manager

    from ._aiida_chain import BenchChain, Stop

    runner = get_manager().get_runner()
    inputs = {"x": orm.Int(1), "big": orm.Bool(big)}  # type: ignore[no-untyped-call]
    process = runner.instantiate_process(BenchChain, **inputs)
    try:
        process.execute()
    except Stop:
        return process
    msg = "BenchChain finished instead of stopping in its second round"
    raise RuntimeError(msg)


def _measure(rounds: int, per_round: int, store_dir: Path) -> dict[str, Any]:
    import plumpy
    from aiida.engine.persistence import AiiDAPersister
    from aiida.manage import get_manager
    from aiida.orm import ProcessNode

    from loopaware_persist.aiida import make_persister
    from loopaware_persist.storage import CheckpointKey

    runner = get_manager().get_runner()
    persisters: dict[str, Any] = {
        AIIDA: AiiDAPersister(),
        "aiida://": make_persister(allow=CHAIN_ALLOW),
        "sqlite://": make_persister(
            store=f"sqlite:///{store_dir / 'checkpoints.db'}", allow=CHAIN_ALLOW
        ),
    }
    out: dict[str, Any] = {}
    try:
        for case, big in CASES.items():
            process = _stopped_process(big)
            pk = process.pid
            node = process.node
            sizes: dict[str, int] = {}
            save: dict[str, dict[str, list[float]]] = {
                name: {"off": [], "on": []} for name in persisters
            }
            load: dict[str, dict[str, list[float]]] = {
                name: {"off": [], "on": []} for name in persisters
            }
            for index in range(rounds):
                names = list(persisters)
                names = names[index % len(names) :] + names[: index % len(names)]
                for name in names:
                    persister = persisters[name]
                    # aiida:// refuses to overwrite AiiDA's YAML (and AiiDA ours): start clean
                    node.delete_checkpoint()

                    def save_one(persister: Any = persister, process: Any = process) -> None:
                        persister.save_checkpoint(process)

                    loaded: list[Any] = []

                    def load_one(
                        persister: Any = persister, loaded: list[Any] = loaded, pk: int = pk
                    ) -> None:
                        bundle = persister.load_checkpoint(pk)
                        loaded.append(bundle.unbundle(plumpy.LoadSaveContext(runner=runner)))

                    for mode in ("off", "on"):
                        save[name][mode] += _times(save_one, per_round, gc_on=mode == "on")
                        load[name][mode] += _times(load_one, per_round, gc_on=mode == "on")
                        for instance in loaded:
                            instance.close()
                        loaded.clear()
                    if name == "sqlite://":
                        sizes[name] = len(persister.storage.get(CheckpointKey(pid=pk)).data)
                    else:
                        sizes[name] = len(node.base.attributes.get(ProcessNode.CHECKPOINT_KEY))
            out[case] = _summary(case, big, sizes, save, load)
            process.close()
    finally:
        for name, persister in persisters.items():
            if name != AIIDA:
                persister.close()
    return out


def _summary(
    case: str,
    big: bool,
    sizes: dict[str, int],
    save: _Samples,
    load: _Samples,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "title": "BenchChain, context with a 1,000-item dict"
        if big
        else "BenchChain, small context",
        "stores": {},
    }
    for name in sizes:
        stats = {
            op: {mode: summarise(samples[name][mode]) for mode in ("off", "on")}
            for op, samples in (("save", save), ("load", load))
        }
        entry["stores"][name] = {"size": sizes[name], **stats}
    base = entry["stores"][AIIDA]
    for stats in entry["stores"].values():
        stats["ratio"] = {
            "size": stats["size"] / base["size"],
            **{
                f"{op}_gc_{mode}": stats[op][mode]["median_s"] / base[op][mode]["median_s"]
                for op in ("save", "load")
                for mode in ("off", "on")
            },
        }
    return entry


def main(argv: list[str]) -> int:
    """:param argv: ``ROUNDS PER_ROUND STORE_DIR``
    :return: 0; the results are printed as JSON
    """
    import aiida

    rounds, per_round, store_dir = int(argv[0]), int(argv[1]), Path(argv[2])
    aiida.load_profile(argv[3])
    results = _measure(rounds, per_round, store_dir)
    sys.stdout.write(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
