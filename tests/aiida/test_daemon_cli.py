"""``loopaware-persist aiida …``: mounted without importing AiiDA; the worker refuses a
profile without a broker before it starts anything."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from loopaware_persist import ConfigurationError
from loopaware_persist.aiida import run_daemon_worker
from tests.aiida.daemon_support import our_cli, python_prints


def test_the_main_cli_mounts_aiida_without_importing_aiida() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from loopaware_persist._cli import cli;"
        "out = CliRunner().invoke(cli, ['--help']).output;"
        "print('aiida' in out.split(), any(m.split('.')[0] == 'aiida' for m in sys.modules))"
    )
    out = python_prints(code)
    assert out.split() == ["True", "False"]


def test_aiida_commands_are_listed() -> None:
    from loopaware_persist._cli import cli

    result = CliRunner().invoke(cli, ["aiida", "--help"])
    assert result.exit_code == 0, result.output
    assert "worker" in result.output
    assert "daemon" in result.output
    result = CliRunner().invoke(cli, ["aiida", "daemon", "start", "0"])
    assert result.exit_code == 2
    assert "0 is not a positive number of workers" in result.output


def test_a_profile_without_a_broker_is_refused(profile: Any) -> None:
    with pytest.raises(ConfigurationError, match="has no broker") as caught:
        run_daemon_worker(profile.name)
    assert "verdi profile configure-broker core.rabbitmq" in str(caught.value)


def test_the_daemon_watcher_runs_our_worker_with_the_options_quoted(profile: Any) -> None:
    import shlex

    from loopaware_persist.aiida._circus import daemon_client, worker_options

    options = worker_options("sqlite:////tmp/a b.db", ["my_plugin"], "msgpack", None)
    assert options == [
        "--store",
        "sqlite:////tmp/a b.db",
        "--allow",
        "my_plugin",
        "--codec",
        "msgpack",
        "--compression",
        "none",
    ]
    client = daemon_client(profile.name, options)
    # circus runs " ".join(cmd) split with shlex: the path with a space survives.
    command = shlex.split(" ".join(client.cmd_start_daemon_worker))
    worker = our_cli("worker", "-p", profile.name)
    assert command == [*worker, *options]
    circus = client.cmd_start_daemon(2)
    assert "start-circus" in circus  # what DaemonClient's stale-pid check looks for
    assert circus[circus.index("--") + 1 :] == options
