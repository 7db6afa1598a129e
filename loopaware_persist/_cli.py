"""The ``loopaware-persist`` command line (click, as AiiDA's ``verdi``)."""

from __future__ import annotations

import sys

import click

__all__ = ("main",)

DEFAULT_STORE = "sqlite:///checkpoints.db"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loopaware-persist")
def cli() -> None:
    """Inspect and operate loopaware_persist checkpoint stores."""


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


def main() -> None:
    """Console-script entry point."""
    cli()
