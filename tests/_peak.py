"""Peak memory of one call, measured in a fresh interpreter without an address-space cap.

Under a cap (the first hostile campaign ran under 1 GiB) an allocation bomb looks like
a typed error; the resident high-water mark shows what it really costs. The child
imports the package, runs ``setup`` (warming every path up), reads ``ru_maxrss``,
runs ``code`` and reads it again; the difference is what ``code`` added to the peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024

_CHILD = """
import json, resource, sys
def _rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
{setup}
_before = _rss()
try:
{code}
except BaseException as _error:
    _outcome = f"{{type(_error).__module__}}.{{type(_error).__qualname__}}: {{_error}}"
else:
    _outcome = "returned"
print(json.dumps({{"peak": _rss() - _before, "outcome": _outcome[:500], **_extra}}))
"""


def run_peak(code: str, *, setup: str = "", timeout: float = 90) -> dict[str, Any]:
    """Run ``code`` in a child and report its peak-memory increase and how it ended.

    :param code: statements; a name ``_extra`` (a dict) set by ``setup`` or ``code``
        is merged into the report
    :param setup: statements run before the baseline is read
    :param timeout: seconds before the child counts as hung (``subprocess.TimeoutExpired``)
    :return: ``{"peak": bytes, "outcome": "returned" | "module.Error: message", ...}``
    """
    source = _CHILD.format(
        setup="_extra = {}\n" + textwrap.dedent(setup),
        code=textwrap.indent(textwrap.dedent(code), "    ") or "    pass",
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", source],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
