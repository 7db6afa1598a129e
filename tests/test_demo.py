"""The main job, end to end: what ``make demo`` runs, checked rather than only printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopaware_persist import open_persister
from loopaware_persist._demo import main


def test_demo_crashes_part_way_and_continues_on_the_worker_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    assert main(store) == 0
    out = capsys.readouterr().out
    # The child ran the first two steps and died before the third ...
    child, _, parent = out.partition("2) this process continues it")
    assert "step 'prepare' on thread 'MainThread'" in child
    assert "step 'compute' on thread 'MainThread'" in child
    assert "step 'summarise'" not in child
    assert "child died (status 75)" in child
    # ... and this process ran only the third, on the worker loop's thread.
    assert "step 'prepare'" not in parent
    assert "step 'summarise' on thread 'worker-loop'" in parent
    assert "'steps': ['compute', 'prepare', 'summarise']" in parent
    assert "every future in the process graph is on the worker loop" in parent
    for codec in ("msgpack", "pickle"):
        assert f"{codec}: resumed on the worker loop and finished with" in parent
    # The store holds the finished WorkChain's last checkpoint.
    with open_persister(store, allow=["loopaware_persist._demo"]) as persister:
        (info,) = persister.list_info()
        assert info.as_dict()["state"] == "finished"
