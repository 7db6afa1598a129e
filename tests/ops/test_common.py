"""What every operation shares: telling stores apart, opening one that must exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopaware_persist import (
    StorageError,
)
from loopaware_persist._ops import (
    open_store,
    pickle_dir_from_url,
    same_store,
)


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
