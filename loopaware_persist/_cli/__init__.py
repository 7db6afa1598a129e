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

import logging
import os
import sys

import click

from . import _aiida, _convert, _inspect, _prune, _workers
from ._options import ALLOW_ENV, DEFAULT_STORE, STORE_ENV, Command, Group, Settings

__all__ = ("cli", "main")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
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
    ctx.obj = Settings(store=store, allow=tuple(allow), debug=debug)


@click.command(cls=Command)
@click.option(
    "--store",
    default="sqlite:///loopaware-demo.db",
    show_default=True,
    help="Store URL the demo checkpoints into.",
)
def demo(store: str) -> None:
    """Checkpoint a WorkChain, crash part-way, continue it on a fresh loop in a worker thread."""
    from .._demo import main as run_demo

    sys.exit(run_demo(store))


for _command in (
    demo,
    _inspect.ls_command,
    _inspect.show,
    _inspect.verify,
    _convert.convert,
    _prune.rm,
    _prune.prune,
    _workers.worker,
    _workers.launch,
    _workers.continue_command,
    _aiida.aiida_group,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point (also ``python -m loopaware_persist``)."""
    cli(prog_name="loopaware-persist")
