"""Compare two runs of aiida-core's engine tests: with AiiDA's persister, and with ours.

    python .ci/aiida_engine/compare.py DIR               # the report; exit status
    python .ci/aiida_engine/compare.py --regressions DIR # node ids to run again, one a line

DIR holds, for each run NAME in (aiida, loopaware), NAME.xml (pytest's --junitxml),
NAME.persisters (the plugin's --loopaware-report) and NAME.seconds, and the tests'
files under DIR/src/tests; optionally loopaware-again.xml, the regressed tests run once more
with ours. Prints both runs' counts and time, every test whose outcome differs, and
which persister each kind of process got. Exit status 1 if a test that passes with
AiiDA's persister does not pass with ours (twice, when it was run again), or if a run's
processes did not get the persister it was meant to test (a substitution that did not
happen would make the comparison say nothing); else 0.
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
    if not junit.exists():
        return result
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


def node_id(test: str, root: Path) -> str:
    """pytest's node id for a junit test id: ``a.b.test_x.Class::name`` ->
    ``a/b/test_x.py::Class::name``, the module being the longest prefix that is a file."""
    dotted, name = test.split("::", 1)
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (root / path).is_file():
            return "::".join([path, *parts[cut:], name])
    return test


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


def regressions(directory: Path) -> list[str]:
    """The tests that pass with AiiDA's persister and not with ours."""
    theirs = outcomes(directory / "aiida.xml")
    ours = outcomes(directory / "loopaware.xml")
    return sorted(
        t for t, outcome in theirs.items() if outcome == "passed" and ours.get(t) != "passed"
    )


def check_run(directory: Path, name: str, results: dict[str, str]) -> list[str]:
    """Print one run's counts and persisters; return what shows the run tested nothing."""
    expected = RUNS[name]
    seconds = (directory / f"{name}.seconds").read_text().strip()
    print(f"== {expected:18}: {len(results)} tests, {counts(results)}, in {seconds} s")
    got = persisters(directory / f"{name}.persisters")
    started = got.pop("daemon-start", set())
    for role in sorted(got):
        print(f"   {role} processes got: {', '.join(sorted(got[role]))}")
    problems = []
    if not results:
        problems.append(f"the {name} run ran no test (see its output above)")
    if "pytest" not in got:
        problems.append(f"the {name} run's pytest process never asked AiiDA for a persister")
    wrong = sorted({kind for kinds in got.values() for kind in kinds} - {expected})
    if wrong:
        problems.append(f"the {name} run's processes got {', '.join(wrong)}, not {expected}")
    if started and "worker" not in got:
        problems.append(f"the {name} run started a daemon whose workers never reported")
    return problems


def main(directory: Path) -> int:
    results = {name: outcomes(directory / f"{name}.xml") for name in RUNS}
    problems = [p for name in RUNS for p in check_run(directory, name, results[name])]
    theirs, ours = results["aiida"], results["loopaware"]
    again = outcomes(directory / "loopaware-again.xml")
    root = directory / "src"
    differ = sorted(t for t in theirs.keys() | ours.keys() if theirs.get(t) != ours.get(t))
    regressed = [t for t in differ if theirs.get(t) == "passed"]
    second_try = [t for t in regressed if again.get(t) == "passed"]
    failing = [t for t in regressed if t not in second_try]
    print(f"== {len(differ)} test(s) with another outcome, {len(failing)} of them regressions")
    for test in differ:
        mark = "REGRESSION" if test in failing else "          "
        before, after = theirs.get(test, "absent"), ours.get(test, "absent")
        also = ", passed when run again" if test in second_try else ""
        print(f"   {mark} {node_id(test, root)}: {before} with AiiDA's, {after} with ours{also}")
    for problem in problems:
        print(f"!!! {problem}", file=sys.stderr)
    if second_try:
        print(
            f"!!! FLAKY: {len(second_try)} test(s) failed with ours once and passed when run "
            "again (above); not counted as regressions",
            file=sys.stderr,
        )
    if failing:
        print(
            f"!!! {len(failing)} test(s) pass with AiiDAPersister and not with ours",
            file=sys.stderr,
        )
    return 1 if failing or problems else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--regressions"]:
        where = Path(sys.argv[2])
        for test in regressions(where):
            print(node_id(test, where / "src"))
        sys.exit(0)
    sys.exit(main(Path(sys.argv[1])))
