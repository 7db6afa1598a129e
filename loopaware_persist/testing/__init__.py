"""A conformance suite for storages, for this package's backends and yours.

Run it from a test with a factory that opens your storage::

    from loopaware_persist.testing import check_storage, storage_state_machine

    def test_my_storage(tmp_path):
        check_storage(lambda: open_storage(f"mydb:///{tmp_path}/db"))

    TestMyStorageMachine = storage_state_machine(lambda: ...).TestCase

:func:`check_storage` runs every contract check and raises :class:`AssertionError`
naming the first one that fails. The factory may return a new, empty store each
time (``memory://``) or reopen the same one (a directory, a database): the
checks use fresh pids of their own, so records already there do not matter.
:func:`check_storage_processes` checks concurrent writers in several
processes, which needs a URL every process can open. :func:`check_read_only`
checks that ``open_storage(url, read_only=True)`` reads what was written and
changes nothing.

The checks raise ``AssertionError`` themselves rather than using ``assert``,
so they still check under ``python -O``.
"""

from ._check_processes import check_storage_processes
from ._check_read_only import check_read_only
from ._check_storage import check_storage
from ._state_machine import storage_state_machine

__all__ = (
    "check_read_only",
    "check_storage",
    "check_storage_processes",
    "storage_state_machine",
)
