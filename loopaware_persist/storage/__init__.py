"""Storages: where checkpoint records live, chosen by URL.

``open_storage("sqlite:///checkpoints.db")`` imports the backend for the URL's
scheme only when it is used. The built-in schemes are ``memory``, ``file``,
``sqlite`` and ``postgresql`` (alias ``postgres``; needs the ``postgres`` extra);
other packages add schemes through the entry-point group
``loopaware_persist.storages``, each entry point naming a
:class:`StorageFactory` (``open_storage(url, *, durability)``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re

from loopaware_persist._errors import ConfigurationError, StorageError
from loopaware_persist.storage._base import (
    CheckpointInfo as CheckpointInfo,
    CheckpointKey as CheckpointKey,
    Durability as Durability,
    KeyToken as KeyToken,
    Pid as Pid,
    RecordInfo as RecordInfo,
    Storage as Storage,
    StorageFactory as StorageFactory,
    StoredRecord as StoredRecord,
    check_durability,
    pid_from_token as pid_from_token,
    pid_token as pid_token,
)
from loopaware_persist.storage._url import redact_url as _redact

__all__ = (
    "ENTRY_POINT_GROUP",
    "CheckpointInfo",
    "CheckpointKey",
    "Durability",
    "KeyToken",
    "Pid",
    "RecordInfo",
    "Storage",
    "StorageFactory",
    "StoredRecord",
    "available_schemes",
    "local_path",
    "open_storage",
    "pid_from_token",
    "pid_token",
)

ENTRY_POINT_GROUP = "loopaware_persist.storages"

# Module names, not modules: a backend (and whatever it imports) loads only
# when its scheme is used.
_BUILTIN = {
    "memory": "loopaware_persist.storage.memory",
    "file": "loopaware_persist.storage.file",
    "sqlite": "loopaware_persist.storage.sqlite",
    "postgresql": "loopaware_persist.storage.postgresql",
    "postgres": "loopaware_persist.storage.postgresql",
}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")


def _entry_points() -> dict[str, list[importlib.metadata.EntryPoint]]:
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name.lower(), []).append(entry_point)
    return found


def available_schemes() -> tuple[str, ...]:
    """The URL schemes :func:`open_storage` knows: built-ins, then plugins.

    :return: the scheme names, sorted
    """
    return tuple(sorted(set(_BUILTIN) | set(_entry_points())))


def _factory(scheme: str, url: str) -> StorageFactory:
    module_name = _BUILTIN.get(scheme)
    if module_name is not None:
        factory: StorageFactory = importlib.import_module(module_name).open_storage
        return factory
    plugins = _entry_points()
    candidates = {ep.value: ep for ep in plugins.get(scheme, [])}
    if not candidates:
        known = ", ".join(f"{name}://" for name in available_schemes())
        msg = (
            f"No storage for the URL scheme {scheme!r} in {_redact(url)!r}. "
            f"Known schemes: {known}. "
            f"Install the package providing it (it registers an entry point in "
            f"{ENTRY_POINT_GROUP!r})."
        )
        raise ConfigurationError(msg, option="url", value=scheme)
    if len(candidates) > 1:
        msg = (
            f"Several installed packages provide the storage scheme {scheme!r}: "
            f"{', '.join(sorted(candidates))}. Uninstall all but one."
        )
        raise StorageError(msg)
    (entry_point,) = candidates.values()
    try:
        loaded: StorageFactory = entry_point.load()
    except Exception as exc:
        msg = (
            f"The storage plugin for {scheme!r} ({entry_point.value}) failed to import: "
            f"{type(exc).__name__}: {exc}. Reinstall the package that provides it."
        )
        raise StorageError(msg) from exc
    return loaded


def _accepts(factory: StorageFactory, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _scheme(url: str) -> str:
    match = _SCHEME.match(url)
    if match is None:
        known = ", ".join(f"{name}://" for name in available_schemes())
        msg = (
            f"{_redact(url)!r} is not a storage URL: it has no scheme. Known schemes: {known}, "
            f"e.g. 'sqlite:///checkpoints.db'."
        )
        raise StorageError(msg)
    return match.group(1).lower()


def local_path(url: str) -> str | None:
    """The file or directory a store lives in, as its storage reads the URL.

    Each built-in storage answers for its own scheme (``sqlite:`` names a file,
    ``file:`` a directory); a store that is not a local path (``memory:``,
    ``postgresql:``, a plugin's) has none.

    :param url: the store URL
    :raises StorageError: if the URL has no scheme, or its storage refuses it
    :return: the path, or ``None``
    """
    module_name = _BUILTIN.get(_scheme(url))
    if module_name is None:
        return None
    answer = getattr(importlib.import_module(module_name), "local_path", None)
    return None if answer is None else str(answer(url))


def _open_read_only(factory: StorageFactory, url: str, durability: Durability) -> Storage:
    # Plugins written before read_only existed do not take it: asking one to
    # open a store it might create or migrate would break the promise.
    if not _accepts(factory, "read_only"):
        msg = (
            f"The storage for {_redact(url)!r} cannot be opened read-only (its factory takes "
            f"no read_only argument). Upgrade the package that provides it."
        )
        raise StorageError(msg)
    return factory(url, durability=durability, read_only=True)  # type: ignore[call-arg]


def open_storage(
    url: str, *, durability: Durability = "normal", read_only: bool = False, create: bool = True
) -> Storage:
    """Open the storage a URL names.

    :param url: e.g. ``memory://``, ``file:///var/lib/ckpt``,
        ``sqlite:///checkpoints.db``, or a scheme a plugin registers
    :param durability: ``"normal"`` (survives a process crash) or ``"full"``
        (fsync before a put returns; survives power loss)
    :param read_only: create, migrate, lock and write nothing (what inspecting
        commands use): a missing store, or a file or directory that is not a
        checkpoint store, is refused rather than created or changed
    :param create: create the store if it is missing; with ``False`` a storage whose
        store can be missing (a SQLite file, a directory) refuses it and creates
        nothing; one that cannot tell (``memory:``, a PostgreSQL database, which the
        server itself refuses when missing, a plugin without ``create``) opens as usual
    :raises ConfigurationError: if no installed storage serves the URL's scheme
    :raises StorageError: if the URL is invalid, the backend cannot open the storage,
        or it cannot open it read-only
    :return: the open storage; close it (or use it as a context manager)
    """
    if not isinstance(url, str):
        msg = f"A storage URL must be a str, got {type(url)!r}. Use e.g. 'sqlite:///ckpt.db'."
        raise StorageError(msg)
    durability = check_durability(durability)
    factory = _factory(_scheme(url), url)
    if read_only:
        storage = _open_read_only(factory, url, durability)
    elif not create and _accepts(factory, "create"):
        storage = factory(url, durability=durability, create=False)  # type: ignore[call-arg]
    else:
        storage = factory(url, durability=durability)
    if not isinstance(storage, Storage):
        msg = (
            f"The storage factory for {_redact(url)!r} returned {type(storage)!r}, not a Storage. "
            f"Report this to the package that provides the scheme."
        )
        raise StorageError(msg)
    return storage
