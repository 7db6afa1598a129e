#!/usr/bin/env bash
# One Python leg of CI: the test suite on Debian's own Python VERSION, in a throwaway chroot.
#
#   bash .ci/python-leg.sh 3.13    # Debian trixie's python3.13
#   bash .ci/python-leg.sh 3.14    # Debian testing's python3.14
#
# The chroot is built with debootstrap from the mirror the host's apt uses, in a temp
# dir that is removed on every exit. Nothing outside it is mounted into it: the repo's
# files, resolv.conf, the CA bundle and the host's pip index settings are copied in;
# /proc, /dev/shm and a private /dev/pts are mounted inside it (and unmounted on exit)
# for subprocesses, multiprocessing and the pseudo-terminal tests. The server-backed tests (tests/integration, the PostgreSQL storage
# tests) run on the host leg only; see deselect below.
#
# Exit status: 0 passed, 1 failed, 3 skipped because the chroot could not be built
# (printed loudly; .ci/run reports it). A test that fails inside the chroot is a failure.
set -euo pipefail

version=${1:?usage: python-leg.sh 3.13|3.14}
case "$version" in
    3.13) suite=trixie ;;
    3.14) suite=testing ;;
    *) echo "python-leg.sh: no Debian suite known for Python $version" >&2; exit 2 ;;
esac
# testing has no script of its own in older debootstraps; it is built like sid.
script=/usr/share/debootstrap/scripts/$([ "$suite" = testing ] && echo sid || echo "$suite")
python=python$version
repo=$(cd "$(dirname "$0")/.." && pwd)
started=$SECONDS

loud() {
    printf '\n%s\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    printf '!!! %s\n' "$@" >&2
    printf '%s\n\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
}

work=$(mktemp -d "${TMPDIR:-/tmp}/loopaware-py$version.XXXXXX")
root=$work/root
# shellcheck disable=SC2317  # called by the trap
cleanup() {
    # Whatever is mounted under the chroot, deepest first: ours, or debootstrap's own
    # /proc and /sys if it failed half-way.
    awk -v root="$root/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mounted; do umount "$mounted" || umount -l "$mounted"; done
    # --one-file-system: should an unmount have failed, never delete through it.
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP  # so that cleanup runs when .ci/run stops this leg

if ! command -v debootstrap >/dev/null; then
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

# The Debian mirror the host's apt uses (deb822 .sources or one-line .list), not security.
host_mirror() {
    {
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
            awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }'
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" { print ($2 ~ /^\[/ ? $3 : $2) }'
    } | grep -v security | grep -E '^https?://.*/debian/?$' | head -n 1
}
mirror=${LOOPAWARE_DEBIAN_MIRROR:-$(host_mirror || true)}
mirror=${mirror:-http://deb.debian.org/debian}

echo "== Python $version: debootstrap $suite from $mirror"
packages=$python,$python-venv,$python-dev,gcc,git,make,ca-certificates,e2fsprogs
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" "$script" \
    >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    loud "SKIPPED: the Python $version leg. debootstrap could not build Debian $suite" \
        "from $mirror (log above), so the suite did NOT run on Python $version."
    exit 3
fi
echo "== Python $version: chroot built in $((SECONDS - started)) s"

# What pip needs to reach the index from inside: DNS, the host's CA bundle, and the
# host's index settings where they are URLs (file:// indexes on the host are not inside).
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/loopaware-ca.crt"
host_pip() { python3 -m pip config get "global.$1" 2>/dev/null | tr ' ' '\n' | grep -E '^https?://' || true; }
index_url=${PIP_INDEX_URL:-$(host_pip index-url | head -n 1)}
# shellcheck disable=SC2086  # PIP_EXTRA_INDEX_URL is a space-separated list: split it
extra_urls=$( (printf '%s\n' ${PIP_EXTRA_INDEX_URL:-}; host_pip extra-index-url) |
    { grep -E '^https?://' || true; } | sort -u | tr '\n' ' ')
{
    echo "[global]"
    echo "cert = /etc/loopaware-ca.crt"
    echo "timeout = ${PIP_DEFAULT_TIMEOUT:-180}"
    echo "disable-pip-version-check = true"
    if [ -n "$index_url" ]; then echo "index-url = $index_url"; fi
    if [ -n "${extra_urls// /}" ]; then echo "extra-index-url = $extra_urls"; fi
    if [ -n "${PIP_TRUSTED_HOST:-}" ]; then echo "trusted-host = $PIP_TRUSTED_HOST"; fi
} >"$root/etc/pip.conf"

# The repo as checked out (tracked files plus new, not ignored ones).
mkdir -p "$root/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard |
    tar -C "$repo" --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$root/src" -xf -

mount -t proc proc "$root/proc"
mount -t tmpfs -o size=1g,mode=1777 tmpfs "$root/dev/shm"
# A private devpts instance for the pseudo-terminal tests; /dev/ptmx must lead to it.
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
rm -f "$root/dev/ptmx" && ln -s pts/ptmx "$root/dev/ptmx"

# Server-backed tests run on the host leg, which has the servers: tests/integration and
# everything marked `integration` (the PostgreSQL storage and reliability tests, the
# PostgreSQL params of the storage axis). tests/storage/test_postgresql_damage.py is
# marked too; it stays ignored so that its module-level psycopg import is never needed.
deselect=(-m "not integration" --ignore=tests/integration --ignore=tests/storage/test_postgresql_damage.py)

chroot=$(command -v chroot)  # in /usr/sbin, outside the PATH the tests get
run_inside() {
    env -i PATH=/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 TMPDIR=/tmp \
        CI="${CI:-true}" LOOPAWARE_HEAVY="${LOOPAWARE_HEAVY:-}" \
        HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-}" PIP_CONFIG_FILE=/etc/pip.conf \
        http_proxy="${http_proxy:-}" https_proxy="${https_proxy:-}" no_proxy="${no_proxy:-}" \
        "$chroot" "$root" /bin/bash -c "cd /src && $1"
}

echo "== Python $version: installing the package and its test extras (aiida-core included: tests/aiida run on every leg)"
phase=$SECONDS
# The 3.14 leg installs the `fast` extra (msgspec decodes msgpack); the 3.13 leg does
# not, so the whole suite also runs on msgpack-python's decoder, the fallback.
extras=test,zstd,postgres,bench,aiida
if [ "$version" = 3.14 ]; then extras+=,fast; fi
run_inside "$python -m venv /venv && python -m pip install --quiet -e '.[$extras]'"
echo "== Python $version: installed in $((SECONDS - phase)) s"

phase=$SECONDS
status=0
run_inside "python -VV && python -m pytest -p no:cacheprovider --durations=15 ${deselect[*]@Q}" || status=$?
echo "== Python $version: pytest exit $status in $((SECONDS - phase)) s (leg $((SECONDS - started)) s)"
exit "$status"
