"""``rm`` and ``prune``: delete checkpoints, shown first and confirmed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import click

from .._errors import CheckpointNotFoundError
from .._ops import (
    delete_keys,
    list_checkpoints,
    open_store,
    parse_duration,
    plan_prune,
    resolve_pid,
)
from .._persister import LoopAwarePersister
from ..storage import CheckpointInfo
from ..storage._url import redact_url
from ._options import (
    Command,
    F,
    command_settings,
    common_options,
)
from ._output import (
    echo,
    print_json,
    print_listing,
)


def _delete(
    ctx: click.Context,
    persister: LoopAwarePersister,
    infos: Sequence[CheckpointInfo],
    *,
    yes: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    url = persister.storage.url
    if not infos:
        if as_json:
            print_json({"store": url, "dry_run": dry_run, "deleted": []})
        else:
            echo("nothing to delete", err=True)
        return
    if dry_run:
        if as_json:
            print_json({"store": url, "dry_run": True, "deleted": [e.as_dict() for e in infos]})
        else:
            echo(f"would delete {len(infos)} checkpoint(s) from {url}:")
            print_listing(infos)
        return
    if not yes:
        echo(f"about to delete {len(infos)} checkpoint(s) from {url}:", err=True)
        print_listing(infos, err=True)
        click.confirm(f"Delete these {len(infos)} checkpoint(s)?", abort=True, err=True)
    deleted = delete_keys(persister, [e.key for e in infos])
    if as_json:
        print_json({"store": url, "dry_run": False, "deleted": [e.as_dict() for e in infos]})
    else:
        echo(f"deleted {deleted} checkpoint(s) from {url}")


def _deletion_options(fn: F) -> F:
    fn = click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")(fn)
    fn = click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")(fn)
    fn = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(fn)
    return fn


@click.command(cls=Command)
@common_options()
@click.argument("pid")
@click.option("--tag", default=None, help="Delete only this tag's checkpoint.")
@click.option("--untagged", is_flag=True, help="Delete only the untagged checkpoint.")
@_deletion_options
@click.pass_context
def rm(
    ctx: click.Context,
    /,
    pid: str,
    tag: str | None,
    untagged: bool,
    yes: bool,
    dry_run: bool,
    as_json: bool,
    **_: Any,
) -> None:
    """Delete the checkpoints of PID (all of them, or one with --tag / --untagged)."""
    if tag is not None and untagged:
        msg = "--tag and --untagged each name one checkpoint; give one of them."
        raise click.UsageError(msg)
    settings = command_settings(ctx)
    with open_store(settings.store, allow=settings.allow, read_only=False) as persister:
        stored_pid = resolve_pid(persister, pid)
        infos = persister.list_info(stored_pid)
        if tag is not None or untagged:
            infos = [e for e in infos if e.key.tag == tag]
            if not infos:
                msg = (
                    f"Pid {pid!r} has no checkpoint with tag {tag!r} in "
                    f"{redact_url(settings.store)}. "
                    "Run 'loopaware-persist ls --pid PID' to see its tags."
                )
                raise CheckpointNotFoundError(msg, pid=stored_pid, tag=tag)
        _delete(ctx, persister, infos, yes=yes, dry_run=dry_run, as_json=as_json)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command(cls=Command)
@common_options()
@click.option("--keep", type=click.IntRange(min=0), default=None, help="Keep the newest N per pid.")
@click.option(
    "--older-than",
    default=None,
    callback=_duration,
    metavar="DURATION",
    help="Only delete checkpoints saved longer ago than this (30m, 12h, 7d, 2w).",
)
@click.option(
    "--include-untagged",
    is_flag=True,
    help="Let the untagged checkpoint (the one a restart continues from) be pruned too.",
)
@click.option("--pid", "pids", multiple=True, help="Only this pid. Repeatable.")
@click.option("--state", "states", multiple=True, help="Only this state. Repeatable.")
@click.option("--class", "classes", multiple=True, help="Only this process class. Repeatable.")
@_deletion_options
@click.pass_context
def prune(
    ctx: click.Context,
    /,
    keep: int | None,
    older_than: float | None,
    include_untagged: bool,
    pids: tuple[str, ...],
    states: tuple[str, ...],
    classes: tuple[str, ...],
    yes: bool,
    dry_run: bool,
    as_json: bool,
    **_: Any,
) -> None:
    """Delete old tagged checkpoints: beyond the newest --keep N per pid, older than --older-than.

    With both, a checkpoint goes only if it is beyond the newest N *and* older.
    Ages come from when the process was saved (kept across a convert).
    """
    if keep is None and older_than is None:
        msg = "Say what to prune: --keep N and/or --older-than DURATION."
        raise click.UsageError(msg)
    settings = command_settings(ctx)
    with open_store(settings.store, allow=settings.allow, read_only=False) as persister:
        infos = list_checkpoints(persister, pids=pids, states=states, classes=classes)
        doomed = plan_prune(
            infos,
            keep=keep,
            older_than=older_than,
            now=time.time(),
            include_untagged=include_untagged,
        )
        _delete(ctx, persister, doomed, yes=yes, dry_run=dry_run, as_json=as_json)
