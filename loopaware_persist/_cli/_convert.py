"""``convert``: copy a store, or a plumpy pickle directory, into another store."""

from __future__ import annotations

import os
from typing import Any

import click

from .._ops import (
    PLUMPY_PICKLE_SCHEME,
    Converter,
    ConvertResult,
    PickleSource,
    Source,
    StoreSource,
    open_store,
    pickle_dir_from_url,
    same_store,
)
from .._persister import LoopAwarePersister, open_persister
from ..codecs import available_codecs
from ..storage._url import redact_url
from ._options import (
    Command,
    command_settings,
    common_options,
)
from ._output import (
    echo,
    print_json,
    progress,
    style,
)


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
            persister = open_store(src, allow=allow, read_only=True)
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


@click.command(cls=Command)
@common_options(store=False)
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
    settings = command_settings(ctx)
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
            with progress(items, "converting") as bar:
                results.extend(converter.convert(item) for item in bar)
            results.extend(converter.damaged())
    finally:
        if src_persister is not None:
            src_persister.close()
    bad = [r for r in results if r.status in ("failed", "conflict")]
    counts = dict.fromkeys(("copied", "updated", "skipped", "failed", "conflict"), 0)
    for result in results:
        counts[result.status] += 1
    if as_json:
        print_json(
            {
                "source": redact_url(source.url),
                "destination": redact_url(dst_url),
                **counts,
                "results": [r.as_dict() for r in results],
            }
        )
    else:
        for result in bad:
            label = style(f"{result.status.upper():<10}", fg="red", bold=True)
            echo(f"{label}{result.source}: {result.reason}")
        summary = ", ".join(
            f"{n} {status}" for status, n in counts.items() if n or status == "copied"
        )
        shown = f"{redact_url(source.url)} -> {redact_url(dst_url)}"
        echo(style(f"{shown}: {summary}", fg="red" if bad else "green"))
    if bad:
        ctx.exit(1)
