"""What the commands print: tables, JSON, progress bars, colours, times and sizes."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from .._errors import LoopAwarePersistError
from .._ops import (
    one_line,
)
from ..storage import CheckpointInfo, CheckpointKey

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


def echo(text: str = "", *, err: bool = False) -> None:
    click.echo(text, err=err)


def style(text: str, **kwargs: Any) -> str:
    # click.echo strips the codes when the stream is not a terminal.
    return click.style(text, **kwargs)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(items: Sequence[T], label: str) -> Iterator[Iterable[T]]:
    """A progress bar on stderr when it is a terminal; the bare items otherwise."""
    stream = sys.stderr
    if not _is_terminal(stream) or not items:
        yield items
        return
    with click.progressbar(items, label=label, file=stream) as bar:
        yield bar


def format_time(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def state_text(state: str | None) -> str:
    label = state or "?"
    colour = _STATE_COLOURS.get(label)
    return style(label, fg=colour) if colour else label


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, err: bool = False) -> None:
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

    echo(style(line(headers), bold=True), err=err)
    for row in rows:
        echo(line(row), err=err)


def _listing_row(info: CheckpointInfo) -> list[str]:
    data = info.as_dict()
    codec = data["codec"] or "?"
    if data["compression"]:
        codec += f"+{data['compression']}"
    return [
        data["pid"],
        "-" if data["tag"] is None else data["tag"],
        data["process_class"] or "?",
        state_text(info.state),
        format_size(data["size"]),
        codec,
        str(data["version"]),
        format_time(info.saved_at),
    ]


_LISTING_HEADERS = ("PID", "TAG", "CLASS", "STATE", "SIZE", "CODEC", "VER", "SAVED (UTC)")


def print_listing(infos: Sequence[CheckpointInfo], *, err: bool = False) -> None:
    table(_LISTING_HEADERS, [_listing_row(e) for e in infos], err=err)
    for info in infos:
        if info.error is not None:
            echo(
                style(f"! {info.key.pid} tag={info.key.tag!r}: {info.error}", fg="red"),
                err=err,
            )


#: What the commands read: an operator inspects or converts a store whatever safe codec
#: wrote it (both load through the allow-list; trusted=True is never implied).


def print_damaged(damaged: Sequence[LoopAwarePersistError]) -> None:
    for error in damaged:
        echo(style(f"! skipped a damaged record: {one_line(error)}", fg="red"), err=True)


def key_label(key: CheckpointKey) -> str:
    return f"{key.pid}" + ("" if key.tag is None else f" tag={key.tag}")
