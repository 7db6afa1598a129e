"""Migrating checkpoints AiiDA's own AiiDAPersister wrote, and back.

Checkpoints come from real ParentChain runs "crashed" mid-way with AiiDA's persister
(the default one: nothing is installed), are migrated, then resumed by ours to the same
outputs and provenance; ``back=True`` writes them for AiiDA's persister again.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plumpy
import pytest
from aiida import orm
from aiida.engine.persistence import AiiDAPersister
from aiida.manage import get_manager

from loopaware_persist import UnsafeLoadWarning
from loopaware_persist.aiida import installed
from loopaware_persist.aiida._migrate import BACKUP_EXTRA, _Migration, migrate, prune_backups
from loopaware_persist.aiida._storage import RECORD_PREFIX
from loopaware_persist.aiida._yaml import dump_aiida_yaml, load_aiida_yaml_unsafe
from tests.aiida.helpers import ALLOW, creator_chain_reaches
from tests.aiida.workchains import CRASH, Crash, ParentChain

pytestmark = pytest.mark.usefixtures("profile")


PG_URL = os.environ.get("LOOPAWARE_TEST_POSTGRES_URL")


@pytest.fixture(
    params=[
        "aiida://",
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(not PG_URL, reason="LOOPAWARE_TEST_POSTGRES_URL is not set"),
        ),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "aiida://":
        yield None
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ck.db"
    else:
        import psycopg

        assert PG_URL is not None
        schema = f"lap_migrate_{uuid.uuid4().hex[:10]}"
        parts = urllib.parse.urlsplit(PG_URL)
        query = urllib.parse.urlencode([*urllib.parse.parse_qsl(parts.query), ("schema", schema)])
        yield urllib.parse.urlunsplit(parts._replace(query=query))
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


def aiida_crashed(*, at: int, rounds: int = 2) -> orm.WorkChainNode:
    """ParentChain crashed in round ``at``, checkpointed by AiiDA's own persister."""
    runner = get_manager().get_runner()
    assert type(runner.persister) is AiiDAPersister
    CRASH["at"] = at
    process = runner.instantiate_process(
        ParentChain, x=orm.Int(1), rounds=orm.Int(rounds), big=orm.Bool(True)
    )
    with pytest.raises(Crash):
        process.execute()
    CRASH["at"] = None
    process.close()
    node: orm.WorkChainNode = process.node
    assert isinstance(node.checkpoint, str)
    assert node.checkpoint.startswith("!plumpy:bundle")
    return node


def resume_with_ours(store: str | None, pk: int, *, crash_at: int | None = None) -> Any:
    with installed(store=store, allow=ALLOW) as persister:
        runner = get_manager().get_runner()
        process = persister.load_checkpoint(pk).unbundle(plumpy.LoadSaveContext(runner=runner))
        CRASH["at"] = crash_at
        try:
            if crash_at is None:
                process.execute()
            else:
                with pytest.raises(Crash):
                    process.execute()
        finally:
            CRASH["at"] = None
        process.close()
        return process


def resume_with_aiida(pk: int) -> None:
    runner = get_manager().get_runner()
    assert type(runner.persister) is AiiDAPersister
    bundle = AiiDAPersister().load_checkpoint(pk)
    process = bundle.unbundle(plumpy.LoadSaveContext(runner=runner))
    process.execute()


def only(pks: list[int], results: list[Any]) -> dict[int, Any]:
    return {r.pk: r for r in results if r.pk in pks}


def test_migrated_checkpoints_resume_with_the_same_outputs_and_provenance(
    store: str | None,
) -> None:
    node = aiida_crashed(at=1)
    ctx_before = load_aiida_yaml_unsafe(node.checkpoint)["CONTEXT"]
    original = node.checkpoint
    results = only([node.pk], migrate(store=store, allow=ALLOW, pks=[node.pk]))
    assert results[node.pk].status == "migrated", results
    assert results[node.pk].process_class == "tests.aiida.workchains:ParentChain"
    node = orm.load_node(node.pk)
    if store is None:
        assert node.checkpoint.startswith(RECORD_PREFIX)
    else:
        assert node.checkpoint is None
    assert node.base.extras.get(BACKUP_EXTRA)["yaml"] == original
    # AiiDA's own persister cannot pick up a migrated process by mistake: no checkpoint
    # (another store), or a string that is no bundle (aiida://).
    try:
        loaded = AiiDAPersister().load_checkpoint(node.pk)
    except plumpy.PersistenceError:
        loaded = None
    assert not isinstance(loaded, dict)

    with installed(store=store, allow=ALLOW) as persister:
        runner = get_manager().get_runner()
        process = persister.load_checkpoint(node.pk).unbundle(plumpy.LoadSaveContext(runner=runner))
        ctx = process.ctx
        assert ctx["total"].pk == ctx_before["total"].pk
        assert [n.pk for n in ctx["history"]] == [n.pk for n in ctx_before["history"]]
        assert type(ctx["attrs"]).__name__ == "AttributeDict"
        assert ctx["attrs"].nested.n == 2
        assert dict(ctx["plain"]) == {"a": 1, "b": [1, 2, 3], "c": "text"}
        assert len(ctx["table"]) == 1000
        process.execute()
    assert node.is_finished_ok, node.exit_status
    assert node.outputs.total.value == 3
    assert node.outputs.child.value == 6
    assert creator_chain_reaches(node.outputs.total, {node.inputs.x.pk})
    assert node.outputs.total.creator.caller.pk == node.pk


def test_rerun_is_idempotent_and_dry_run_writes_nothing(store: str | None) -> None:
    node = aiida_crashed(at=1)
    original = node.checkpoint
    (dry,) = migrate(store=store, allow=ALLOW, pks=[node.pk], dry_run=True)
    assert dry.status == "dry-run"
    assert orm.load_node(node.pk).checkpoint == original
    assert orm.load_node(node.pk).base.extras.get(BACKUP_EXTRA, None) is None
    (first,) = migrate(store=store, allow=ALLOW, pks=[node.pk])
    assert first.status == "migrated"
    (again,) = migrate(store=store, allow=ALLOW, pks=[node.pk])
    assert again.status == "skipped"
    with installed(store=store, allow=ALLOW) as persister:
        assert [i.version for i in persister.storage.list(node.pk)] == [1]


class Interrupted(BaseException):
    """Stands for Ctrl-C or a killed migration."""


def test_an_interrupted_migration_finishes_on_the_next_run(
    store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = aiida_crashed(at=1), aiida_crashed(at=0)
    original = second.checkpoint
    swap = _Migration._swap

    def die_on_second(self: _Migration, pk: int, *args: Any) -> None:
        if pk == second.pk:  # after the record of `second` is written (another store)
            raise Interrupted
        swap(self, pk, *args)

    monkeypatch.setattr(_Migration, "_swap", die_on_second)
    with pytest.raises(Interrupted):
        migrate(store=store, allow=ALLOW, pks=[first.pk, second.pk])
    # Never half: the first is migrated, the second still holds its YAML, untouched.
    assert orm.load_node(second.pk).checkpoint == original
    assert orm.load_node(second.pk).base.extras.get(BACKUP_EXTRA, None) is None
    monkeypatch.undo()
    results = only([first.pk, second.pk], migrate(store=store, allow=ALLOW))
    assert results[second.pk].status == "migrated"
    assert first.pk not in results or results[first.pk].status == "skipped"
    for node in (first, second):
        resume_with_ours(store, node.pk)
        assert orm.load_node(node.pk).is_finished_ok


def _tampered(marker: Path) -> dict[str, Any]:
    """Ways to make an AiiDA checkpoint run ``touch marker`` when AiiDA loads it."""

    def apply_in_context(text: str) -> str:
        return text.replace(
            "\n  i: 1\n", f'\n  i: 1\n  evil: !!python/object/apply:os.system ["touch {marker}"]\n'
        )

    def enum_in_context(text: str) -> str:
        return text.replace("\n  i: 1\n", f"\n  i: 1\n  evil: !enum 'os:system|touch {marker}'\n")

    def apply_in_inputs_raw(text: str) -> str:
        bundle = load_aiida_yaml_unsafe(text)
        bundle["INPUTS_RAW"] = f'!!python/object/apply:os.system ["touch {marker}"]'
        return dump_aiida_yaml(bundle)

    return {
        "python/object/apply in checkpoints": apply_in_context,
        "enum os:system in checkpoints": enum_in_context,
        "python/object/apply in INPUTS_RAW": apply_in_inputs_raw,
    }


def test_hostile_checkpoints_are_refused_per_process_and_run_nothing(
    store: str | None, marker: Path
) -> None:
    clean = aiida_crashed(at=1)
    hostile: dict[int, tuple[str, str]] = {}
    for name, tamper in _tampered(marker).items():
        node = aiida_crashed(at=1)
        text = tamper(node.checkpoint)
        assert text != node.checkpoint
        node.set_checkpoint(text)
        hostile[node.pk] = (name, text)
    results = only([clean.pk, *hostile], migrate(store=store, allow=ALLOW))
    assert not marker.exists()
    assert results[clean.pk].status == "migrated"
    for pk, (name, text) in hostile.items():
        assert results[pk].status == "refused", (name, results[pk])
        assert "nothing was run" in str(results[pk].reason).lower()
        node = orm.load_node(pk)
        assert node.checkpoint == text  # left as it was
        assert node.base.extras.get(BACKUP_EXTRA, None) is None
    assert "INPUTS_RAW" in str(results[max(hostile)].reason)
    resume_with_ours(store, clean.pk)
    assert orm.load_node(clean.pk).is_finished_ok


@pytest.mark.parametrize(
    "name", ["python/object/apply in checkpoints", "enum os:system in checkpoints"]
)
def test_pinned_aiidas_own_loader_runs_them(marker: Path, name: str) -> None:
    node = aiida_crashed(at=1)
    text = _tampered(marker)[name](node.checkpoint)
    node.set_checkpoint(text)
    load_aiida_yaml_unsafe(text)
    assert marker.exists()


def test_trust_loads_the_old_way_loudly(store: str | None, marker: Path) -> None:
    node = aiida_crashed(at=1)
    node.set_checkpoint(_tampered(marker)["enum os:system in checkpoints"](node.checkpoint))
    with pytest.warns(UnsafeLoadWarning, match="runs whatever they name"):
        (result,) = migrate(store=store, allow=ALLOW, pks=[node.pk], trust=True)
    assert marker.exists()  # that is what trust means
    assert result.status == "migrated"  # os.system's return value, 0, is in the context
    with installed(store=store, allow=ALLOW) as persister:
        assert persister.load_checkpoint(node.pk)["CONTEXT"]["evil"] == 0


def test_back_restores_the_original_yaml_byte_for_byte(store: str | None) -> None:
    node = aiida_crashed(at=1)
    original = node.checkpoint
    migrate(store=store, allow=ALLOW, pks=[node.pk])
    (result,) = migrate(store=store, allow=ALLOW, back=True, pks=[node.pk])
    assert result.status == "migrated"
    assert "original YAML" in str(result.reason)
    node = orm.load_node(node.pk)
    assert node.checkpoint == original
    assert node.base.extras.get(BACKUP_EXTRA, None) is None
    with installed(store=store, allow=ALLOW) as persister:
        assert persister.storage.list(node.pk) == []
    resume_with_aiida(node.pk)
    assert node.is_finished_ok
    assert node.outputs.child.value == 6


def test_back_after_our_persister_advanced_resumes_with_aiidas_persister(
    store: str | None,
) -> None:
    node = aiida_crashed(at=1, rounds=3)
    migrate(store=store, allow=ALLOW, pks=[node.pk])
    resume_with_ours(store, node.pk, crash_at=2)  # one more round, checkpointed by us
    assert node.pk in prune_backups()
    assert orm.load_node(node.pk).base.extras.get(BACKUP_EXTRA, None) is None
    (result,) = migrate(store=store, allow=ALLOW, back=True, pks=[node.pk])
    assert result.status == "migrated", result
    assert "serialize" in str(result.reason)
    node = orm.load_node(node.pk)
    text = node.checkpoint
    # Exactly what AiiDAPersister writes for the state it reads from it.
    assert text == dump_aiida_yaml(load_aiida_yaml_unsafe(text))
    assert load_aiida_yaml_unsafe(text)["CONTEXT"]["i"] == 2
    resume_with_aiida(node.pk)
    assert node.is_finished_ok, node.exit_status
    assert node.outputs.total.value == 4
    assert node.outputs.child.value == 8
    assert creator_chain_reaches(node.outputs.total, {node.inputs.x.pk})


def test_prune_keeps_backups_of_nodes_holding_yaml() -> None:
    node = aiida_crashed(at=1)
    node.base.extras.set(BACKUP_EXTRA, {"yaml": "stale"})
    with warnings.catch_warnings():
        assert node.pk not in prune_backups()
    assert node.base.extras.get(BACKUP_EXTRA) == {"yaml": "stale"}


def test_the_command_line(store: str | None, profile: Any, marker: Path) -> None:
    from click.testing import CliRunner

    from loopaware_persist._cli import cli

    node, hostile = aiida_crashed(at=1), aiida_crashed(at=1)
    hostile.set_checkpoint(_tampered(marker)["enum os:system in checkpoints"](hostile.checkpoint))
    common = ["--profile", profile.name, "--allow", "tests.aiida"]
    common += ["--store", store] if store else []
    runner = CliRunner()
    dry = runner.invoke(cli, ["aiida", "migrate", *common, "--pk", str(node.pk), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "DRY-RUN" in dry.output
    assert "ms per checkpoint" in dry.output
    both = ["--pk", str(node.pk), "--pk", str(hostile.pk)]
    done = runner.invoke(cli, ["aiida", "migrate", *common, *both, "--json"])
    assert done.exit_code == 1, done.output  # one refused
    report = json.loads(done.output)
    assert (report["migrated"], report["refused"]) == (1, 1)
    assert not marker.exists()
    back = runner.invoke(cli, ["aiida", "migrate", *common, "--pk", str(node.pk), "--back"])
    assert back.exit_code == 0, back.output
    resume_with_aiida(node.pk)
    assert node.is_finished_ok
    pruned = runner.invoke(
        cli, ["aiida", "migrate", "--profile", profile.name, "--prune", "--dry-run"]
    )
    assert pruned.exit_code == 0, pruned.output
    assert "would drop" in pruned.output


def _run_until(loop: asyncio.AbstractEventLoop, done: Any, *coros: Any) -> None:
    """Run ``coros`` as tasks on ``loop`` until ``done()``; then drop the loop with them."""
    tasks = [loop.create_task(coro) for coro in coros]

    async def wait() -> None:
        while not done():
            assert not any(t.done() for t in tasks), [t.result() for t in tasks if t.done()]
            await asyncio.sleep(0.01)

    loop.run_until_complete(asyncio.wait_for(wait(), 60))
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def test_a_workchain_waiting_on_its_child_migrates_and_resumes(store: str | None) -> None:
    """AiiDA writes the ToContext awaitable with !!python/object/apply (Awaitable and its
    enums): the safe loader takes exactly those; parent and child resume with ours."""
    from aiida.engine.runners import Runner

    from tests.aiida.waiting_chains import CHILD, WaitingParent

    # A runner of our own, on a loop thrown away after the "crash": the dead parent's
    # poll for its child must not outlive it. AiiDA's persister, polling fast.
    loop = asyncio.new_event_loop()
    try:
        runner = Runner(poll_interval=0.01, loop=loop, persister=AiiDAPersister())
        parent = runner.instantiate_process(WaitingParent, x=orm.Int(7))
        CHILD["crash"] = True
        _run_until(loop, lambda: CHILD["crashed"], parent.step_until_terminated())
        runner.close()
    finally:
        CHILD.update(crash=False, crashed=False)
        loop.close()
    node = orm.load_node(parent.pid)
    (child,) = node.called
    assert "awaitable.Awaitable" in node.checkpoint
    assert isinstance(child.checkpoint, str)
    results = only([node.pk, child.pk], migrate(store=store, allow=ALLOW))
    assert [results[pk].status for pk in (node.pk, child.pk)] == ["migrated"] * 2, results

    loop = asyncio.new_event_loop()
    try:
        with installed(store=store, allow=ALLOW) as persister:
            runner = Runner(poll_interval=0.01, loop=loop, persister=persister)
            context = plumpy.LoadSaveContext(runner=runner)
            processes = [
                persister.load_checkpoint(pk).unbundle(context) for pk in (node.pk, child.pk)
            ]
            assert processes[0].ctx["attrs"]["tags"] == ["a", "b"]

            async def finish() -> None:
                await asyncio.gather(*(p.step_until_terminated() for p in processes))

            loop.run_until_complete(asyncio.wait_for(finish(), 60))
            runner.close()
    finally:
        loop.close()
    assert child.is_finished_ok
    assert node.is_finished_ok, node.exit_status
    assert node.outputs.child.value == 21
    assert node.outputs.child.pk == child.outputs.result.pk


def test_refused_while_the_daemon_runs(profile: Any) -> None:
    from aiida.engine.daemon.client import DaemonClient

    from loopaware_persist import OpsError

    node = aiida_crashed(at=1)
    original = node.checkpoint
    pid_file = Path(DaemonClient(profile).circus_pid_file)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(os.getpid()))  # what 'verdi daemon start' leaves
    try:
        with pytest.raises(OpsError, match="verdi daemon stop"):
            migrate(allow=ALLOW, pks=[node.pk])
        (dry,) = migrate(allow=ALLOW, pks=[node.pk], dry_run=True)
        assert dry.status == "dry-run"
    finally:
        pid_file.unlink()
    assert orm.load_node(node.pk).checkpoint == original


def test_a_checkpoint_that_would_not_resume_is_not_migrated(store: str | None) -> None:
    """The record is unbundled as a resume would; an outline position the WorkChain does
    not have (an edited outline, a damaged checkpoint) fails there, before any write."""
    node = aiida_crashed(at=1)
    text = node.checkpoint.replace("\n  _pos: 1\n", "\n  _pos: 99\n", 1)
    assert text != node.checkpoint
    node.set_checkpoint(text)
    (result,) = migrate(store=store, allow=ALLOW, pks=[node.pk])
    assert result.status == "failed"
    assert "does not unbundle" in str(result.reason)
    assert orm.load_node(node.pk).checkpoint == text
    assert orm.load_node(node.pk).base.extras.get(BACKUP_EXTRA, None) is None


@pytest.mark.parametrize("big", [False, True])
def test_leaving_after_starting_with_ours(store: str | None, big: bool) -> None:
    """A process checkpointed only by this package goes back to AiiDA's persister."""
    from tests.aiida.helpers import crashed_run

    with installed(store=store, allow=ALLOW):
        node = crashed_run(at=1, big=big)
    assert node.base.extras.get(BACKUP_EXTRA, None) is None
    (result,) = migrate(store=store, allow=ALLOW, back=True, pks=[node.pk])
    assert result.status == "migrated", result
    text = orm.load_node(node.pk).checkpoint
    assert text.startswith("!plumpy:bundle")
    resume_with_aiida(node.pk)
    assert node.is_finished_ok, node.exit_status
    assert node.outputs.total.value == 3
    assert creator_chain_reaches(node.outputs.total, {node.inputs.x.pk})


def test_a_paused_process_migrates_paused(store: str | None) -> None:
    runner = get_manager().get_runner()
    assert type(runner.persister) is AiiDAPersister
    process = runner.instantiate_process(ParentChain, x=orm.Int(1))
    assert process.pause()
    process.close()
    node = orm.load_node(process.pid)
    assert node.paused
    assert "plumpy.persistence:SavableFuture" in node.checkpoint.split("_paused:")[1]
    (result,) = migrate(store=store, allow=ALLOW, pks=[node.pk])
    assert result.status == "migrated", result
    with installed(store=store, allow=ALLOW) as persister:
        runner = get_manager().get_runner()
        resumed = persister.load_checkpoint(node.pk).unbundle(plumpy.LoadSaveContext(runner=runner))
        assert resumed.paused
        resumed.play()
        resumed.execute()
    assert node.is_finished_ok, node.exit_status
    assert node.outputs.total.value == 3
    assert not node.paused


def test_a_calcjob_waiting_on_its_scheduler_migrates_and_finishes(store: str | None) -> None:
    """AiiDA's own ArithmeticAddCalculation, submitted to localhost's scheduler, its worker
    gone while it waits for the job: migrated, it is retrieved and parsed by ours."""
    from aiida.engine import ProcessState
    from aiida.engine.runners import Runner
    from aiida.plugins import CalculationFactory

    allow: tuple[str, ...] = ()  # aiida-core's own CalcJob: AIIDA_PROCESSES, no allow= entry
    code = orm.InstalledCode(
        label=f"bash-{uuid.uuid4().hex[:8]}",
        computer=orm.load_computer("localhost"),
        filepath_executable="/bin/bash",
    ).store()
    inputs = {
        "code": code,
        "x": orm.Int(1),
        "y": orm.Int(2),
        "metadata": {"options": {"resources": {"num_machines": 1}}},
    }
    loop = asyncio.new_event_loop()
    try:
        runner = Runner(poll_interval=0.01, loop=loop, persister=AiiDAPersister())
        process = runner.instantiate_process(CalculationFactory("core.arithmetic.add"), **inputs)
        node = process.node

        def submitted() -> bool:
            return bool(node.process_state == ProcessState.WAITING and node.get_job_id())

        _run_until(loop, submitted, process.step_until_terminated())
        runner.close()
    finally:
        loop.close()
    assert "calcjobs.tasks:Waiting" in node.checkpoint
    (result,) = migrate(store=store, allow=allow, pks=[node.pk])
    assert result.status == "migrated", result

    loop = asyncio.new_event_loop()
    try:
        with installed(store=store, allow=allow) as persister:
            runner = Runner(poll_interval=0.01, loop=loop, persister=persister)
            resumed = persister.load_checkpoint(node.pk).unbundle(
                plumpy.LoadSaveContext(runner=runner)
            )

            async def finish() -> None:
                await resumed.step_until_terminated()

            loop.run_until_complete(asyncio.wait_for(finish(), 60))
            runner.close()
    finally:
        loop.close()
    assert node.is_finished_ok, node.exit_status
    assert node.outputs.sum.value == 3


@pytest.mark.parametrize(
    "kwargs", [{"trust": "no"}, {"back": 1}, {"dry_run": None}, {"pks": ["12"]}]
)
def test_arguments_of_the_wrong_type_are_refused(kwargs: dict[str, Any]) -> None:
    from loopaware_persist import ArgumentTypeError

    with pytest.raises(ArgumentTypeError):
        migrate(allow=ALLOW, **kwargs)


def test_a_checkpoint_holding_node_links_managers_migrates_and_resumes(store: str | None) -> None:
    """AiiDA writes ``self.ctx.res = child.outputs`` as ``!aiida_node_links_manager``;
    before the registry had a hook for it, such a checkpoint failed to migrate."""
    from aiida.common.links import LinkType
    from aiida.orm.utils.managers import NodeLinksManager

    from tests.aiida.workchains import LinksChain

    runner = get_manager().get_runner()
    assert type(runner.persister) is AiiDAPersister
    CRASH["at"] = 0
    process = runner.instantiate_process(LinksChain, x=orm.Int(4))
    try:
        with pytest.raises(Crash):
            process.execute()
    finally:
        CRASH["at"] = None
    child = process.ctx.child
    node: orm.WorkChainNode = process.node
    process.close()
    assert node.checkpoint is not None
    assert "!aiida_node_links_manager" in node.checkpoint

    (result,) = migrate(store=store, allow=ALLOW, pks=[node.pk])
    assert result.status == "migrated", result
    with installed(store=store, allow=ALLOW) as persister:
        runner = get_manager().get_runner()
        resumed = persister.load_process(node.pk, loop=runner.loop, runner=runner)
        res = resumed.ctx["res"]
        assert type(res) is NodeLinksManager
        assert (res._node.uuid, res._link_type, res._incoming) == (
            child.uuid,
            LinkType.RETURN,
            False,
        )
        assert resumed.ctx["ins"]._incoming is True
        resumed.execute()
    assert node.is_finished_ok, node.exit_status
    assert node.outputs.result.pk == child.outputs.result.pk
