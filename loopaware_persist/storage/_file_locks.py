"""The file storage's lock files, kept open between operations.

A small save used to open both lock files afresh (two ``open``/``close`` pairs per
save). A :class:`LockFile` opens its file once and keeps the descriptor. What the
fresh descriptor gave for free is kept by hand:

* ``flock`` belongs to the open file description, so threads sharing the descriptor
  would not exclude each other: an exclusive lock is also a ``threading.Lock``, and a
  shared one is counted (the first holder locks the file, the last one unlocks it).
* A descriptor inherited through ``fork()`` shares the parent's lock: the child never
  uses it (nor unlocks it, which would release the parent's lock); after a fork each
  lock file is reopened on first use (as the SQLite storage parks its connections).
* A lock file unlinked (or replaced) while held open would lock nobody out: after
  taking the lock, a descriptor whose file has no link left is reopened.

The versions lock file also holds the store's *generation*: 8 bytes that every
writer of this package bumps, under the exclusive lock, before it replaces or
removes a record. A writer that finds the generation it left and the file it wrote
(same inode, size and mtime) knows the record's version without reading its header.

Every OS call of a lock goes through the storage's
:class:`~loopaware_persist.storage.file.FileIO`; closing the descriptors when the storage
closes (or a child drops the ones it inherited) does not: no record depends on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import weakref
from typing import Protocol

__all__ = ("LockFile", "LockIO")

_GENERATION = struct.Struct(">Q")


class LockIO(Protocol):
    """The OS calls a :class:`LockFile` makes (:class:`FileIO` has them all)."""

    def open(self, path: str, flags: int, mode: int = 0o666) -> int: ...
    def close(self, fd: int) -> None: ...
    def flock(self, fd: int, operation: int) -> None: ...
    def fstat(self, fd: int) -> os.stat_result: ...
    def pread(self, fd: int, size: int, offset: int) -> bytes: ...
    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int: ...


_lock_files: weakref.WeakSet[LockFile] = weakref.WeakSet()


class LockFile:
    """One lock file of a store, opened on first use and kept open.

    Use each either shared or exclusively, never both: both would share one
    descriptor, and ``flock`` would convert the lock instead of waiting.

    :param io: the OS-call layer
    :param path: the lock file (created if missing)
    """

    def __init__(self, io: LockIO, path: str) -> None:
        self._io = io
        self._path = path
        self._fd = -1
        self._mutex = threading.Lock()  # exclusive holders of this process
        self._guard = threading.Lock()  # the shared count and the descriptor
        self._shared = 0
        self._closing = False
        self._finalizer: weakref.finalize[[int, int], LockFile] | None = None
        _lock_files.add(self)

    def _descriptor(self) -> int:
        if self._fd < 0:
            self._fd = self._io.open(self._path, os.O_RDWR | os.O_CREAT)
            # A storage dropped without close() does not keep its lock files open.
            self._finalizer = weakref.finalize(self, _close_quietly, self._fd, os.getpid())
        return self._fd

    def _lock(self, operation: int) -> int:
        """Lock the file, reopening it if it was unlinked since it was opened.

        :return: the descriptor now holding the lock
        """
        while True:
            fd = self._descriptor()
            self._io.flock(fd, operation)
            try:
                linked = self._io.fstat(fd).st_nlink > 0
            except BaseException:
                self._unlock(fd)
                raise
            if linked:
                return fd
            self._unlock(fd)  # the file is gone: this lock excludes nobody
            self._forget()

    def _unlock(self, fd: int) -> None:
        """Unlock; should that fail, close the descriptor (which unlocks) and forget it."""
        try:
            self._io.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            self._forget()
            raise

    def _forget(self, *, quietly: bool = False) -> None:
        """Close the descriptor (``quietly``: with ``os.close``, not through the io)."""
        fd, self._fd = self._fd, -1
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if fd >= 0:
            with contextlib.suppress(OSError):
                (os.close if quietly else self._io.close)(fd)

    def exclusive(self) -> _Exclusive:
        """Hold the lock exclusively, against threads and processes.

        :return: ``with lock_file.exclusive() as fd``: the locked descriptor, for
            :meth:`generation` and :meth:`set_generation`
        """
        return _Exclusive(self)

    def shared(self) -> _Shared:
        """Hold the lock shared: the first holder of this process locks the file.

        :return: ``with lock_file.shared()``
        """
        return _Shared(self)

    def generation(self, fd: int) -> int:
        """:param fd: the descriptor :meth:`exclusive` gave
        :return: the store's generation (0 for a lock file that never held one)
        """
        raw = self._io.pread(fd, _GENERATION.size, 0)
        return _GENERATION.unpack(raw)[0] if len(raw) == _GENERATION.size else 0

    def set_generation(self, fd: int, value: int) -> None:
        """:param fd: the descriptor :meth:`exclusive` gave
        :param value: the new generation
        :raises OSError: if it cannot be written whole
        """
        data = _GENERATION.pack(value % (1 << 64))
        if self._io.pwrite(fd, data, 0) != len(data):
            raise OSError(f"short write of the generation to {self._path}")

    def close(self) -> None:
        """Close the descriptor now, or when the last shared holder leaves.

        It is closed with ``os.close``, not through the io: closing an unlocked lock
        file is no step of a save or a delete (no record depends on it), and fault
        injection counts the steps of those.
        """
        with self._mutex, self._guard:
            self._closing = True
            if self._shared == 0:
                self._forget(quietly=True)

    def after_fork_in_child(self) -> None:
        """Drop what the parent held: its thread locks, count and descriptor.

        The inherited descriptor is closed, never unlocked: ``LOCK_UN`` on it would
        release the parent's lock, while closing a duplicate leaves it held.
        """
        self._mutex = threading.Lock()
        self._guard = threading.Lock()
        self._shared = 0
        self._forget(quietly=True)  # not through io: the parent's fault injection


# Classes, not contextlib.contextmanager: a small save takes both locks, and a
# generator per lock cost it more than the flock calls.
class _Exclusive:
    """:meth:`LockFile.exclusive`: the thread lock, then ``LOCK_EX`` on the file."""

    __slots__ = ("_fd", "_file")

    def __init__(self, lock_file: LockFile) -> None:
        self._file = lock_file
        self._fd = -1

    def __enter__(self) -> int:
        lock_file = self._file
        lock_file._mutex.acquire()
        try:
            self._fd = lock_file._lock(fcntl.LOCK_EX)
        except BaseException:
            lock_file._mutex.release()
            raise
        return self._fd

    def __exit__(self, *exc: object) -> None:
        lock_file = self._file
        try:
            lock_file._unlock(self._fd)
        finally:
            lock_file._mutex.release()


class _Shared:
    """:meth:`LockFile.shared`: counted; the first holder locks, the last one unlocks."""

    __slots__ = ("_file",)

    def __init__(self, lock_file: LockFile) -> None:
        self._file = lock_file

    def __enter__(self) -> None:
        lock_file = self._file
        with lock_file._guard:
            if lock_file._shared == 0:
                lock_file._lock(fcntl.LOCK_SH)
            lock_file._shared += 1

    def __exit__(self, *exc: object) -> None:
        lock_file = self._file
        with lock_file._guard:
            lock_file._shared -= 1
            if lock_file._shared == 0 and lock_file._fd >= 0:
                try:
                    lock_file._unlock(lock_file._fd)
                finally:
                    if lock_file._closing:
                        lock_file._forget(quietly=True)


def _close_quietly(fd: int, pid: int) -> None:
    if pid == os.getpid():  # a forked child closes what it inherited itself
        with contextlib.suppress(OSError):
            os.close(fd)


def _reset_after_fork() -> None:
    for lock_file in list(_lock_files):
        lock_file.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
