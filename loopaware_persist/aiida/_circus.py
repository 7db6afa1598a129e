"""AiiDA's daemon (circus) with our workers: ``loopaware-persist aiida daemon start``.

``verdi daemon start`` runs ``verdi daemon start-circus``, which starts a circus arbiter
with one watcher per profile whose command is ``verdi -p <profile> daemon worker``
(``DaemonClient.cmd_start_daemon_worker``), plus, for a ``core.zeromq`` profile, the
ZeroMQ broker service. aiida-core 2.9 has no setting for that command. The daemon
started here is the very same arbiter -- same pid, port and socket files, same watcher
name, same broker watcher -- built by ``DaemonClient`` with that one property returning
``python -m loopaware_persist aiida worker …`` instead. So ``verdi daemon status``,
``incr``, ``decr``, ``logshow``, ``stop`` and ``restart`` (without ``--reset``) act on it
unchanged, and ``submit`` to a ZeroMQ profile (which requires a running daemon) works.
``verdi daemon start`` and ``verdi daemon restart --reset`` would start AiiDA's workers
again: use ``loopaware-persist aiida daemon start`` for that.

The upstream change that would make this a one-line setting is in
:mod:`loopaware_persist.aiida._install`: an ``aiida.persisters`` entry-point group read by
``Manager.get_persister()``, which AiiDA's own ``verdi daemon worker`` already calls.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ("daemon_client", "start_daemon", "worker_command", "worker_options")


def worker_command(profile: str, options: Sequence[str] = ()) -> list[str]:
    """The command a daemon watcher runs for one of our workers.

    :param profile: the profile's name
    :param options: more options of ``loopaware-persist aiida worker`` (``--store``,
        ``--allow``, …), passed as given
    :return: the command, as ``DaemonClient.cmd_start_daemon_worker`` returns AiiDA's
    """
    return [sys.executable, "-m", "loopaware_persist", "aiida", "worker", "-p", profile, *options]


def daemon_client(profile: str | None = None, options: Sequence[str] = ()) -> Any:
    """AiiDA's ``DaemonClient`` for ``profile``, whose circus watcher runs our worker.

    :param profile: the profile's name (default: the loaded one)
    :param options: more options of ``loopaware-persist aiida worker``
    :return: a ``DaemonClient`` (of a subclass that overrides two command properties)
    """
    from aiida.engine.daemon.client import DaemonClient, get_daemon_client

    profile_obj = get_daemon_client(profile).profile
    frozen = tuple(options)

    class LoopAwareDaemonClient(DaemonClient):
        """A ``DaemonClient`` whose workers checkpoint through loopaware_persist."""

        @property
        def cmd_start_daemon_worker(self) -> list[str]:
            # circus splits the watcher's cmd with shlex: quote each part.
            return [shlex.quote(part) for part in worker_command(self.profile.name, frozen)]

        def cmd_start_daemon(self, number_workers: int = 1, foreground: bool = False) -> list[str]:
            # "start-circus" in the command line is what DaemonClient._check_pid_file
            # looks for to tell a live daemon from a stale pid file.
            command = [
                sys.executable,
                "-m",
                "loopaware_persist",
                "aiida",
                "daemon",
                "start-circus",
                "--profile",
                self.profile.name,
                str(number_workers),
            ]
            if foreground:
                command.append("--foreground")
            return [*command, "--", *frozen]

    return LoopAwareDaemonClient(profile_obj)


def worker_options(
    store: str | None = None,
    allow: Iterable[str] = (),
    codec: str = "msgpack",
    compression: str | None = "zlib",
) -> list[str]:
    """The options of ``loopaware-persist aiida worker`` for these settings.

    :param store: see :func:`~loopaware_persist.aiida.make_persister`
    :param allow: module names a load may import
    :param codec: ``"msgpack"`` or ``"pickle"``
    :param compression: ``"zlib"``, ``"zstd"`` or ``None``
    :return: the options, e.g. ``["--allow", "my_plugin", "--codec", "msgpack", …]``
    """
    options = [] if store is None else ["--store", store]
    for module in allow:
        options += ["--allow", module]
    return [*options, "--codec", codec, "--compression", compression or "none"]


def start_daemon(
    profile: str | None = None,
    number_workers: int = 1,
    *,
    store: str | None = None,
    allow: Iterable[str] = (),
    codec: str = "msgpack",
    compression: str | None = "zlib",
    foreground: bool = False,
    timeout: int | None = None,
) -> None:
    """Start AiiDA's daemon for ``profile`` with our workers, in the background.

    Manage it with ``verdi daemon status|incr|decr|logshow|stop|restart`` afterwards.

    :param profile: the profile's name (default: the loaded one)
    :param number_workers: how many workers circus keeps running
    :param store: where the workers keep records, see
        :func:`~loopaware_persist.aiida.make_persister`
    :param allow: module names a load may import (your WorkChains, CalcJobs, values)
    :param codec: ``"msgpack"`` (default) or ``"pickle"``
    :param compression: ``"zlib"`` (default), ``"zstd"`` or ``None``
    :param foreground: run circus in this process (one worker only), as
        ``verdi daemon start --foreground``
    :param timeout: seconds to wait for the daemon to answer (default: AiiDA's
        ``daemon.timeout`` option)
    :raises aiida.engine.daemon.client.DaemonException: if the daemon fails to start
    """
    options = worker_options(store, allow, codec, compression)
    daemon_client(profile, options).start_daemon(number_workers, foreground, timeout=timeout)


def run_circus(
    profile: str | None, number_workers: int, options: Sequence[str], *, foreground: bool
) -> None:
    """Run the circus arbiter in this process (daemonising unless ``foreground``).

    What the hidden ``verdi daemon start-circus`` does: it loads the profile (the broker
    watcher of a ``core.zeromq`` profile is added only for the loaded profile's broker)
    and calls the same ``DaemonClient._start_daemon``, which builds the watchers from
    the two properties this client overrides.
    """
    from aiida.manage import get_manager

    loaded = get_manager().load_profile(profile)
    daemon_client(loaded.name, options)._start_daemon(number_workers, foreground)
