"""Where an AiiDA process's records live: ``aiida://`` (in its ProcessNode) or any store,
keyed per profile.

``aiida://`` (or ``aiida://<profile>``) keeps each record in the process's own node,
under the attribute AiiDA itself uses, ``ProcessNode.CHECKPOINT_KEY`` (``checkpoints``).
Every place aiida-core 2.9 touches that attribute keeps working:

* ``Process.on_terminated`` calls ``persister.delete_checkpoint(pid)`` before sealing
  the node, which removes it (and ``ProcessNode.delete_checkpoint()`` does too);
* the record goes with the node when the node is deleted (``verdi node delete``);
* ``verdi archive create`` strips it (``strip_checkpoints=True``, the default) and
  ``verdi archive import`` strips it again (``tools/archive/imports.py``), so a shared
  archive never carries one;
* ``ProcessNode.checkpoint`` returns it, as text: ``loopaware-persist:1 <version>
  <saved_at> <base64 of the record>``. AiiDA's own ``AiiDAPersister`` cannot read it
  (its YAML loader yields that string, and the load fails), so a runner with the wrong
  persister never resumes from something else; but AiiDA's own daemon worker then
  marks the process excepted and seals it (see the README's AiiDA section on what a
  worker does when it cannot load a checkpoint), so every worker of such a profile
  must be ours. No ``verdi`` command reads the attribute (``verdi process
  show``/``repair`` read the node's state, not its checkpoint).

Only untagged checkpoints, keyed by node pk, as AiiDA's persister: a tag is refused.
Compare-and-set (``expected_version``) reads then writes the attribute inside one
storage transaction of the profile; it guards against a stale writer in this Python
process, not across processes (use ``sqlite://``/``postgresql://`` for fencing).

:class:`ProfileKeyed` wraps any other storage so that its pids carry the profile's
UUID: node pks repeat across profiles, and two profiles sharing one store must never
read each other's checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import time
import urllib.parse
from typing import Any, Final

import attrs

from .._envelope import HEADER_PEEK, MAGIC, read_header, with_meta
from .._errors import (
    CheckpointNotFoundError,
    ConfigurationError,
    CorruptCheckpointError,
    StorageError,
)
from ..storage import (
    CheckpointKey,
    Durability,
    KeyToken,
    Pid,
    RecordInfo,
    Storage,
    StoredRecord,
    pid_from_token,
    pid_token,
)

__all__ = (
    "NODE_UUID_META",
    "RECORD_PREFIX",
    "AiidaNodeStorage",
    "ProfileKeyed",
    "loaded_profile",
    "open_storage",
)

#: How a record kept in a ProcessNode's ``checkpoints`` attribute starts.
RECORD_PREFIX: Final = "loopaware-persist:1 "


def loaded_profile(name: str | None = None) -> Any:
    """The AiiDA profile records are kept for: the loaded one, or ``name`` loaded now.

    :param name: a profile name, or ``None`` for the loaded (else default) profile
    :raises ConfigurationError: if another profile than ``name`` is loaded already
    :return: the ``aiida.manage.configuration.Profile``
    """
    from aiida import load_profile
    from aiida.manage import get_manager

    current = get_manager().get_profile()
    if current is None:
        return load_profile(name)
    if name is not None and current.name != name:
        msg = (
            f"AiiDA profile {current.name!r} is loaded in this Python process, not {name!r}: "
            "records of one profile must not be written while another is loaded. Use "
            f"'aiida://{current.name}', or load {name!r} in a fresh process."
        )
        raise ConfigurationError(msg, option="profile", value=name)
    return current


def _encode(data: bytes, version: int, saved_at: float) -> str:
    return f"{RECORD_PREFIX}{version} {saved_at!r} {base64.b64encode(data).decode('ascii')}"


def _decode(text: Any, pk: int) -> tuple[bytes, int, float] | None:
    """:return: ``(data, version, saved_at)``, or ``None`` if the node holds no record"""
    if text is None:
        return None
    if not isinstance(text, str) or not text.startswith(RECORD_PREFIX):
        msg = (
            f"ProcessNode<{pk}> holds a checkpoint this storage did not write (AiiDA's own "
            "YAML, most likely). Resume it with the persister that saved it, or migrate it."
        )
        raise StorageError(msg)
    try:
        version, saved_at, payload = text[len(RECORD_PREFIX) :].split(" ")
        return base64.b64decode(payload, validate=True), int(version), float(saved_at)
    except (ValueError, binascii.Error) as error:
        msg = f"The checkpoint in ProcessNode<{pk}> is damaged ({error}); delete it."
        raise StorageError(msg) from error


class AiidaNodeStorage(Storage):
    """Records kept in each ProcessNode's ``checkpoints`` attribute.

    :param url: ``aiida://`` (the loaded profile) or ``aiida://<profile>``
    :param durability: accepted for interface parity: the profile's database decides
    :param read_only: refuse every write
    """

    def __init__(
        self, url: str = "aiida://", *, durability: Durability = "normal", read_only: bool = False
    ) -> None:
        super().__init__(url=url, durability=durability)
        self.read_only = bool(read_only)
        self.profile = loaded_profile(_parse_url(url))

    @staticmethod
    def _pk(key: CheckpointKey) -> int:
        if key.tag is not None:
            msg = (
                f"aiida:// keeps one untagged checkpoint per process, as AiiDA does; got tag "
                f"{key.tag!r}. Use a sqlite:// or postgresql:// store for tagged checkpoints."
            )
            raise StorageError(msg)
        if not isinstance(key.pid, int):
            msg = f"aiida:// keys records by ProcessNode pk (an int), not {key.pid!r}."
            raise StorageError(msg)
        return key.pid

    def _node(self, key: CheckpointKey) -> Any:
        from aiida.common.exceptions import NotExistent
        from aiida.orm import ProcessNode, load_node

        pk = self._pk(key)
        try:
            node = load_node(pk)
        except NotExistent:
            raise self._not_found(key) from None
        if not isinstance(node, ProcessNode):
            msg = f"Node<{pk}> is a {type(node).__name__}, not a ProcessNode: no checkpoint."
            raise StorageError(msg)
        return node

    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        from aiida.common.exceptions import ModificationNotAllowed
        from aiida.manage import get_manager

        with get_manager().get_profile_storage().transaction():
            node = self._node(key)
            old = _decode(node.checkpoint, node.pk)
            current = 0 if old is None else old[1]
            if expected_version is not None and expected_version != current:
                raise self._stale(key, expected=expected_version, actual=current)
            try:
                node.set_checkpoint(_encode(data, current + 1, time.time()))
            except ModificationNotAllowed as error:
                msg = (
                    f"ProcessNode<{node.pk}> is sealed (its process ended): no checkpoint can "
                    f"be stored in it ({error})."
                )
                raise StorageError(msg) from error
        return current + 1

    def _record(self, key: CheckpointKey) -> tuple[bytes, int, float]:
        node = self._node(key)
        found = _decode(node.checkpoint, node.pk)
        if found is None:
            raise self._not_found(key)
        return found

    def _get(self, key: CheckpointKey) -> StoredRecord:
        data, version, _ = self._record(key)
        return StoredRecord(key=key, data=data, version=version)

    def _read_prefix(self, key: CheckpointKey, size: int) -> bytes:
        return self._record(key)[0][:size]

    def _delete(self, key: CheckpointKey) -> bool:
        try:
            node = self._node(key)
        except LookupError:
            return False
        if node.checkpoint is None:
            return False
        node.delete_checkpoint()
        return True

    def _delete_pid(self, pid: Pid) -> int:
        return int(self._delete(CheckpointKey(pid=pid)))

    def _query(self, pid: Pid | None) -> builtins.list[tuple[int, str]]:
        from aiida.orm import ProcessNode, QueryBuilder

        filters: dict[str, Any] = {
            f"attributes.{ProcessNode.CHECKPOINT_KEY}": {"like": f"{RECORD_PREFIX}%"}
        }
        if pid is not None:
            if not isinstance(pid, int):
                return []
            filters["id"] = pid
        query = QueryBuilder().append(
            ProcessNode, filters=filters, project=["id", f"attributes.{ProcessNode.CHECKPOINT_KEY}"]
        )
        return [(pk, text) for pk, text in query.iterall()]

    def _list(self, pid: Pid | None) -> builtins.list[RecordInfo]:
        infos = []
        for pk, text in self._query(pid):
            found = _decode(text, pk)
            assert found is not None
            data, version, saved_at = found
            infos.append(
                RecordInfo(
                    key=CheckpointKey(pid=pk), version=version, size=len(data), saved_at=saved_at
                )
            )
        return infos

    def _list_key_tokens(self, pid: Pid | None) -> builtins.list[KeyToken]:
        return [(pid_token(pk), None) for pk, _ in self._query(pid)]

    def _close(self) -> None:
        pass  # the profile's storage belongs to AiiDA's manager


def _parse_url(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "aiida" or parts.path not in ("", "/") or parts.query:
        msg = f"Invalid AiiDA storage URL {url!r}. Use 'aiida://' or 'aiida://<profile>'."
        raise StorageError(msg)
    return urllib.parse.unquote(parts.netloc) or None


def open_storage(
    url: str, *, durability: Durability = "normal", read_only: bool = False
) -> AiidaNodeStorage:
    """Open an ``aiida://`` storage (the entry point of the ``aiida`` URL scheme).

    :param url: ``aiida://`` (the loaded profile, else the default one) or
        ``aiida://<profile>``
    :param durability: ``"normal"`` or ``"full"``; the profile's database decides
    :param read_only: refuse every write
    :raises StorageError: if the URL is malformed
    :raises ConfigurationError: if another profile is loaded
    :return: the storage
    """
    return AiidaNodeStorage(url, durability=durability, read_only=read_only)


#: The record meta entry :class:`ProfileKeyed` stamps with the UUID of the node a record
#: was saved for.
NODE_UUID_META: Final = "aiida_node_uuid"


def _node_uuid(pk: int) -> str | None:
    """:return: the UUID of the loaded profile's node ``pk``, or ``None`` if it has none"""
    from aiida.common.exceptions import NotExistent
    from aiida.manage import get_manager

    try:
        # The storage backend's own lookup: one indexed SELECT (about 0.2 ms on SQLite,
        # against 2.5 ms for a QueryBuilder query, which every save would pay).
        uuid: str = get_manager().get_profile_storage().nodes.get(pk).uuid
    except NotExistent:
        return None
    return uuid


def _stamped(data: bytes, uuid: str) -> bytes:
    """``data`` with ``uuid`` in its meta, if it is a record in this package's envelope."""
    if data[: len(MAGIC)] != MAGIC:
        return data  # not written by a persister: nothing to stamp it in
    meta = read_header(data).meta
    return with_meta(data, {**meta, NODE_UUID_META: uuid})


def _unstamped(data: bytes) -> tuple[bytes, str | None]:
    """:return: ``data`` as it was before :func:`_stamped` (byte for byte), and the UUID
    it was stamped with (``None`` for a record without one)"""
    if data[: len(MAGIC)] != MAGIC:
        return data, None
    try:
        meta = dict(read_header(data).meta)
    except CorruptCheckpointError:
        return data, None  # the decode names the damage
    uuid = meta.pop(NODE_UUID_META, None)
    if not isinstance(uuid, str):
        return data, None
    return with_meta(data, meta), uuid


class ProfileKeyed(Storage):
    """Another storage, its pids prefixed with an AiiDA profile's UUID.

    Node pks repeat across profiles; one ``sqlite://`` or ``postgresql://`` store serving
    several profiles keeps them apart this way. Pids go in and come out as the pks.

    A node's record outlives the node (``verdi node delete`` does not know this store),
    and ``core.sqlite_dos`` hands a deleted node's pk to the next node made. So a record
    is stamped with its node's UUID (its meta's ``aiida_node_uuid``), and a record
    stamped for another node than the one the pk now names is treated as absent for it:
    ``get`` raises :class:`~loopaware_persist.CheckpointNotFoundError` saying whose it is
    and how to remove it, ``delete`` leaves it (it is not the new node's to delete), and
    a save of the new node replaces it. Records not in this package's envelope (written
    through this storage directly) and records written before the stamp are not checked.

    :param inner: the storage records live in (closed with this one)
    :param profile_uuid: the profile's UUID (``profile.uuid``)
    """

    def __init__(self, inner: Storage, profile_uuid: str) -> None:
        super().__init__(url=inner.url, durability=inner.durability)
        self.read_only = inner.read_only
        self.inner = inner
        self.prefix = f"aiida:{profile_uuid}:"

    def _outer(self, key: CheckpointKey) -> CheckpointKey:
        return CheckpointKey(pid=self.prefix + key.token, tag=key.tag)

    def _back(self, token: str) -> str | None:
        """:return: the pid token a stored (inner) token stands for, if it is this profile's"""
        pid = pid_from_token(token)
        if isinstance(pid, str) and pid.startswith(self.prefix):
            return pid[len(self.prefix) :]
        return None

    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        if isinstance(key.pid, int):
            uuid = _node_uuid(key.pid)
            if uuid is not None:
                data = _stamped(data, uuid)
        return self.inner.put(self._outer(key), data, expected_version=expected_version)

    def _stale_owner(
        self, key: CheckpointKey, saved_for: str | None
    ) -> CheckpointNotFoundError | None:
        """:param saved_for: the node UUID the record is stamped with
        :return: the error to raise if the record was saved for another node than the
            one ``key.pid`` names now, else ``None``"""
        if saved_for is None or not isinstance(key.pid, int):
            return None
        current = _node_uuid(key.pid)
        if current == saved_for:
            return None
        now = "no node" if current is None else f"node {current}"
        msg = (
            f"The record for pk {key.pid} in {self.url!r} was saved for the AiiDA node "
            f"{saved_for}, but pk {key.pid} is now {now}: it belongs to a deleted node "
            "(core.sqlite_dos reuses the pks of deleted nodes), and is treated as absent. "
            f"Delete it: loopaware-persist rm --store '{self.url}' '{self.prefix}{key.token}'."
        )
        return CheckpointNotFoundError(msg, pid=key.pid, tag=key.tag)

    def _get(self, key: CheckpointKey) -> StoredRecord:
        record = self.inner.get(self._outer(key))
        data, saved_for = _unstamped(record.data)
        stale = self._stale_owner(key, saved_for)
        if stale is not None:
            raise stale
        return StoredRecord(key=key, data=data, version=record.version)

    def _read_prefix(self, key: CheckpointKey, size: int) -> bytes:
        outer = self._outer(key)
        asked = max(size, HEADER_PEEK)  # enough for the header the stamp is in
        head = self.inner.read_prefix(outer, asked)
        data, saved_for = _unstamped(head)
        if saved_for is not None and len(data) < size and len(head) == asked:
            # The stamp took room: read as much more as it took.
            data, _ = _unstamped(self.inner.read_prefix(outer, asked + len(head) - len(data)))
        return data[:size]

    def _delete(self, key: CheckpointKey) -> bool:
        if isinstance(key.pid, int):
            try:
                head = self.inner.read_prefix(self._outer(key), HEADER_PEEK)
            except CheckpointNotFoundError:
                return False
            if self._stale_owner(key, _unstamped(head)[1]) is not None:
                return False
        return self.inner.delete(self._outer(key))

    def _delete_pid(self, pid: Pid) -> int:
        if isinstance(pid, int):
            return sum(self._delete(info.key) for info in self._list(pid))
        return self.inner.delete_pid(self.prefix + pid_token(pid))

    def _list(self, pid: Pid | None) -> builtins.list[RecordInfo]:
        inner = None if pid is None else self.prefix + pid_token(pid)
        infos = []
        for info in self.inner.list(inner):
            token = self._back(info.key.token)
            if token is not None:
                key = CheckpointKey(pid=pid_from_token(token), tag=info.key.tag)
                infos.append(attrs.evolve(info, key=key))
        return infos

    def _list_key_tokens(self, pid: Pid | None) -> builtins.list[KeyToken]:
        inner = None if pid is None else self.prefix + pid_token(pid)
        keys = []
        for token, tag in self.inner.list_key_tokens(inner):
            back = self._back(token)
            if back is not None:
                keys.append((back, tag))
        return keys

    def _close(self) -> None:
        self.inner.close()
