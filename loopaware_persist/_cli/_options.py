"""Argument parsing shared by the commands: the store, the allow-list and
``--debug`` from the command, the group or the environment; one-line errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import click

from .._errors import LoopAwarePersistError
from .._ops import (
    one_line,
)

DEFAULT_STORE = "sqlite:///checkpoints.db"
STORE_ENV = "LOOPAWARE_PERSIST_STORE"
ALLOW_ENV = "LOOPAWARE_PERSIST_ALLOW"

F = TypeVar("F", bound=Callable[..., Any])


@attrs.frozen(kw_only=True)
class Settings:
    store: str
    allow: tuple[str, ...]
    debug: bool


def _group_settings(ctx: click.Context) -> Settings:
    found = ctx.find_object(Settings)
    if found is not None:
        return found
    return Settings(store=os.environ.get(STORE_ENV) or DEFAULT_STORE, allow=(), debug=False)


def command_settings(ctx: click.Context) -> Settings:
    """Merge the command's own ``--store/--allow/--debug`` over the group's."""
    group = _group_settings(ctx)
    store = ctx.params.get("store")
    return Settings(
        store=store if store else group.store,
        allow=(*group.allow, *ctx.params.get("allow", ())),
        debug=group.debug or bool(ctx.params.get("debug")),
    )


class Command(click.Command):
    """A command whose errors are one line on stderr (exit 1), or a traceback with ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if command_settings(ctx).debug:
                raise
            if isinstance(error, (LoopAwarePersistError, OSError, ModuleNotFoundError)):
                message = one_line(error) or type(error).__name__
            else:
                message = (
                    f"unexpected {type(error).__name__}: {one_line(error)} "
                    "(rerun with --debug for the traceback and report it)"
                )
            raise click.ClickException(message) from None


class Group(click.Group):
    command_class = Command


def common_options(*, store: bool = True) -> Callable[[F], F]:
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
