"""The ``loopaware-persist`` command line (click, as AiiDA's ``verdi``).

Operators inspect, verify, convert and prune checkpoint stores without running
the code the checkpoints name: every read decodes in safe mode with the
allow-list (``--allow MODULE``) and audits the bundle as data. The work itself
lives in :mod:`loopaware_persist._ops`; this module parses, prints and exits.

Conventions: the store is ``--store URL`` (on the group or on each command),
else ``$LOOPAWARE_PERSIST_STORE``, else ``sqlite:///checkpoints.db``. Exit code
0 on success, 1 on an error or when a check finds problems, 2 on a usage error
(as click does). An error is one line on stderr saying what to do, unless
``--debug`` asks for the traceback. Colour and progress bars appear only on a
terminal (and ``NO_COLOR`` turns colour off); listings take ``--json``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import click

from ._errors import CheckpointNotFoundError, LoopAwarePersistError
from ._ops import (
    PLUMPY_PICKLE_SCHEME,
    Converter,
    ConvertResult,
    Entry,
    Inspection,
    PickleSource,
    Source,
    StoreSource,
    check_store_exists,
    delete_keys,
    inspect_record,
    list_entries,
    parse_duration,
    pickle_dir_from_url,
    plan_prune,
    render_tree,
    resolve_pid,
    same_store,
    to_jsonable,
)
from ._persister import LoopAwarePersister, open_persister
from .codecs import available_codecs
from .storage import CheckpointKey, open_storage
from .storage._url import redact_url

__all__ = ("cli", "main")

DEFAULT_STORE = "sqlite:///checkpoints.db"
STORE_ENV = "LOOPAWARE_PERSIST_STORE"
ALLOW_ENV = "LOOPAWARE_PERSIST_ALLOW"

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_STATE_COLOURS = {
    "finished": "green",
    "waiting": "yellow",
    "running": "cyan",
    "created": "cyan",
    "excepted": "red",
    "killed": "magenta",
    "damaged": "red",
}


@attrs.frozen(kw_only=True)
class _Settings:
    store: str
    allow: tuple[str, ...]
    debug: bool


# region plumbing: settings, errors, output


def _group_settings(ctx: click.Context) -> _Settings:
    found = ctx.find_object(_Settings)
    if found is not None:
        return found
    return _Settings(store=os.environ.get(STORE_ENV) or DEFAULT_STORE, allow=(), debug=False)


def _settings(ctx: click.Context) -> _Settings:
    """Merge the command's own ``--store/--allow/--debug`` over the group's."""
    group = _group_settings(ctx)
    store = ctx.params.get("store")
    return _Settings(
        store=store if store else group.store,
        allow=(*group.allow, *ctx.params.get("allow", ())),
        debug=group.debug or bool(ctx.params.get("debug")),
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class _Command(click.Command):
    """A command whose errors are one line on stderr (exit 1), or a traceback with ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if _settings(ctx).debug:
                raise
            if isinstance(error, (LoopAwarePersistError, OSError, ModuleNotFoundError)):
                message = _one_line(error) or type(error).__name__
            else:
                message = (
                    f"unexpected {type(error).__name__}: {_one_line(error)} "
                    "(rerun with --debug for the traceback and report it)"
                )
            raise click.ClickException(message) from None


class _Group(click.Group):
    command_class = _Command


def _common(*, store: bool = True) -> Callable[[F], F]:
    """Add the per-command ``--store``, ``--allow`` and ``--debug`` options."""

    def decorate(fn: F) -> F:
        fn = click.option("--debug", is_flag=True, help="Show the traceback of an error.")(fn)
        fn = click.option(
            "--allow",
            multiple=True,
            metavar="MODULE",
            help="Module (or module:Class) a decode may import, besides plumpy's. Repeatable.",
        )(fn)
        if store:
            fn = click.option(
                "--store",
                metavar="URL",
                default=None,
                help=f"Store URL (overrides the group's --store and ${STORE_ENV}).",
            )(fn)
        return fn

    return decorate


def _echo(text: str = "", *, err: bool = False) -> None:
    click.echo(text, err=err)


def _style(text: str, **kwargs: Any) -> str:
    # click.echo strips the codes when the stream is not a terminal.
    return click.style(text, **kwargs)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextmanager
def _progress(items: Sequence[T], label: str) -> Iterator[Iterable[T]]:
    """A progress bar on stderr when it is a terminal; the bare items otherwise."""
    stream = sys.stderr
    if not _is_terminal(stream) or not items:
        yield items
        return
    with click.progressbar(items, label=label, file=stream) as bar:
        yield bar


def _when(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _state_text(state: str | None) -> str:
    label = state or "?"
    colour = _STATE_COLOURS.get(label)
    return _style(label, fg=colour) if colour else label


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, err: bool = False) -> None:
    """Print an aligned table; cells may carry colour codes (ignored when aligning)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(click.unstyle(cell)))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell + " " * (widths[i] - len(click.unstyle(cell))) for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    _echo(_style(line(headers), bold=True), err=err)
    for row in rows:
        _echo(line(row), err=err)


def _entry_row(entry: Entry) -> list[str]:
    data = entry.as_dict()
    codec = data["codec"] or "?"
    if data["compression"]:
        codec += f"+{data['compression']}"
    return [
        data["pid"],
        "-" if data["tag"] is None else data["tag"],
        data["process_class"] or "?",
        _state_text(entry.state),
        _size(data["size"]),
        codec,
        str(data["version"]),
        _when(entry.saved_at),
    ]


_ENTRY_HEADERS = ("PID", "TAG", "CLASS", "STATE", "SIZE", "CODEC", "VER", "SAVED (UTC)")


def _print_entries(entries: Sequence[Entry], *, err: bool = False) -> None:
    _table(_ENTRY_HEADERS, [_entry_row(e) for e in entries], err=err)
    for entry in entries:
        if entry.info.error is not None:
            _echo(
                _style(f"! {entry.key.pid} tag={entry.key.tag!r}: {entry.info.error}", fg="red"),
                err=err,
            )


#: What the commands read: an operator inspects or converts a store whatever safe codec
#: wrote it (both load through the allow-list; trusted=True is never implied).
READ_CODECS = ("msgpack", "pickle")


def _open(settings: _Settings, *, must_exist: bool = True, **kwargs: Any) -> LoopAwarePersister:
    if must_exist:
        check_store_exists(settings.store)
    kwargs.setdefault("accept", READ_CODECS)
    return open_persister(settings.store, allow=settings.allow, **kwargs)


def _open_to_read(url: str, allow: tuple[str, ...]) -> LoopAwarePersister:
    """Open a store for a command that only reads: nothing is created, migrated or locked,
    and a missing store or another application's file or directory is refused."""
    return LoopAwarePersister(open_storage(url, read_only=True), allow=allow, accept=READ_CODECS)


def _print_damaged(damaged: Sequence[LoopAwarePersistError]) -> None:
    for error in damaged:
        _echo(_style(f"! skipped a damaged record: {_one_line(error)}", fg="red"), err=True)


def _key_label(key: CheckpointKey) -> str:
    return f"{key.pid}" + ("" if key.tag is None else f" tag={key.tag}")


# endregion


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loopaware-persist")
@click.option(
    "--store",
    metavar="URL",
    envvar=STORE_ENV,
    default=DEFAULT_STORE,
    show_default=True,
    show_envvar=True,
    help="Checkpoint store: sqlite:///rel.db, sqlite:////abs.db, file:///abs/dir, postgresql://...",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="MODULE",
    envvar=ALLOW_ENV,
    show_envvar=True,
    help="Module (or module:Class) a decode may import, besides plumpy's. Repeatable.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, store: str, allow: tuple[str, ...], debug: bool) -> None:
    """Inspect and operate loopaware_persist checkpoint stores.

    Reading never imports or runs what a checkpoint names unless --allow lists it.
    """
    if os.environ.get("NO_COLOR"):
        ctx.color = False
    # Listings log each damaged record they skip; the commands report those
    # themselves (find_damaged), once, so the log records would only repeat them.
    storage_log = logging.getLogger("loopaware_persist.storage")
    if not any(isinstance(handler, logging.NullHandler) for handler in storage_log.handlers):
        storage_log.addHandler(logging.NullHandler())
    ctx.obj = _Settings(store=store, allow=tuple(allow), debug=debug)


@cli.command()
@click.option(
    "--store",
    default="sqlite:///loopaware-demo.db",
    show_default=True,
    help="Store URL the demo checkpoints into.",
)
def demo(store: str) -> None:
    """Checkpoint a WorkChain, crash part-way, continue it on a fresh loop in a worker thread."""
    from ._demo import main as run_demo

    sys.exit(run_demo(store))


# region ls, show, verify


@cli.command("ls")
@_common()
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
    settings = _settings(ctx)
    with _open_to_read(settings.store, settings.allow) as persister:
        entries = list_entries(persister, pids=pids, states=states, classes=classes)
        damaged = [] if pids else persister.storage.find_damaged()
    _print_damaged(damaged)
    if as_json:
        _print_json([entry.as_dict() for entry in entries])
        return
    if not entries:
        _echo(f"no checkpoints in {redact_url(settings.store)}", err=True)
        return
    _print_entries(entries)


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
        ("state", _state_text(meta.get("state"))),
        ("codec", codec),
        ("version", str(found.version)),
        ("size", _size(found.size)),
        ("saved", _when(saved) if isinstance(saved, (int, float)) else "?"),
    ]
    if "converted_from" in meta:
        rows.append(("converted", str(meta["converted_from"])))
    return rows


@cli.command()
@_common()
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
    settings = _settings(ctx)
    with _open_to_read(settings.store, settings.allow) as persister:
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
        _print_json(data)
    else:
        for name, value in _header_lines(found):
            _echo(f"{_style(f'{name:<10}', bold=True)}{value}")
        if found.ok:
            _echo(f"{_style('audit     ', bold=True)}{_style('ok', fg='green')}")
        else:
            label = f"{found.problem}: "
            _echo(f"{_style('audit     ', bold=True)}{_style(label, fg='red')}{found.reason}")
        if tree_ok:
            encoding = getattr(sys.stdout, "encoding", None) or "ascii"
            try:
                "├└│".encode(encoding)
                ascii_only = False
            except (UnicodeEncodeError, LookupError):
                ascii_only = True
            _echo()
            for line in render_tree(found.bundle, full=full, ascii_only=ascii_only):
                _echo(line)
    if not found.ok:
        what = (
            "refused as unsafe; nothing of it was imported"
            if found.problem == "unsafe"
            else found.problem
        )
        hint = "" if found.bundle is None or show_unsafe else " (--show-unsafe prints it as data)"
        _echo(f"checkpoint {_key_label(key)}: {what}{hint}", err=True)
        ctx.exit(1)


@cli.command()
@_common()
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
    settings = _settings(ctx)
    results: list[Inspection] = []
    with _open_to_read(settings.store, settings.allow) as persister:
        keys = [entry.key for entry in list_entries(persister, pids=pids)]
        # Records the listing skipped (a torn file header, a row of the wrong
        # types, a FIFO named like a checkpoint) are problems too.
        skipped = [] if pids else persister.storage.find_damaged()
        with _progress(keys, "verifying") as items:
            for key in items:
                try:
                    results.append(inspect_record(persister, key, load=load))
                except CheckpointNotFoundError:
                    continue  # deleted since the listing
    problems = [found for found in results if not found.ok]
    bad = len(problems) + len(skipped)
    if as_json:
        _print_json(
            {
                "store": redact_url(settings.store),
                "checked": len(results) + len(skipped),
                "ok": len(results) - len(problems),
                "problems": [found.as_dict() for found in problems],
                "skipped": [_one_line(error) for error in skipped],
            }
        )
    else:
        for found in problems:
            label = _style(f"{(found.problem or '').upper():<12}", fg="red", bold=True)
            _echo(f"{label}{_key_label(found.key)}: {found.reason}")
        for error in skipped:
            label = _style(f"{'SKIPPED':<12}", fg="red", bold=True)
            _echo(f"{label}{_one_line(error)}")
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
        _echo(_style(summary, fg="red" if bad else "green"))
    if bad:
        ctx.exit(1)


# endregion

# region convert


def _source(
    urls: tuple[str, ...], pickle_dir: str | None, trust_pickle: bool, allow: tuple[str, ...]
) -> tuple[Source, str, LoopAwarePersister | None]:
    if pickle_dir is not None:
        if len(urls) != 1:
            msg = (
                "With --from-plumpy-pickle DIR give only the destination: "
                "convert --from-plumpy-pickle DIR DST."
            )
            raise click.UsageError(msg)
        directory: str | None = os.path.abspath(pickle_dir)
        dst = urls[0]
    else:
        if len(urls) != 2:
            msg = (
                "Give a source and a destination: convert SRC DST "
                "(or --from-plumpy-pickle DIR DST)."
            )
            raise click.UsageError(msg)
        src, dst = urls
        is_pickle = src.partition(":")[0].lower() == PLUMPY_PICKLE_SCHEME
        directory = pickle_dir_from_url(src) if is_pickle else None
        if directory is None:
            if same_store(src, dst):
                msg = (
                    f"Source and destination are the same store ({redact_url(src)}); "
                    "convert into another."
                )
                raise click.UsageError(msg)
            persister = _open_to_read(src, allow)
            return StoreSource(persister), dst, persister
    if not trust_pickle:
        msg = (
            "Reading a plumpy pickle directory unpickles its files, which runs any code they "
            "name. Pass --trust-pickle if you alone wrote them."
        )
        raise click.UsageError(msg)
    assert directory is not None
    click.secho(
        f"WARNING: --trust-pickle: unpickling every file in {directory} runs whatever code "
        "those files name, with your permissions. Only convert pickles you alone wrote.",
        fg="red",
        bold=True,
        err=True,
    )
    return PickleSource(directory, trusted=True), dst, None


@cli.command()
@_common(store=False)
@click.argument("urls", nargs=-1, metavar="[SRC] DST")
@click.option(
    "--from-plumpy-pickle",
    "pickle_dir",
    metavar="DIR",
    default=None,
    help=f"Read a plumpy PicklePersister directory (same as SRC {PLUMPY_PICKLE_SCHEME}:///abs/dir).",
)
@click.option(
    "--trust-pickle", is_flag=True, help="Required to read pickles: unpickling runs code."
)
@click.option("--codec", default="msgpack", show_default=True, help="Codec of the written records.")
@click.option(
    "--compress",
    type=click.Choice(["none", "zlib", "zstd"]),
    default="none",
    show_default=True,
    help="Compression of the written records.",
)
@click.option(
    "--durability",
    type=click.Choice(["normal", "full"]),
    default="normal",
    show_default=True,
    help="full: fsync each record before going on.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace destination checkpoints that were not converted from the source.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.pass_context
def convert(
    ctx: click.Context,
    /,
    urls: tuple[str, ...],
    pickle_dir: str | None,
    trust_pickle: bool,
    codec: str,
    compress: str,
    durability: str,
    overwrite: bool,
    as_json: bool,
    **_: Any,
) -> None:
    """Copy every checkpoint of SRC into DST, re-encoded; resumable; SRC is never changed.

    SRC is a store URL or plumpy-pickle:///abs/dir. Each record is decoded safely,
    audited, written and read back. A rerun skips records already converted from
    the same source content, so an interrupted convert just runs again.
    """
    settings = _settings(ctx)
    if codec not in available_codecs() or codec == "pickle-unrestricted":
        msg = f"Unknown or unsafe codec {codec!r}; use msgpack or pickle."
        raise click.BadParameter(msg, param_hint="--codec")
    source, dst_url, src_persister = _source(urls, pickle_dir, trust_pickle, settings.allow)
    results: list[ConvertResult] = []
    try:
        with open_persister(
            dst_url,
            codec=codec,
            allow=settings.allow,
            compression=None if compress == "none" else compress,
            durability="full" if durability == "full" else "normal",
        ) as dst:
            converter = Converter(source, dst, overwrite=overwrite)
            items = converter.items()
            with _progress(items, "converting") as bar:
                results.extend(converter.convert(item) for item in bar)
            if src_persister is not None:
                # Records the source's listing skipped cannot be converted: say so.
                results.extend(
                    ConvertResult(source="(a damaged record)", status="failed", reason=_one_line(e))
                    for e in src_persister.storage.find_damaged()
                )
    finally:
        if src_persister is not None:
            src_persister.close()
    bad = [r for r in results if r.status in ("failed", "conflict")]
    counts = dict.fromkeys(("copied", "updated", "skipped", "failed", "conflict"), 0)
    for result in results:
        counts[result.status] += 1
    if as_json:
        _print_json(
            {
                "source": redact_url(source.url),
                "destination": redact_url(dst_url),
                **counts,
                "results": [r.as_dict() for r in results],
            }
        )
    else:
        for result in bad:
            label = _style(f"{result.status.upper():<10}", fg="red", bold=True)
            _echo(f"{label}{result.source}: {result.reason}")
        summary = ", ".join(
            f"{n} {status}" for status, n in counts.items() if n or status == "copied"
        )
        shown = f"{redact_url(source.url)} -> {redact_url(dst_url)}"
        _echo(_style(f"{shown}: {summary}", fg="red" if bad else "green"))
    if bad:
        ctx.exit(1)


# endregion

# region rm, prune


def _delete(
    ctx: click.Context,
    persister: LoopAwarePersister,
    entries: Sequence[Entry],
    *,
    yes: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    url = persister.storage.url
    if not entries:
        if as_json:
            _print_json({"store": url, "dry_run": dry_run, "deleted": []})
        else:
            _echo("nothing to delete", err=True)
        return
    if dry_run:
        if as_json:
            _print_json({"store": url, "dry_run": True, "deleted": [e.as_dict() for e in entries]})
        else:
            _echo(f"would delete {len(entries)} checkpoint(s) from {url}:")
            _print_entries(entries)
        return
    if not yes:
        _echo(f"about to delete {len(entries)} checkpoint(s) from {url}:", err=True)
        _print_entries(entries, err=True)
        click.confirm(f"Delete these {len(entries)} checkpoint(s)?", abort=True, err=True)
    deleted = delete_keys(persister, [e.key for e in entries])
    if as_json:
        _print_json({"store": url, "dry_run": False, "deleted": [e.as_dict() for e in entries]})
    else:
        _echo(f"deleted {deleted} checkpoint(s) from {url}")


def _deletion_options(fn: F) -> F:
    fn = click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")(fn)
    fn = click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")(fn)
    fn = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(fn)
    return fn


@cli.command()
@_common()
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
    settings = _settings(ctx)
    with _open(settings) as persister:
        stored_pid = resolve_pid(persister, pid)
        entries = [Entry(info=info) for info in persister.list_info(stored_pid)]
        if tag is not None or untagged:
            entries = [e for e in entries if e.key.tag == tag]
            if not entries:
                msg = (
                    f"Pid {pid!r} has no checkpoint with tag {tag!r} in "
                    f"{redact_url(settings.store)}. "
                    "Run 'loopaware-persist ls --pid PID' to see its tags."
                )
                raise CheckpointNotFoundError(msg, pid=stored_pid, tag=tag)
        _delete(ctx, persister, entries, yes=yes, dry_run=dry_run, as_json=as_json)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@cli.command()
@_common()
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
    settings = _settings(ctx)
    with _open(settings) as persister:
        entries = list_entries(persister, pids=pids, states=states, classes=classes)
        doomed = plan_prune(
            entries,
            keep=keep,
            older_than=older_than,
            now=time.time(),
            include_untagged=include_untagged,
        )
        _delete(ctx, persister, doomed, yes=yes, dry_run=dry_run, as_json=as_json)


# endregion


# region workers (RabbitMQ)

BROKER_ENV = "LOOPAWARE_BROKER_URL"


def _broker_option(fn: F) -> F:
    return click.option(
        "--broker",
        metavar="URL",
        envvar=BROKER_ENV,
        show_envvar=True,
        required=True,
        help="RabbitMQ URL: amqp://user:password@host:5672/vhost",
    )(fn)


def _queue_option(fn: F) -> F:
    from ._broker import DEFAULT_TASK_QUEUE

    return click.option(
        "--queue", default=DEFAULT_TASK_QUEUE, show_default=True, help="The task queue."
    )(fn)


@cli.command()
@_broker_option
@_common()
@_queue_option
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Tasks this worker runs at once (RabbitMQ prefetch count).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running processes may finish after SIGTERM/SIGINT before they are "
    "stopped at their last checkpoint and requeued.",
)
@click.option(
    "--codec", type=click.Choice(["msgpack", "pickle"]), default="msgpack", show_default=True
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.pass_context
def worker(
    ctx: click.Context,
    /,
    broker: str,
    queue: str,
    prefetch: int,
    grace: float,
    codec: str,
    log_level: str,
    **_: Any,
) -> None:
    """Run a daemon worker: take tasks from RabbitMQ, checkpoint into the shared store.

    Runs until SIGTERM/SIGINT. Start one per core and machine, all with the same
    --broker, --store and --allow (the modules of your process classes).
    """
    import logging

    from ._worker import run_worker

    settings = _settings(ctx)
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    try:
        run_worker(
            broker_url=broker,
            store_url=settings.store,
            allow=settings.allow,
            codec=codec,
            prefetch=prefetch,
            grace=grace,
            task_queue=queue,
        )
    except Exception:
        _quiet_failed_amqp_connection()
        raise


def _quiet_failed_amqp_connection() -> None:
    """Drop the traceback aio-pika prints at exit for a connection that never opened.

    When the broker refuses the login, kiwipy's ``RmqThreadCommunicator`` fails in
    its constructor and never closes the loop the half-made aio-pika connection
    belongs to; collecting that connection at exit runs its ``__del__``, which
    schedules a close on a closed loop ("Exception ignored in ... Event loop is
    closed"; aio-pika issue #219 is the same ``__del__``). Only that exact report
    is dropped; every other unraisable exception is printed as usual.
    """
    previous = sys.unraisablehook

    def hook(report: Any) -> None:
        where = getattr(report.object, "__qualname__", "")
        module = getattr(report.object, "__module__", "") or ""
        if (
            module.startswith("aio_pika")
            and where.endswith("__del__")
            and isinstance(report.exc_value, RuntimeError)
            and "Event loop is closed" in str(report.exc_value)
        ):
            return
        previous(report)

    sys.unraisablehook = hook


def _parse_inputs(pairs: Sequence[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            msg = f"--input takes NAME=VALUE (a JSON value), got {pair!r}"
            raise click.BadParameter(msg)
        try:
            inputs[name] = json.loads(text)
        except json.JSONDecodeError:
            inputs[name] = text  # a bare string
    return inputs


def _client_call(
    ctx: click.Context, broker: str, queue: str, timeout: float, send: Callable[[Any], Any]
) -> None:
    from ._client import WorkerClient

    settings = _settings(ctx)
    with WorkerClient(broker_url=broker, allow=settings.allow, task_queue=queue) as client:
        future = send(client)
        _print_json({"result": client.wait(future, timeout=timeout)})


_TIMEOUT = click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait."
)


@cli.command()
@_broker_option
@_common(store=False)
@_queue_option
@_TIMEOUT
@click.argument("process_class", metavar="MODULE:CLASS")
@click.option("--input", "inputs", multiple=True, metavar="NAME=JSON", help="Repeatable.")
@click.option("--pid", default=None, help="The new process's pid (default: a UUID).")
@click.option("--create-only", is_flag=True, help="Checkpoint it without running it.")
@click.pass_context
def launch(
    ctx: click.Context,
    /,
    broker: str,
    queue: str,
    timeout: float,
    process_class: str,
    inputs: tuple[str, ...],
    pid: str | None,
    create_only: bool,
    **_: Any,
) -> None:
    """Launch (or only create) a process on a worker and print its outputs (or pid)."""
    values = _parse_inputs(inputs)
    if create_only:
        _client_call(
            ctx, broker, queue, timeout, lambda c: c.create(process_class, values, pid=pid)
        )
    else:
        _client_call(
            ctx, broker, queue, timeout, lambda c: c.launch(process_class, values, pid=pid)
        )


@cli.command("continue")
@_broker_option
@_common(store=False)
@_queue_option
@_TIMEOUT
@click.argument("pid")
@click.pass_context
def continue_command(
    ctx: click.Context, /, broker: str, queue: str, timeout: float, pid: str, **_: Any
) -> None:
    """Have a worker continue a checkpointed process; print its outputs."""
    _client_call(ctx, broker, queue, timeout, lambda c: c.continue_(pid))


# endregion


# endregion


class _AiidaGroup(click.Group):
    """``aiida``: its commands live in ``loopaware_persist.aiida._cli``, imported (with
    aiida-core) only when one of them runs."""

    def _group(self) -> click.Group:
        try:
            from .aiida._cli import aiida_group
        except ImportError as error:
            raise click.ClickException(str(error)) from error
        return aiida_group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._group().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._group().get_command(ctx, cmd_name)


cli.add_command(
    _AiidaGroup("aiida", help="AiiDA: daemon workers that checkpoint through loopaware_persist.")
)


def main() -> None:
    """Console-script entry point (also ``python -m loopaware_persist``)."""
    cli(prog_name="loopaware-persist")


if __name__ == "__main__":
    main()
