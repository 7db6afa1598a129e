"""The RabbitMQ names and the reachability check that workers and their clients share."""

from __future__ import annotations

import socket
import urllib.parse

from ._arguments import check_instance
from ._errors import BackendUnavailableError
from .storage._url import redact_url

__all__ = (
    "DEFAULT_MESSAGE_EXCHANGE",
    "DEFAULT_TASK_EXCHANGE",
    "DEFAULT_TASK_QUEUE",
    "check_broker_url",
    "probe_broker",
)

#: kiwipy's names, prefixed so a worker never takes tasks meant for plumpy's
#: ``ProcessLauncher`` or AiiDA (whose bodies another launcher may decode unsafely).
DEFAULT_TASK_QUEUE = "loopaware.tasks"
DEFAULT_TASK_EXCHANGE = "loopaware.tasks"
DEFAULT_MESSAGE_EXCHANGE = "loopaware.messages"


def check_broker_url(url: object, call: str) -> None:
    check_instance(
        url,
        str,
        call=call,
        argument="broker_url",
        wanted="an AMQP URL (str)",
        hint="Pass e.g. 'amqp://guest:guest@127.0.0.1:5672/'.",
    )


def probe_broker(url: str, timeout: float = 10.0) -> None:
    """Open (and close) a TCP connection to the broker a URL names.

    :raises BackendUnavailableError: if it cannot be reached, saying which and what to do
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or (5671 if parts.scheme.lower() == "amqps" else 5672)
    except ValueError as exc:
        msg = f"Invalid broker URL {redact_url(url)!r}: {exc}. Use amqp://user:pw@host:5672/vhost."
        raise BackendUnavailableError(msg) from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        msg = (
            f"Cannot reach the RabbitMQ broker at {redact_url(url)} ({host}:{port}): {exc}. "
            "Check --broker (or $LOOPAWARE_BROKER_URL) and that RabbitMQ is running."
        )
        raise BackendUnavailableError(msg) from None
