#!/usr/bin/env bash
# Stop the throwaway PostgreSQL cluster start-postgres.sh started, and remove it.
#
#   bash .ci/servers/stop-postgres.sh [--state FILE] [--env FILE] [--crash]
#
# Without --crash: a fast shutdown (an immediate one if that hangs), then the
# temp dir, the state file and the env file are removed. Safe to run when
# nothing is running.
#
# --crash: `pg_ctl stop -m immediate` only, like a killed server (no
# checkpoint, crash recovery on the next start); the data dir and state stay,
# so start-postgres.sh with the same --state restarts it on the same port.
set -euo pipefail

# shellcheck source=SCRIPTDIR/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
crash=""
parse_args --crash=crash -- "$@"

if [[ ! -s "$state_file" ]]; then
    log "nothing to stop (no $state_file)"
    [[ -n "$crash" ]] || rm -f -- "$env_file" "$state_file" "$state_file.lock"
    exit 0
fi

lock_state

# shellcheck disable=SC1090  # written by start-postgres.sh, values %q-quoted
source "$state_file"

if [[ $EUID -eq 0 && "${PG_RUN_AS:-root}" != root ]]; then
    as_server() { (cd / && runuser -u "$PG_RUN_AS" -- "$@"); }
else
    as_server() { "$@"; }
fi
pg_ctl="${PG_BINDIR:-}/pg_ctl"
[[ -x "$pg_ctl" ]] || pg_ctl="$(command -v pg_ctl || true)"

# Only a dir start-postgres.sh made (it carries the marker) is ever touched.
if [[ -z "${PG_DIR:-}" || ! -f "$PG_DIR/.loopaware-pg" ]]; then
    log "the state file names no cluster of ours (${PG_DIR:-unset}); forgetting it"
    rm -f -- "$state_file" "$env_file" "$state_file.lock"
    exit 0
fi

running() { [[ -f "$PG_DIR/data/postmaster.pid" ]] && as_server "$pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; }

if [[ -n "$crash" ]]; then
    if running; then
        as_server "$pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 30 stop >&2
        log "crashed (immediate stop) the cluster in $PG_DIR; data kept"
    else
        log "the cluster in $PG_DIR is not running"
    fi
    exit 0
fi

if running; then
    as_server "$pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >&2 \
        || as_server "$pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 30 stop >&2 \
        || log "pg_ctl could not stop the server in $PG_DIR"
fi
if running; then
    log "the server in $PG_DIR is still running; leaving its files in place"
    exit 1
fi
rm -rf -- "$PG_DIR"
rm -f -- "$state_file" "$env_file" "$state_file.lock"
log "stopped and removed the cluster in $PG_DIR"
