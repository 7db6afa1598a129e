"""``loopaware-persist aiida …`` (also ``python -m loopaware_persist.aiida …``).

``worker`` runs one daemon worker in the foreground (:func:`run_daemon_worker`);
``daemon start`` starts AiiDA's daemon with such workers (:mod:`._circus`). The group
is :data:`aiida_group`; the main CLI mounts it under ``aiida``, importing this module
only when an ``aiida`` command runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ("aiida_group", "main")

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


@click.group("aiida")
def aiida_group() -> None:
    """AiiDA: daemon workers that checkpoint through loopaware_persist."""


@aiida_group.command()
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
    from ._daemon import run_daemon_worker

    run_daemon_worker(
        profile,
        store,
        allow=allow,
        codec=codec,
        compression=None if compression == "none" else compression,
    )


@aiida_group.group()
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
    from ._circus import start_daemon

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
    from ._circus import run_circus

    run_circus(profile, number, options, foreground=foreground)


def main() -> None:
    """``python -m loopaware_persist.aiida``."""
    aiida_group(prog_name="python -m loopaware_persist.aiida")
