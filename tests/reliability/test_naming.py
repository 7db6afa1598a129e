"""Figure 7: naming. Hypothesis over pids (int, UUID, str with ``.`` ``/`` ``..`` NUL and
unicode) and tags: no two keys share a file name (or a SQLite row), and no name
resolves outside the storage root.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from hypothesis import given, settings, strategies as st

from loopaware_persist.storage import CheckpointKey, open_storage
from loopaware_persist.storage.file import checkpoint_filename
from tests.axes import LOCAL_STORAGES, local_store_url

from ._support import BUDGET_S, HEAVY, Budget, figure

_TRICKY = st.sampled_from(
    [
        ".",
        "..",
        "/",
        "../",
        "/..",
        "\x00",
        "a/b",
        "..\x00",
        "A",
        "a",
        "%2f",
        "%",
        "~",
        ".t",
        "é",
        "e\u0301",
        "\u212a",
        "K",
        "k",
        "\U0001f600",
        " ",
        "\\",
        ":",
        "i:1",
        "s:",
        ".ckpt",
        "x" * 300,
    ]
)
TEXT = st.lists(st.one_of(_TRICKY, st.text(max_size=8)), max_size=4).map("".join)
PIDS = st.one_of(st.integers(), st.uuids(), TEXT, st.integers(-10, 10).map(str))
TAGS = st.one_of(st.none(), TEXT)
KEYS = st.builds(CheckpointKey, PIDS, TAGS)
EXAMPLES = 2000 if HEAVY else 300
#: Examples a loaded machine still checks in the time budget.
MIN_EXAMPLES = 30


def _budgeted(examples: int, seconds: float) -> Budget:
    """A budget for a hypothesis test: hypothesis cannot stop on time, so examples drawn
    after the deadline return at once, unchecked, and only the checked ones count."""
    return Budget(examples, MIN_EXAMPLES, seconds=seconds)


def _spend(budget: Budget) -> bool:
    """:return: whether the next example may run (counting it), or the budget is spent"""
    if budget.ran >= budget.count or time.monotonic() > budget.started + budget.seconds:
        return False
    budget.ran += 1
    return True


def _inside(root: Path, name: str) -> bool:
    resolved = os.path.realpath(os.path.join(root, name))
    return os.path.dirname(resolved) == os.path.realpath(root)


def test_names_are_injective_and_confined(tmp_path: Path) -> None:
    seen: dict[str, CheckpointKey] = {}
    stats = {"keys": 0, "collisions": 0, "outside_root": 0, "bad_name": 0}
    budget = _budgeted(EXAMPLES, BUDGET_S / 2)

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(st.lists(KEYS, min_size=1, max_size=8))
    def check(keys: list[CheckpointKey]) -> None:
        if not _spend(budget):
            return
        for key in keys:
            stats["keys"] += 1
            name = checkpoint_filename(key)
            other = seen.setdefault(name, key)
            if other != key:
                stats["collisions"] += 1
            if not _inside(tmp_path, name):
                stats["outside_root"] += 1
            if "/" in name or "\x00" in name or name.startswith(".") or len(name) > 255:
                stats["bad_name"] += 1
            assert name == name.lower(), "case-insensitive file systems would merge names"

    check()
    assert stats["collisions"] == stats["outside_root"] == stats["bad_name"] == 0, stats
    figure("naming_filenames", distinct_names=len(seen), campaign=budget.report(), **stats)
    budget.check()


def test_round_trip_through_storages(tmp_path: Path) -> None:
    stats: dict[str, Any] = {"keys": 0, "collisions": 0, "outside_root": 0}
    root = tmp_path / "files"
    urls = {
        s: local_store_url(s, tmp_path, "files" if s == "file" else "n") for s in LOCAL_STORAGES
    }
    stores = {name: open_storage(url) for name, url in urls.items()}
    budget = _budgeted(EXAMPLES // 3, BUDGET_S / 2)
    try:

        @settings(max_examples=EXAMPLES // 3, deadline=None, database=None)
        @given(st.lists(KEYS, min_size=1, max_size=6, unique=True))
        def check(keys: list[CheckpointKey]) -> None:
            if not _spend(budget):
                return
            for store in stores.values():
                for i, key in enumerate(keys):
                    store.put(key, str(i).encode())
                for i, key in enumerate(keys):
                    stats["keys"] += 1
                    if store.get(key).data != str(i).encode():
                        stats["collisions"] += 1
                listed = {info.key for info in store.list()}
                stats["collisions"] += len(set(keys) ^ listed)
                for key in keys:
                    assert store.delete(key)
            stats["outside_root"] += sum(
                1
                for p in tmp_path.rglob("*")
                if not (p == root or root in p.parents)
                and p.name not in ("n.db", "n.db-wal", "n.db-shm")
            )

        check()
    finally:
        for store in stores.values():
            store.close()
    assert stats["collisions"] == stats["outside_root"] == 0, stats
    figure("naming_storages", storages=sorted(urls), campaign=budget.report(), **stats)
    budget.check()


def test_uuid_and_int_pids_stay_apart() -> None:
    u = uuid.UUID(int=12)
    names = {checkpoint_filename(CheckpointKey(p)) for p in (12, "12", u, str(u), u.hex)}
    assert len(names) == 5
