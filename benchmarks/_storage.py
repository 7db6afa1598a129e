"""Storage benchmark: save, load and ``get_checkpoints()`` against plumpy's ``PicklePersister``.

Every store gets the same processes (the ``small``, ``medium`` and ``big``
cases: about 1 KB, 100 KB and 1 MB).
``save`` is ``save_checkpoint(process)`` end to end (bundle, encode, envelope,
atomic write; plumpy's: bundle, pickle into the truncated file; timed with the
cyclic GC off and, in ``save_gc_on``, on); ``put`` is
the storage write of a ready record alone. ``load`` is ``load_checkpoint(pid)``
(read, verify, decode to a bundle); ``get`` is the storage read alone. Each is
timed call by call, in blocks interleaved across the stores, for p50 and p99.

Listing fills fresh stores with N checkpoints of a case (our stores get the
encoded record through ``storage.put``; plumpy's gets the files its
``save_checkpoint`` writes) and times ``get_checkpoints()``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import plumpy
from plumpy.persistence import PersistedCheckpoint, PersistedPickle

from loopaware_persist import LoopAwarePersister, open_persister
from loopaware_persist.storage import CheckpointKey

from ._cases import Case, state_label
from ._config import ALLOW, Config
from ._timing import Progress, summarise, time_each

__all__ = ("GC_ON_SAVE", "PLUMPY", "POSTGRES_ENV", "record_meta", "run_storage")

POSTGRES_ENV = "LOOPAWARE_TEST_POSTGRES_URL"
PLUMPY = "PicklePersister"
#: The operation name of saves timed with the cyclic GC on (the others run with it off).
GC_ON_SAVE = "save_gc_on"
_BLOCKS = 10
_CODEC = "msgpack"


@attrs.define
class _Store:
    name: str
    url: str
    durability: str
    persister: Any
    pids: list[Any] = attrs.field(factory=list)

    @property
    def ours(self) -> bool:
        return isinstance(self.persister, LoopAwarePersister)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "durability": self.durability}

    def close(self) -> None:
        if not self.ours:
            return
        if self.url.startswith("postgres"):
            # A shared server: remove what this run wrote.
            for pid in self.pids:
                with contextlib.suppress(Exception):
                    self.persister.delete_process_checkpoints(pid)
        self.persister.close()


def _postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def _open_stores(
    root: Path, config: Config, *, durabilities: tuple[str, ...], skipped: dict[str, str]
) -> list[_Store]:
    root.mkdir(parents=True, exist_ok=True)
    stores = [_Store(name="memory", url="memory://", durability="normal", persister=None)]
    for durability in durabilities:
        suffix = "" if durability == "normal" else f" ({durability})"
        stores.append(
            _Store(
                name="file" + suffix,
                url=(root / f"file-{durability}").as_uri(),
                durability=durability,
                persister=None,
            )
        )
        stores.append(
            _Store(
                name="sqlite" + suffix,
                url=f"sqlite:///{root / f'sqlite-{durability}.db'}",
                durability=durability,
                persister=None,
            )
        )
    pg_url = _postgres_url() if config.postgres else None
    if config.postgres and pg_url is None:
        skipped["postgresql"] = f"{POSTGRES_ENV} is not set"
    opened = []
    for store in stores:
        store.persister = open_persister(
            store.url,
            codec=_CODEC,
            durability=store.durability,  # type: ignore[arg-type]
            allow=ALLOW,
        )
        opened.append(store)
    if pg_url is not None:
        for durability in durabilities:
            suffix = "" if durability == "normal" else f" ({durability})"
            name = "postgresql" + suffix
            try:
                persister = open_persister(pg_url, codec=_CODEC, durability=durability, allow=ALLOW)  # type: ignore[arg-type]
            except Exception as error:
                skipped[name] = f"{type(error).__name__}: {error}"
                continue
            opened.append(
                _Store(name=name, url="postgresql://…", durability=durability, persister=persister)
            )
    pickle_dir = root / "pickle"
    opened.append(
        _Store(
            name=PLUMPY,
            url=pickle_dir.as_uri(),
            durability="none",
            persister=plumpy.PicklePersister(str(pickle_dir)),
        )
    )
    return opened


@contextlib.contextmanager
def _stores(
    root: Path, config: Config, *, durabilities: tuple[str, ...], skipped: dict[str, str]
) -> Iterator[list[_Store]]:
    stores = _open_stores(root, config, durabilities=durabilities, skipped=skipped)
    try:
        yield stores
    finally:
        for store in stores:
            with contextlib.suppress(Exception):
                store.close()


def record_meta(process: plumpy.Process) -> dict[str, Any]:
    """:return: the header a persister writes for ``process`` (class, state, time)"""
    return {
        "process_class": f"{type(process).__module__}:{type(process).__qualname__}",
        "state": state_label(process),
        "saved_at": time.time(),
    }


def _operations(store: _Store, case: Case) -> dict[str, Callable[[], Any]]:
    process = case.process
    pid: Any = process.pid
    ops: dict[str, Callable[[], Any]] = {
        "save": lambda: store.persister.save_checkpoint(process),
        "load": lambda: store.persister.load_checkpoint(pid),
    }
    if store.ours:
        storage = store.persister.storage
        key = CheckpointKey(pid=pid)
        record = store.persister.dumps(plumpy.Bundle(process), meta=record_meta(process))
        ops["put"] = lambda: storage.put(key, record)
        ops["get"] = lambda: storage.get(key)
    return ops


def _interleaved(
    stores: list[_Store], case: Case, count: int, progress: Progress
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Time each operation ``count`` times per store, in blocks rotating over the stores."""
    ops = {store.name: _operations(store, case) for store in stores}
    for store in stores:
        store.persister.save_checkpoint(case.process)  # so the first load finds it
        store.pids.append(case.process.pid)
    samples: dict[str, dict[str, list[float]]] = {}
    per_block = max(1, count // _BLOCKS)
    blocks = max(1, -(-count // per_block))
    for op in ("save", "put", "load", "get"):
        for block in range(blocks):
            shift = block % len(stores)
            for store in stores[shift:] + stores[:shift]:
                fn = ops[store.name].get(op)
                if fn is None:
                    continue
                taken = samples.setdefault(op, {}).setdefault(store.name, [])
                taken.extend(time_each(fn, per_block))
                if op == "save":  # issue 15 judges saves with the cyclic GC on too
                    taken = samples.setdefault(GC_ON_SAVE, {}).setdefault(store.name, [])
                    taken.extend(time_each(fn, per_block, gc_on=True))
        progress.step(f"storage: {op} {case.name}")
    return {
        op: {name: summarise(values) for name, values in by_store.items()}
        for op, by_store in samples.items()
    }


def _fill(store: _Store, case: Case, have: int, want: int, record: bytes) -> None:
    if store.ours:
        storage = store.persister.storage
        for _ in range(have, want):
            pid = uuid.uuid4()
            storage.put(CheckpointKey(pid=pid), record)
            store.pids.append(pid)
        return
    # The files plumpy's own save_checkpoint writes, without bundling the process each time.
    directory = store.persister._pickle_directory
    for _ in range(have, want):
        pid = uuid.uuid4()
        path = os.path.join(directory, plumpy.PicklePersister.pickle_filename(pid))
        with open(path, "wb") as handle:
            pickle.dump(PersistedPickle(PersistedCheckpoint(pid, None), case.bundle), handle)
        store.pids.append(pid)


def _listing(
    root: Path, cases: dict[str, Case], config: Config, skipped: dict[str, str], progress: Progress
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size_name in config.list_sizes:
        case = cases[size_name]
        by_count: dict[str, Any] = {}
        with _stores(
            root / f"list-{size_name}", config, durabilities=("normal",), skipped=skipped
        ) as stores:
            records = {
                store.name: store.persister.dumps(case.bundle, meta=record_meta(case.process))
                for store in stores
                if store.ours
            }
            have = 0
            for count in sorted(config.list_counts):
                by_store: dict[str, Any] = {}
                for store in stores:
                    _fill(store, case, have, count, records.get(store.name, b""))
                    found = len(store.persister.get_checkpoints())
                    if found < count:
                        msg = f"{store.name} lists {found} checkpoints, {count} were stored"
                        raise AssertionError(msg)
                    samples: list[float] = []
                    started = time.perf_counter()
                    while len(samples) < config.list_reps and (
                        len(samples) < 1 or time.perf_counter() - started < config.list_budget_s
                    ):
                        samples.extend(time_each(store.persister.get_checkpoints, 1))
                    by_store[store.name] = summarise(samples)
                    progress.step(f"storage: list {count} {size_name} on {store.name}")
                have = count
                by_count[str(count)] = by_store
        results[size_name] = by_count
    return results


def _ratios(
    operations: dict[str, dict[str, dict[str, dict[str, float | int]]]],
) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for op in ("save", "load"):
        for size_name, by_store in operations.get(op, {}).items():
            base = by_store.get(PLUMPY)
            if base is None:
                continue
            ratios.setdefault(op, {})[size_name] = {
                name: {
                    "p50": stats["p50_s"] / base["p50_s"],
                    "p99": stats["p99_s"] / base["p99_s"],
                }
                for name, stats in by_store.items()
                if name != PLUMPY
            }
    return ratios


def steps(config: Config, listing_stores: int) -> int:
    """:param config: the run's configuration
    :param listing_stores: how many stores take part in listing
    :return: how many progress steps :func:`run_storage` takes
    """
    return 3 * 4 + len(config.list_sizes) * len(config.list_counts) * listing_stores


def listing_store_count(config: Config) -> int:
    """:param config: the run's configuration
    :return: stores in the listing part (memory, file, sqlite, PicklePersister, PostgreSQL?)
    """
    return 4 + (1 if config.postgres and _postgres_url() else 0)


def run_storage(cases: dict[str, Case], config: Config, progress: Progress) -> dict[str, Any]:
    """:param cases: must hold ``small``, ``medium`` and ``big``
    :param config: counts and repetitions
    :param progress: advanced per operation and per listing
    :return: the storage results (JSON-ready)
    """
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="loopaware-bench-") as tmp:
        root = Path(tmp)
        operations: dict[str, dict[str, Any]] = {}
        bundling: dict[str, Any] = {}
        bundling_gc_on: dict[str, Any] = {}
        with _stores(
            root / "ops", config, durabilities=("normal", "full"), skipped=skipped
        ) as stores:
            described = [store.describe() for store in stores]
            for size_name, count in (
                ("small", config.save_count),
                ("medium", max(10, config.save_count // 5)),
                ("big", max(10, config.save_count // 10)),
            ):
                for op, by_store in _interleaved(stores, cases[size_name], count, progress).items():
                    operations.setdefault(op, {})[size_name] = by_store
                bundle = functools.partial(plumpy.Bundle, cases[size_name].process)
                bundling[size_name] = summarise(time_each(bundle, count))
                bundling_gc_on[size_name] = summarise(time_each(bundle, count, gc_on=True))
        listing = _listing(root, cases, config, skipped, progress)
        filesystem = _filesystem(root)
    return {
        "codec": _CODEC,
        "temp_filesystem": filesystem,
        "stores": described,
        "skipped": skipped,
        "operations": operations,
        "bundle": bundling,
        "bundle_gc_on": bundling_gc_on,
        "bundle_note": "plumpy.Bundle(process) alone: part of every save, PicklePersister's too",
        "ratios": _ratios(operations),
        "listing": listing,
        "listing_note": (
            "durability does not change what a listing reads, so listing uses normal stores"
        ),
    }


def _filesystem(path: Path) -> str | None:
    """:return: the file-system type holding ``path`` (fsync is free on tmpfs), if known"""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind
