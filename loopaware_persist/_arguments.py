"""Argument checks shared by the public entry points.

Every public function checks the type of what it was handed before it reads, writes
or schedules anything, and refuses a wrong type with an :class:`ArgumentTypeError`
(a :class:`TypeError`) that names the call, the parameter, what it got and what to
pass. Without these checks a wrong type surfaces later as an ``AttributeError`` from
deep inside plumpy or asyncio, which callers do not catch and which names neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import plumpy

from ._errors import ArgumentTypeError

__all__ = (
    "check_allow",
    "check_flag",
    "check_instance",
    "check_loop",
    "check_optional_loop",
    "check_pid",
    "check_process",
    "describe",
)


def describe(value: object) -> str:
    """:return: ``value``'s type and a short repr, for error messages"""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = type(value)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return f"{name} ({text})"


def check_instance(
    value: object,
    expected: type | tuple[type, ...],
    *,
    call: str,
    argument: str,
    wanted: str,
    hint: str = "",
) -> None:
    """Refuse ``value`` unless it is an instance of ``expected``.

    :param value: what the caller passed
    :param expected: the accepted type(s)
    :param call: the public call, e.g. ``"LoopContext()"``
    :param argument: the parameter's name
    :param wanted: what to pass, in words, e.g. ``"an asyncio event loop"``
    :param hint: a sentence saying what to do, appended to the message
    :raises ArgumentTypeError: if ``value`` has the wrong type
    """
    if not isinstance(value, expected):
        tail = f" {hint}" if hint else ""
        msg = f"{call} takes {wanted} as {argument}, got {describe(value)}.{tail}"
        raise ArgumentTypeError(msg, argument=argument)


def check_loop(loop: object, *, call: str, argument: str = "loop") -> None:
    """Refuse anything but an event loop.

    :raises ArgumentTypeError: if ``loop`` is not an ``asyncio.AbstractEventLoop``
    """
    check_instance(
        loop,
        asyncio.AbstractEventLoop,
        call=call,
        argument=argument,
        wanted="an asyncio event loop",
        hint="Pass the loop that should run the processes, e.g. asyncio.get_running_loop().",
    )


def check_optional_loop(loop: object, *, call: str, argument: str = "loop") -> None:
    """Like :func:`check_loop`, but ``None`` (the running loop) passes too."""
    if loop is not None:
        check_instance(
            loop,
            asyncio.AbstractEventLoop,
            call=call,
            argument=argument,
            wanted="an asyncio event loop or None (the running loop)",
            hint="Pass the loop that should own the restored futures, or None.",
        )


def check_process(process: object, *, call: str) -> None:
    """Refuse anything but a plumpy process.

    :raises ArgumentTypeError: if ``process`` is not a ``plumpy.Process``
    """
    check_instance(
        process,
        plumpy.Process,
        call=call,
        argument="process",
        wanted="a plumpy.Process",
        hint="Pass the process object itself; to name a stored one, use its pid.",
    )


def check_pid(pid: object, *, call: str) -> None:
    """Refuse ``None`` as a pid where plumpy's ``Hashable`` would let it through.

    ``get_process_checkpoints(None)`` used to list every process's checkpoints, so a
    delete loop over it emptied the store; a pid is always one process.

    :raises ArgumentTypeError: if ``pid`` is ``None``
    """
    if pid is None:
        msg = (
            f"{call} takes one process's pid (an int, a str or a uuid.UUID), got None. "
            "To act on every process, call get_checkpoints() and go through its pids."
        )
        raise ArgumentTypeError(msg, argument="pid")


def check_flag(value: object, *, call: str, argument: str) -> None:
    """Refuse anything but a bool where truthiness would be a hazard: ``trusted="no"``
    must not switch the allow-list off.

    :raises ArgumentTypeError: if ``value`` is not a bool
    """
    if not isinstance(value, bool):
        msg = f"{call} takes True or False as {argument}, got {describe(value)}."
        raise ArgumentTypeError(msg, argument=argument)


def check_allow(allow: Any, *, call: str) -> tuple[str | type, ...]:
    """Normalise an ``allow=`` argument: one entry, or an iterable of entries.

    A str is one module or ``module:QualName`` (never its letters); a class is itself.

    :raises ArgumentTypeError: for anything else, or an entry that is neither
    :return: the entries
    """
    if isinstance(allow, (str, type)):
        return (allow,)
    if isinstance(allow, (bytes, bytearray, memoryview)) or not isinstance(allow, Iterable):
        msg = (
            f"{call} takes allow= as a module name, a 'module:QualName', a class, or a list of "
            f"them, got {describe(allow)}. Pass e.g. allow=['myapp']."
        )
        raise ArgumentTypeError(msg, argument="allow")
    entries = tuple(allow)
    for entry in entries:
        if not isinstance(entry, (str, type)) or entry == "":
            msg = (
                f"{call} takes allow= entries as module names, 'module:QualName' strings or "
                f"classes, got {describe(entry)}. Pass e.g. allow=['myapp', MyProcess]."
            )
            raise ArgumentTypeError(msg, argument="allow")
    return entries
