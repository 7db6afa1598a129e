"""Compare two runs of aiida-core's engine tests: with AiiDA's persister, and with ours.

    python .ci/aiida_engine/compare.py DIR

DIR holds, for each run NAME in (aiida, loopaware), NAME.xml (pytest's --junitxml),
NAME.persisters (the plugin's --loopaware-report) and NAME.seconds. Prints both runs'
counts and time, every test whose outcome differs, and which persister each process's
runners got. Exit status 1 if a test that passes with AiiDA's persister does not pass
with ours, or if a run's processes did not get the persister it was meant to test
(a substitution that did not happen would make the comparison say nothing); else 0.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

RUNS = {"aiida": "AiiDAPersister", "loopaware": "LoopAwarePersister"}


def outcomes(junit: Path) -> dict[str, str]:
    """Each test's outcome in a junit XML file: passed, failed, error, skipped or xfailed.

    :param junit: the file pytest --junitxml wrote
    :returns: test id (``module.Class::name``) -> outcome
    """
    result: dict[str, str] = {}
    # The file pytest just wrote in our own temp dir, not untrusted input.
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314
        test = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
                break
            if child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome = "xfailed" if xfail else "skipped"
        result[test] = outcome
    return result


def persisters(report: Path) -> dict[str, set[str]]:
    """Which persister classes each kind of process got: role -> class names."""
    roles: dict[str, set[str]] = {}
    if report.exists():
        for line in report.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                roles.setdefault(record["role"], set()).add(record["persister"])
    return roles


def counts(results: dict[str, str]) -> str:
    kinds = ("passed", "failed", "error", "skipped", "xfailed")
    return ", ".join(f"{sum(1 for o in results.values() if o == k)} {k}" for k in kinds)


def main(directory: Path) -> int:
    results = {name: outcomes(directory / f"{name}.xml") for name in RUNS}
    problems: list[str] = []
    for name, expected in RUNS.items():
        seconds = (directory / f"{name}.seconds").read_text().strip()
        print(
            f"== {expected:18}: {len(results[name])} tests, {counts(results[name])}, in {seconds} s"
        )
        got = persisters(directory / f"{name}.persisters")
        for role in sorted(got):
            print(f"   {role} processes got: {', '.join(sorted(got[role]))}")
        if "pytest" not in got:
            problems.append(f"the {name} run's pytest process never asked AiiDA for a persister")
        wrong = sorted({kind for kinds in got.values() for kind in kinds} - {expected})
        if wrong:
            problems.append(f"the {name} run's processes got {', '.join(wrong)}, not {expected}")
        if "worker" not in got and any("daemon" in t or "control" in t for t in results[name]):
            problems.append(f"the {name} run started no daemon worker through the plugin")

    theirs, ours = results["aiida"], results["loopaware"]
    differ = sorted(t for t in theirs.keys() | ours.keys() if theirs.get(t) != ours.get(t))
    regressions = [t for t in differ if theirs.get(t) == "passed"]
    print(f"== {len(differ)} test(s) with another outcome, {len(regressions)} of them regressions")
    for test in differ:
        mark = "REGRESSION" if test in regressions else "          "
        before, after = theirs.get(test, "absent"), ours.get(test, "absent")
        print(f"   {mark} {test}: {before} with AiiDA's, {after} with ours")
    for problem in problems:
        print(f"!!! {problem}", file=sys.stderr)
    if regressions:
        print(
            f"!!! {len(regressions)} test(s) pass with AiiDAPersister and not with ours",
            file=sys.stderr,
        )
    return 1 if regressions or problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
