#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the integration tests.
#
#   bash .ci/servers/start-postgres.sh [--state FILE] [--env FILE]
#
# Creates a cluster in a fresh temp dir (initdb as an unprivileged user: the
# server refuses to run as root), listening on 127.0.0.1 only, at a free port,
# with its unix socket inside that 0700 dir. Waits until it accepts
# connections, creates the database, then writes
#
#   export LOOPAWARE_TEST_POSTGRES_URL='postgresql://loopaware:PASSWORD@127.0.0.1:PORT/loopaware_test'
#
# to the env file (default .ci/servers/postgres.env, mode 0600) and prints the
# same assignment, without `export`, as the last line of stdout.
#
# Idempotent: with the state file of a running cluster it only reprints the
# URL; with that of a stopped one (see stop-postgres.sh --crash) it starts the
# same data dir on the same port again, so a client's URL stays valid across
# a simulated crash. stop-postgres.sh removes everything.
set -euo pipefail

# shellcheck source=SCRIPTDIR/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
parse_args -- "$@"
db_user="loopaware"
db_name="loopaware_test"
parent_dir="${LOOPAWARE_PG_TMP:-/tmp}"

# -- the binaries ----------------------------------------------------------------

find_bindir() {
    if [[ -n "${PG_BINDIR:-}" && -x "$PG_BINDIR/initdb" ]]; then
        echo "$PG_BINDIR"
        return
    fi
    # Debian keeps the server binaries out of PATH, one dir per major version.
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
        echo "$dir"
        return
    fi
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(command -v initdb)"
        return
    fi
    return 1
}

if ! bindir="$(find_bindir)"; then
    [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null \
        || die "no PostgreSQL server binaries (initdb, pg_ctl) found; install PostgreSQL or set PG_BINDIR"
    log "installing PostgreSQL with apt-get"
    # Debian's postinst would create and start a system-wide 'main' cluster on
    # port 5432; this machine only needs the binaries.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/loopaware-ci.conf
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bindir="$(find_bindir)" || die "apt-get installed PostgreSQL but initdb/pg_ctl are still missing"
fi
for tool in initdb pg_ctl pg_isready createdb; do
    [[ -x "$bindir/$tool" ]] || command -v "$tool" >/dev/null || die "$tool is missing from $bindir"
done
tool() { if [[ -x "$bindir/$1" ]]; then echo "$bindir/$1"; else command -v "$1"; fi; }
PG_CTL="$(tool pg_ctl)"
PG_ISREADY="$(tool pg_isready)"

# -- who runs the server -----------------------------------------------------------

if [[ $EUID -eq 0 ]]; then
    run_as="${LOOPAWARE_PG_USER:-}"
    if [[ -z "$run_as" ]]; then
        if id -u postgres >/dev/null 2>&1; then
            run_as=postgres
        else
            run_as=lapci
            if ! id -u "$run_as" >/dev/null 2>&1; then
                log "creating the unprivileged user $run_as"
                useradd --system --no-create-home --shell /usr/sbin/nologin "$run_as"
            fi
        fi
    fi
    # From /: the server's user may not be allowed into the caller's directory
    # (a checkout under /root), and initdb and pg_ctl fail if they cannot stat it.
    as_server() { (cd / && runuser -u "$run_as" -- "$@"); }
else
    run_as="$(id -un)"
    as_server() { "$@"; }
fi

# -- reuse or restart a cluster this state file describes ------------------------------

is_ready() { "$PG_ISREADY" -q -h 127.0.0.1 -p "$1" -t 2 >/dev/null 2>&1; }

# pg_ctl start leaves the postmaster running with every fd it inherited: start it
# with only stdin/stdout/stderr, and stdout sent to stderr.
start_server() {
    local data="$1"
    (
        close_inherited_fds
        exec </dev/null >&2
        as_server "$PG_CTL" -D "$data" -l "$(dirname "$data")/server.log" -w -t 60 start
    )
}

lock_state  # two concurrent starts must not create two clusters

if [[ -s "$state_file" ]]; then
    # shellcheck disable=SC1090  # written by this script, values %q-quoted
    source "$state_file"
    if [[ -f "${PG_DIR:-}/.loopaware-pg" && -d "$PG_DIR/data" ]]; then
        if as_server "$PG_CTL" -D "$PG_DIR/data" status >/dev/null 2>&1 && is_ready "$PG_PORT"; then
            log "already running in $PG_DIR on 127.0.0.1:$PG_PORT"
        else
            log "restarting the stopped cluster in $PG_DIR on 127.0.0.1:$PG_PORT"
            start_server "$PG_DIR/data" || { tail -n 20 "$PG_DIR/server.log" >&2 || true; die "restart failed"; }
            for _ in $(seq 1 100); do is_ready "$PG_PORT" && break; sleep 0.1; done
            is_ready "$PG_PORT" || die "the restarted server does not accept connections"
        fi
        write_env LOOPAWARE_TEST_POSTGRES_URL "$PG_URL"
        exit 0
    fi
    log "forgetting the stale state file $state_file (its cluster is gone)"
    rm -f "$state_file"
fi

# -- a new cluster -----------------------------------------------------------------

pg_dir="$(mktemp -d "$parent_dir/loopaware-pg.XXXXXX")"
started=""
cleanup_on_failure() {
    local status=$?
    if ((status != 0)); then
        [[ -f "$pg_dir/server.log" ]] && tail -n 30 "$pg_dir/server.log" >&2
        [[ -n "$started" ]] && as_server "$PG_CTL" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1
        rm -rf -- "$pg_dir"
    fi
}
trap cleanup_on_failure EXIT

touch "$pg_dir/.loopaware-pg"  # stop-postgres.sh removes only dirs carrying this marker
password="$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$password" >"$pg_dir/pwfile"
chmod 700 "$pg_dir"
chown -R "$run_as" "$pg_dir"

log "initdb in $pg_dir/data as $run_as ($bindir)"
# Over TCP a password is required (any local user can reach 127.0.0.1); the
# unix socket lives in the 0700 dir, so only $run_as can use it, without one.
as_server "$(tool initdb)" -D "$pg_dir/data" -U "$db_user" --pwfile="$pg_dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log" >&2; die "initdb failed"; }
rm -f "$pg_dir/pwfile"

port=""
for attempt in 1 2 3 4 5; do
    candidate="$(free_port)"
    cat >"$pg_dir/data/postgresql.auto.conf" <<CONF
# Throwaway test cluster, written by .ci/servers/start-postgres.sh.
listen_addresses = '127.0.0.1'
port = $candidate
unix_socket_directories = '$pg_dir'
max_connections = 300
log_min_messages = warning
CONF
    chown "$run_as" "$pg_dir/data/postgresql.auto.conf"
    if start_server "$pg_dir/data"; then
        port="$candidate"
        started=1
        break
    fi
    # Another process may have taken the port between our probe and the bind.
    grep -q "could not bind\|Address already in use" "$pg_dir/server.log" 2>/dev/null \
        || die "pg_ctl start failed (attempt $attempt)"
    log "port $candidate was taken, trying another"
done
[[ -n "$port" ]] || die "could not find a free port"

for _ in $(seq 1 100); do is_ready "$port" && break; sleep 0.1; done
is_ready "$port" || die "the server on 127.0.0.1:$port does not accept connections"

as_server "$(tool createdb)" -h "$pg_dir" -p "$port" -U "$db_user" "$db_name"

url="postgresql://$db_user:$password@127.0.0.1:$port/$db_name"
state_tmp="$(mktemp "$state_file.XXXXXX")"
chmod 600 "$state_tmp"
{
    echo "# Written by .ci/servers/start-postgres.sh; read by stop-postgres.sh and the tests."
    printf 'PG_DIR=%q\n' "$pg_dir"
    printf 'PG_PORT=%q\n' "$port"
    printf 'PG_BINDIR=%q\n' "$bindir"
    printf 'PG_RUN_AS=%q\n' "$run_as"
    printf 'PG_URL=%q\n' "$url"
} >"$state_tmp"
mv -f "$state_tmp" "$state_file"
trap - EXIT
log "$("$PG_CTL" --version | sed 's/^pg_ctl (PostgreSQL)/PostgreSQL/') on 127.0.0.1:$port, data in $pg_dir"
write_env LOOPAWARE_TEST_POSTGRES_URL "$url"
