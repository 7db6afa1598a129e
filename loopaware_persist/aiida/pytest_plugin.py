"""A pytest plugin: AiiDA's processes checkpoint through this package for the whole session.

.. code-block:: console

    pytest -p loopaware_persist.aiida.pytest_plugin --loopaware-allow=my_plugin tests/

Every persister AiiDA asks for -- ``Manager.get_persister()``, so every ``Runner`` that
``run``/``submit``/``get_runner()`` build, in the pytest process and in the daemon
workers that the ``started_daemon_client`` and ``submit_and_await`` fixtures start --
is this package's (:func:`loopaware_persist.aiida.install`), with the records kept where
``--loopaware-store`` says (default ``aiida://``: in the ProcessNodes).

``--loopaware-persister=aiida`` keeps AiiDA's own ``AiiDAPersister`` and changes nothing
else: the same test command, run twice, compares the two persisters.

How it reaches every persister. aiida-core 2.9 has no setting for it: the ``Manager``
caches the one it builds, and resetting a profile (``aiida_profile_clean`` does, before
each test that uses it) empties that cache. So ``Manager.get_persister`` is wrapped for
the session: when the cache is empty it installs ours, then answers as before. The
daemon is started by ``DaemonClient.start_daemon`` as ``verdi daemon start-circus``, whose
circus starts ``verdi daemon worker`` processes; both commands are started here as
``python -m loopaware_persist.aiida.pytest_plugin verdi ...``, which wraps
``get_persister`` the same way and runs AiiDA's own ``verdi`` (its worker loop, broker
and slots). The choices travel in environment variables, which AiiDA hands on to the
daemon (``DaemonClient.get_env``).

Each process records the persister class its runners got, one JSON line per process in
the file ``--loopaware-report`` names; the terminal summary counts them, so a run whose
substitution silently did not happen shows it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = (
    "main",
    "pytest_addoption",
    "pytest_configure",
    "pytest_report_header",
    "pytest_terminal_summary",
    "pytest_unconfigure",
    "read_report",
    "substitute",
)

#: The environment variables the daemon's processes inherit the session's choices by.
ENV_PERSISTER = "LOOPAWARE_AIIDA_PERSISTER"
ENV_STORE = "LOOPAWARE_AIIDA_STORE"
ENV_ALLOW = "LOOPAWARE_AIIDA_ALLOW"
ENV_REPORT = "LOOPAWARE_AIIDA_REPORT"

CHOICES = ("loopaware", "aiida")
#: This module's name, also when it runs as ``python -m`` (where ``__name__`` is ``__main__``).
MODULE = "loopaware_persist.aiida.pytest_plugin"

_lock = threading.Lock()
_recorded: set[type] = set()
_installs = 0
_undo: list[Callable[[], None]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loopaware-persist", "loopaware-persist: AiiDA's persister")
    group.addoption(
        "--loopaware-persister",
        choices=CHOICES,
        default=os.environ.get(ENV_PERSISTER, "loopaware"),
        help="whose persister AiiDA's runners and daemon workers use (default: loopaware)",
    )
    group.addoption(
        "--loopaware-store",
        default=os.environ.get(ENV_STORE) or None,
        help="where our records live: aiida:// (default, in the ProcessNodes) or a store URL",
    )
    group.addoption(
        "--loopaware-allow",
        action="append",
        default=[name for name in os.environ.get(ENV_ALLOW, "").split(",") if name],
        help="a module a load may import (the modules of your WorkChains); repeatable",
    )
    group.addoption(
        "--loopaware-report",
        default=os.environ.get(ENV_REPORT) or None,
        help="append one JSON line per process: which persister its AiiDA runners got",
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ[ENV_PERSISTER] = config.getoption("loopaware_persister")
    os.environ[ENV_STORE] = config.getoption("loopaware_store") or ""
    os.environ[ENV_ALLOW] = ",".join(config.getoption("loopaware_allow"))
    os.environ[ENV_REPORT] = config.getoption("loopaware_report") or ""
    substitute("pytest")
    _start_daemon_through_us()


def pytest_unconfigure(config: pytest.Config) -> None:
    while _undo:
        _undo.pop()()


def pytest_report_header(config: pytest.Config) -> str:
    chosen = config.getoption("loopaware_persister")
    if chosen == "aiida":
        return "loopaware-persist: AiiDA's own AiiDAPersister (--loopaware-persister=aiida)"
    store = config.getoption("loopaware_store") or "aiida://"
    allow = ",".join(config.getoption("loopaware_allow")) or "-"
    return f"loopaware-persist: our persister in AiiDA, store {store}, allow {allow}"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    path = config.getoption("loopaware_report")
    if not path:
        return
    counts: dict[tuple[str, str], int] = {}
    for record in read_report(path):
        if record["role"] == "daemon-start":
            continue
        key = (record["role"], record["persister"])
        counts[key] = counts.get(key, 0) + 1
    terminalreporter.section("loopaware-persist: the persister AiiDA's runners got")
    if not counts:
        terminalreporter.write_line("no process asked AiiDA for a persister")
    for (role, persister), count in sorted(counts.items()):
        terminalreporter.write_line(f"{persister}: {count} {role} process(es)")


def read_report(path: str) -> Iterator[dict[str, Any]]:
    """The records of a ``--loopaware-report`` file, one per process.

    :param path: the file
    :returns: an iterator of ``{"pid", "role", "persister"}`` dicts
    """
    try:
        with open(path, encoding="utf-8") as lines:
            yield from (json.loads(line) for line in lines if line.strip())
    except FileNotFoundError:
        return


def substitute(role: str) -> None:
    """Wrap ``Manager.get_persister`` in this process as the environment says.

    :param role: what this process is, for the report (``pytest``, ``circus``, ``worker``)
    """
    from aiida.manage.manager import Manager

    original = Manager.get_persister
    ours = os.environ.get(ENV_PERSISTER, "loopaware") == "loopaware"

    def get_persister(self: Manager) -> Any:
        if ours and self._persister is None:
            _install()
        persister = original(self)
        _record(role, persister)
        return persister

    Manager.get_persister = get_persister  # type: ignore[method-assign]
    _undo.append(lambda: setattr(Manager, "get_persister", original))
    if ours:
        _undo.append(_uninstall_all)


def _install() -> None:
    global _installs
    from loopaware_persist.aiida import install

    allow = [name for name in os.environ.get(ENV_ALLOW, "").split(",") if name]
    install(store=os.environ.get(ENV_STORE) or None, allow=allow)
    _installs += 1


def _uninstall_all() -> None:
    global _installs
    from loopaware_persist.aiida import uninstall

    while _installs:
        uninstall()
        _installs -= 1


def _record(role: str, persister: object) -> None:
    # Once per process and persister class: a process that got two kinds says so.
    path = os.environ.get(ENV_REPORT)
    kind = type(persister)
    with _lock:
        if kind in _recorded or not path:
            return
        _recorded.add(kind)
    _note(path, role, kind.__qualname__)


def _note(path: str, role: str, persister: str) -> None:
    line = json.dumps({"pid": os.getpid(), "role": role, "persister": persister})
    with open(path, "a", encoding="utf-8") as report:  # one short line per append
        report.write(line + "\n")


def _start_daemon_through_us() -> None:
    # DaemonClient.start_daemon runs cmd_start_daemon() in a subprocess: `verdi daemon
    # start-circus N`; run that verdi through main() below, which does the same for the
    # workers its circus starts.
    from aiida.engine.daemon.client import DaemonClient

    original = DaemonClient.cmd_start_daemon

    def cmd_start_daemon(
        self: DaemonClient, number_workers: int = 1, foreground: bool = False
    ) -> list[str]:
        if path := os.environ.get(ENV_REPORT):
            # So that a run whose workers never reported is seen: they should have.
            _note(path, "daemon-start", "-")
        return _through_us(original(self, number_workers, foreground))

    DaemonClient.cmd_start_daemon = cmd_start_daemon  # type: ignore[method-assign]
    _undo.append(lambda: setattr(DaemonClient, "cmd_start_daemon", original))


def _through_us(command: list[str]) -> list[str]:
    # [verdi, *args] -> [python, -m, this module, verdi, *args]
    return [sys.executable, "-m", MODULE, "verdi", *command[1:]]


def main(argv: list[str]) -> None:
    """``python -m loopaware_persist.aiida.pytest_plugin verdi ARGS``: AiiDA's ``verdi
    ARGS`` with this session's persister, and its daemon workers started the same way.

    :param argv: ``["verdi", *verdi_args]``
    """
    if argv[:1] != ["verdi"]:
        sys.exit(f"usage: python -m {MODULE} verdi ARGS (what this plugin starts the daemon with)")
    from aiida.cmdline.commands.cmd_verdi import verdi
    from aiida.engine.daemon.client import DaemonClient

    original = DaemonClient.cmd_start_daemon_worker
    DaemonClient.cmd_start_daemon_worker = property(  # type: ignore[method-assign,assignment]
        lambda self: _through_us(original.fget(self))  # type: ignore[attr-defined]
    )
    substitute("worker" if argv[-2:] == ["daemon", "worker"] else "circus")
    verdi.main(args=argv[1:], prog_name="verdi")


if __name__ == "__main__":
    main(sys.argv[1:])
