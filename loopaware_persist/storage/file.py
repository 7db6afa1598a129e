"""``file:///abs/dir``: one file per checkpoint in a directory.

File format
    Each record is one file: a small header, then the data verbatim::

        magic "LAPCKPT1" | header length u32 | version u64 | saved_at f64
        | data size u64 | pid-token length u32 | tag flag u8 | pid token | tag
        | CRC-32 of everything before it                       (big-endian)

    The header carries the version, the save time and the full key, so
    :meth:`FileStorage.list` reads one small ``pread`` per record and never the
    data, and a hashed file name (below) is checked against the real key.
    :meth:`~FileStorage.list_key_tokens` reads names only: it opens no file
    but those whose name is hashed or not one this storage writes.

File names
    ``<pid>.ckpt`` for the untagged checkpoint and ``<pid>.t<tag>.ckpt`` for a
    tagged one, where ``<pid>`` is the escaped :func:`pid_token` and ``<tag>``
    the escaped tag. Escaping keeps ``[a-z0-9_:-]`` and writes every other
    UTF-8 byte as ``%xx`` (lower-case hex), so names never hold ``/``, NUL,
    upper-case letters (case-insensitive file systems stay injective) or ``.``
    (the separator; names cannot be ``.`` or ``..`` and never start with a dot,
    which keeps temp and lock files apart). Names longer than 200 characters
    become ``<first 130 chars>~<sha256 of the full name>.ckpt``: ``~`` marks
    them and the header is checked, so keys stay injective.

Writes
    Data goes to ``.tmp-<random>`` in the same directory, is fsynced (durability
    ``"full"``), the version is read from the current file and written into the
    temp file's header under a lock, then ``os.replace`` swaps it in (and the
    directory is fsynced with ``"full"``). Data of up to 64 KiB is written with
    its header, under the lock, in one write (and one fsync). A reader opens one
    inode, so it sees the old record or the new one, never a mix. The temp file
    is the only file a save opens once the lock files are open: the version of a
    record this storage wrote last is remembered, and trusted while the store's
    generation (below) and the file's inode, size and mtime are what that write
    left. (Writers of a release without the generation are told apart by the
    file alone: only one that reused the inode within the clock's tick, at the
    same size, would go unseen.)

Locks (``fcntl.flock``, so they hold across threads and processes)
    ``.loopaware-versions.lock``, exclusive, guards read-version/replace (and
    deletes), so versions never go backwards or repeat. Its first 8 bytes are
    the store's generation, bumped under that lock before every replace or
    removal.
    ``.loopaware-writers.lock`` is held *shared* by every writer while its temp
    file exists; sweeping orphan temp files on open takes it exclusively and
    without blocking, so a live writer's temp file is never swept.
    Writers keep both lock files open between saves
    (:mod:`~loopaware_persist.storage._file_locks` says how threads, ``fork()``
    and an unlinked lock file are handled).

Read-only opening (``read_only=True``, what the CLI's ``ls``, ``show`` and
``verify`` use) creates no directory and no lock file and sweeps nothing; a
missing directory is an error. In either mode a non-empty directory that holds
no lock file and something other than checkpoint and temp files is refused,
untouched: it is not a store.

Only regular files are read. A FIFO, socket, device or directory named like a
checkpoint is never opened for reading (a FIFO would block the reader
forever): listings skip it with a warning, :meth:`FileStorage.find_damaged`
reports it and reading its key raises :class:`CorruptStoredRecordError`.

Every OS call of an operation goes through :class:`FileIO`, which tests replace
to inject crashes and I/O errors at each step (closing the lock files when the
storage closes does not: it is no step of a save or a delete).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import stat
import time
import urllib.parse
from collections.abc import Iterator

from loopaware_persist._errors import (
    DurabilityError,
    StorageError,
)
from loopaware_persist.storage._base import (
    CheckpointKey,
    CorruptStoredRecordError,
    Durability,
    KeyToken,
    Pid,
    RecordInfo,
    Storage,
    StoredRecord,
    check_store_exists,
    pid_from_token,
    pid_token,
)
from loopaware_persist.storage._file_format import (
    HEADER_GUESS,
    MAX_NAME,
    PLAIN_NAME,
    SUFFIX as SUFFIX,
    TEMP_PREFIX as TEMP_PREFIX,
    VERSIONS_LOCK as VERSIONS_LOCK,
    WRITERS_LOCK as WRITERS_LOCK,
    RecordHeader,
    _DamagedHeader,
    checkpoint_filename as checkpoint_filename,
    decode_header,
    encode_header,
    escape,
    header_size,
    key_token_from_name,
    may_hold_pid,
)
from loopaware_persist.storage._file_locks import LockFile

__all__ = (
    "FileIO",
    "FileStorage",
    "checkpoint_filename",
    "local_path",
    "open_storage",
    "path_from_url",
)

_LOG = logging.getLogger(__name__)
#: Remembered record versions per storage; beyond this many the memory is cleared.
_KNOWN_MAX = 65_536
#: Records up to this size are written with their header in one write, under the lock.
_ONE_WRITE = 64 * 1024


class FileIO:
    """The operating-system calls :class:`FileStorage` makes, one method each.

    The default makes the real calls. Subclass it to inject faults: raise an
    ``OSError`` (or a ``BaseException`` standing for a crash) from any step of a
    write (open, pwrite, fsync, replace...) and check the storage survives.
    """

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        """``os.open`` with ``O_CLOEXEC``, so no exec'd child keeps a lock alive."""
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        """``os.close``."""
        os.close(fd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        """``os.pwrite``; may write less than asked."""
        return os.pwrite(fd, data, offset)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """``os.pread``; may read less than asked."""
        return os.pread(fd, size, offset)

    def fstat(self, fd: int) -> os.stat_result:
        """``os.fstat``."""
        return os.fstat(fd)

    def stat(self, path: str) -> os.stat_result:
        """``os.stat`` (follows symbolic links)."""
        return os.stat(path)

    def fsync(self, fd: int) -> None:
        """``os.fsync``."""
        os.fsync(fd)

    def replace(self, src: str, dst: str) -> None:
        """``os.replace``: atomic on POSIX within one file system."""
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        """``os.unlink``."""
        os.unlink(path)

    def listdir(self, path: str) -> builtins.list[str]:
        """``os.listdir``."""
        return os.listdir(path)

    def scandir(self, path: str) -> builtins.list[tuple[str, bool | None]]:
        """``os.scandir``: each name with whether it is a regular file, as the
        directory entry tells without a ``stat`` (``None``: a symbolic link, or a
        file system that does not say)."""
        found: builtins.list[tuple[str, bool | None]] = []
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    if entry.is_symlink():
                        found.append((entry.name, None))
                    else:
                        found.append((entry.name, entry.is_file(follow_symlinks=False)))
                except OSError:
                    found.append((entry.name, None))
        return found

    def makedirs(self, path: str) -> None:
        """``os.makedirs(path, exist_ok=True)``."""
        os.makedirs(path, exist_ok=True)

    def flock(self, fd: int, operation: int) -> None:
        """``fcntl.flock``."""
        fcntl.flock(fd, operation)


def path_from_url(url: str) -> str:
    """The directory a ``file:`` URL names (RFC 8089, as ``Path.as_uri()`` writes).

    Accepts ``file:///abs/dir``, ``file://localhost/abs/dir`` and
    ``file:/abs/dir``; percent-escapes are decoded (non-UTF-8 bytes too).

    :param url: the URL
    :raises StorageError: if it is not a local, absolute ``file:`` URL
    :return: the absolute, normalised directory path
    """
    hint = "Write it as pathlib.Path('/abs/dir').as_uri() does, e.g. 'file:///var/lib/ckpt'."
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "file":
        msg = f"Not a file URL: {url!r}. {hint}"
        raise StorageError(msg)
    if parts.query or parts.fragment:
        msg = f"A file storage URL takes no query or fragment: {url!r}. {hint}"
        raise StorageError(msg)
    if parts.netloc not in ("", "localhost"):
        msg = (
            f"The file URL {url!r} names the host {parts.netloc!r}; only local directories "
            f"are supported (did you mean 'file:///{parts.netloc}{parts.path}'?). {hint}"
        )
        raise StorageError(msg)
    if not parts.path.startswith("/"):
        msg = f"The file URL {url!r} holds a relative path; it must be absolute. {hint}"
        raise StorageError(msg)
    raw = urllib.parse.unquote_to_bytes(parts.path)
    if b"\0" in raw:
        msg = f"The file URL {url!r} holds a NUL byte, which no path can contain."
        raise StorageError(msg)
    return os.path.normpath(os.fsdecode(raw))


def _pread_exact(io: FileIO, fd: int, size: int, offset: int) -> bytes:
    """Read ``size`` bytes or up to end of file, whichever comes first."""
    chunks = []
    while size > 0:
        chunk = io.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _pwrite_all(io: FileIO, fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = io.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view = view[written:]
        offset += written


class FileStorage(Storage):
    """Checkpoints as files in a directory; see the module docstring for the format.

    :param url: ``file:///abs/dir``
    :param durability: ``"full"`` fsyncs each file and the directory before a
        put returns; ``"normal"`` relies on atomic rename alone (safe against a
        process crash, not against power loss)
    :param io: the OS-call layer; tests pass a fault-injecting :class:`FileIO`
    :param read_only: create, lock and sweep nothing; writes raise :class:`StorageError`
    :param create: create the directory if it is missing (else refuse it)
    :raises StorageError: if the URL is invalid, the directory is not a
        checkpoint store, or (``read_only`` or not ``create``) it does not exist
    :raises DurabilityError: if the directory cannot be created
    """

    def __init__(
        self,
        url: str,
        *,
        durability: Durability = "normal",
        io: FileIO | None = None,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        super().__init__(url=url, durability=durability)
        self.root = path_from_url(url)
        # os.path.join(self.root, name) for the names this storage makes (never absolute).
        self._prefix = os.path.join(self.root, "")
        self._io = io if io is not None else FileIO()
        self._full = self.durability == "full"
        self.read_only = bool(read_only)
        self._writers = LockFile(self._io, self._path(WRITERS_LOCK))
        self._versions = LockFile(self._io, self._path(VERSIONS_LOCK))
        # File path -> (generation, inode, size, mtime_ns, version) of the record this
        # storage last wrote there: its version, without reading its header.
        self._known: dict[str, tuple[int, int, int, int, int]] = {}
        if self.read_only:
            check_store_exists(url, self.root, directory=True)
            self._check_owner()
            return
        if not create:
            check_store_exists(url, self.root, directory=True, reading=False)
        if os.path.isdir(self.root):
            self._check_owner()
        try:
            self._io.makedirs(self.root)
        except OSError as exc:
            msg = (
                f"Cannot create the checkpoint directory {self.root!r} for {url!r}: {exc}. "
                f"Create it yourself or choose a writable location."
            )
            raise DurabilityError(msg) from exc
        if not os.path.isdir(self.root):
            msg = f"{self.root!r} (from {url!r}) is not a directory. Choose a directory."
            raise StorageError(msg)
        self.sweep_temp_files()

    # -- helpers ---------------------------------------------------------------

    def _check_owner(self) -> None:
        """Refuse a directory that is not a checkpoint store, before changing anything."""
        try:
            names = self._io.listdir(self.root)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                return  # unlistable: nothing here can be told apart, nor swept
            raise self._read_error(None, self.root, exc) from exc
        if not names or VERSIONS_LOCK in names or WRITERS_LOCK in names:
            return  # empty (a new store), or one a writer has opened
        foreign = sorted(
            name for name in names if not name.endswith(SUFFIX) and not name.startswith(TEMP_PREFIX)
        )
        if foreign:
            shown = ", ".join(repr(name) for name in foreign[:5])
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            msg = (
                f"{self.root!r} ({self.url!r}) is not a loopaware checkpoint store: it holds "
                f"{shown}{more} and no {WRITERS_LOCK}. It was left unchanged. Point the URL at "
                f"a checkpoint directory, or at a new or empty one to create a store."
            )
            raise StorageError(msg)

    def _open_regular(self, path: str, *, regular: bool | None = None) -> int | None:
        """Open a record file for reading, never anything but a regular file.

        :param regular: what the directory entry said (``True``: a regular file,
            so the ``stat`` is skipped; the hot path of a listing)
        :return: the descriptor, or ``None`` if there is no such file
        :raises CorruptStoredRecordError: if it is a FIFO, directory, device...
        :raises OSError: if the OS refuses
        """
        io = self._io
        if not regular:
            try:
                before = io.stat(path)
            except FileNotFoundError:
                return None
            if not stat.S_ISREG(before.st_mode):
                raise self._not_regular(path, before.st_mode)
        try:
            # O_NONBLOCK: should a FIFO be swapped in after the check, opening it
            # returns at once instead of waiting for a writer, and reading it
            # returns nothing (a truncated header) instead of blocking.
            fd = io.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        if regular:
            return fd
        try:
            mode = io.fstat(fd).st_mode
        except BaseException:
            io.close(fd)
            raise
        if not stat.S_ISREG(mode):
            io.close(fd)
            raise self._not_regular(path, mode)
        return fd

    def _not_regular(self, path: str, mode: int) -> CorruptStoredRecordError:
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file"
        )
        return self._damaged(path, f"it is {kind}, not a regular file; it was not opened")

    def _path(self, name: str) -> str:
        return self._prefix + name

    @contextlib.contextmanager
    def _flock(self, name: str, operation: int) -> Iterator[None]:
        # A fresh descriptor per use: flock belongs to the open file description,
        # so threads sharing one descriptor would not exclude each other, and a
        # descriptor opened before a fork would be shared with the child.
        fd = self._io.open(self._path(name), os.O_RDWR | os.O_CREAT)
        try:
            self._io.flock(fd, operation)
            try:
                yield
            finally:
                # Unlock explicitly: a child forked meanwhile holds a duplicate of
                # fd, and close() alone would not release the lock until it exits.
                self._io.flock(fd, fcntl.LOCK_UN)
        finally:
            self._io.close(fd)

    def _fsync_dir(self) -> None:
        fd = self._io.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._io.fsync(fd)
        finally:
            self._io.close(fd)

    def _damaged(self, path: str, reason: str) -> CorruptStoredRecordError:
        msg = (
            f"The checkpoint file {path!r} in {self.url!r} is damaged or is not a loopaware "
            f"checkpoint ({reason}). Move it out of the directory, or delete() its record, "
            f"and restore it from a backup if you need it."
        )
        # Damage found below the envelope is still a damaged checkpoint: callers
        # catching CorruptCheckpointError (or StorageError) both see it.
        return CorruptStoredRecordError(msg)

    def _read_error(self, key: CheckpointKey | None, path: str, exc: OSError) -> StorageError:
        what = "the directory" if key is None else f"pid {key.pid!r} with tag {key.tag!r}"
        msg = (
            f"Cannot read {what} from {self.url!r} ({path}): {exc}. "
            f"Check that the directory exists and is readable."
        )
        return StorageError(msg)

    def _read_header(self, fd: int, path: str) -> tuple[RecordHeader, bytes]:
        """Read a header with one pread (two for huge keys); also return the bytes read."""
        buf = _pread_exact(self._io, fd, HEADER_GUESS, 0)
        try:
            header = decode_header(buf)
            if isinstance(header, int):
                # The length comes from the (unverified) header: a damaged one can
                # claim up to 4 GiB, and os.pread allocates what it is asked for
                # before reading. Never ask for more than the file holds.
                if len(buf) < HEADER_GUESS or header > self._io.fstat(fd).st_size:
                    raise _DamagedHeader(
                        f"truncated header ({len(buf)} bytes, header says {header})"
                    )
                buf = _pread_exact(self._io, fd, header, 0)
                header = decode_header(buf)
                if isinstance(header, int):
                    raise _DamagedHeader(f"truncated header ({len(buf)} of {header} bytes)")
        except _DamagedHeader as exc:
            raise self._damaged(path, str(exc)) from None
        return header, buf

    def _open_record(self, key: CheckpointKey) -> tuple[int, str] | None:
        path = self._path(checkpoint_filename(key))
        try:
            fd = self._open_regular(path)
        except OSError as exc:
            raise self._read_error(key, path, exc) from exc
        return None if fd is None else (fd, path)

    def _check_key(self, header: RecordHeader, key: CheckpointKey, path: str) -> None:
        if header.key != key:
            # Only a SHA-256 collision between hashed names, or a file copied in
            # under the wrong name, gets here.
            raise self._damaged(path, f"it holds the record of {header.key!r}, not {key!r}")

    def _version_now(
        self,
        key: CheckpointKey,
        path: str,
        generation: int,
        known: tuple[int, int, int, int, int] | None,
    ) -> int:
        """The current version of ``key``, under the versions lock: the one this
        storage ``known`` it wrote, if nothing changed the store since, else read."""
        if known is not None and known[0] == generation:
            try:
                found = self._io.stat(path)
            except FileNotFoundError:
                found = None
            if found is not None and (found.st_ino, found.st_size, found.st_mtime_ns) == known[1:4]:
                return known[4]
        return self._current_version(key, path)

    def _remember(self, path: str, generation: int, written: os.stat_result, version: int) -> None:
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()
        self._known[path] = (
            generation,
            written.st_ino,
            written.st_size,
            written.st_mtime_ns,
            version,
        )

    def _current_version(self, key: CheckpointKey, path: str) -> int:
        fd = self._open_regular(path)
        if fd is None:
            return 0
        try:
            header, _ = self._read_header(fd, path)
        finally:
            self._io.close(fd)
        self._check_key(header, key, path)
        return header.version

    # -- Storage hooks ---------------------------------------------------------

    def _put(self, key: CheckpointKey, data: bytes, *, expected_version: int | None) -> int:
        io = self._io
        path = self._path(checkpoint_filename(key))
        header_length = header_size(key)
        replaced = False
        try:
            with self._writers.shared():
                temp = self._path(f"{TEMP_PREFIX}{secrets.token_hex(8)}")
                fd = io.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                try:
                    # A large payload is written (and synced) before taking the version
                    # lock, so concurrent writers only serialise on a small header; a
                    # small one goes with its header in one write (and one fsync).
                    small = len(data) <= _ONE_WRITE
                    if not small:
                        _pwrite_all(io, fd, data, header_length)
                        if self._full:
                            io.fsync(fd)
                    with self._versions.exclusive() as lock_fd:
                        # Forgotten until this write is in place and remembered.
                        known = self._known.pop(path, None)
                        generation = self._versions.generation(lock_fd)
                        current = self._version_now(key, path, generation, known)
                        if expected_version is not None and expected_version != current:
                            raise self._stale(key, expected=expected_version, actual=current)
                        version = current + 1
                        header = encode_header(
                            key, version=version, saved_at=time.time(), size=len(data)
                        )
                        _pwrite_all(io, fd, header + data if small else header, 0)
                        if self._full:
                            io.fsync(fd)
                        written = io.fstat(fd)
                        # Forget fd before closing it: a failed close() still
                        # frees the descriptor, and closing it twice could close
                        # another thread's file.
                        closing, fd = fd, -1
                        io.close(closing)
                        # Bumped before the replace: whatever happens next, no
                        # writer trusts a version it remembers from before.
                        self._versions.set_generation(lock_fd, generation + 1)
                        io.replace(temp, path)
                        replaced = True
                        self._remember(path, generation + 1, written, version)
                        if self._full:
                            self._fsync_dir()
                finally:
                    # Cleanup must not mask the error that got us here.
                    if fd >= 0:
                        with contextlib.suppress(OSError):
                            io.close(fd)
                    if not replaced:
                        with contextlib.suppress(OSError):
                            io.unlink(temp)
        except StorageError:
            raise
        except OSError as exc:
            if replaced:
                outcome = (
                    "The new record is in place but may not survive a power loss "
                    "(the directory fsync failed)."
                )
            else:
                outcome = "Nothing was stored; the previous record, if any, is intact."
            msg = (
                f"Could not save the checkpoint for pid {key.pid!r} with tag {key.tag!r} to "
                f"{self.url!r} ({path}): {exc}. {outcome} Check that the directory is "
                f"writable and has free space, then save again."
            )
            raise DurabilityError(msg) from exc
        return version

    def _get(self, key: CheckpointKey) -> StoredRecord:
        opened = self._open_record(key)
        if opened is None:
            raise self._not_found(key)
        fd, path = opened
        try:
            # One read of the whole file: fstat and pread see the same inode even
            # if a writer replaces the name meanwhile.
            size = self._io.fstat(fd).st_size
            buf = _pread_exact(self._io, fd, size, 0)
        except OSError as exc:
            raise self._read_error(key, path, exc) from exc
        finally:
            self._io.close(fd)
        try:
            header = decode_header(buf)
        except _DamagedHeader as exc:
            raise self._damaged(path, str(exc)) from None
        if isinstance(header, int) or header.length + header.size != len(buf):
            raise self._damaged(path, f"{len(buf)} bytes on disk, header says otherwise")
        self._check_key(header, key, path)
        return StoredRecord(key=key, data=buf[header.length :], version=header.version)

    def _read_prefix(self, key: CheckpointKey, size: int) -> bytes:
        opened = self._open_record(key)
        if opened is None:
            raise self._not_found(key)
        fd, path = opened
        try:
            header, buf = self._read_header(fd, path)
            self._check_key(header, key, path)
            want = min(size, header.size)
            if header.length + want <= len(buf):
                data = buf[header.length : header.length + want]
            else:
                data = _pread_exact(self._io, fd, want, header.length)
            if len(data) != want:
                raise self._damaged(path, "data shorter than its header says")
        except OSError as exc:
            raise self._read_error(key, path, exc) from exc
        finally:
            self._io.close(fd)
        return data

    def _delete(self, key: CheckpointKey) -> bool:
        path = self._path(checkpoint_filename(key))
        try:
            with self._versions.exclusive() as lock_fd:
                self._known.pop(path, None)
                if "~" in os.path.basename(path):
                    # Hashed name: make sure it is this key's file before removing it.
                    self._current_version(key, path)
                self._versions.set_generation(lock_fd, self._versions.generation(lock_fd) + 1)
                try:
                    self._io.unlink(path)
                except FileNotFoundError:
                    return False
                if self._full:
                    self._fsync_dir()
                return True
        except StorageError:
            raise
        except OSError as exc:
            msg = (
                f"Could not delete the checkpoint for pid {key.pid!r} with tag {key.tag!r} "
                f"from {self.url!r} ({path}): {exc}. Check that the directory is writable."
            )
            raise DurabilityError(msg) from exc

    def _delete_pid(self, pid: Pid) -> int:
        try:
            with self._versions.exclusive() as lock_fd:
                self._versions.set_generation(lock_fd, self._versions.generation(lock_fd) + 1)
                count = 0
                for name, _ in self._scan(pid):
                    self._known.pop(self._path(name), None)
                    try:
                        self._io.unlink(self._path(name))
                    except FileNotFoundError:
                        continue
                    count += 1
                if count and self._full:
                    self._fsync_dir()
                return count
        except StorageError:
            raise
        except OSError as exc:
            msg = (
                f"Could not delete the checkpoints of pid {pid!r} from {self.url!r}: {exc}. "
                f"Some may remain; check that the directory is writable and retry."
            )
            raise DurabilityError(msg) from exc

    def _listdir(self) -> builtins.list[str]:
        try:
            return self._io.listdir(self.root)
        except OSError as exc:
            raise self._read_error(None, self.root, exc) from exc

    def _listed_header(
        self,
        path: str,
        damaged: builtins.list[CorruptStoredRecordError] | None = None,
        regular: bool | None = None,
    ) -> RecordHeader | None:
        """Read a file's header for a listing.

        :param damaged: collects the damage found, instead of logging it
        :param regular: whether the directory entry says it is a regular file
        :return: the header, or ``None`` if the file is gone or damaged (logged)
        """
        io = self._io
        try:
            fd = self._open_regular(path, regular=regular)
        except CorruptStoredRecordError as exc:
            self._skip(exc, damaged)
            return None
        except OSError as exc:
            raise self._read_error(None, path, exc) from exc
        if fd is None:
            return None  # deleted since listdir
        try:
            header, _ = self._read_header(fd, path)
        except OSError as exc:
            raise self._read_error(None, path, exc) from exc
        except CorruptStoredRecordError as exc:
            # One damaged file must not hide every healthy checkpoint (plumpy's
            # PicklePersister fails the whole listing). Its key is unreadable, so
            # it cannot be listed; say where it is instead.
            self._skip(exc, damaged)
            return None
        finally:
            io.close(fd)
        return header

    @staticmethod
    def _skip(
        exc: CorruptStoredRecordError, damaged: builtins.list[CorruptStoredRecordError] | None
    ) -> None:
        if damaged is None:
            _LOG.warning("skipping a damaged checkpoint file while listing: %s", exc)
        else:
            damaged.append(exc)

    def _scan(
        self, pid: Pid | None, damaged: builtins.list[CorruptStoredRecordError] | None = None
    ) -> builtins.list[tuple[str, RecordInfo]]:
        # The hot loop of list(): one open/pread/close per record and as little
        # Python as possible around it (10,000 records should list in tens of ms).
        token = None if pid is None else pid_token(pid)
        escaped = None if token is None else escape(token)
        found = []
        prefix = self.root.rstrip("/") + "/"
        try:
            entries = self._io.scandir(self.root)
        except OSError as exc:
            raise self._read_error(None, self.root, exc) from exc
        for name, regular in entries:
            if not name.endswith(SUFFIX) or name.startswith("."):
                continue
            if escaped is not None and not may_hold_pid(name, escaped):
                continue
            header = self._listed_header(prefix + name, damaged, regular)
            if header is None:
                continue
            key = header.key
            # A plain name is the key it stands for (list_key_tokens() and get() read
            # it so): a record copied or renamed by hand to another plain name is
            # listed under that name, where get() reports it as damaged. Listed by
            # its header, it would list that key twice and verify would check the
            # real record twice and never this file.
            plain = PLAIN_NAME.fullmatch(name) if len(name) <= MAX_NAME else None
            if plain is not None and plain.groups() != (key.token, key.tag):
                key = CheckpointKey(pid_from_token(plain[1]), plain[2])
            if token is not None and key.token != token:
                continue
            info = RecordInfo(
                key=key, version=header.version, size=header.size, saved_at=header.saved_at
            )
            found.append((name, info))
        return found

    def _list(self, pid: Pid | None) -> builtins.list[RecordInfo]:
        return [info for _, info in self._scan(pid)]

    def _find_damaged(self, pid: Pid | None) -> builtins.list[CorruptStoredRecordError]:
        damaged: builtins.list[CorruptStoredRecordError] = []
        self._scan(pid, damaged)
        return damaged

    def _list_key_tokens(self, pid: Pid | None) -> builtins.list[KeyToken]:
        # A name checkpoint_filename writes stands for its key, so most files
        # are listed from their names alone, opening nothing. The rest (hashed
        # names, which keep only a prefix of the key, and names this storage
        # does not write) are read as list() reads them, so they are listed,
        # or skipped, exactly as there.
        token = None if pid is None else pid_token(pid)
        escaped = None if token is None else escape(token)
        plain = PLAIN_NAME.fullmatch
        found: builtins.list[KeyToken] = []
        prefix = self.root.rstrip("/") + "/"
        for name in self._listdir():
            match = plain(name)
            if match is not None and len(name) <= MAX_NAME:
                pair: KeyToken | None = match.groups()  # type: ignore[assignment]
            elif not name.endswith(SUFFIX) or name.startswith("."):
                continue  # temp files, locks, foreign files
            else:
                pair = key_token_from_name(name)
            if pair is not None:
                if token is None or pair[0] == token:
                    found.append(pair)
                continue
            if escaped is not None and not may_hold_pid(name, escaped):
                continue
            header = self._listed_header(prefix + name)
            if header is not None and (token is None or header.key.token == token):
                found.append((header.key.token, header.key.tag))
        return found

    def _close(self) -> None:
        # Only the lock files stay open between operations; a forked child reopens
        # them (see _file_locks), so a FileStorage is safe to use after fork.
        self._writers.close()
        self._versions.close()
        self._known.clear()

    # -- maintenance -------------------------------------------------------------

    def sweep_temp_files(self) -> int:
        """Remove temp files that crashed writers left behind.

        Runs on open. Skipped (returns 0) while any writer is active in the
        directory, whose temp file must not be swept, or if the directory is
        read-only.

        :raises StorageError: if the directory cannot be listed
        :return: how many temp files were removed
        """
        try:
            with self._flock(WRITERS_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB):
                names = self._io.listdir(self.root)
                removed = 0
                for name in names:
                    if name.startswith(TEMP_PREFIX):
                        with contextlib.suppress(FileNotFoundError):
                            self._io.unlink(self._path(name))
                            removed += 1
                return removed
        except BlockingIOError:
            return 0  # a writer is active; its temp file is not an orphan
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return 0  # a read-only store can still be read
            raise self._read_error(None, self.root, exc) from exc


def open_storage(
    url: str,
    *,
    durability: Durability = "normal",
    io: FileIO | None = None,
    read_only: bool = False,
    create: bool = True,
) -> FileStorage:
    """Open a ``file:///abs/dir`` storage, creating the directory if needed.

    :param url: an RFC 8089 file URL, as ``pathlib.Path.as_uri()`` writes it
    :param durability: ``"normal"`` or ``"full"`` (fsync files and directory)
    :param io: the OS-call layer, for fault injection in tests
    :param read_only: create, lock and sweep nothing; refuse a missing directory
    :param create: create a missing directory (else refuse it, creating nothing)
    :raises StorageError: if the URL is not a local absolute file URL, the
        directory is not a checkpoint store, or (``read_only`` or not ``create``)
        it does not exist
    :raises DurabilityError: if the directory cannot be created
    :return: the storage
    """
    return FileStorage(url, durability=durability, io=io, read_only=read_only, create=create)


def local_path(url: str) -> str:
    """:return: the directory a ``file:`` URL names
    :raises StorageError: if it is not a local absolute file URL"""
    return path_from_url(url)
