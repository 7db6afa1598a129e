"""``python -m tests.aiida.crash_worker PROFILE [STORE]``: our daemon worker, which
SIGKILLs itself right after its ``$LOOPAWARE_CRASH_AT``-th checkpoint (0: never) and
appends a line to ``$LOOPAWARE_SAVES_LOG`` for each checkpoint it saves.

SIGKILL is the crash: nothing of the worker runs after it, not even a flush, and the
broker gets the worker's unacknowledged tasks back when the kernel closes its socket.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from loopaware_persist import LoopAwarePersister
from loopaware_persist.aiida import run_daemon_worker


def _count_saves(crash_at: int, log: str) -> None:
    save = LoopAwarePersister.save_checkpoint
    saved = 0

    def counted(self: LoopAwarePersister, process: Any, tag: str | None = None, **kw: Any) -> Any:
        nonlocal saved
        result = save(self, process, tag, **kw)
        saved += 1
        with open(log, "a") as out:
            out.write(f"{saved} {type(process).__name__} {process.pid}\n")
        if saved == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    LoopAwarePersister.save_checkpoint = counted  # type: ignore[method-assign]


if __name__ == "__main__":
    _count_saves(int(os.environ.get("LOOPAWARE_CRASH_AT", "0")), os.environ["LOOPAWARE_SAVES_LOG"])
    profile, store = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
    run_daemon_worker(profile, store or None, allow=["tests.aiida"])
