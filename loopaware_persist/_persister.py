"""``LoopAwarePersister``: a plumpy ``Persister`` = registry + codec + storage.

Saving takes plumpy's bundle of the process on the caller's thread (it reads
live state), encodes it (futures as snapshots), wraps it in a checksummed
envelope whose header carries the process class and state for listings, and
hands the bytes to the storage, which writes them atomically.

Loading reverses that, verifying the envelope and decoding in safe mode, and
returns a :class:`LoopAwareBundle` whose ``unbundle`` binds every future to the
loop the loader supplies. :meth:`LoopAwarePersister.load_process` does both.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Hashable, Iterable
from typing import Any, Literal, Self

import attrs
import plumpy
from plumpy.persistence import PersistedCheckpoint

from ._arguments import (
    check_allow,
    check_flag,
    check_instance,
    check_optional_loop,
    check_pid,
    check_process,
)
from ._encoding import _accepted, _Encoding
from ._envelope import HEADER_PEEK, available_compressions, read_header
from ._errors import CheckpointNotFoundError, ConfigurationError, LoopAwarePersistError
from ._hooks import default_registry
from ._loop import LoopContext
from ._owners import note_process
from ._registry import HookRegistry, check_registry, class_name
from ._relink import RelinkHook, relink_awaited
from ._unbundle import LoopAwareBundle
from .codecs import Codec, check_codec_name, get_codec
from .codecs.pickle import UnsafeLoadWarning
from .storage import (
    CheckpointInfo,
    CheckpointKey,
    KeyToken,
    Pid,
    Storage,
    open_storage,
    pid_from_token,
)

__all__ = ("CheckpointInfo", "LoopAwarePersister", "open_persister")

Durability = Literal["normal", "full"]


def _state_label(process: plumpy.Process) -> str | None:
    try:
        label = process.state
    except Exception:
        return None
    return str(getattr(label, "value", label))


def _listing_meta(process: plumpy.Process) -> dict[str, Any]:
    """What a record's header says about its process, so listings never decode payloads."""
    return {
        "process_class": class_name(type(process)),
        "state": _state_label(process),
        "saved_at": time.time(),
    }


class _PidsByToken(dict[str, Pid]):
    """:func:`pid_from_token`, memoised: a missing token is parsed and kept.

    Parsing is most of what listing 10,000 keys would cost (a UUID is built
    from its hex each time); pids are immutable, so one object per token can
    be handed out by every listing.
    """

    def __missing__(self, token: str) -> Pid:
        pid = self[token] = pid_from_token(token)
        return pid


def _checkpoints(keys: list[KeyToken], pids: _PidsByToken) -> list[PersistedCheckpoint]:
    make = PersistedCheckpoint._make  # the namedtuple's own constructor, minus a call
    return [make((pids[token], tag)) for token, tag in keys]


def _check_compression(compression: object) -> None:
    """Refuse, when opening, a compression that the first save would fail on.

    :raises ArgumentTypeError: if ``compression`` is not a str or ``None``
    :raises ConfigurationError: if it is unknown, or its package is not installed
    """
    if compression is None:
        return
    check_instance(
        compression,
        str,
        call="open_persister()",
        argument="compression",
        wanted="None, 'zlib' or 'zstd'",
        hint="Pass compression=None to store records uncompressed.",
    )
    available = available_compressions()
    if compression in available:
        return
    if compression == "zstd":
        msg = (
            "compression='zstd' needs the zstandard package, which is not installed here. "
            "Install it with: pip install 'loopaware-persist[zstd]', or use 'zlib'."
        )
    else:
        names = ", ".join(repr(name) for name in available)
        msg = (
            f"Unknown compression {compression!r}. Available here: {names}; 'zstd' needs "
            "pip install 'loopaware-persist[zstd]'."
        )
    raise ConfigurationError(msg, option="compression", value=compression)


class LoopAwarePersister(_Encoding, plumpy.Persister):
    """A plumpy ``Persister`` that stores safe, checksummed records and loads loop-safely.

    :param storage: where records live (see :func:`loopaware_persist.storage.open_storage`)
    :param codec: ``"msgpack"`` (default), ``"pickle"``, or a codec object
    :param registry: hooks and allow-list (default: a copy of ``default_registry``)
    :param allow: the user's modules/classes that a load may revive, besides plumpy's
    :param compression: ``None``, ``"zlib"`` or ``"zstd"`` for new records
    :param trusted: skip the allow-list on load (runs what checkpoints name; say so loudly)
    :param accept: the codec names whose records a load decodes (default: ``codec``'s and
        ``"msgpack"``); a record naming another is refused before its payload is read, so
        a store written with msgpack never reaches the unpickler
    :raises ArgumentTypeError: if an argument has the wrong type
    :raises ConfigurationError: if the codec, compression or an ``accept`` name is not
        available here
    """

    #: Seconds between reads of the store by a loaded WorkChain that waits (``ToContext``)
    #: for a child continued elsewhere, until the child's checkpoint is terminated;
    #: ``None``: only children loaded in this Python process complete it.
    child_poll_interval: float | None = 1.0

    def __init__(
        self,
        storage: Storage,
        *,
        codec: str | Codec = "msgpack",
        registry: HookRegistry | None = None,
        allow: Iterable[str | type] = (),
        compression: str | None = None,
        trusted: bool = False,
        accept: str | Iterable[str] | None = None,
    ) -> None:
        call = "LoopAwarePersister()"
        check_instance(
            storage,
            Storage,
            call=call,
            argument="storage",
            wanted="a Storage",
            hint="Open one with loopaware_persist.storage.open_storage(url), or use "
            "open_persister(url).",
        )
        if not isinstance(codec, Codec):
            check_codec_name(codec)
        check_registry(registry, call=call)
        entries = check_allow(allow, call=call)
        _check_compression(compression)
        check_flag(trusted, call=call, argument="trusted")
        super().__init__()
        registry = (registry if registry is not None else default_registry).copy()
        registry.allow(*entries)
        if trusted:
            warnings.warn(
                "trusted=True: loads skip the allow-list and revive whatever the checkpoints "
                "name, running their code. Use it only for stores you alone write.",
                UnsafeLoadWarning,
                stacklevel=2,
            )
            registry.trust_all()
        self.registry = registry
        self.storage = storage
        self.codec: Codec = get_codec(codec, registry=registry) if isinstance(codec, str) else codec
        self.compression = compression
        self.trusted = trusted
        self._codecs: dict[str, Codec] = {self.codec.name: self.codec}
        #: The codec names whose records this persister decodes.
        self.accept: frozenset[str] = _accepted(accept, self.codec.name)
        # The pids of the last full listing, so the next one parses only new tokens.
        self._pids = _PidsByToken()
        # (pid, tag, key) of the last key built (see _key).
        self._last_key: tuple[Hashable, str | None, CheckpointKey] | None = None

    def __repr__(self) -> str:
        return f"<LoopAwarePersister {self.storage.url} codec={self.codec.name}>"

    # plumpy's Persister API

    # Returning the stored version (plumpy's returns None) and the keyword-only
    # extras are additions plumpy callers never see; hence the override ignore.
    def save_checkpoint(  # type: ignore[override]
        self,
        process: plumpy.Process,
        tag: str | None = None,
        *,
        expected_version: int | None = None,
        verify: bool = False,
    ) -> int:
        """Store a checkpoint of ``process``.

        :param process: the process (call on its loop's thread: plumpy reads live state)
        :param tag: optional checkpoint tag
        :param expected_version: compare-and-set: the version this writer last saw
            (0 for "none yet"); another writer's newer save raises :class:`StaleCheckpointError`
        :param verify: decode the record before storing it, so a checkpoint that will not
            reload fails now, naming the path, instead of at restart (a WorkChain waiting
            on a pending future no known process owns included)
        :raises EncodeError: if the process cannot be encoded
        :raises StorageError: if the store fails (the previous checkpoint is untouched)
        :raises ArgumentTypeError: if ``process`` is not a ``plumpy.Process``
        :return: the stored version
        """
        check_process(process, call="save_checkpoint()")
        check_flag(verify, call="save_checkpoint()", argument="verify")
        data = self._encode_process(process)
        if verify:
            self._verify(process, data)
        return self.storage.put(
            self._key(process.pid, tag), data, expected_version=expected_version
        )

    def _encode_process(self, process: plumpy.Process) -> bytes:
        return self.dumps(self._bundle(process), meta=_listing_meta(process))

    def load_checkpoint(self, pid: Hashable, tag: str | None = None) -> LoopAwareBundle:
        """Load a checkpoint as a bundle whose ``unbundle(load_context)`` is loop-safe.

        :param pid: the process id
        :param tag: optional checkpoint tag
        :raises CheckpointNotFoundError: if there is no such checkpoint
        :raises DecodeError: if it is damaged or names code outside the allow-list
        :return: the bundle
        """
        key = self._key(pid, tag)
        return self.loads(self.storage.get(key).data, key=key)

    def load_process(
        self,
        pid: Hashable,
        tag: str | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        relink: RelinkHook | None = None,
        **extra: Any,
    ) -> plumpy.Process:
        """Load a process with every future of its graph on ``loop``.

        A WorkChain waiting on futures (``ToContext``) comes back waiting on them,
        each re-linked to what completes it (see :func:`relink_awaited`).

        :param pid: the process id
        :param tag: optional checkpoint tag
        :param loop: the target loop (default: the running loop; never a new one)
        :param relink: ``relink(process, key, owner)`` returns a future to wait for in
            place of an awaited one that cannot be re-linked, or ``None``
        :param extra: more ``LoadSaveContext`` entries (``communicator``, ``logger``)
        :raises NoEventLoopError: if there is no target loop
        :raises UnlinkedAwaitableError: if the process awaits a pending future that
            nothing can complete (a plain future, a child whose checkpoint is missing)
        :raises ArgumentTypeError: if ``loop`` is neither an event loop nor ``None``
        :return: the process
        """
        check_optional_loop(loop, call="load_process()")
        key = self._key(pid, tag)
        data = self.storage.get(key).data
        check_instance(
            data,
            (bytes, bytearray, memoryview),
            call="loads()",
            argument="data",
            wanted="a record (bytes)",
            hint="Pass what dumps() or storage.get(key).data returned.",
        )
        # The decode knows the target loop: it audits and binds as it goes (see _bound.py).
        process = self._load_record(data, key, LoopContext(loop=loop), **extra)
        return self._relinked(process, relink)  # type: ignore[arg-type]

    def _relinked(self, process: plumpy.Process, relink: RelinkHook | None) -> plumpy.Process:
        if isinstance(process, plumpy.Process):
            note_process(process)  # first: a parent loaded earlier may be waiting for it
            try:
                relink_awaited(process, self, relink=relink)
            except BaseException:
                # Release its RPC/broadcast subscriptions (keyed by pid), or the next
                # load of this pid here would collide with them.
                process.close()
                raise
        return process

    def get_checkpoints(self) -> list[PersistedCheckpoint]:
        """List every stored checkpoint from the storage's keys alone.

        :return: ``(pid, tag)`` per checkpoint, sorted like
            :meth:`Storage.list <loopaware_persist.storage.Storage.list>`; pids
            keep their type (:class:`uuid.UUID`, ``int``, ``str``)
        :raises StorageError: if the storage fails or holds a malformed key
        """
        keys = self.storage.list_key_tokens()
        pids = self._pids
        checkpoints = _checkpoints(keys, pids)
        if len(pids) > 2 * len(keys) + 1024:
            # Mostly pids deleted since: keep only those listed now.
            self._pids = _PidsByToken({token: pids[token] for token, _ in keys})
        return checkpoints

    def get_process_checkpoints(self, pid: Hashable) -> list[PersistedCheckpoint]:
        """List one process's checkpoints from the storage's keys alone.

        :param pid: the process id
        :return: ``(pid, tag)`` per checkpoint of that process, untagged first,
            then by tag
        :raises ArgumentTypeError: if ``pid`` is ``None`` (which is not "every process")
        :raises EncodeError: if ``pid`` has an unsupported type
        :raises StorageError: if the storage fails or holds a malformed key
        """
        check_pid(pid, call="get_process_checkpoints()")
        keys = self.storage.list_key_tokens(pid)  # type: ignore[arg-type] # plumpy: Hashable
        # A fresh memo: one pid's listing must not grow the one kept for all.
        return _checkpoints(keys, _PidsByToken())

    def delete_checkpoint(self, pid: Hashable, tag: str | None = None) -> None:
        """Delete one checkpoint; no error if it does not exist.

        :param pid: the process id
        :param tag: optional checkpoint tag
        """
        self.storage.delete(self._key(pid, tag))

    def delete_process_checkpoints(self, pid: Hashable) -> None:
        """Delete every checkpoint of a process.

        :param pid: the process id
        :raises ArgumentTypeError: if ``pid`` is ``None`` (which is not "every process")
        """
        check_pid(pid, call="delete_process_checkpoints()")
        self.storage.delete_pid(pid)  # type: ignore[arg-type]

    # Beyond plumpy: listings with headers, saving and loading from a loop, closing.

    def list_info(self, pid: Pid | None = None) -> list[CheckpointInfo]:
        """List checkpoints with their headers (process class, state, codec), no payloads.

        :param pid: only this process's, or all
        :return: one entry per checkpoint; a damaged header is reported, not raised
        """
        infos = []
        for record in self.storage.list(pid):
            try:
                header = read_header(self.storage.read_prefix(record.key, HEADER_PEEK))
            except CheckpointNotFoundError:
                continue  # deleted since the listing
            except LoopAwarePersistError as error:
                infos.append(attrs.evolve(record, error=str(error)))
                continue
            infos.append(attrs.evolve(record, header=header))
        return infos

    async def asave_checkpoint(
        self,
        process: plumpy.Process,
        tag: str | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        """Save without blocking the loop: bundle on the loop, encode and write in a thread.

        :param process: the process (call from its loop)
        :param tag: optional checkpoint tag
        :param expected_version: see :meth:`save_checkpoint`
        :raises ArgumentTypeError: if ``process`` is not a ``plumpy.Process``
        :return: the stored version
        """
        check_process(process, call="asave_checkpoint()")
        meta = _listing_meta(process)
        bundle = self._bundle(process)
        key = self._key(process.pid, tag)

        def write() -> int:
            return self.storage.put(
                key, self.dumps(bundle, meta=meta), expected_version=expected_version
            )

        return await asyncio.to_thread(write)

    async def aload_process(
        self,
        pid: Hashable,
        tag: str | None = None,
        *,
        relink: RelinkHook | None = None,
        **extra: Any,
    ) -> plumpy.Process:
        """Load onto the calling loop, reading the record in a thread.

        The decode (whose hooks may look objects up in a per-thread database session)
        and the load run on the calling thread, as every load does.

        :param pid: the process id
        :param tag: optional checkpoint tag
        :param relink: see :meth:`load_process`
        :param extra: more ``LoadSaveContext`` entries
        :return: the process, every future on the running loop
        """
        ctx = LoopContext.current()
        key = self._key(pid, tag)
        record = await asyncio.to_thread(self.storage.get, key)
        process = self._load_record(record.data, key, ctx, **extra)
        return self._relinked(process, relink)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the storage."""
        self.storage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, pid: Hashable, tag: str | None) -> CheckpointKey:
        # A process is saved at every step under the same pid object: its key is built
        # (validated, its token formatted) once. By identity, so equal pids of other
        # types (True and 1, an IntEnum) still get keys of their own, or are refused.
        last = self._last_key
        if last is not None and last[0] is pid and last[1] is tag:
            return last[2]
        key = CheckpointKey(pid=pid, tag=tag)  # type: ignore[arg-type]
        self._last_key = (pid, tag, key)
        return key


def open_persister(
    url: str = "sqlite:///checkpoints.db",
    *,
    codec: str = "msgpack",
    registry: HookRegistry | None = None,
    allow: Iterable[str | type] = (),
    durability: Durability = "normal",
    compression: str | None = None,
    trusted: bool = False,
    accept: str | Iterable[str] | None = None,
) -> LoopAwarePersister:
    """Open a persister on the storage at ``url``.

    :param url: ``memory://``, ``file:///abs/dir``, ``sqlite:///rel.db`` / ``sqlite:////abs.db``,
        ``postgresql://...``, or a scheme registered in ``loopaware_persist.storages``
    :param codec: ``"msgpack"`` (safe default) or ``"pickle"`` (restricted)
    :param registry: hooks and allow-list (default: ``default_registry``)
    :param allow: the user's modules/classes a load may import, besides plumpy's
    :param durability: ``"full"``: a save has reached the disk before it returns
    :param compression: ``None``, ``"zlib"`` or ``"zstd"``
    :param trusted: skip the allow-list on load (only for stores you alone write)
    :param accept: the codec names whose records a load decodes (default: ``codec`` and
        ``"msgpack"``): ``accept=("msgpack", "pickle")`` reads a store holding both
    :raises ArgumentTypeError: if an argument has the wrong type
    :raises ConfigurationError: if the codec, compression or URL scheme is not available
        here (checked before the store is opened, so nothing is created)
    :return: the persister
    """
    check_instance(
        url,
        str,
        call="open_persister()",
        argument="url",
        wanted="a storage URL (str)",
        hint="Pass e.g. 'sqlite:///checkpoints.db' or Path(...).as_uri() for a directory.",
    )
    check_codec_name(codec)
    _check_compression(compression)
    check_flag(trusted, call="open_persister()", argument="trusted")
    if codec == "pickle-unrestricted":
        codec, trusted = "pickle", True
    storage = open_storage(url, durability=durability)
    try:
        return LoopAwarePersister(
            storage,
            codec=codec,
            registry=registry,
            allow=allow,
            compression=compression,
            trusted=trusted,
            accept=accept,
        )
    except BaseException:
        storage.close()  # a refused argument must not leave a connection or lock open
        raise
