"""The CLI tests' fixtures: a store written by real processes, the same store without
its damaged records, and a plumpy ``PicklePersister`` directory."""

from __future__ import annotations

from pathlib import Path

import plumpy
import pytest

from tests.cli._support import (
    DOUBLER,
    FAILER,
    SLEEPER,
    Doubler,
    Failer,
    Sleeper,
    Store,
    build_store,
    drive,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh test store (see :func:`build_store`)."""
    return build_store(tmp_path / "store.db")


@pytest.fixture
def clean_store(store: Store) -> Store:
    """The test store without its corrupt and hostile records."""
    store.remove("corrupt", "hostile")
    return store


@pytest.fixture
def pickle_dir(tmp_path: Path) -> Path:
    """A real plumpy ``PicklePersister`` directory with three processes."""
    directory = tmp_path / "pickles"
    persister = plumpy.PicklePersister(str(directory))
    persister.save_checkpoint(drive(Sleeper, SLEEPER))
    persister.save_checkpoint(drive(Doubler, DOUBLER), tag="done")
    persister.save_checkpoint(drive(Failer, FAILER))
    return directory
