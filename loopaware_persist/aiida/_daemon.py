"""A daemon worker that runs AiiDA processes with this persister: :func:`run_daemon_worker`.

It is aiida-core 2.9's own worker (``aiida.engine.daemon.worker.start_daemon_worker``,
what ``verdi daemon worker`` runs) with one difference: before the daemon runner is
built, :func:`~loopaware_persist.aiida.install` puts a
:class:`~loopaware_persist.LoopAwarePersister` in the manager, so the runner and its
task subscriber (AiiDA's ``ProcessLauncher``) save and load through it. Everything else
is AiiDA's: the profile's broker and communicator (RabbitMQ, ``core.rabbitmq``, or the
ZeroMQ broker, ``core.zeromq``), ``Manager.create_daemon_runner()`` with the
``daemon.worker_process_slots`` prefetch, the ``daemon.recursion_limit`` option, the
daemon log file, and the SIGTERM/SIGINT shutdown (``shutdown_worker``). A checkpoint is
loaded onto the runner's loop (``LoadSaveContext(runner=…)``, see
:meth:`~loopaware_persist.LoopAwareBundle.unbundle`), so the loop binding is checked
against the loop the process will run on.

One more difference: AiiDA's ``ProcessLauncher`` seals a process whose checkpoint
fails to load, whatever the reason. Ours (:class:`~._launcher.RequeueingProcessLauncher`)
leaves it unsealed and hands its task back when an operator can fix the reason (the
wrong ``--allow``, AiiDA's YAML in the node, a record missing from the store, a store
that is down), and logs what to do.

``verdi process list/show/pause/play/kill/repair`` keep working: they read the nodes and
talk to the processes over the same broker, neither of which the persister touches.

The ZeroMQ broker is a separate service process that AiiDA's daemon starts (and
``submit`` to a ``core.zeromq`` profile requires a running daemon): use
``loopaware-persist aiida daemon start`` (:mod:`._circus`) there. A worker started on
its own waits up to 10 s (aiida's ``BROKER_READY_TIMEOUT``) for the service, then fails
with AiiDA's ``ConnectionError``. Once started, a worker there connects to the broker
and disconnects, which makes the broker look for dead workers it missed and requeue
their tasks (:func:`_reprobe_zeromq_workers`).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterable
from typing import Any

from .._errors import ConfigurationError
from ._install import install, uninstall

__all__ = ("run_daemon_worker",)

LOGGER = logging.getLogger(__name__)

#: The shutdown task, referenced so that it is not collected while it runs.
_shutdown: list[Any] = []


def _no_broker_message(profile: str) -> str:
    return (
        f"Profile {profile!r} has no broker, so a daemon worker would receive no tasks. "
        f"Configure one with `verdi profile configure-broker core.rabbitmq {profile}` "
        f"(or core.zeromq), then start the worker again."
    )


def run_daemon_worker(
    profile: str | None = None,
    store: str | None = None,
    *,
    allow: Iterable[str | type] = (),
    codec: str = "msgpack",
    compression: str | None = "zlib",
    foreground: bool = True,
) -> None:
    """Run one AiiDA daemon worker in this process until SIGTERM or SIGINT.

    What ``verdi daemon worker`` does (aiida-core 2.9), with the persister of
    :func:`~loopaware_persist.aiida.make_persister` in place of ``AiiDAPersister``.
    Blocks; returns after the shutdown, with the persister uninstalled and its store
    closed.

    :param profile: the profile's name (default: the loaded one, else the default profile)
    :param store: where records live, see :func:`~loopaware_persist.aiida.make_persister`
        (default ``aiida://``: in each ProcessNode)
    :param allow: modules or classes a load may import: those of your WorkChains,
        CalcJobs and any value class their checkpoints hold
    :param codec: ``"msgpack"`` (default) or ``"pickle"`` (restricted)
    :param compression: ``"zlib"`` (default), ``"zstd"`` or ``None``
    :param foreground: also log to stdout, as ``verdi daemon worker`` does (circus
        sends a worker's stdout to the daemon log); ``False`` logs to the daemon log
        file only
    :raises ConfigurationError: if the profile has no broker, or the store, codec or
        compression is unknown
    """
    from aiida.common.log import configure_logging
    from aiida.engine.daemon.client import get_daemon_client
    from aiida.manage import get_config_option, get_manager

    manager = get_manager()
    loaded = manager.load_profile(profile)
    if loaded.process_control_backend is None:
        msg = _no_broker_message(loaded.name)
        raise ConfigurationError(msg, option="profile", value=loaded.name)

    daemon_client = get_daemon_client(loaded.name)
    configure_logging(
        with_orm=True, daemon=not foreground, daemon_log_file=daemon_client.daemon_log_file
    )
    LOGGER.debug("Loaded profile %s", loaded.name)

    _share_aiida_handlers()

    persister = install(loaded.name, store, allow=allow, codec=codec, compression=compression)
    try:
        runner = _create_daemon_runner(manager, loaded)
        manager.set_runner(runner)
    except BaseException:
        LOGGER.exception("daemon worker failed to start")
        uninstall()
        raise
    LOGGER.info("Daemon worker for profile %s checkpoints through %r", loaded.name, persister)

    if isinstance(limit := get_config_option("daemon.recursion_limit"), int):
        LOGGER.info("Setting maximum recursion limit of daemon worker to %s", limit)
        sys.setrecursionlimit(limit)

    _handle_signals(runner)
    if loaded.process_control_backend == "core.zeromq":
        # aiida-core 2.9.4's broker keeps the endpoint behind a private property.
        _reprobe_zeromq_workers(getattr(manager.get_broker(), "_router_endpoint", None))
    try:
        LOGGER.info("Starting a daemon worker")
        runner.start()
    except SystemError as exception:  # as AiiDA's worker: the loop stopped under it
        LOGGER.info("Received a SystemError: %s", exception)
        manager.reset_profile()
    finally:
        uninstall()
    LOGGER.info("Daemon worker stopped")


def _create_daemon_runner(manager: Any, profile: Any) -> Any:
    """``Manager.create_daemon_runner()`` of aiida-core 2.9.4, with our launcher.

    The same runner (``create_runner(broker_submit=True)``) and task subscriber, but a
    :class:`~._launcher.RequeueingProcessLauncher`: a checkpoint this worker cannot
    load for a reason an operator can fix is handed back to the broker, not sealed.

    :param manager: AiiDA's manager, ``profile`` loaded and our persister installed
    :param profile: the loaded profile
    :return: the runner
    """
    from aiida.engine import persistence
    from plumpy.persistence import LoadSaveContext

    from ._launcher import RequeueingProcessLauncher

    runner = manager.create_runner(broker_submit=True)
    launcher = RequeueingProcessLauncher(
        loop=runner.loop,
        persister=manager.get_persister(),
        load_context=LoadSaveContext(runner=runner),
        loader=persistence.get_object_loader(),
        requeue=profile.process_control_backend == "core.rabbitmq",
        profile=profile.name,
    )
    assert runner.communicator is not None, "communicator not set for runner"
    runner.communicator.add_task_subscriber(launcher)
    return runner


#: How long the connection that makes the ZeroMQ broker probe its workers may wait for
#: the broker (seconds): it is made once, at start-up.
REPROBE_TIMEOUT = 2.0


def _reprobe_zeromq_workers(endpoint: str | None, *, timeout: float = REPROBE_TIMEOUT) -> None:
    """Make AiiDA's ZeroMQ broker look for dead workers now, so a task it left with a
    worker that died goes to a live one: connect to it, say nothing it acts on, and
    disconnect.

    aiida-core 2.9.4's ``ZeromqBrokerServer`` requeues a dead worker's tasks only when a
    disconnect event makes it ping the workers that hold tasks (``_handle_disconnect_event``,
    ``_probe_workers``); a ping that fails names the dead one. The event can come before
    the ROUTER socket has dropped the dead peer (libzmq's I/O thread reports the
    disconnect, then tears the peer's pipe down with more commands to the socket), so
    the ping is still accepted and the death missed: the worker's tasks then stay
    assigned to it until another client disconnects, and a process it ran stays
    running while a fresh worker idles (no upstream issue found). A worker starting,
    which is what circus does after one died, is such a client: by then the dead
    worker's pipe is long gone and the ping fails as it should. Best effort: a broker
    not reachable within ``REPROBE_TIMEOUT`` is left alone.

    :param endpoint: the broker's ROUTER endpoint (``ipc://…/router.sock``); ``None``
        (not known): nothing is done
    :param timeout: how long the request may wait to reach the broker
    """
    if endpoint is None:
        LOGGER.debug("no ZeroMQ broker endpoint known: its workers are not re-probed")
        return
    import uuid

    import zmq
    from aiida.brokers.zeromq.protocol import MessageType, encode_message, make_subscribe_message

    # A request that changes nothing: unsubscribe an RPC subscriber it never had.
    sender = f"loopaware-reprobe-{uuid.uuid4().hex[:8]}"
    request = make_subscribe_message(MessageType.UNSUBSCRIBE_RPC, sender, sender)
    context = zmq.Context()
    try:
        socket = context.socket(zmq.DEALER)
        socket.connect(endpoint)
        socket.send_multipart([b"", encode_message(request)])
        # The request goes out over the handshake the broker's disconnect event needs;
        # closing once it is delivered (or the linger ran out) is the disconnect.
        socket.close(linger=int(timeout * 1000))
    except zmq.ZMQError as error:  # best effort: the worker runs without it
        LOGGER.warning(
            "Could not ask the ZeroMQ broker at %s to probe its workers: %s", endpoint, error
        )
        return
    finally:
        context.term()
    LOGGER.debug("asked the ZeroMQ broker at %s to probe its workers", endpoint)


def _share_aiida_handlers() -> None:
    """Send this package's log records where AiiDA's go (the console, or the daemon
    log file), at AiiDA's level: ``configure_logging`` configures the ``aiida`` logger
    only, and a worker's refusals must reach its log."""
    ours, aiida_logger = logging.getLogger("loopaware_persist"), logging.getLogger("aiida")
    ours.handlers = list(aiida_logger.handlers)  # its database handler skips them
    ours.setLevel(aiida_logger.getEffectiveLevel())
    ours.propagate = False


def _handle_signals(runner: Any) -> None:
    """SIGTERM (circus, ``verdi daemon stop``) and SIGINT stop the worker AiiDA's way."""
    from aiida.engine.daemon.worker import shutdown_worker

    def stop() -> None:
        # shutdown_worker cancels every task but itself, then resets the profile, which
        # closes the runner: its loop stops and runner.start() returns.
        _shutdown.append(runner.loop.create_task(shutdown_worker(runner)))

    for signum in (signal.SIGTERM, signal.SIGINT):
        runner.loop.add_signal_handler(signum, stop)
