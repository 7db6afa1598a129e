"""Convert sources: what :class:`~._convert.Converter` reads from, a loopaware store
or a plumpy ``PicklePersister`` directory.

:class:`StoreSource` decodes in safe mode. :class:`PickleSource` unpickles, which runs
whatever code the files name, so it must be constructed with ``trusted=True``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
from plumpy.persistence import META, META__CLASS_NAME

from .._envelope import read_header
from .._errors import (
    CorruptCheckpointError,
    CorruptStoredRecordError,
    OpsError,
    StorageError,
)
from .._persister import LoopAwarePersister
from ..storage import CheckpointKey, local_path, pid_token
from ..storage._url import redact_url

#: The URL scheme of a plumpy ``PicklePersister`` directory as a convert source.
PLUMPY_PICKLE_SCHEME: Final = "plumpy-pickle"


def pickle_dir_from_url(url: str) -> str:
    """The directory a ``plumpy-pickle:///abs/dir`` URL names.

    :param url: the URL
    :raises StorageError: if it is not a local absolute URL
    :return: the directory
    """
    scheme, sep, rest = url.partition(":")
    if scheme.lower() != PLUMPY_PICKLE_SCHEME or not sep:
        msg = (
            f"Not a {PLUMPY_PICKLE_SCHEME}: URL: {url!r}. Use '{PLUMPY_PICKLE_SCHEME}:///abs/dir'."
        )
        raise StorageError(msg)
    path = local_path("file:" + rest)
    assert path is not None  # file: names a directory
    return path


@attrs.frozen(kw_only=True)
class SourceItem:
    """One record a convert source offers.

    :param ref: stable name of the record in its source, stored as the resume marker
    :param label: how to show it
    :param key: its key, if known without decoding it (pickles are keyed inside)
    :param stored_at: when the source wrote it (a store's ``stored_at``, a pickle file's
        modification time), if it knows: the ``saved_at`` of a record whose header has none
    """

    ref: str
    label: str
    key: CheckpointKey | None = None
    stored_at: float | None = None


class Source(Protocol):
    """Where a convert reads from."""

    url: str

    def items(self) -> list[SourceItem]:
        """:return: the records, in a stable order"""

    def read(self, item: SourceItem) -> bytes:
        """:return: the record's bytes, exactly as stored"""

    def decode(self, item: SourceItem, data: bytes) -> tuple[CheckpointKey, Any, dict[str, Any]]:
        """:return: the key, the decoded bundle and the header meta to carry over"""


def _store_id(url: str) -> str:
    """What names a store in a resume marker: its real path when local, else its URL."""
    path = local_path(url)
    if path is not None:
        return f"{url.partition(':')[0].lower()}:{os.path.realpath(path)}"
    return redact_url(url)


def _store_ref(store: str, key: CheckpointKey) -> str:
    return json.dumps([store, pid_token(key.pid), key.tag])


class StoreSource:
    """Read the records of a loopaware_persist store, decoding them in safe mode.

    :param persister: the source store (never written to)
    """

    def __init__(self, persister: LoopAwarePersister) -> None:
        self.persister = persister
        self.url = persister.storage.url
        self._store = _store_id(self.url)

    def items(self) -> list[SourceItem]:
        """:return: every record, in key order"""
        return [
            SourceItem(
                ref=_store_ref(self._store, record.key),
                label=str(record.key.pid)
                + ("" if record.key.tag is None else f" tag={record.key.tag}"),
                key=record.key,
                stored_at=record.stored_at,
            )
            for record in self.persister.storage.list()
        ]

    def damaged(self) -> list[CorruptStoredRecordError]:
        """:return: the records :meth:`items` skipped because their key or row is damaged"""
        return self.persister.storage.find_damaged()

    def read(self, item: SourceItem) -> bytes:
        """:return: the record's bytes"""
        assert item.key is not None
        return self.persister.storage.get(item.key).data

    def decode(self, item: SourceItem, data: bytes) -> tuple[CheckpointKey, Any, dict[str, Any]]:
        """:raises DecodeError: if the record is damaged or not safe to decode
        :return: the key, the bundle and its header meta
        """
        assert item.key is not None
        bundle = self.persister.loads(data, key=item.key)
        meta = dict(read_header(data).meta)
        if "saved_at" not in meta and item.stored_at is not None:
            meta["saved_at"] = item.stored_at
        return item.key, bundle, meta


_STATE_CLASSES: Final = {
    f"plumpy.process_states:{name}": name.lower()
    for name in ("Created", "Running", "Waiting", "Finished", "Excepted", "Killed")
}


class PickleSource:
    """Read a plumpy ``PicklePersister`` directory. Unpickling runs the code the files name.

    :param directory: the pickle directory (its top-level ``*.pickle`` files)
    :param trusted: must be ``True``: the caller vouches for every file in it
    :raises OpsError: if not trusted, or the directory does not exist
    """

    def __init__(self, directory: str, *, trusted: bool = False) -> None:
        if not trusted:
            msg = (
                f"Refusing to read the plumpy pickle directory {directory}: unpickling runs "
                "any code the files name. Pass --trust-pickle (trusted=True) only for files "
                "that you alone wrote."
            )
            raise OpsError(msg)
        if not os.path.isdir(directory):
            msg = f"The plumpy pickle directory {directory} does not exist or is not a directory."
            raise OpsError(msg)
        self.directory = directory
        self.url = (
            Path(directory).absolute().as_uri().replace("file:", PLUMPY_PICKLE_SCHEME + ":", 1)
        )

    def items(self) -> list[SourceItem]:
        """:return: the ``*.pickle`` files, sorted by name (plumpy writes no others)"""
        items = []
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.endswith(".pickle") and os.path.isfile(path):
                items.append(
                    SourceItem(
                        ref=json.dumps([self.url, name]),
                        label=name,
                        stored_at=os.stat(path).st_mtime,
                    )
                )
        return items

    def read(self, item: SourceItem) -> bytes:
        """:return: the file's bytes"""
        return Path(self.directory, item.label).read_bytes()

    def decode(self, item: SourceItem, data: bytes) -> tuple[CheckpointKey, Any, dict[str, Any]]:
        """Unpickle (trusted) a plumpy ``PersistedPickle``.

        :raises CorruptCheckpointError: if the file is not one
        :return: its key, its bundle and meta built from the bundle
        """
        try:
            persisted = pickle.loads(data)  # the caller passed trusted=True
        except Exception as error:
            msg = f"{item.label} does not unpickle ({type(error).__name__}: {error})."
            raise CorruptCheckpointError(msg) from error
        checkpoint = getattr(persisted, "checkpoint", None)
        bundle = getattr(persisted, "bundle", None)
        if not isinstance(bundle, dict) or checkpoint is None or not hasattr(checkpoint, "pid"):
            msg = (
                f"{item.label} holds a {type(persisted).__name__}, not plumpy's "
                "PersistedPickle(checkpoint, bundle)."
            )
            raise CorruptCheckpointError(msg)
        key = CheckpointKey(pid=checkpoint.pid, tag=getattr(checkpoint, "tag", None))
        process_meta = bundle.get(META)
        state = bundle.get("_state")
        state_meta = state.get(META) if isinstance(state, dict) else None
        meta: dict[str, Any] = {
            "process_class": (
                str(process_meta.get(META__CLASS_NAME))
                if isinstance(process_meta, dict) and META__CLASS_NAME in process_meta
                else None
            ),
            "state": (
                _STATE_CLASSES.get(str(state_meta.get(META__CLASS_NAME)))
                if isinstance(state_meta, dict)
                else None
            ),
            "saved_at": item.stored_at,
        }
        return key, bundle, meta
