"""Selecting this persister for AiiDA's in-process runners: :func:`install`.

aiida-core 2.9 has no setting for the persister: ``Manager.get_persister()`` builds an
``AiiDAPersister`` the first time it is called and caches it in ``Manager._persister``;
``Manager.create_runner()`` (what ``run``/``submit``/``get_runner()`` use) and
``create_daemon_runner()`` take it from there. :func:`install` fills that cache with a
:class:`~loopaware_persist.LoopAwarePersister`, which ``get_persister()`` then returns
unchanged; a runner made before is reset (``Manager.reset_runner()``, public) so the
next one is built with it. ``Manager.reset_profile()`` (``load_profile`` of another
profile) empties the cache: install again after it.

The upstream change that would make this a setting rather than a cache fill: in
``Manager.get_persister()``, read a profile option (``engine.persister``, default
``"core.aiida"``) and load it from an ``aiida.persisters`` entry-point group, calling it
with the profile; this package would then register
``loopaware = "loopaware_persist.aiida:make_persister"`` there and need no :func:`install`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from .._persister import LoopAwarePersister
from ..storage import Storage, open_storage
from ._registry import make_registry
from ._storage import AiidaNodeStorage, ProfileKeyed, loaded_profile

__all__ = ("install", "installed", "make_persister", "uninstall")

_lock = threading.Lock()
#: What install() replaced, newest last: (manager, the previous cached persister, ours).
_stack: list[tuple[Any, Any, LoopAwarePersister]] = []


def make_persister(
    profile: str | None = None,
    store: str | None = None,
    *,
    allow: Iterable[str | type] = (),
    codec: str = "msgpack",
    compression: str | None = "zlib",
) -> LoopAwarePersister:
    """A persister for AiiDA processes of ``profile``, records kept in ``store``.

    :param profile: the profile's name (default: the loaded one, else the default profile)
    :param store: ``None`` or ``"aiida://"`` for the ProcessNodes themselves, or any store
        URL (``sqlite:///…``, ``postgresql://…``), keyed by this profile's UUID
    :param allow: your modules or classes a load may import: the modules of your
        WorkChains and CalcJobs, and of any value class their checkpoints hold
    :param codec: ``"msgpack"`` (default) or ``"pickle"`` (restricted)
    :param compression: ``"zlib"`` (default: records in a node are base64 text, and
        compressed they take about half of what AiiDA's YAML takes; aiida-core #5025 and
        #3714 are about checkpoints bloating the database), ``"zstd"`` or ``None``
    :raises ConfigurationError: if another profile is loaded, or the store's scheme or
        the codec is unknown
    :return: the persister (its registry configured for AiiDA)
    """
    chosen = loaded_profile(profile)
    storage: Storage
    if store is None or store.lower().startswith("aiida:"):
        storage = AiidaNodeStorage(store or f"aiida://{chosen.name}")
    else:
        storage = ProfileKeyed(open_storage(store), chosen.uuid)
    try:
        return LoopAwarePersister(
            storage,
            codec=codec,
            registry=make_registry(allow=tuple(allow)),
            compression=compression,
        )
    except BaseException:
        storage.close()
        raise


def install(
    profile: str | None = None,
    store: str | None = None,
    *,
    allow: Iterable[str | type] = (),
    codec: str = "msgpack",
    compression: str | None = "zlib",
) -> LoopAwarePersister:
    """Make AiiDA's runners in this Python process checkpoint through this package.

    After it, ``aiida.manage.get_manager().get_persister()`` returns the persister made
    by :func:`make_persister`, and the runners ``run``/``submit`` create use it. Undo it
    with :func:`uninstall`, or use :func:`installed` as a context manager.

    :param profile: see :func:`make_persister`
    :param store: see :func:`make_persister`
    :param allow: see :func:`make_persister`
    :param codec: see :func:`make_persister`
    :param compression: see :func:`make_persister`
    :return: the installed persister
    """
    from aiida.manage import get_manager

    persister = make_persister(profile, store, allow=allow, codec=codec, compression=compression)
    manager: Any = get_manager()  # its _persister is typed AiiDAPersister; ours is a plumpy one
    with _lock:
        # Manager._persister is the cache get_persister() fills; see the module docstring.
        previous = manager._persister
        manager._persister = persister
        _stack.append((manager, previous, persister))
    _reset_runner(manager)
    return persister


def uninstall() -> None:
    """Undo the latest :func:`install`: AiiDA's previous persister comes back, the
    runner built with ours is reset, and our persister's store is closed.

    Does nothing if nothing is installed.
    """
    with _lock:
        if not _stack:
            return
        manager, previous, persister = _stack.pop()
        if manager._persister is persister:
            manager._persister = previous
    _reset_runner(manager)
    persister.close()


def _reset_runner(manager: Any) -> None:
    # A runner holds the persister it was built with; the next get_runner() builds anew.
    if manager._runner is not None:
        manager.reset_runner()


@contextlib.contextmanager
def installed(
    profile: str | None = None,
    store: str | None = None,
    *,
    allow: Iterable[str | type] = (),
    codec: str = "msgpack",
    compression: str | None = "zlib",
) -> Iterator[LoopAwarePersister]:
    """:func:`install` for the ``with`` block, then :func:`uninstall`.

    :return: a context manager giving the installed persister
    """
    persister = install(profile, store, allow=allow, codec=codec, compression=compression)
    try:
        yield persister
    finally:
        uninstall()
