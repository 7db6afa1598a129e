"""A throwaway AiiDA profile (SQLite storage, no broker) in a temporary AIIDA_PATH.

The whole folder is skipped, loudly, when aiida-core is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("aiida") is None:  # pragma: no cover - depends on the environment
    pytest.skip(
        "aiida-core is not installed: the AiiDA tests need the extra "
        "(pip install -e '.[aiida]'); NOT RUN",
        allow_module_level=True,
    )

# AiiDA reads AIIDA_PATH when it is first imported: set it before that, with the folder
# made (AiiDA warns when it creates it, and warnings are errors here).
_ROOT = Path(tempfile.mkdtemp(prefix="loopaware-aiida-"))
(_ROOT / ".aiida").mkdir()
os.environ["AIIDA_PATH"] = str(_ROOT)
PROFILE = "loopaware-test"

import aiida  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/aiida/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.aiida)
            # aiida-core 2.9's own node creation (links.validate_incoming autoflushing a
            # node whose user sits in the session) warns in SQLAlchemy; not ours to fix.
            item.add_marker(pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"))


@pytest.fixture(scope="session")
def profile() -> Iterator[Any]:
    verdi = [sys.executable, "-c", "from aiida.cmdline.commands.cmd_verdi import verdi; verdi()"]
    subprocess.run(
        [*verdi, "presto", "--no-broker", "--profile-name", PROFILE],
        check=True,
        capture_output=True,
        env={**os.environ, "AIIDA_PATH": str(_ROOT)},
    )
    loaded = aiida.load_profile(PROFILE, allow_switch=True)
    yield loaded
    from aiida.manage import get_manager
    from sqlalchemy.orm import close_all_sessions

    # AiiDA's storage keeps one SQLAlchemy session per thread (a scoped_session), and its
    # close() only removes the calling thread's after disposing of the engine: a session
    # that another thread opened (a load on a helper thread, a runner's executor) keeps
    # its sqlite3 connection until the GC finalizes it, which Python >= 3.13 reports as
    # an unclosed database. Close every session first, so each connection goes back to
    # the pool that the dispose then closes.
    close_all_sessions()
    get_manager().unload_profile()
    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file that a payload which runs code would create."""
    return tmp_path / "ran"
