"""Figures 2, 4 and 6 on PostgreSQL: real kills, malformed input, the hostile corpus.

The same campaigns as ``test_kills``, ``test_malformed`` and ``test_hostile_corpus``,
with their generators and corpora, against the real server of
``LOOPAWARE_TEST_POSTGRES_URL`` (skipped locally without it, a failure under CI).
Each test works in a schema of its own, dropped afterwards, so nothing collides with
other tests using the same database.

* malformed input: seeded mutations of real records are written into the table,
  half through the storage's ``put`` and half by SQL ``UPDATE`` of the ``data``
  column (as another program or a damaged page would), in a subprocess capped at
  1 GiB of address space. Every load must raise a typed ``LoopAwarePersistError``
  (or return exactly the original): 0 silent wrong loads.
* hostile corpus: >= 50 crafted checkpoints stored in PostgreSQL and driven through
  every read path, the worker's ``FencingPersister`` included, in a fresh
  interpreter: 0 executions, no module imported.
* kills: a forked writer saves in a loop and acknowledges each version after ``put``
  returned; it is SIGKILLed at random moments: 0 corrupt records, 0 acknowledged
  saves lost.

Run as ``python -m tests.reliability.test_postgres_reliability malformed|hostile ...``
for the subprocess halves.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import plumpy
import pytest

from loopaware_persist import (
    LoopAwareLauncher,
    UnsafeCheckpointError,
    open_persister,
)
from loopaware_persist.storage import CheckpointKey

from ._fuzz_worker import DAMAGE_KINDS
from ._support import (
    ALLOW,
    BUDGET_S,
    CODECS,
    HEAVY,
    HEAVY_TIMEOUT,
    Budget,
    canonical,
    figure,
    new_loop,
    postgres_schema,
    postgres_schema_url,
    postgres_url,
    real_records,
    record_for,
)

pytestmark = [pytest.mark.timeout(HEAVY_TIMEOUT), pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
MALFORMED_COUNT = 50_000 if HEAVY else 5_000
#: What a loaded machine still reaches in the budget (each load is a server round trip).
MIN_MALFORMED = 20_000 if HEAVY else 1_500
SEED = 20261125
ADDRESS_SPACE = 1 << 30


# region malformed input


def _malformed(
    codec: str, url: str, schema: str, count: int, seed: int, seconds: float
) -> dict[str, Any]:
    """The campaign itself (in the capped subprocess): one JSON-able dict of counts."""
    import psycopg

    from ._fuzz_worker import KEY, PID, classify, mutations

    rng = random.Random(f"{seed}-{codec}-postgresql")
    records = [data for _, data in real_records(codec, (None, "zlib", "zstd"), pid=PID)]
    outcomes: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    written: Counter[str] = Counter()
    silent_wrong = identical = 0
    examples: list[str] = []
    update = f'UPDATE "{schema}".checkpoints SET data = %s, size = %s, version = version + 1'
    with (
        open_persister(postgres_schema_url(url, schema), codec=codec, allow=[ALLOW]) as per,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        originals = [canonical(per, data) for data in records]
        per.storage.put(KEY, records[0])  # the row the SQL writes damage
        budget = Budget(count, 0, seconds=seconds)
        for i, (kind, _index, data) in zip(budget, mutations(records, count, rng), strict=False):
            by_kind[kind] += 1
            if i % 2:
                per.storage.put(KEY, data)
                written["storage.put"] += 1
            else:
                conn.execute(update, (data, len(data)))
                written["sql update"] += 1
            try:
                loaded = per.load_checkpoint(PID)
            except BaseException as error:
                outcome = classify(error)
                if outcome.startswith(("untyped", "other")) and len(examples) < 5:
                    examples.append(f"{kind}: {outcome}")
            else:
                if per.codec.encode(dict(loaded)) in originals:
                    outcome = "loaded identical"
                    identical += 1
                else:
                    outcome = "SILENT WRONG LOAD"
                    silent_wrong += 1
            outcomes[outcome] += 1
            try:
                # Listings read headers and keys only: damage in the payload never
                # breaks them.
                per.get_checkpoints()
                per.list_info()
            except BaseException as error:
                outcomes[f"listing {classify(error)}"] += 1
    total = sum(outcomes.values())
    untyped = sum(v for k, v in outcomes.items() if k.startswith(("untyped", "other", "Mem")))
    return {
        "codec": codec,
        "storage": "postgresql",
        "mutations": total,
        "campaign": budget.report(),
        "written_via": dict(written),
        "by_kind": dict(by_kind),
        "corrupt_error": outcomes["CorruptCheckpointError"],
        "named_valid_record": outcomes["UnsafeCheckpointError"] + outcomes["UnknownTagError"],
        "loaded_identical": identical,
        "silent_wrong_loads": silent_wrong,
        "memory_errors": outcomes["MemoryError"],
        "other": {
            k: v for k, v in outcomes.items() if k.startswith(("untyped", "other", "listing"))
        },
        "typed_pct": round(100.0 * (total - untyped) / total, 3),
        "examples": examples,
    }


@pytest.mark.parametrize("codec", CODECS)
def test_malformed_input_on_postgresql(codec: str) -> None:
    url = postgres_url()
    with postgres_schema(url, "lap_rel_fuzz") as schema:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.reliability.test_postgres_reliability",
                "malformed",
                codec,
                url,
                schema,
                str(MALFORMED_COUNT),
                str(SEED),
                str(BUDGET_S),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=HEAVY_TIMEOUT,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["interpreter_errors_on_stderr"] = proc.stderr.count("SystemError")
    r["campaign"]["minimum"] = MIN_MALFORMED  # the subprocess runs; this test judges
    figure("malformed_input", address_space_limit="1GiB", seed=SEED, **r)
    total = r["mutations"]
    assert total == r["campaign"]["ran"]
    assert total >= MIN_MALFORMED, r["campaign"]
    assert set(r["by_kind"]) == set(DAMAGE_KINDS), r["by_kind"]
    assert r["written_via"]["storage.put"] > 0
    assert r["written_via"]["sql update"] > 0
    assert r["memory_errors"] == 0, r
    assert r["silent_wrong_loads"] == 0, r
    assert r["other"] == {}, r  # every refusal is a typed LoopAwarePersistError
    assert r["corrupt_error"] + r["named_valid_record"] + r["loaded_identical"] == total, r
    assert r["corrupt_error"] >= 0.99 * total, r


# endregion

# region hostile corpus


def _hostile(tmp: Path, url: str, schema: str) -> dict[str, Any]:
    """The corpus of ``_hostile_worker``, stored in PostgreSQL (in a fresh interpreter)."""
    from loopaware_persist._fencing import open_fencing_persister

    from ._hostile_worker import _warm_up, corpus, judge, plant_evil_module

    marker, evil = plant_evil_module(tmp)
    hostile = corpus(str(marker), evil)
    records = {name: (data, expected) for name, (_codec, data, expected) in hostile.items()}
    launch_bodies = {
        f"{kind} {cls}": {"task": kind, "args": {"process_class": cls}}
        for kind in ("launch", "create")
        for cls in ("os:system", "builtins:exec", "subprocess:Popen", f"{evil}:Thing", f"{evil}:f")
    }

    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    paths = 0
    store = postgres_schema_url(url, schema)
    with (
        new_loop() as b,
        # Both codecs accepted, so pickle gadgets reach the restricted unpickler; the
        # worker's persister accepts msgpack only and refuses them by codec.
        open_persister(store, allow=[ALLOW], accept=CODECS) as per,
        open_fencing_persister(store, allow=[ALLOW]) as fencing,
    ):
        _warm_up(per, b)
        _warm_up(fencing, b)
        launcher = LoopAwareLauncher(per, loop=b)
        before = set(sys.modules)
        for name, (data, expected) in records.items():
            key = CheckpointKey(name)
            per.storage.put(key, data)
            attempts = {
                "load_checkpoint": lambda key=key: per.load_checkpoint(key.pid),
                "Bundle.unbundle": lambda key=key: per.load_checkpoint(key.pid).unbundle(
                    plumpy.LoadSaveContext(loop=b)
                ),
                "load_process": lambda key=key: per.load_process(key.pid, loop=b),
                # The worker's read path: a claim must never follow a refused load.
                "FencingPersister.load_process": lambda key=key: fencing.load_process(
                    key.pid, loop=b
                ),
            }
            paths += judge(name, expected, attempts, outcomes, wrong)
            # A refused load claimed nothing: the record is the one written.
            if per.storage.get(key).data != data:
                wrong.append(f"{name}: the stored record changed")
        listed = {c.pid for c in per.get_checkpoints()}
        if not all(name in listed for name in records):
            wrong.append("listing lost a record")
        if [i for i in per.list_info() if i.error]:
            wrong.append("a hostile payload broke a header read")
        for name, body in launch_bodies.items():
            paths += 1
            try:
                launcher(None, body)
            except UnsafeCheckpointError:
                outcomes["UnsafeCheckpointError"] += 1
            except BaseException as error:
                outcomes[f"untyped {type(error).__name__}"] += 1
                wrong.append(f"{name}: {type(error).__name__}: {error}"[:300])
            else:
                wrong.append(f"{name}: accepted")
        new_modules = sorted(set(sys.modules) - before)
    return {
        "storage": "postgresql",
        "checkpoints": len(records),
        "launch_bodies": len(launch_bodies),
        "load_attempts": paths,
        "outcomes": dict(outcomes),
        "executions": int(marker.exists()),
        "evil_module_imported": evil in sys.modules,
        "new_modules": new_modules,
        "wrong": wrong[:20],
        "wrong_count": len(wrong),
    }


def test_hostile_corpus_from_postgresql(tmp_path: Path) -> None:
    url = postgres_url()
    with postgres_schema(url, "lap_rel_hostile") as schema:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.reliability.test_postgres_reliability",
                "hostile",
                str(tmp_path),
                url,
                schema,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=HEAVY_TIMEOUT,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    outcomes = result["outcomes"]
    refused = outcomes.get("UnsafeCheckpointError", 0) + outcomes.get("UnknownTagError", 0)
    inert = outcomes.get("inert bundle returned (audited on unbundle)", 0)
    line = figure(
        "hostile_corpus",
        refused_pct=round(100.0 * refused / (result["load_attempts"] - inert), 3),
        **result,
    )
    assert line["checkpoints"] >= 50
    assert line["executions"] == 0
    assert line["evil_module_imported"] is False
    assert line["new_modules"] == []
    assert line["wrong_count"] == 0, line["wrong"]
    assert line["refused_pct"] == 100.0
    assert not (tmp_path / "MARKER").exists()


# endregion

# region kills


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_sigkill_writer_on_postgresql(durability: str) -> None:
    from .test_kills import KEY, KILLS, MIN_KILLS, kill_campaign

    url = postgres_url()
    rng = random.Random(f"kills-postgresql-{durability}")
    with open_persister("memory://", allow=[ALLOW]) as enc:
        records = [record_for(enc, KEY.pid, i) for i in range(3)]
    with postgres_schema(url, "lap_rel_kills") as schema:
        store = postgres_schema_url(url, schema)
        with open_persister(store, allow=[ALLOW]):
            pass  # creates the schema once, before the writers race to
        # PostgreSQL takes longer to connect: wait for an acknowledgement more often.
        budget = Budget(KILLS, MIN_KILLS)
        tally = kill_campaign(
            store, records, durability, rng, budget=budget, first_acks=(0, 1, 1, 2, 5)
        )
    last_ack = tally.last_ack
    line = figure(
        "real_kills",
        storage="postgresql",
        durability=durability,
        sigkills=budget.ran,
        campaign=budget.report(),
        acknowledged_saves=tally.acked,
        final_version=last_ack,
        corrupt=tally.corrupt,
        acknowledged_saves_lost=tally.lost,
        unacknowledged_in_flight_save_landed=tally.in_flight_landed,
        writers_killed_while_stalled=tally.stalled,
    )
    assert line["corrupt"] == line["acknowledged_saves_lost"] == 0
    assert last_ack > 0
    budget.check()


# endregion


def main(argv: list[str]) -> None:
    """The subprocess halves: ``malformed CODEC URL SCHEMA COUNT SEED SECONDS`` (under a 1 GiB
    address-space cap) or ``hostile TMP URL SCHEMA``; each prints one JSON line."""
    command, *args = argv
    if command == "malformed":
        codec, url, schema, count, seed, seconds = args
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
        result = _malformed(codec, url, schema, int(count), int(seed), float(seconds))
    elif command == "hostile":
        tmp, url, schema = args
        result = _hostile(Path(tmp), url, schema)
    else:
        msg = f"unknown command {command!r}"
        raise SystemExit(msg)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
