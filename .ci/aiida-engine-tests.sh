#!/usr/bin/env bash
# aiida-core's OWN engine tests, run twice: with AiiDA's AiiDAPersister, then with ours
# substituted everywhere AiiDA gets a persister (pytest -p loopaware_persist.aiida.pytest_plugin,
# the daemon workers included). Every test that passes with AiiDA's must pass with ours.
#
#   bash .ci/aiida-engine-tests.sh                 # the default files below
#   bash .ci/aiida-engine-tests.sh tests/engine    # any paths inside aiida-core's repository
#
# aiida-core's tests are not in its PyPI sdist: they are taken, at run time and into a temp
# dir, from a git clone of aiida-core (AIIDA_CORE_GIT, default below; a bare or normal clone)
# at AIIDA_CORE_REF (default release/v2.9.0, the newest ref with tests for 2.9). None of
# its code is copied into this repository.
#
# Needs aiida-core (the `aiida` extra), sphinx and a RabbitMQ: LOOPAWARE_TEST_AMQP_URL
# (.ci/servers/rabbitmq.env), else AiiDA's default 127.0.0.1:5672.
#
# AIIDA_ENGINE_TESTS_STORE=URL keeps our records there (default aiida://, in the nodes).
# AIIDA_ENGINE_TESTS_PARALLEL=1 runs the two at once (the daemon tests mostly wait).
# AIIDA_ENGINE_TESTS_KEEP=1 keeps the temp dir (tests, junit XML, logs) and prints its path.
#
# Exit status: 0 no regression, 1 a regression (or a run whose substitution did not
# happen), 3 NOT RUN (no aiida-core clone, or aiida-core not installed), printed loudly.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
case "$python" in */*) [ "${python#/}" != "$python" ] || python=$PWD/$python ;; esac  # runs from a temp dir
mirror=${AIIDA_CORE_GIT:-/work/.mirror/aiidateam+aiida-core/repo}
ref=${AIIDA_CORE_REF:-release/v2.9.0}
if [ "$#" -gt 0 ]; then
    files=("$@")
else
    files=(
        tests/engine/test_persistence.py tests/engine/test_work_chain.py
        tests/engine/test_process.py tests/engine/test_runners.py
        tests/engine/test_launch.py tests/engine/test_run.py
        tests/engine/test_daemon.py tests/engine/daemon/test_worker.py
        tests/engine/processes/test_control.py
    )
fi

loud() {
    printf '\n%s\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    printf '!!! %s\n' "$@" >&2
    printf '%s\n\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
}

# A bare mirror has the branch itself; a `git clone` has it as origin/<branch>.
if [ -d "$mirror/.git" ]; then gitdir=$mirror/.git; else gitdir=$mirror; fi
commit=
for candidate in "$ref" "origin/$ref"; do
    if commit=$(git --git-dir="$gitdir" rev-parse --verify --quiet "$candidate^{commit}" 2>/dev/null); then
        break
    fi
done
if [ -z "$commit" ]; then
    loud "NOT RUN: AiiDA's engine tests were NOT run: no aiida-core clone with $ref at $mirror." \
        "Get one:  git clone https://github.com/aiidateam/aiida-core /some/where/aiida-core" \
        "then:     AIIDA_CORE_GIT=/some/where/aiida-core bash .ci/aiida-engine-tests.sh"
    exit 3
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/aiida-engine-tests.XXXXXX")
# shellcheck disable=SC2317  # called by the trap
cleanup() {
    if [ -n "${AIIDA_ENGINE_TESTS_KEEP:-}" ]; then
        echo "== kept: $work"
        return
    fi
    # A daemon that an interrupted run left behind: its circus pid file is under $work
    # (the test profiles' config dirs); SIGTERM stops circus and its workers.
    find "$work" -name 'circus-*.pid' 2>/dev/null | while read -r pidfile; do
        kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
# Importing aiida makes its configuration folder (~/.aiida unless AIIDA_PATH says
# otherwise): every import here uses one in $work, and each run below one of its own.
export AIIDA_PATH="$work/aiida-probe"

# aiida-core's tests/conftest.py loads sphinx.testing.fixtures as a plugin.
if ! "$python" -c 'import aiida, sphinx.testing.fixtures, loopaware_persist.aiida.pytest_plugin' 2>/dev/null; then
    loud "NOT RUN: AiiDA's engine tests were NOT run: $python cannot import aiida-core and sphinx." \
        "Install them:  $python -m pip install -e '.[aiida,test]' sphinx"
    exit 3
fi

# (git prints "invalid object" for files a partial mirror lacks, even outside these
# paths; shown only if the archive fails.)
mkdir "$work/src"
if ! git --git-dir="$gitdir" archive "$commit" tests pyproject.toml 2>"$work/archive.log" | tar -x -C "$work/src"; then
    cat "$work/archive.log" >&2
    loud "NOT RUN: could not take aiida-core's tests from $ref in $mirror (above)."
    exit 3
fi
echo "== aiida-core's tests from $ref (${commit:0:10}) against the installed" \
    "aiida-core $("$python" -c 'import aiida; print(aiida.__version__)')"

# Their pytest settings (markers, timeout, warnings filters), without their addopts, which
# need plugins their CI has (pytest-cov's xml report, instafail, benchmark).
"$python" - "$work/src" <<'EOF'
import sys, tomllib
from pathlib import Path
work = Path(sys.argv[1])
ini = tomllib.loads((work / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
lines = ["[pytest]"]
for key in ("markers", "filterwarnings"):
    lines += [f"{key} ="] + [f"    {value}" for value in ini.get(key, [])]
for key in ("timeout", "timeout_method", "xfail_strict"):
    if key in ini:
        lines.append(f"{key} = {str(ini[key]).lower() if isinstance(ini[key], bool) else ini[key]}")
(work / "pytest.ini").write_text("\n".join(lines) + "\n")
EOF

# `verdi` must be on the PATH: AiiDA starts its daemon with it.
bindir=$(dirname "$python")
export PATH="$bindir:$PATH"
export PYTHONPATH="$repo/.ci/aiida_engine${PYTHONPATH:+:$PYTHONPATH}"
# What a load may import besides AiiDA's own machinery (its bundled calculation and
# workflow plugins included, in AIIDA_PROCESSES): the modules of the tests' own processes, as
# a user allows their plugins'; and where our records go.
options=(--loopaware-allow=tests)
if [ -n "${AIIDA_ENGINE_TESTS_STORE:-}" ]; then options+=(--loopaware-store="$AIIDA_ENGINE_TESTS_STORE"); fi
# run NAME PERSISTER PATHS...: one pytest run into $work/NAME.{xml,persisters,seconds}.
run() {
    local name=$1 who=$2 started=$SECONDS
    shift 2
    mkdir -p "$work/$name/aiida"
    # Each run in a copy of its own: tests write into the working directory (the dry-run
    # folders of test_launch.py, removed after each test), and the two may run at once.
    cp -a "$work/src" "$work/$name/src"
    (cd "$work/$name/src" && AIIDA_PATH="$work/$name/aiida" "$python" -m pytest -c pytest.ini --rootdir . \
        -p no:cacheprovider -p aiida_core_compat -p loopaware_persist.aiida.pytest_plugin \
        --loopaware-persister="$who" "${options[@]}" \
        --loopaware-report="$work/$name.persisters" --junitxml="$work/$name.xml" \
        --basetemp="$work/$name/tmp" -q -rfEs --durations=5 "$@") || true
    echo "$((SECONDS - started))" >"$work/$name.seconds"
}

if [ -n "${AIIDA_ENGINE_TESTS_PARALLEL:-}" ]; then
    # Both runs at once (separate profiles, daemons and queues), each printed when done.
    for who in aiida loopaware; do
        run "$who" "$who" "${files[@]}" >"$work/$who.log" 2>&1 &
    done
    wait
    for who in aiida loopaware; do
        echo "== aiida-core engine tests with the $who persister"
        cat "$work/$who.log"
    done
else
    for who in aiida loopaware; do
        echo "== aiida-core engine tests with the $who persister"
        run "$who" "$who" "${files[@]}"
    done
fi
# A test that passes with AiiDA's and fails with ours runs once more with ours: under load
# the daemon tests time out now and then, whichever the persister (compare.py says FLAKY).
mapfile -t again < <("$python" "$repo/.ci/aiida_engine/compare.py" --regressions "$work" | grep .)
if [ "${#again[@]}" -gt 0 ]; then
    echo "== ${#again[@]} test(s) failed only with ours: once more with ours"
    run loopaware-again loopaware "${again[@]}"
fi
status=0
"$python" "$repo/.ci/aiida_engine/compare.py" "$work" || status=$?
exit "$status"
