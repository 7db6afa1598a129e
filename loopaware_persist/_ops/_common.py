"""What every operator operation shares: durations, store URLs, pids typed by an
operator, how a failure is classified and told in one line, and a private loop to
try a load on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from typing import Final, Literal

from .._errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    DecodeError,
    OpsError,
    UnsafeCheckpointError,
)
from .._persister import LoopAwarePersister
from ..storage import Pid, local_path, open_storage, pid_from_token, pid_token

#: What can be wrong with a stored checkpoint.
Problem = Literal["corrupt", "unsafe", "undecodable", "unreadable", "unloadable"]

ATOMS = (type(None), bool, int, float, str, bytes, bytearray, complex)


_DURATION_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Parse a duration such as ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or ``1d12h``.

    :param text: the duration
    :raises ValueError: if it is not one
    :return: the duration in seconds
    """
    compact = text.strip().lower().replace(" ", "")
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        msg = (
            f"{text!r} is not a duration. Write a number and a unit (s, m, h, d, w), "
            "e.g. 30m, 12h, 7d or 1d12h."
        )
        raise ValueError(msg)
    return total


#: What the commands read: an operator inspects or converts a store whatever safe codec
#: wrote it (both load through the allow-list; trusted=True is never implied).
READ_CODECS: Final = ("msgpack", "pickle")


def open_store(url: str, *, allow: Sequence[str] = (), read_only: bool) -> LoopAwarePersister:
    """Open an existing store for an operator command; a missing one is refused, not created.

    :param url: the store URL
    :param allow: modules or classes a load may import, besides plumpy's
    :param read_only: create, migrate, lock and write nothing (for commands that only
        read); another application's file, directory or database is refused untouched
        either way, by the storage that serves the URL
    :raises StorageError: if the store is missing, not a checkpoint store, or cannot be
        opened
    :return: a persister that reads every safe codec (:data:`READ_CODECS`)
    """
    storage = open_storage(url, read_only=read_only, create=False)
    try:
        return LoopAwarePersister(storage, allow=allow, accept=READ_CODECS)
    except BaseException:
        storage.close()  # a refused --allow must not leave a connection or lock open
        raise


def same_store(a: str, b: str) -> bool:
    """:return: whether two URLs name the same store (same local path, or same URL)"""
    path_a, path_b = local_path(a), local_path(b)
    if path_a is not None and path_b is not None:
        return os.path.realpath(path_a) == os.path.realpath(path_b)
    return a == b


def pid_matches(pid: Pid, text: str) -> bool:
    return text in (str(pid), pid_token(pid))


def _pid_kind(pid: Pid) -> str:
    return {int: "int", str: "str"}.get(type(pid), "uuid")


def resolve_pid(persister: LoopAwarePersister, text: str) -> Pid:
    """Find the stored pid an operator typed (``str(pid)`` or its token ``i:7``/``s:7``/``u:…``).

    :param persister: the store
    :param text: what was typed
    :raises CheckpointNotFoundError: if no stored pid matches
    :raises CorruptStoredRecordError: if only a damaged record (one the listing
        skips) matches: it says which file or row, and what to do
    :raises OpsError: if several do (an int and a str pid with the same digits)
    :return: the pid, with its stored type
    """
    found: dict[str, Pid] = {}
    for record in persister.storage.list():
        if pid_matches(record.key.pid, text):
            found[pid_token(record.key.pid)] = record.key.pid
    if not found:
        # "No checkpoint" would be wrong for a record that is there but damaged (a
        # torn file header): name the damage instead.
        for token, _tag in persister.storage.list_key_tokens():
            pid = pid_from_token(token)
            if pid_matches(pid, text):
                damaged = persister.storage.find_damaged(pid)
                if damaged:
                    raise damaged[0]
        msg = (
            f"No checkpoint for pid {text!r} in {persister.storage.url!r}. "
            "Run 'loopaware-persist ls' to see the stored pids."
        )
        raise CheckpointNotFoundError(msg, pid=text)
    if len(found) > 1:
        forms = ", ".join(f"{token} ({_pid_kind(pid)})" for token, pid in sorted(found.items()))
        msg = (
            f"Pid {text!r} matches several stored pids: {forms}. "
            f"Pass the typed form, e.g. {min(found)}."
        )
        raise OpsError(msg)
    return next(iter(found.values()))


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def classify(error: BaseException) -> Problem:
    if isinstance(error, CorruptCheckpointError):
        return "corrupt"
    if isinstance(error, UnsafeCheckpointError):
        return "unsafe"
    if isinstance(error, DecodeError):
        return "undecodable"
    return "unreadable"


def reason_for(error: BaseException) -> str:
    text = one_line(error)
    if isinstance(error, UnsafeCheckpointError) and "allow=[" in text:
        text += " On the command line: --allow MODULE."
    return text


@contextlib.contextmanager
def throwaway_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A new event loop, never run, to unbundle a checkpoint onto and throw away.

    What the load left pending on it is cancelled and let finish, and the loop closed,
    on the way out. Its exception handler drops what asyncio would log: a loaded
    EXCEPTED process holds a failed future nobody awaits, a WorkChain's loaded
    awaitables schedule a poll; nothing there is lost.

    :return: a context manager giving the loop
    """
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, _context: None)
    try:
        yield loop
    finally:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
