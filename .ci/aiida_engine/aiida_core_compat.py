"""What aiida-core's own test suite needs to run on this CI machine; nothing about persisters.

Loaded by .ci/aiida-engine-tests.sh (``-p aiida_core_compat``) in both of its runs, with
AiiDA's persister and with ours, so it changes neither side of the comparison:

* RabbitMQ: ``aiida.tools.pytest_fixtures`` creates the test profile with a broker at
  127.0.0.1:5672 (guest/guest), fixed; CI's throwaway RabbitMQ listens on a free port
  given as ``LOOPAWARE_TEST_AMQP_URL`` (.ci/servers/start-rabbitmq.sh). Unset, AiiDA's
  default is kept.
* The test profile's ``warnings.rabbitmq_version`` is off: AiiDA logs "RabbitMQ vX is
  not supported" for the RabbitMQ that Debian ships, and ``test_launch.py::
  test_await_processes`` asserts that the first log record is its own.
* The test profile's ``daemon.timeout`` is 20 s, not 2: on a loaded 2-core machine
  circus answers ``quit`` later than that now and then, and the session's last daemon
  test (``test_control.py::test_revive``) errors at teardown with either persister.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

import pytest

DAEMON_TIMEOUT = 20


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    import aiida.manage.configuration as configuration

    original = configuration.create_profile  # the fixture imports it at call time
    url = os.environ.get("LOOPAWARE_TEST_AMQP_URL")

    def create_profile(aiida_config: Any, **kwargs: Any) -> Any:
        if url and kwargs.get("broker_backend") == "core.rabbitmq":
            parts = urllib.parse.urlsplit(url)
            kwargs["broker_config"] = {
                "broker_protocol": parts.scheme,
                "broker_username": urllib.parse.unquote(parts.username or "guest"),
                "broker_password": urllib.parse.unquote(parts.password or "guest"),
                "broker_host": parts.hostname or "127.0.0.1",
                "broker_port": parts.port or 5672,
                "broker_virtual_host": urllib.parse.unquote(parts.path.lstrip("/")),
            }
        profile = original(aiida_config, **kwargs)
        profile.set_option("warnings.rabbitmq_version", False)  # type: ignore[no-untyped-call]
        profile.set_option("daemon.timeout", DAEMON_TIMEOUT)  # type: ignore[no-untyped-call]
        return profile

    configuration.create_profile = create_profile  # type: ignore[assignment]
    config.add_cleanup(lambda: setattr(configuration, "create_profile", original))
