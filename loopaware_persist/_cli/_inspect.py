"""``ls``, ``show`` and ``verify``: the commands that only read a store."""

from __future__ import annotations

import sys
from typing import Any

import click

from .._errors import CheckpointNotFoundError
from .._ops import (
    Inspection,
    inspect_record,
    list_checkpoints,
    one_line,
    open_store,
    render_tree,
    resolve_pid,
    to_jsonable,
)
from ..storage import CheckpointKey
from ..storage._url import redact_url
from ._options import (
    Command,
    command_settings,
    common_options,
)
from ._output import (
    echo,
    format_size,
    format_time,
    key_label,
    print_damaged,
    print_json,
    print_listing,
    progress,
    state_text,
    style,
)


@click.command("ls", cls=Command)
@common_options()
@click.option("--pid", "pids", multiple=True, help="Only this pid (as shown, or i:/s:/u: form).")
@click.option("--state", "states", multiple=True, help="Only this state (waiting, excepted...).")
@click.option(
    "--class", "classes", multiple=True, help="Only this process class: module:Name, Name or glob."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def ls_command(
    ctx: click.Context,
    /,
    pids: tuple[str, ...],
    states: tuple[str, ...],
    classes: tuple[str, ...],
    as_json: bool,
    **_: Any,
) -> None:
    """List checkpoints from their headers (no payload is decoded).

    Filters repeat: any value of one filter matches, all filters must.
    """
    settings = command_settings(ctx)
    with open_store(settings.store, allow=settings.allow, read_only=True) as persister:
        infos = list_checkpoints(persister, pids=pids, states=states, classes=classes)
        damaged = [] if pids else persister.storage.find_damaged()
    print_damaged(damaged)
    if as_json:
        print_json([info.as_dict() for info in infos])
        return
    if not infos:
        echo(f"no checkpoints in {redact_url(settings.store)}", err=True)
        return
    print_listing(infos)


def _header_lines(found: Inspection) -> list[tuple[str, str]]:
    meta = dict(found.header.meta) if found.header is not None else {}
    codec = found.header.codec if found.header is not None else "?"
    if found.header is not None and found.header.compression:
        codec += f" ({found.header.compression})"
    saved = meta.get("saved_at")
    rows = [
        ("pid", str(found.key.pid)),
        ("tag", "-" if found.key.tag is None else found.key.tag),
        ("class", str(meta.get("process_class") or "?")),
        ("state", state_text(meta.get("state"))),
        ("codec", codec),
        ("version", str(found.version)),
        ("size", format_size(found.size)),
        ("saved", format_time(saved) if isinstance(saved, (int, float)) else "?"),
    ]
    if "converted_from" in meta:
        rows.append(("converted", str(meta["converted_from"])))
    return rows


@click.command(cls=Command)
@common_options()
@click.argument("pid")
@click.option("--tag", default=None, help="The checkpoint tag (default: the untagged one).")
@click.option("--json", "as_json", is_flag=True, help="Print the checkpoint as JSON.")
@click.option("--full", is_flag=True, help="Do not shorten long values and tracebacks.")
@click.option(
    "--show-unsafe",
    is_flag=True,
    help="Also print the tree of a checkpoint the audit refused (as inert data).",
)
@click.pass_context
def show(
    ctx: click.Context,
    /,
    pid: str,
    tag: str | None,
    as_json: bool,
    full: bool,
    show_unsafe: bool,
    **_: Any,
) -> None:
    """Show one checkpoint as a tree, decoded in safe mode.

    Futures show their status, exceptions their type and message. A checkpoint that
    names code outside the allow-list is refused (exit 1) and nothing of it is imported.
    """
    settings = command_settings(ctx)
    with open_store(settings.store, allow=settings.allow, read_only=True) as persister:
        stored_pid = resolve_pid(persister, pid)
        key = CheckpointKey(pid=stored_pid, tag=tag)
        try:
            found = inspect_record(persister, key)
        except CheckpointNotFoundError:
            tags = [r.key.tag for r in persister.storage.list(stored_pid)]
            shown = ", ".join("(untagged)" if t is None else repr(t) for t in tags)
            msg = (
                f"Pid {pid!r} has no checkpoint with tag {tag!r} in {redact_url(settings.store)}; "
                f"its checkpoints: {shown}. Pass --tag TAG."
            )
            raise CheckpointNotFoundError(msg, pid=stored_pid, tag=tag) from None
    tree_ok = found.bundle is not None and (found.ok or show_unsafe)
    if as_json:
        data = found.as_dict()
        data["header"] = dict(found.header.meta) if found.header is not None else None
        data["bundle"] = to_jsonable(found.bundle) if tree_ok else None
        print_json(data)
    else:
        for name, value in _header_lines(found):
            echo(f"{style(f'{name:<10}', bold=True)}{value}")
        if found.ok:
            echo(f"{style('audit     ', bold=True)}{style('ok', fg='green')}")
        else:
            label = f"{found.problem}: "
            echo(f"{style('audit     ', bold=True)}{style(label, fg='red')}{found.reason}")
        if tree_ok:
            encoding = getattr(sys.stdout, "encoding", None) or "ascii"
            try:
                "├└│".encode(encoding)
                ascii_only = False
            except (UnicodeEncodeError, LookupError):
                ascii_only = True
            echo()
            for line in render_tree(found.bundle, full=full, ascii_only=ascii_only):
                echo(line)
    if not found.ok:
        what = (
            "refused as unsafe; nothing of it was imported"
            if found.problem == "unsafe"
            else found.problem
        )
        hint = "" if found.bundle is None or show_unsafe else " (--show-unsafe prints it as data)"
        echo(f"checkpoint {key_label(key)}: {what}{hint}", err=True)
        ctx.exit(1)


@click.command(cls=Command)
@common_options()
@click.option("--pid", "pids", multiple=True, help="Only this pid. Repeatable.")
@click.option(
    "--load",
    is_flag=True,
    help="Also load each checkpoint onto a private loop as a restart would "
    "(runs load code of allowed classes only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.pass_context
def verify(
    ctx: click.Context, /, pids: tuple[str, ...], load: bool, as_json: bool, **_: Any
) -> None:
    """Decode and audit every checkpoint; exit 1 if any is corrupt, unsafe, undecodable,
    unreadable or (with --load) unloadable, or a damaged record was skipped by the listing.

    Every record is checked and reported; one bad record never stops the run.
    """
    settings = command_settings(ctx)
    results: list[Inspection] = []
    with open_store(settings.store, allow=settings.allow, read_only=True) as persister:
        keys = [info.key for info in list_checkpoints(persister, pids=pids)]
        # Records the listing skipped (a torn file header, a row of the wrong
        # types, a FIFO named like a checkpoint) are problems too.
        skipped = [] if pids else persister.storage.find_damaged()
        with progress(keys, "verifying") as items:
            for key in items:
                try:
                    results.append(inspect_record(persister, key, load=load))
                except CheckpointNotFoundError:
                    continue  # deleted since the listing
    problems = [found for found in results if not found.ok]
    bad = len(problems) + len(skipped)
    if as_json:
        print_json(
            {
                "store": redact_url(settings.store),
                "checked": len(results) + len(skipped),
                "ok": len(results) - len(problems),
                "problems": [found.as_dict() for found in problems],
                "skipped": [one_line(error) for error in skipped],
            }
        )
    else:
        for found in problems:
            label = style(f"{(found.problem or '').upper():<12}", fg="red", bold=True)
            echo(f"{label}{key_label(found.key)}: {found.reason}")
        for error in skipped:
            label = style(f"{'SKIPPED':<12}", fg="red", bold=True)
            echo(f"{label}{one_line(error)}")
        counts: dict[str, int] = {}
        for found in problems:
            counts[found.problem or "?"] = counts.get(found.problem or "?", 0) + 1
        if skipped:
            counts["skipped (damaged, not listable)"] = len(skipped)
        detail = ", ".join(f"{n} {problem}" for problem, n in sorted(counts.items()))
        summary = (
            f"checked {len(results) + len(skipped)} checkpoint(s): "
            f"{len(results) - len(problems)} ok"
        )
        summary += f", {detail}" if detail else ""
        echo(style(summary, fg="red" if bad else "green"))
    if bad:
        ctx.exit(1)
