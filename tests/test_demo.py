"""The main job, end to end: what ``make demo`` runs, checked rather than only printed."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
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


@pytest.mark.parametrize(
    "store",
    [
        "mysql://alice:Sup3rSecret@db.example/x?password=Sup3rSecret",
        "sqlite:///{tmp}/app.db",  # another application's database
    ],
    ids=["unknown-scheme-with-password", "foreign-database"],
)
def test_demo_refuses_a_bad_store_in_one_line_without_a_password(
    tmp_path: Path, store: str
) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    repo = Path(__file__).resolve().parent.parent
    url = store.format(tmp=tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "loopaware_persist", "demo", "--store", url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "Sup3rSecret" not in output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("Error: ")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
