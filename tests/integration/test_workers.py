"""Issue 7's scenarios: real worker processes, a real broker, a real PostgreSQL store."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from loopaware_persist import StaleCheckpointError
from loopaware_persist._client import WorkerClient
from loopaware_persist._errors import FencedError
from loopaware_persist._fencing import open_fencing_persister
from loopaware_persist.storage import CheckpointKey

from .conftest import (
    ALLOW,
    DEADLINE,
    ROOT,
    Workers,
    fenced_in,
    hostile_task_messages,
    publish_raw,
    side_lines,
    wait_for,
)
from .processes import Double, Steps

pytestmark = pytest.mark.integration


def _expected_total(x: int, n: int) -> int:
    return sum(x * i for i in range(n))


def test_three_workers_two_hundred_processes_every_reply_arrives(
    workers: Workers, client: WorkerClient, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    procs = workers.start(3, store=postgres_url, prefetch=8)
    started = time.perf_counter()
    # 120 launched, 80 created then continued: 200 processes.
    launched = {i: client.launch(Double, {"x": i}) for i in range(120)}
    created = {i: client.create(Steps, {"x": i, "n": 3}) for i in range(80)}
    pids = {i: future.result(timeout=DEADLINE) for i, future in created.items()}
    continued = {i: client.continue_(pid) for i, pid in pids.items()}

    replies = 0
    ran_on: collections.Counter[int] = collections.Counter()
    for i, future in launched.items():
        outputs = future.result(timeout=DEADLINE)
        assert outputs["doubled"] == 2 * i
        ran_on[outputs["worker"]] += 1
        replies += 1
    for i, future in continued.items():
        outputs = future.result(timeout=DEADLINE)
        assert outputs["total"] == _expected_total(i, 3)
        assert outputs["loop_checked"] is True
        ran_on.update(outputs["trail"])
        replies += 1
    elapsed = time.perf_counter() - started

    assert replies == 200  # 0 replies lost
    assert set(ran_on) == {p.pid for p in procs}  # the broker spread them over all three
    # Every process's final checkpoint is in the store, terminated.
    with open_fencing_persister(postgres_url, allow=ALLOW) as persister:
        states = {info.pid: info.as_dict().get("state") for info in persister.list_info()}
    for future in launched.values():
        assert states[future.pid] == "finished"  # type: ignore[attr-defined]
    for pid in pids.values():
        assert states[pid] == "finished"
    with capsys.disabled():
        print(
            f"\n[throughput] 200 processes (280 tasks), 3 workers: {200 / elapsed:.1f} processes/s"
        )


def test_sigkilled_worker_task_is_redelivered_and_resumes_from_the_checkpoint(
    workers: Workers, client: WorkerClient, postgres_url: str, tmp_path: Path
) -> None:
    workers.start(2, store=postgres_url, prefetch=1)
    side, gate = tmp_path / "side", tmp_path / "gate"
    inputs = {"x": 3, "n": 5, "side": str(side), "gate": str(gate), "gate_step": 2}
    pid = client.create(Steps, inputs).result(timeout=DEADLINE)
    future = client.continue_(pid)

    # Step 2 has started: the checkpoint after step 1 is stored.
    first = wait_for(
        lambda: [r for r in side_lines(side) if r[1:3] == (2, "start")], "step 2 to start"
    )
    victim = workers.by_pid(first[0][3])  # type: ignore[index]
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait()
    # RabbitMQ redelivers the unacknowledged task to the other worker.
    second = wait_for(
        lambda: [r for r in side_lines(side) if r[1:3] == (2, "start") and r[3] != victim.pid],
        "the redelivered task to reach step 2 on the other worker",
    )
    survivor = second[0][3]  # type: ignore[index]
    gate.touch()

    outputs = future.result(timeout=DEADLINE)
    assert outputs["total"] == _expected_total(3, 5)
    assert outputs["trail"] == [victim.pid, victim.pid, survivor, survivor, survivor]
    done = collections.Counter(
        (step, os_pid) for _, step, event, os_pid, _ in side_lines(side) if event == "done"
    )
    # Steps before the checkpoint ran once, on the killed worker; none was re-run.
    assert done == {
        (0, victim.pid): 1,
        (1, victim.pid): 1,
        (2, survivor): 1,
        (3, survivor): 1,
        (4, survivor): 1,
    }


def test_sigterm_stops_at_the_last_checkpoint_and_another_worker_continues(
    workers: Workers, client: WorkerClient, postgres_url: str, tmp_path: Path
) -> None:
    (first,) = workers.start(1, store=postgres_url, prefetch=1, grace=0.2)
    side, gate = tmp_path / "side", tmp_path / "gate"
    inputs = {"x": 5, "n": 4, "side": str(side), "gate": str(gate), "gate_step": 1}
    pid = client.create(Steps, inputs).result(timeout=DEADLINE)
    future = client.continue_(pid)
    wait_for(lambda: [r for r in side_lines(side) if r[1:3] == (1, "start")], "step 1 to start")

    first.popen.send_signal(signal.SIGTERM)
    assert first.popen.wait(timeout=DEADLINE) == 0  # a clean exit, while a process was running
    log = first.text()
    assert fenced_in(log, pid, "shutdown")  # stopped without saving again
    assert "stopping them at their last checkpoint" in log
    assert f"worker {first.pid} stopped" in log

    (second,) = workers.start(1, store=postgres_url, prefetch=1)
    wait_for(
        lambda: [r for r in side_lines(side) if r[1:3] == (1, "start") and r[3] == second.pid],
        "the requeued task to reach step 1 on the new worker",
    )
    gate.touch()
    outputs = future.result(timeout=DEADLINE)
    assert outputs["total"] == _expected_total(5, 4)
    assert outputs["trail"] == [first.pid, second.pid, second.pid, second.pid]
    done = [(step, os_pid) for _, step, event, os_pid, _ in side_lines(side) if event == "done"]
    assert done == [(0, first.pid), (1, second.pid), (2, second.pid), (3, second.pid)]


def test_two_workers_given_the_same_pid_the_stale_one_is_fenced(
    workers: Workers, client: WorkerClient, postgres_url: str, tmp_path: Path
) -> None:
    workers.start(2, store=postgres_url, prefetch=1)
    side, gate = tmp_path / "side", tmp_path / "gate"
    inputs = {"x": 2, "n": 3, "side": str(side), "gate": str(gate), "gate_step": 0}
    pid = client.create(Steps, inputs).result(timeout=DEADLINE)
    # Two continue tasks for one pid, as a redelivery after consumer_timeout makes;
    # with prefetch=1 each worker takes one. The first copy to load holds step 0
    # until the gate opens, so the other loads while it runs: whichever read the older
    # version is fenced, either at its claim (a worker saves a process right after
    # loading it) or at its first save after the gate opens.
    futures = [client.continue_(pid), client.continue_(pid)]

    def collided() -> bool:
        starts = {r[4] for r in side_lines(side) if r[1:3] == (0, "start")}
        return len(starts) == 2 or fenced_in(workers.logs(), pid, "stale")

    wait_for(collided, "the second copy to claim the pid or be fenced")
    gate.touch()

    results = [future.result(timeout=DEADLINE) for future in futures]
    for outputs in results:
        assert outputs["total"] == _expected_total(2, 3)
        assert outputs["copies"] == results[0]["copies"]  # one history, whoever replied
    wait_for(lambda: fenced_in(workers.logs(), pid, "stale"), "the fence log")
    # One copy owns the whole stored history: the fenced one never overwrote a step...
    chain = results[0]["copies"]
    assert len(chain) == 3
    assert len(set(chain)) == 1
    # ...and stopped: at most the step it was running when fenced was done (wasted).
    for copy in {r[4] for r in side_lines(side)} - set(chain):
        done = [r[1] for r in side_lines(side) if r[4] == copy and r[2] == "done"]
        assert len(done) <= 1, (copy, done)


def test_fencing_persister_stale_writer_stops_without_overwriting(
    postgres_url: str, tmp_path: Path
) -> None:
    # The same race, driven step by step in one process, to look at the store itself.
    loop_a, loop_b = asyncio.new_event_loop(), asyncio.new_event_loop()
    side = tmp_path / "side"
    try:
        with (
            open_fencing_persister(postgres_url, allow=ALLOW) as a,
            open_fencing_persister(postgres_url, allow=ALLOW) as b,
        ):

            async def create() -> str:
                process = Steps(inputs={"x": 1, "n": 3, "side": str(side)}, pid=uuid.uuid4().hex)
                a.save_checkpoint(process)
                return str(process.pid)

            pid = loop_a.run_until_complete(create())

            async def load(persister: object, loop: asyncio.AbstractEventLoop) -> Steps:
                return persister.load_process(pid, loop=loop)  # type: ignore[attr-defined, no-any-return]

            proc_a = loop_a.run_until_complete(load(a, loop_a))
            proc_b = loop_b.run_until_complete(load(b, loop_b))
            loop_b.run_until_complete(proc_b.step_until_terminated())
            assert proc_b.future().result()["total"] == 3
            key = CheckpointKey(pid=pid)
            winner = b.storage.get(key)

            loop_a.run_until_complete(proc_a.step_until_terminated())
            error = proc_a.future().exception()
            assert isinstance(error, FencedError)
            assert isinstance(error, StaleCheckpointError)
            assert a.fenced(proc_a) is error
            after = a.storage.get(key)
            assert after.version == winner.version  # nothing written
            assert after.data == winner.data
            # The stale copy ran no step: its first save (entering RUNNING) was refused.
            assert [r[1:3] for r in side_lines(side)] == [
                (i, e) for i in range(3) for e in ("start", "done")
            ]
            assert {r[4] for r in side_lines(side)} == {proc_b._copy}
    finally:
        loop_a.close()
        loop_b.close()


def test_hostile_messages_are_refused_and_nothing_runs(
    workers: Workers,
    client: WorkerClient,
    postgres_url: str,
    amqp_url: str,
    queue: str,
    tmp_path: Path,
) -> None:
    (worker,) = workers.start(1, store=postgres_url, prefetch=1)
    marker = tmp_path / "marker"
    publish_raw(amqp_url, queue, hostile_task_messages(marker))
    # With prefetch=1 the next task is delivered only once the hostile ones were
    # acknowledged (dropped), not left on the channel.
    assert client.launch(Double, {"x": 5}).result(timeout=DEADLINE)["doubled"] == 10
    assert not marker.exists()
    log = worker.text()
    assert log.count("Refused a ") >= 2
    assert "Refusing the 'launch' task for process_class 'os:system'" in log
    assert worker.alive()


def test_postgres_killed_and_restarted_mid_run(
    workers: Workers, client: WorkerClient, tmp_path: Path
) -> None:
    # A private cluster, so the crash does not disturb anyone else's server.
    state, env = tmp_path / "pg.state", tmp_path / "pg.env"
    scripts = ROOT / ".ci" / "servers"
    out = subprocess.run(
        ["bash", str(scripts / "start-postgres.sh"), "--state", str(state), "--env", str(env)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    url = out.stdout.strip().splitlines()[-1].split("=", 1)[1]
    try:
        n_processes, gate_step = 12, 2
        workers.start(2, store=url, prefetch=n_processes)
        side, gate = tmp_path / "side", tmp_path / "gate"
        inputs = {"n": 4, "side": str(side), "gate": str(gate), "gate_step": gate_step}
        futures = {x: client.launch(Steps, {**inputs, "x": x}) for x in range(n_processes)}
        wait_for(
            lambda: (
                len({r[0] for r in side_lines(side) if r[1:3] == (gate_step, "start")})
                == n_processes
            ),
            "every process to reach the gated step",
        )
        subprocess.run(
            [
                "bash",
                str(scripts / "stop-postgres.sh"),
                "--state",
                str(state),
                "--env",
                str(env),
                "--crash",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        gate.touch()  # every process now finishes its step and saves into a dead server
        wait_for(
            lambda: "store unavailable" in workers.logs(), "a save to fail with the server down"
        )
        subprocess.run(
            ["bash", str(scripts / "start-postgres.sh"), "--state", str(state), "--env", str(env)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        for x, future in futures.items():
            outputs = future.result(timeout=DEADLINE)
            assert outputs["total"] == _expected_total(x, 4)
            assert len(outputs["trail"]) == 4
        done = collections.Counter(
            (pid, step) for pid, step, event, _, _ in side_lines(side) if event == "done"
        )
        pids = {pid for pid, _ in done}
        assert len(pids) == n_processes
        for pid in pids:
            # Acknowledged checkpoints survived the crash: steps before it never re-ran.
            assert done[pid, 0] == 1
            assert done[pid, 1] == 1
            assert done[pid, gate_step] >= 1
    finally:
        subprocess.run(
            ["bash", str(scripts / "stop-postgres.sh"), "--state", str(state), "--env", str(env)],
            check=False,
            capture_output=True,
            timeout=60,
        )
