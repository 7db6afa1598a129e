"""Figure 5: concurrency. 2, 4, 8 and 16 writers (threads, and processes) saving one
pid while readers loop.

Every writer alternates blind saves and compare-and-set saves (``expected_version``
read just before). Checked: every acknowledged save got its own version and the
final version equals the number of acknowledged saves (0 lost updates); every read
decodes to one of the records written (0 failed or torn reads); every
compare-and-set that lost raised ``StaleCheckpointError`` naming a newer version
(stale writers fenced), and none that won shares a version with another save.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loopaware_persist import (
    CheckpointNotFoundError,
    LoopAwarePersistError,
    StaleCheckpointError,
    open_persister,
)
from loopaware_persist.storage import CheckpointKey, Storage, open_storage
from tests.axes import local_store_url

from ._support import ALLOW, BUDGET_S, HEAVY, HEAVY_TIMEOUT, figure, record_for

pytestmark = pytest.mark.timeout(HEAVY_TIMEOUT)

KEY = CheckpointKey("shared")
WRITERS = (2, 4, 8, 16)
SAVES = 500 if HEAVY else 12
#: Saves every writer makes at least, even when a loaded machine runs out of time
#: first: a blind save and a compare-and-set one, twice.
MIN_SAVES = 4
READERS = 2
#: Each writer count's share of the time budget, after which writers stop saving.
ROUND_S = BUDGET_S / len(WRITERS)


def _records(n: int) -> list[bytes]:
    with open_persister("memory://", allow=[ALLOW]) as enc:
        return [record_for(enc, "shared", i) for i in range(n)]


def _write(storage: Storage, record: bytes, saves: int, deadline: float) -> dict[str, Any]:
    """Save up to ``saves`` times, stopping at ``deadline`` (``time.monotonic()``, which
    forked writers share) once ``MIN_SAVES`` are done."""
    versions: list[int] = []
    fenced = bad_fence = 0
    attempts = 0
    for i in range(saves):
        if i >= MIN_SAVES and time.monotonic() > deadline:
            break
        attempts += 1
        if i % 2 == 0:
            versions.append(storage.put(KEY, record))
            continue
        try:
            seen = storage.get(KEY).version
        except CheckpointNotFoundError:
            seen = 0
        try:
            version = storage.put(KEY, record, expected_version=seen)
        except StaleCheckpointError as error:
            fenced += 1
            bad_fence += not (error.expected == seen and (error.actual or 0) > seen)
        else:
            bad_fence += version != seen + 1
            versions.append(version)
    return {"versions": versions, "fenced": fenced, "bad_fence": bad_fence, "attempts": attempts}


def _read_loop(
    url: str, shared: Storage, records: set[bytes], stop: threading.Event, out: dict[str, int]
) -> None:
    with open_persister(url, allow=[ALLOW]) as per:
        # memory:// is per process: read through the writers' storage object.
        storage = shared if url == "memory://" else per.storage
        while not stop.is_set():
            try:
                record = storage.get(KEY)
            except CheckpointNotFoundError:
                continue
            except LoopAwarePersistError:
                out["failed"] += 1
                continue
            out["reads"] += 1
            if record.data not in records:
                out["torn"] += 1
            else:
                per.loads(record.data)


def _run(url: str, mode: str, writers: int, tmp: Path) -> dict[str, Any]:
    records = _records(writers)
    results: list[dict[str, Any]] = []
    stop = threading.Event()
    reads = {"reads": 0, "failed": 0, "torn": 0}
    shared = open_storage(url)
    children = []
    deadline = time.monotonic() + ROUND_S
    try:
        if mode == "processes":
            for w in range(writers):
                out = tmp / f"w{w}.json"
                pid = os.fork()
                if pid == 0:  # pragma: no cover - child
                    code = 0
                    try:
                        with open_storage(url) as mine:
                            out.write_text(json.dumps(_write(mine, records[w], SAVES, deadline)))
                    except BaseException:
                        code = 1
                    finally:
                        os._exit(code)
                children.append((pid, out))
        readers = [
            threading.Thread(target=_read_loop, args=(url, shared, set(records), stop, reads))
            for _ in range(READERS)
        ]
        threads = []
        if mode == "threads":
            threads = [
                threading.Thread(
                    target=lambda w=w: results.append(_write(shared, records[w], SAVES, deadline))
                )
                for w in range(writers)
            ]
        for t in readers + threads:
            t.start()
        for t in threads:
            t.join()
        for pid, out in children:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            results.append(json.loads(out.read_text()))
        stop.set()
        for t in readers:
            t.join()
        final = shared.get(KEY).version
        # A writer that saw any older version is fenced, deterministically.
        for stale in {0, final // 2, final - 1}:
            with pytest.raises(StaleCheckpointError):
                shared.put(KEY, records[0], expected_version=stale)
        assert shared.get(KEY).version == final
        shared.delete(KEY)
    finally:
        stop.set()
        shared.close()
    versions = sorted(v for r in results for v in r["versions"])
    return {
        "acknowledged": len(versions),
        "final_version": final,
        "duplicate_versions": len(versions) - len(set(versions)),
        "lost_updates": len(versions) - final if versions == list(range(1, final + 1)) else -1,
        "attempts": sum(r["attempts"] for r in results),
        "fenced": sum(r["fenced"] for r in results),
        "bad_fences": sum(r["bad_fence"] for r in results),
        **reads,
    }


@pytest.mark.parametrize(
    ("storage", "mode"),
    [
        ("memory", "threads"),
        ("file", "threads"),
        ("file", "processes"),
        ("sqlite", "threads"),
        ("sqlite", "processes"),
    ],
)
def test_concurrent_writers(tmp_path: Path, storage: str, mode: str) -> None:
    url = local_store_url(storage, tmp_path, "files" if storage == "file" else "c")
    rows = {}
    for writers in WRITERS:
        work = tmp_path / f"w{writers}"
        work.mkdir()
        row = _run(url, mode, writers, work)
        rows[writers] = row
        assert writers * MIN_SAVES <= row["attempts"] <= writers * SAVES, row
        assert row["acknowledged"] == row["attempts"] - row["fenced"], row
        assert row["final_version"] == row["acknowledged"], row
        assert row["duplicate_versions"] == row["lost_updates"] == 0, row
        assert row["bad_fences"] == row["failed"] == row["torn"] == 0, row
    figure(
        "concurrency",
        storage=storage,
        mode=mode,
        saves_per_writer=SAVES,
        min_saves_per_writer=MIN_SAVES,
        budget_s_per_writer_count=ROUND_S,
        saves_attempted=sum(r["attempts"] for r in rows.values()),
        stopped_by=(
            "count" if all(r["attempts"] == w * SAVES for w, r in rows.items()) else "time"
        ),
        lost_updates=sum(r["lost_updates"] for r in rows.values()),
        failed_or_torn_reads=sum(r["failed"] + r["torn"] for r in rows.values()),
        reads=sum(r["reads"] for r in rows.values()),
        stale_writers_fenced=sum(r["fenced"] for r in rows.values()),
        bad_fences=sum(r["bad_fences"] for r in rows.values()),
        by_writers={
            w: {k: r[k] for k in ("acknowledged", "final_version", "fenced")}
            for w, r in rows.items()
        },
    )
