"""How a :class:`~loopaware_persist.LoopAwarePersister` turns bundles into records and back.

Saving bundles the process (futures as snapshots, awaited ones by a stand-in),
encodes the bundle with the persister's codec and wraps it in the checksummed
envelope; loading verifies the envelope, picks the codec the record names (only
one of those the persister accepts) and decodes in safe mode. ``verify`` runs a
load's decode and audit on a record before it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import plumpy

from ._arguments import check_instance, check_process, describe
from ._awaiting import check_relinkable, put_back, stand_ins
from ._bound import load_record, tree_of
from ._envelope import MAX_EXPANSION, decode_envelope, encode_envelope
from ._errors import (
    ArgumentTypeError,
    ConfigurationError,
    DecodeError,
    EncodeError,
    LoopAwarePersistError,
    UnsafeCheckpointError,
)
from ._excepted import store_exception_faithfully
from ._loop import LoopContext
from ._owners import note_process
from ._registry import HookRegistry
from ._unbundle import LoopAwareBundle, _rebind
from .codecs import Codec, available_codecs, get_codec
from .storage import CheckpointKey


def _accepted(accept: str | Iterable[str] | None, codec: str) -> frozenset[str]:
    if accept is None:
        return frozenset({codec, "msgpack"})
    known = set(available_codecs()) - {"pickle-unrestricted"}
    # bytes are iterable too, as ints: b"msgpack" would be refused as "accept names 109".
    if isinstance(accept, (bytes, bytearray, memoryview)) or not isinstance(
        accept, (str, Iterable)
    ):
        msg = (
            f"LoopAwarePersister() takes a codec name or an iterable of them as accept, got "
            f"{describe(accept)}. Pass e.g. accept=('msgpack', 'pickle')."
        )
        raise ArgumentTypeError(msg, argument="accept")
    names = frozenset({accept} if isinstance(accept, str) else accept)
    for name in names:
        if not isinstance(name, str):
            msg = (
                f"LoopAwarePersister() takes codec names as accept entries, got "
                f"{describe(name)}; use names from {sorted(known)}."
            )
            raise ArgumentTypeError(msg, argument="accept")
        if name not in known:
            # Records name "pickle" whichever way they are loaded: trusted=True lifts the
            # restriction, not the codec name.
            msg = (
                f"accept names {name!r}, which is no codec a record can name here; use "
                f"codec names from {sorted(known)} (trusted=True loads pickle unrestricted)."
            )
            raise ConfigurationError(msg)
    return names | {codec}


def _label(key: CheckpointKey) -> str:
    return f"{key.pid!r}" if key.tag is None else f"{key.pid!r} (tag {key.tag!r})"


#: Modules of a script or notebook being run (not importable by another process).
_SCRIPT_MODULES = frozenset({"__main__", "__mp_main__"})


class _Encoding:
    """The encoding half of :class:`~loopaware_persist.LoopAwarePersister`.

    The persister sets these attributes; the methods here only read them (and fill
    the cache of codecs that records name).
    """

    registry: HookRegistry
    codec: Codec
    compression: str | None
    trusted: bool
    accept: frozenset[str]
    _codecs: dict[str, Codec]

    def _codec_for(self, name: str, key: CheckpointKey | None) -> Codec:
        if name not in self.accept and name in available_codecs():
            where = "This record" if key is None else f"The checkpoint {_label(key)}"
            accepted = ", ".join(map(repr, sorted(self.accept)))
            wanted = ", ".join(map(repr, sorted(self.accept | {name})))
            msg = (
                f"{where} was written with codec {name!r}; this persister decodes only "
                f"{accepted}. If the store is meant to hold {name!r} records, open it with "
                f"open_persister(url, accept=({wanted})) (or codec={name!r}); otherwise "
                "the record was not written by this application."
            )
            raise UnsafeCheckpointError(msg, name=name)
        codec = self._codecs.get(name)
        if codec is None:
            try:
                if name not in self.accept:
                    raise ValueError(name)  # not installed, or it would be refused above
                codec = get_codec(name, registry=self.registry)
            except ValueError as error:
                msg = f"Checkpoint was written with codec {name!r}, which is not installed here."
                raise DecodeError(msg) from error
            self._codecs[name] = codec
        return codec

    def dumps(self, bundle: plumpy.Bundle, *, meta: dict[str, Any] | None = None) -> bytes:
        """Encode a bundle into record bytes (codec + envelope).

        :param bundle: the bundle
        :param meta: listing data stored in the header
        :raises EncodeError: naming the path of a value that cannot be stored
        :raises ArgumentTypeError: if ``bundle`` is not a dict
        :return: the record
        """
        check_instance(
            bundle,
            dict,
            call="dumps()",
            argument="bundle",
            wanted="a plumpy Bundle (a dict)",
            hint="Pass plumpy.Bundle(process), or use save_checkpoint(process).",
        )
        if meta is not None:
            check_instance(meta, dict, call="dumps()", argument="meta", wanted="a dict or None")
        payload = self.codec.encode(bundle)
        return encode_envelope(
            payload, codec=self.codec.name, compression=self.compression, meta=meta
        )

    def loads(self, data: bytes, *, key: CheckpointKey | None = None) -> LoopAwareBundle:
        """Verify and decode record bytes into a loop-aware bundle.

        :param data: a record
        :param key: the checkpoint it was read from, named in errors
        :raises DecodeError: (a subclass) for damaged, unknown or unsafe content;
            :class:`UnsafeCheckpointError` for a codec outside ``accept``
        :raises ArgumentTypeError: if ``data`` is not bytes
        :return: the bundle
        """
        check_instance(
            data,
            (bytes, bytearray, memoryview),
            call="loads()",
            argument="data",
            wanted="a record (bytes)",
            hint="Pass what dumps() or storage.get(key).data returned.",
        )
        tree = self._decode_tree(data, key)
        return LoopAwareBundle.wrap(
            tree,
            registry=self.registry,
            trusted=self.trusted,
            redecode=lambda: self._decode_tree(data, key),
        )

    def _decode_tree(self, data: bytes, key: CheckpointKey | None) -> dict[str, Any]:
        # trusted: records this store's own writer made, whatever their expansion.
        envelope = decode_envelope(data, max_expansion=None if self.trusted else MAX_EXPANSION)
        return tree_of(self._codec_for(envelope.header.codec, key).decode(envelope.payload))

    def _load_record(
        self, data: bytes, key: CheckpointKey, ctx: LoopContext, **extra: Any
    ) -> plumpy.Savable:
        """Decode a record and load it onto ``ctx.loop`` (see :func:`load_record`).

        :param data: the record
        :param key: the checkpoint it was read from, named in errors
        :param ctx: the target loop
        :param extra: more entries for plumpy's ``LoadSaveContext``
        :return: the loaded object
        """
        envelope = decode_envelope(data, max_expansion=None if self.trusted else MAX_EXPANSION)
        codec = self._codec_for(envelope.header.codec, key)
        return load_record(
            codec, envelope.payload, ctx, registry=self.registry, trusted=self.trusted, **extra
        )

    def check_save(self, process: plumpy.Process) -> plumpy.Bundle:
        """Bundle, encode and decode ``process`` without storing it: will it reload?

        :param process: the process
        :raises EncodeError: naming the path of a value that will not reload
        :raises ArgumentTypeError: if ``process`` is not a ``plumpy.Process``
        :return: the decoded bundle, as a load would see it
        """
        check_process(process, call="check_save()")
        return self._verify(process, self.dumps(self._bundle(process)))

    def _verify(self, process: plumpy.Process, data: bytes) -> LoopAwareBundle:
        check_relinkable(process)
        # What a load runs before plumpy: decode, then the one walk that audits every
        # name against the allow-list (a process class outside it decodes fine and is
        # only refused there) and makes every snapshot a future, at any depth. The
        # futures go on the process's own loop (we are on its thread) and are dropped.
        try:
            bundle = self.loads(data)
            _rebind(
                bundle,
                process.loop,
                copy=True,
                registry=None if self.trusted else self.registry,
            )
            # That walk was the bundle's first load (objects it holds were walked in
            # place): a caller who unbundles it gets a fresh decode.
            bundle._loaded = True
        except LoopAwarePersistError as error:
            msg = f"The checkpoint of {process.pid} would not reload: {error}"
            raise EncodeError(msg) from error
        return bundle

    def _bundle(self, process: plumpy.Process) -> plumpy.Bundle:
        # plumpy stores the process's class by name and checks only that the name loads
        # here: one defined in __main__ (a script, a notebook) saved, then every load was
        # refused by the allow-list. Refused now, unless the allow-list names that module
        # itself: a script that allows its own __name__ reloads when it runs again.
        # Only those two reasons: a class made dynamically (AiiDA's process functions) is
        # left to the load's object loader, which may know it under another name.
        cls = type(process)
        if cls.__module__ in _SCRIPT_MODULES:
            if not self.registry.may_revive(cls, "savable"):
                self.registry.check_importable(cls, "a process of class")
        elif "<locals>" in cls.__qualname__.split("."):
            self.registry.check_importable(cls, "a process of class")
        # The owner of this process's future must be known before a parent awaiting
        # it is saved; awaited futures are saved as snapshots (see _awaiting.py).
        note_process(process)
        try:
            # awaiting_snapshots(process), without a generator's cost on every save.
            state, swapped = stand_ins(process)
            try:
                bundle = plumpy.Bundle(process)
            finally:
                put_back(state, swapped)
            store_exception_faithfully(bundle, process)
            return bundle
        except LoopAwarePersistError:
            raise
        except Exception as error:
            hint = (
                " plumpy deep-copies auto-persisted members, so one holding a live future or "
                "lock cannot be saved (see the README's known limitations)."
                if isinstance(error, TypeError)
                else " Its class must be importable by module:name."
            )
            msg = (
                f"plumpy could not bundle process {process.pid} "
                f"({type(error).__name__}: {error}).{hint}"
            )
            raise EncodeError(msg) from error
