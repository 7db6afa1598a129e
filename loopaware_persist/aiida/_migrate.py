"""Moving a profile's AiiDA YAML checkpoints into a store of ours, and back: :func:`migrate`.

Forward, for each unsealed ProcessNode whose ``checkpoints`` attribute holds the YAML
``AiiDAPersister`` wrote:

1. read it with the safe loader (:func:`~._yaml.load_aiida_yaml`; ``trust=True``: AiiDA's
   own unsafe one) and audit the bundle against the allow-list, the YAML strings AiiDA
   parses later (``INPUTS_RAW``...) included; anything refused is reported for that
   process and the others go on;
2. encode it with the chosen codec, decode the record again, audit it, check that it
   holds the same state (:func:`same_state`: types, values, the same rows), and unbundle
   it as a resume would, with a runner of its own on a private loop (no persister, no
   broker: nothing is written), so a checkpoint that would not resume is not migrated;
3. write it: to ``aiida://``, in one transaction of the profile's storage, the record
   replaces the YAML in ``checkpoints``; to any other store, the record is written and
   read back first, and only then, in one transaction, the YAML leaves ``checkpoints``.
   Either way the original YAML is kept in the node's extra :data:`BACKUP_EXTRA` with the
   SHA-256 of the record, until :func:`prune_backups`.

An interrupted run leaves each process either untouched or migrated (a record written to
another store before the YAML left the node is written again by the next run), so
running it again finishes the job; a process whose ``checkpoints`` changed meanwhile (a
daemon still running) is reported and left as it is.

Backward (``back=True``), for each record of the profile in the store: if the record is
still the one migration wrote (its SHA-256 is the backup's), the original YAML is put
back byte for byte; otherwise the record is decoded and written with AiiDA's own
``serialize``, exactly as ``AiiDAPersister.save_checkpoint`` would have, after checking
that AiiDA's YAML of it reads back through the safe loader to the same state. The record
is removed from the store after the node holds the YAML, and the backup extra with it.
"""

from __future__ import annotations

import hashlib
import time
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

import attrs
from plumpy.persistence import META, META__CLASS_NAME

from .._arguments import check_flag, check_instance
from .._audit import audit_bundle
from .._errors import LoopAwarePersistError, OpsError, UnsafeLoadWarning
from .._loop import LoopContext
from .._ops import CONVERTED_FROM, CONVERTED_SHA256, throwaway_loop
from .._persister import LoopAwarePersister
from .._unbundle import unbundle
from ..storage import CheckpointKey
from ..storage._url import redact_url
from ._install import make_persister
from ._storage import RECORD_PREFIX, AiidaNodeStorage, _encode
from ._yaml import dump_aiida_yaml, load_aiida_yaml, load_aiida_yaml_unsafe

__all__ = ("BACKUP_EXTRA", "MigrationResult", "migrate", "prune_backups", "same_state")

#: The node extra that keeps the YAML a migration replaced, until :func:`prune_backups`.
BACKUP_EXTRA: Final = "loopaware_persist_yaml_backup"

_NOTHING_RUN: Final = (
    " Nothing was run; its YAML is left in the node. Add the modules of its process to "
    "allow=[...] (--allow) if they are yours, or read it with AiiDA's unsafe loader "
    "(trust=True, --trust) only if you trust this profile's database."
)

Status = Literal["migrated", "dry-run", "skipped", "refused", "failed"]


@attrs.frozen(kw_only=True)
class MigrationResult:
    """What happened to one process.

    :param pk: the ProcessNode's pk
    :param status: ``migrated``; ``dry-run`` (would be migrated); ``skipped`` (nothing to
        do: already migrated, or its process ended); ``refused`` (its checkpoint names
        what the safe loader or the allow-list refuses); ``failed`` (anything else)
    :param reason: why, for every status but ``migrated``/``dry-run``; what was written
        back for ``back``
    :param process_class: the process class the checkpoint names, if it was read
    :param seconds: the time spent on it
    """

    pk: int
    status: Status
    reason: str | None = None
    process_class: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """:return: a JSON-ready summary"""
        return attrs.asdict(self)


class _Refused(Exception):
    """One process cannot be migrated: ``status`` and ``reason`` say why."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status: Status = status
        self.reason = reason


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _class_of(bundle: Any) -> str | None:
    meta = bundle.get(META) if isinstance(bundle, dict) else None
    name = meta.get(META__CLASS_NAME) if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def _state_of(bundle: Any) -> str | None:
    state = bundle.get("_state") if isinstance(bundle, dict) else None
    name = _class_of(state)
    return None if name is None else name.rpartition(":")[2].lower()


def _transaction() -> Any:
    from aiida.manage import get_manager

    return get_manager().get_profile_storage().transaction()


def _load_node(pk: int) -> Any:
    from aiida.orm import load_node

    return load_node(pk)


def _why(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


class _Migration:
    def __init__(self, persister: LoopAwarePersister, *, trust: bool, dry_run: bool) -> None:
        self.persister = persister
        self.registry = persister.registry
        self.trust = trust
        self.dry_run = dry_run
        self.in_node = isinstance(persister.storage, AiidaNodeStorage)
        self.store = redact_url(persister.storage.url)

    # region forward

    def read_yaml(self, text: str, pk: int) -> Any:
        where = f"ProcessNode<{pk}>"
        try:
            if self.trust:
                bundle = load_aiida_yaml_unsafe(text)
            else:
                bundle = load_aiida_yaml(text, self.registry, where=where)
                audit_bundle(bundle, self.registry)
        except LoopAwarePersistError as error:
            raise _Refused("refused", _why(error) + _NOTHING_RUN) from error
        except Exception as error:  # a constructor of a refused-or-broken value
            raise _Refused("failed", f"unreadable: {_why(error)}") from error
        if not isinstance(bundle, dict) or _class_of(bundle) is None:
            raise _Refused("failed", f"{where} holds YAML that is not a process bundle")
        return bundle

    def encode(self, bundle: Any, pk: int, text: str, saved_at: float) -> bytes:
        meta = {
            "process_class": _class_of(bundle),
            "state": _state_of(bundle),
            "saved_at": saved_at,
            CONVERTED_FROM: f"aiida-yaml:{pk}",
            CONVERTED_SHA256: _sha256(text),
        }
        try:
            data = self.persister.dumps(
                bundle, meta={k: v for k, v in meta.items() if v is not None}
            )
        except LoopAwarePersistError as error:
            raise _Refused("failed", f"encode: {_why(error)}") from error
        self.check_record(data, bundle, pk)
        return data

    def check_record(self, data: bytes, expected: Any, pk: int) -> None:
        """Decode ``data`` as a load would, audit it, and compare it with ``expected``."""
        try:
            decoded = self.persister.loads(data, key=CheckpointKey(pid=pk))
            audit_bundle(decoded, self.registry)
            same = same_state(decoded, expected)
        except Exception as error:
            raise _Refused("failed", f"the record does not read back: {_why(error)}") from error
        if not same:
            raise _Refused("failed", "the record reads back to another state than the YAML's")
        try:
            self._try_unbundle(decoded)  # compared already: it may be consumed
        except Exception as error:  # a resume would fail the same way
            raise _Refused("failed", f"the record does not unbundle: {_why(error)}") from error

    def _try_unbundle(self, bundle: Any) -> None:
        """Unbundle as a resume would, with a runner of its own on a private loop (no
        persister, no broker), and throw the process away: this runs the
        ``load_instance_state`` of allowed classes only, and writes nothing."""
        from aiida.engine.runners import Runner

        # A WorkChain's loaded awaitables schedule a poll on this loop, dropped with it.
        with throwaway_loop() as loop:
            runner = Runner(loop=loop)
            process = unbundle(
                bundle, LoopContext(loop=loop), registry=self.registry, copy=False, runner=runner
            )
            process.close()  # type: ignore[attr-defined]
            runner.close()

    def forward(self, node: Any) -> tuple[Status, str | None, str | None]:
        text = node.checkpoint
        if node.is_sealed:
            return "skipped", "sealed: its process has ended", None
        if not isinstance(text, str):
            return "skipped", "no checkpoint", None
        if text.startswith(RECORD_PREFIX):
            return "skipped", "already migrated (aiida://)", None
        bundle = self.read_yaml(text, node.pk)
        data = self.encode(bundle, node.pk, text, node.mtime.timestamp())
        if self.dry_run:
            return "dry-run", None, _class_of(bundle)
        backup = {
            "yaml": text,
            "record_sha256": _sha256(data),
            "store": self.store,
            "migrated_at": time.time(),
        }
        if self.in_node:
            self._swap(node.pk, text, backup, _encode(data, 1, time.time()))
            self._read_back(node.pk, data, restore=(text, backup))
        else:
            key = CheckpointKey(pid=node.pk)
            found = [i.version for i in self.persister.storage.list(node.pk) if i.key == key]
            version = found[0] if found else 0  # a copy an interrupted run left: replaced
            self.persister.storage.put(key, data, expected_version=version)
            self._read_back(node.pk, data, restore=None)
            try:
                self._swap(node.pk, text, backup, None)
            except _Refused:
                self.persister.storage.delete(key)
                raise
        return "migrated", None, _class_of(bundle)

    def _swap(self, pk: int, text: str, backup: dict[str, Any], record: str | None) -> None:
        """In one transaction: keep ``text`` as the backup, put ``record`` (or nothing) in
        its place; if ``checkpoints`` is no longer ``text``, change nothing."""
        with _transaction():
            node = _load_node(pk)
            if node.checkpoint != text or node.is_sealed:
                reason = (
                    "its checkpoint changed during the migration (is a daemon running? stop it "
                    "with 'verdi daemon stop' and run the migration again)"
                )
                raise _Refused("failed", reason)
            node.base.extras.set(BACKUP_EXTRA, backup)
            if record is None:
                node.delete_checkpoint()
            else:
                node.set_checkpoint(record)

    def _read_back(self, pk: int, data: bytes, *, restore: tuple[str, Any] | None) -> None:
        key = CheckpointKey(pid=pk)
        try:
            same = self.persister.storage.get(key).data == data
            problem = None if same else "the store returned other bytes than were written"
        except LoopAwarePersistError as error:
            problem = f"written but not readable back: {_why(error)}"
        if problem is None:
            return
        if restore is not None:  # aiida://: put the YAML back, in one transaction
            with _transaction():
                node = _load_node(pk)
                node.set_checkpoint(restore[0])
                node.base.extras.delete(BACKUP_EXTRA)
        else:
            self.persister.storage.delete(key)
        raise _Refused("failed", problem)

    # endregion

    # region back

    def back(self, node: Any) -> tuple[Status, str | None, str | None]:
        key = CheckpointKey(pid=node.pk)
        record = self.persister.storage.get(key)
        if node.is_sealed:
            return "skipped", "sealed: its process has ended (the record is left to prune)", None
        backup = node.base.extras.get(BACKUP_EXTRA, None)
        text: str | None = None
        how = "written from the record with AiiDA's serialize"
        if (
            isinstance(backup, dict)
            and backup.get("record_sha256") == _sha256(record.data)
            and isinstance(backup.get("yaml"), str)
        ):
            text, how = backup["yaml"], "the original YAML, unchanged since the migration"
            bundle = self.read_yaml(text, node.pk)
        else:
            try:
                bundle = self.persister.loads(record.data, key=key)
                audit_bundle(bundle, self.registry)
            except LoopAwarePersistError as error:
                raise _Refused("refused", _why(error)) from error
            text = dump_aiida_yaml(bundle)
            self._check_yaml(text, bundle, node.pk)
        if self.dry_run:
            return "dry-run", how, _class_of(bundle)
        with _transaction():
            fresh = _load_node(node.pk)
            if self.in_node and fresh.checkpoint != node.checkpoint:
                raise _Refused("failed", "its checkpoint changed during the migration")
            fresh.set_checkpoint(text)
            if fresh.base.extras.get(BACKUP_EXTRA, None) is not None:
                fresh.base.extras.delete(BACKUP_EXTRA)
        if not self.in_node:
            self.persister.storage.delete(key)
        return "migrated", how, _class_of(bundle)

    def _check_yaml(self, text: str, bundle: Any, pk: int) -> None:
        """What AiiDA will read must hold only AiiDA's tags and read back to ``bundle``
        (but for the dicts that AiiDA's ``AttributeDict`` converts)."""
        try:
            again = load_aiida_yaml(text, self.registry, where=f"ProcessNode<{pk}>")
            same = same_state(again, bundle, as_aiida_reads=True)
        except LoopAwarePersistError as error:
            reason = f"AiiDA's YAML of this record would not read back safely: {_why(error)}"
            raise _Refused("failed", reason) from error
        if not same:
            raise _Refused("failed", "AiiDA's YAML of this record reads back to another state")

    # endregion


def same_state(a: Any, b: Any, *, as_aiida_reads: bool = False) -> bool:
    """Whether two bundles hold the same state: the same types and values, ORM entities
    the same rows (by pk), the engine's ``Awaitable`` the same attributes (the bundles'
    own classes aside: a decoded record is a ``LoopAwareBundle``).

    :param a: a bundle
    :param b: another
    :param as_aiida_reads: ``a`` is what AiiDA's loader made of ``b``'s YAML: a plain
        dict of ``b`` may be an ``AttributeDict`` in ``a`` (its constructor converts
        the dicts it holds)
    :return: whether they match
    """
    from aiida.common import AttributeDict
    from aiida.orm import Entity
    from aiida.orm.utils.managers import NodeLinksManager

    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    stack: list[tuple[Any, Any]] = [(dict(a), dict(b))]
    seen: set[tuple[int, int]] = set()
    while stack:
        x, y = stack.pop()
        if (id(x), id(y)) in seen:
            continue
        seen.add((id(x), id(y)))
        if type(x) is not type(y) and not (
            as_aiida_reads and type(x) is AttributeDict and type(y) is dict
        ):
            return False
        if isinstance(x, Entity):
            if x.pk != y.pk:
                return False
        elif isinstance(x, NodeLinksManager):
            if (x._node.pk, x._link_type, x._incoming) != (y._node.pk, y._link_type, y._incoming):
                return False
        elif isinstance(x, Mapping):
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif isinstance(x, types.SimpleNamespace):  # the engine's Awaitable
            stack.append((vars(x), vars(y)))
        elif x != y:
            return False
    return True


def _candidates(back: bool, persister: LoopAwarePersister, pks: Iterable[int] | None) -> list[int]:
    if pks is not None:
        return sorted(set(pks))
    if back:
        return sorted({key.pid for key, _ in _keys(persister) if isinstance(key.pid, int)})
    from aiida.orm import ProcessNode, QueryBuilder

    query = QueryBuilder().append(
        ProcessNode,
        filters={"attributes": {"has_key": ProcessNode.CHECKPOINT_KEY}},
        project=["id"],
    )
    return sorted(pk for (pk,) in query.all())


def _keys(persister: LoopAwarePersister) -> list[tuple[CheckpointKey, int]]:
    return [(info.key, info.version) for info in persister.storage.list() if info.key.tag is None]


def _check_no_daemon() -> None:
    from aiida.engine.daemon.client import DaemonClient

    from ._storage import loaded_profile

    chosen = loaded_profile()
    if DaemonClient(chosen).is_daemon_running:
        msg = (
            f"The daemon of AiiDA profile {chosen.name!r} is running: its workers hold "
            "processes in memory and would checkpoint them as YAML again after the "
            "migration. Stop it ('verdi daemon stop'), migrate, then start the workers "
            "that use the new store."
        )
        raise OpsError(msg)


def migrate(
    profile: str | None = None,
    store: str | None = None,
    *,
    allow: Iterable[str | type] = (),
    codec: str = "msgpack",
    compression: str | None = "zlib",
    back: bool = False,
    trust: bool = False,
    dry_run: bool = False,
    pks: Iterable[int] | None = None,
    progress: Callable[[MigrationResult], None] | None = None,
) -> list[MigrationResult]:
    """Move a profile's AiiDA YAML checkpoints into ``store`` (or, ``back``, out of it).

    Nothing a checkpoint names is run (unless ``trust``). Every record is read back and
    checked before the YAML it replaces leaves the node; the YAML stays in the node's
    :data:`BACKUP_EXTRA` extra until :func:`prune_backups`. See the module docstring for
    the steps, for resuming an interrupted run, and for ``back``. Refused while the
    profile's daemon runs; a process that checkpoints meanwhile anyway (a worker of this
    package) is reported and left as it was.

    :param profile: the profile (default: the loaded one, else the default profile)
    :param store: ``None``/``"aiida://"`` (records in the ProcessNodes) or a store URL
        (``sqlite:///…``, ``postgresql://…``), keyed by the profile's UUID
    :param allow: the modules or classes of the profile's processes (WorkChains,
        CalcJobs, plugins) and of values their checkpoints hold
    :param codec: the records' codec (``"msgpack"``, ``"pickle"``)
    :param compression: the records' compression (``"zlib"`` by default, as
        :func:`~loopaware_persist.aiida.make_persister`)
    :param back: write the store's records back as AiiDA YAML instead, and remove them
    :param trust: read YAML with AiiDA's own unsafe loader, which runs what it names
    :param dry_run: read, convert and check everything; write nothing
    :param pks: only these ProcessNodes (default: every one with a checkpoint; ``back``:
        every one with a record in the store)
    :param progress: called with each result as it is made
    :raises ConfigurationError: if another profile is loaded, or the store or the codec
        is unknown
    :raises OpsError: if the profile's daemon is running (unless ``dry_run``)
    :raises ArgumentTypeError: if a flag is not a bool, or a pk not an int
    :return: one result per process, in pk order
    """
    for argument, value in (("back", back), ("trust", trust), ("dry_run", dry_run)):
        check_flag(value, call="migrate()", argument=argument)
    if pks is not None:
        pks = list(pks)
        for pk in pks:
            check_instance(
                pk, int, call="migrate()", argument="pks", wanted="ProcessNode pks (ints)"
            )
    if trust:
        warnings.warn(
            "migrate(trust=True): AiiDA checkpoints are read with AiiDA's unsafe YAML "
            "loader, which runs whatever they name. Use it only for a database you trust.",
            UnsafeLoadWarning,
            stacklevel=2,
        )
    persister = make_persister(profile, store, allow=allow, codec=codec, compression=compression)
    try:
        if not dry_run:
            _check_no_daemon()
        migration = _Migration(persister, trust=trust, dry_run=dry_run)
        step = migration.back if back else migration.forward
        results = []
        for pk in _candidates(back, persister, pks):
            start = time.perf_counter()
            try:
                status, reason, process_class = step(_load_node(pk))
            except _Refused as refused:
                status, reason, process_class = refused.status, refused.reason, None
            except Exception as error:  # one process's failure never stops the others
                status, reason, process_class = "failed", _why(error), None
            result = MigrationResult(
                pk=pk,
                status=status,
                reason=reason,
                process_class=process_class,
                seconds=time.perf_counter() - start,
            )
            if progress is not None:
                progress(result)
            results.append(result)
        return results
    finally:
        persister.close()


def prune_backups(profile: str | None = None, *, dry_run: bool = False) -> list[int]:
    """Drop the YAML a migration kept (:data:`BACKUP_EXTRA`) from the nodes no longer
    holding AiiDA YAML: after it, ``migrate(back=True)`` writes every checkpoint from its
    record. The extra goes into ``verdi archive create`` archives, so prune before
    sharing one.

    :param profile: the profile (default: the loaded one, else the default profile)
    :param dry_run: only say which
    :return: the pks pruned (or that would be)
    """
    from aiida.orm import Node, QueryBuilder

    from ._storage import loaded_profile

    loaded_profile(profile)
    query = QueryBuilder().append(
        Node, filters={"extras": {"has_key": BACKUP_EXTRA}}, project=["id"]
    )
    pruned = []
    for (pk,) in sorted(query.all()):
        node = _load_node(pk)
        text = getattr(node, "checkpoint", None)
        if isinstance(text, str) and not text.startswith(RECORD_PREFIX):
            continue  # holds AiiDA YAML again (back): the extra is stale but harmless
        if not dry_run:
            node.base.extras.delete(BACKUP_EXTRA)
        pruned.append(pk)
    return pruned
