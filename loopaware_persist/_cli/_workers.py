"""``worker``, ``launch`` and ``continue``: daemon workers over RabbitMQ."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from ._options import (
    Command,
    F,
    command_settings,
    common_options,
)
from ._output import (
    print_json,
)

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
    from .._broker import DEFAULT_TASK_QUEUE

    return click.option(
        "--queue", default=DEFAULT_TASK_QUEUE, show_default=True, help="The task queue."
    )(fn)


@click.command(cls=Command)
@_broker_option
@common_options()
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

    from .._worker import run_worker

    settings = command_settings(ctx)
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
    from .._client import WorkerClient

    settings = command_settings(ctx)
    with WorkerClient(broker_url=broker, allow=settings.allow, task_queue=queue) as client:
        future = send(client)
        print_json({"result": client.wait(future, timeout=timeout)})


_TIMEOUT = click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait."
)


@click.command(cls=Command)
@_broker_option
@common_options(store=False)
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


@click.command("continue", cls=Command)
@_broker_option
@common_options(store=False)
@_queue_option
@_TIMEOUT
@click.argument("pid")
@click.pass_context
def continue_command(
    ctx: click.Context, /, broker: str, queue: str, timeout: float, pid: str, **_: Any
) -> None:
    """Have a worker continue a checkpointed process; print its outputs."""
    _client_call(ctx, broker, queue, timeout, lambda c: c.continue_(pid))
