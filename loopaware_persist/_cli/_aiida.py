"""``loopaware-persist aiida ...``: the AiiDA commands (the ``aiida`` extra).

AiiDA is imported only when one of them runs, so the rest of the CLI works without the
extra. ``worker`` runs one AiiDA daemon worker in the foreground
(:func:`~loopaware_persist.aiida.run_daemon_worker`); ``daemon start`` starts AiiDA's
daemon (circus) with such workers (:func:`~loopaware_persist.aiida.start_daemon`);
``migrate`` moves a profile's YAML checkpoints (:func:`~loopaware_persist.aiida.migrate`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ._options import Command, Group, command_settings

__all__ = ("aiida_group", "migrate_command")

_F = TypeVar("_F", bound=Callable[..., Any])


def _worker_options(func: _F) -> _F:
    """The options every worker takes; ``daemon start`` passes them on to its workers."""
    options = [
        click.option(
            "--store",
            default=None,
            metavar="URL",
            help="Where records live: aiida:// (default, in each ProcessNode), "
            "sqlite:///PATH or postgresql://…",
        ),
        click.option(
            "--allow",
            multiple=True,
            metavar="MODULE",
            help="A module a checkpoint may import (your WorkChains, CalcJobs and the "
            "value classes they hold). Repeatable.",
        ),
        click.option(
            "--codec",
            type=click.Choice(["msgpack", "pickle"]),
            default="msgpack",
            show_default=True,
        ),
        click.option(
            "--compression",
            type=click.Choice(["zlib", "zstd", "none"]),
            default="zlib",
            show_default=True,
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_PROFILE = click.option(
    "--profile", "-p", default=None, help="The AiiDA profile (default: the default profile)."
)


@click.group("aiida", cls=Group)
def aiida_group() -> None:
    """AiiDA: daemon workers that checkpoint through loopaware_persist, and migrating a
    profile's checkpoints (needs the aiida extra)."""


@aiida_group.command(cls=Command)
@_PROFILE
@_worker_options
def worker(
    profile: str | None,
    store: str | None,
    allow: tuple[str, ...],
    codec: str,
    compression: str,
) -> None:
    """Run one AiiDA daemon worker in the foreground, until SIGTERM or SIGINT.

    AiiDA's own worker (the profile's broker, slots and logging) with this persister.
    Run several beside each other, or under `loopaware-persist aiida daemon start`.
    """
    from ..aiida._daemon import run_daemon_worker

    run_daemon_worker(
        profile,
        store,
        allow=allow,
        codec=codec,
        compression=None if compression == "none" else compression,
    )


@aiida_group.group(cls=Group)
def daemon() -> None:
    """AiiDA's daemon (circus), with loopaware_persist workers.

    Once started, manage it with verdi: `verdi daemon status|incr|decr|stop|logshow`.
    """


@daemon.command()
@_PROFILE
@click.argument("number", type=int, default=1)
@click.option("--foreground", is_flag=True, help="Run circus in this process (one worker).")
@click.option("--timeout", type=int, default=None, help="Seconds to wait for the daemon.")
@_worker_options
def start(
    profile: str | None,
    number: int,
    foreground: bool,
    timeout: int | None,
    store: str | None,
    allow: tuple[str, ...],
    codec: str,
    compression: str,
) -> None:
    """Start AiiDA's daemon with NUMBER loopaware_persist workers."""
    from ..aiida._circus import start_daemon

    if number < 1:
        msg = f"{number} is not a positive number of workers"
        raise click.BadParameter(msg, param_hint="NUMBER")
    start_daemon(
        profile,
        number,
        store=store,
        allow=allow,
        codec=codec,
        compression=None if compression == "none" else compression,
        foreground=foreground,
        timeout=timeout,
    )
    click.echo(f"Started the daemon with {number} loopaware_persist worker(s).")


@daemon.command("start-circus", hidden=True)
@_PROFILE
@click.argument("number", type=int)
@click.option("--foreground", is_flag=True)
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def start_circus(
    profile: str | None, number: int, foreground: bool, options: tuple[str, ...]
) -> None:
    """Run the circus arbiter (what `daemon start` runs in the background)."""
    from ..aiida._circus import run_circus

    run_circus(profile, number, options, foreground=foreground)


def _line(result: Any) -> str:
    colour = {"migrated": "green", "dry-run": "cyan", "skipped": None}.get(result.status, "red")
    status = click.style(f"{result.status.upper():<9}", fg=colour, bold=colour == "red")
    what = result.process_class or ""
    reason = f" {result.reason}" if result.reason else ""
    return f"{status} {result.pk:>8} {what}{reason}"


@aiida_group.command("migrate", cls=Command)
@click.option("--profile", default=None, help="The AiiDA profile (default: the default one).")
@click.option(
    "--store",
    metavar="URL",
    default=None,
    help="aiida:// (default: each record in its ProcessNode), or sqlite:///… / postgresql://… "
    "(records keyed by the profile's UUID).",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="MODULE",
    help="Module (or module:Class) of your processes and their values. Repeatable.",
)
@click.option("--codec", default="msgpack", show_default=True, help="Codec of the records.")
@click.option(
    "--compress",
    type=click.Choice(["none", "zlib", "zstd"]),
    default="zlib",
    show_default=True,
    help="Compression of the records.",
)
@click.option(
    "--back",
    is_flag=True,
    help="Write the store's checkpoints back as AiiDA YAML, and remove them.",
)
@click.option(
    "--trust",
    is_flag=True,
    help="Read AiiDA YAML with AiiDA's own unsafe loader: runs whatever it names.",
)
@click.option("--dry-run", is_flag=True, help="Read, convert and check; write nothing.")
@click.option(
    "--prune",
    is_flag=True,
    help="Only drop the YAML backups earlier migrations kept in the nodes (after it, --back "
    "writes every checkpoint from its record).",
)
@click.option("--pk", "pks", multiple=True, type=int, help="Only this ProcessNode. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.pass_context
def migrate_command(
    ctx: click.Context,
    /,
    profile: str | None,
    store: str | None,
    codec: str,
    compress: str,
    back: bool,
    trust: bool,
    dry_run: bool,
    prune: bool,
    pks: tuple[int, ...],
    as_json: bool,
    **_: Any,
) -> None:
    """Move an AiiDA profile's YAML checkpoints into STORE (or, with --back, out of it).

    Stop the profile's daemon first. Nothing a checkpoint names is run: AiiDA's own tags
    are read by a safe loader and the rest is refused, per process. Each record is read
    back and checked before the YAML leaves the node; the YAML is kept in the node's
    extra until --prune. Run it again after an interruption: it finishes the job.
    Exit code 1 if a process was refused or failed.
    """
    from ..aiida._migrate import migrate, prune_backups

    if prune:
        pruned = prune_backups(profile, dry_run=dry_run)
        if as_json:
            click.echo(json.dumps({"pruned": pruned}))
        else:
            verb = "would drop" if dry_run else "dropped"
            click.echo(f"{verb} the YAML backup of {len(pruned)} node(s)")
        return
    if trust:
        warning = (
            "--trust: AiiDA YAML is read with AiiDA's unsafe loader, which runs whatever a "
            "checkpoint names. Use it only for a database you trust."
        )
        click.echo(click.style(f"WARNING {warning}", fg="red", bold=True), err=True)
    results = migrate(
        profile,
        store,
        allow=command_settings(ctx).allow,
        codec=codec,
        compression=None if compress == "none" else compress,
        back=back,
        trust=trust,
        dry_run=dry_run,
        pks=pks or None,
        progress=None if as_json else lambda result: click.echo(_line(result)),
    )
    counts = dict.fromkeys(("migrated", "dry-run", "skipped", "refused", "failed"), 0)
    for result in results:
        counts[result.status] += 1
    done = [r.seconds for r in results if r.status in ("migrated", "dry-run")]
    per = 1000 * sum(done) / len(done) if done else 0.0
    bad = counts["refused"] + counts["failed"]
    if as_json:
        report = {**counts, "ms_per_checkpoint": per, "results": [r.as_dict() for r in results]}
        click.echo(json.dumps(report, indent=2))
    else:
        summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        where = "AiiDA YAML" if back else (store or "aiida://")
        text = f"{summary or 'nothing to migrate'} -> {where} ({per:.0f} ms per checkpoint)"
        click.echo(click.style(text, fg="red" if bad else "green"))
    if bad:
        ctx.exit(1)
