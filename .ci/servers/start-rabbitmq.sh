#!/usr/bin/env bash
# Start a throwaway RabbitMQ broker for the integration tests.
#
#   bash .ci/servers/start-rabbitmq.sh [--state FILE] [--env FILE]
#
# Debian's rabbitmq-server (apt-get install rabbitmq-server), run as a private
# node in a fresh temp dir: every port on 127.0.0.1 only (the AMQP listener at
# a free port, epmd on its own free port via ERL_EPMD_ADDRESS/ERL_EPMD_PORT, the
# distribution port pinned with inet_dist_use_interface), no plugins (so no
# management listener), its own Erlang cookie (HOME is the temp dir), data and
# logs under that dir. Waits until the node has booted and accepts AMQP
# connections, then writes
#
#   export LOOPAWARE_TEST_AMQP_URL='amqp://guest:guest@127.0.0.1:PORT/'
#
# to the env file (default .ci/servers/rabbitmq.env, mode 0600) and prints the
# same assignment, without `export`, as the last line of stdout.
#
# Idempotent: with the state file of a running node it only reprints the URL.
# stop-rabbitmq.sh stops the node and removes everything.
#
# Environment: LOOPAWARE_RMQ_TMP (parent of the temp dir, default /tmp),
# LOOPAWARE_RMQ_NODENAME (default lap@localhost), LOOPAWARE_RMQ_CONSUMER_TIMEOUT_MS
# (default 600000: an unacknowledged task is redelivered after 10 minutes).
set -euo pipefail

# shellcheck source=SCRIPTDIR/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
parse_args -- "$@"
parent_dir="${LOOPAWARE_RMQ_TMP:-/tmp}"
nodename="${LOOPAWARE_RMQ_NODENAME:-lap@localhost}"
# RabbitMQ's default is 30 minutes. A worker acknowledges a task only when the
# process has terminated, so this bounds how long one process may run before
# the broker closes the worker's channel and redelivers the task (the stale
# worker is then fenced by the checkpoint version check). AiiDA hit the same
# limit when RabbitMQ 3.8.15 introduced it (aiidateam/aiida-core#5105).
consumer_timeout_ms="${LOOPAWARE_RMQ_CONSUMER_TIMEOUT_MS:-600000}"

# -- the binaries ----------------------------------------------------------------

# /usr/sbin/rabbitmq-server is Debian's wrapper, which switches to the
# `rabbitmq` user and its system-wide dirs; the scripts behind it honour our
# RABBITMQ_* variables as whoever runs them.
find_bindir() {
    local dir
    for dir in "${RABBITMQ_BINDIR:-}" /usr/lib/rabbitmq/bin; do
        if [[ -n "$dir" && -x "$dir/rabbitmq-server" && -x "$dir/rabbitmqctl" ]]; then
            echo "$dir"
            return
        fi
    done
    if command -v rabbitmq-server >/dev/null && command -v rabbitmqctl >/dev/null; then
        dirname "$(command -v rabbitmq-server)"
        return
    fi
    return 1
}

install_rabbitmq() {
    [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null \
        || die "rabbitmq-server not found: apt-get install -y rabbitmq-server (or set RABBITMQ_BINDIR)"
    log "installing RabbitMQ with apt-get"
    # Debian starts a system-wide broker (0.0.0.0:5672, epmd on *:4369) on install
    # unless policy-rc.d says no; we want only our private, loopback-only node.
    local policy=/usr/sbin/policy-rc.d added=""
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added=1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >&2 || {
        [[ -n "$added" ]] && rm -f "$policy"
        die "apt-get install rabbitmq-server failed"
    }
    [[ -n "$added" ]] && rm -f "$policy"
    # Installing pulls in epmd's systemd socket unit on some systems; it listens
    # on all interfaces, so it is stopped (ours runs on its own loopback port).
    if command -v systemctl >/dev/null 2>&1; then
        systemctl stop epmd.socket epmd.service rabbitmq-server.service >/dev/null 2>&1 || true
    fi
}

bindir="$(find_bindir)" || { install_rabbitmq; bindir="$(find_bindir)"; } \
    || die "apt-get installed rabbitmq-server but its scripts are still missing"

# Everything the server and rabbitmqctl need to find the node: both must see the
# same HOME (cookie), epmd port and node name.
node_env() {
    export HOME="$rmq_dir"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_EPMD_PORT="$epmd_port"
    export RABBITMQ_NODENAME="$nodename"
    export RABBITMQ_MNESIA_BASE="$rmq_dir/mnesia"
    export RABBITMQ_LOG_BASE="$rmq_dir/log"
    export RABBITMQ_CONFIG_FILE="$rmq_dir/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$rmq_dir/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$rmq_dir/enabled_plugins"
    export RABBITMQ_PID_FILE="$rmq_dir/rabbit.pid"
    export RABBITMQ_CONF_ENV_FILE="$rmq_dir/rabbitmq-env.conf"
    export RABBITMQ_DIST_PORT="$dist_port"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$amqp_port"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ctl() { "$bindir/rabbitmqctl" -q -n "$nodename" "$@"; }

amqp_accepts() {
    python3 - "$1" <<'EOF'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
    s.sendall(b"AMQP\x00\x00\x09\x01")
    # A broker answers the protocol header with Connection.Start (frame type 1).
    sys.exit(0 if s.recv(1) == b"\x01" else 1)
EOF
}

# -- reuse a node this state file describes ----------------------------------------

lock_state

if [[ -s "$state_file" ]]; then
    # shellcheck disable=SC1090
    source "$state_file"
    if [[ -d "${rmq_dir:-}" ]] && (node_env; ctl status >/dev/null 2>&1); then
        log "reusing the node $nodename on 127.0.0.1:$amqp_port"
        write_env LOOPAWARE_TEST_AMQP_URL "amqp://guest:guest@127.0.0.1:$amqp_port/"
        exit 0
    fi
    log "forgetting the stale state file $state_file (its node is gone)"
    [[ -d "${rmq_dir:-}" ]] && rm -rf -- "$rmq_dir"
    rm -f "$state_file"
fi

# -- a fresh node ----------------------------------------------------------------

rmq_dir="$(mktemp -d "$parent_dir/loopaware-rmq.XXXXXX")"
chmod 700 "$rmq_dir"
mkdir -p "$rmq_dir/mnesia" "$rmq_dir/log"
amqp_port="$(free_port)"
epmd_port="$(free_port)"
dist_port="$(free_port)"

{
    # The state file is written first so that stop-rabbitmq.sh can clean up
    # after a start that fails half-way.
    printf 'rmq_dir=%q\n' "$rmq_dir"
    printf 'nodename=%q\n' "$nodename"
    printf 'amqp_port=%q\n' "$amqp_port"
    printf 'epmd_port=%q\n' "$epmd_port"
    printf 'dist_port=%q\n' "$dist_port"
    printf 'bindir=%q\n' "$bindir"
} >"$state_file"
chmod 600 "$state_file"

cat >"$rmq_dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$amqp_port
listeners.ssl = none
# guest may only log in over loopback, which is the only way in anyway.
loopback_users.guest = true
consumer_timeout = $consumer_timeout_ms
# Tests run on machines with little free disk; the default (50 MB) is kept
# explicit so a full /tmp shows up as a blocked publisher, not a mystery.
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = info
EOF
echo "[]." >"$rmq_dir/enabled_plugins"
echo "[]." >"$rmq_dir/advanced.config"
: >"$rmq_dir/rabbitmq-env.conf"
# A private Erlang cookie, so no other node on this machine can talk to ours.
python3 -c 'import secrets; print(secrets.token_hex(20), end="")' >"$rmq_dir/.erlang.cookie"
chmod 400 "$rmq_dir/.erlang.cookie"

(
    node_env
    # The detached node would otherwise hold our flock and a caller's pipe for life.
    close_inherited_fds
    exec </dev/null >"$rmq_dir/log/startup.out" 2>&1
    "$bindir/rabbitmq-server" -detached
)

node_env
# await_startup fails at once while the node has not yet registered with epmd,
# so it is retried until a deadline; once connected it waits for the boot itself.
booted=""
deadline=$((SECONDS + 90))
while ((SECONDS < deadline)); do
    if ctl await_startup --timeout 60 >/dev/null 2>&1; then booted=1; break; fi
    sleep 0.5
done
if [[ -z "$booted" ]]; then
    tail -n 40 "$rmq_dir/log/startup.out" "$rmq_dir"/log/*.log >&2 2>/dev/null || true
    die "the node $nodename did not boot; logs above, data in $rmq_dir (stop-rabbitmq.sh cleans up)"
fi
ready=""
for _ in $(seq 1 100); do
    if amqp_accepts "$amqp_port" 2>/dev/null; then ready=1; break; fi
    sleep 0.1
done
[[ -n "$ready" ]] || die "the node booted but 127.0.0.1:$amqp_port does not speak AMQP"

log "RabbitMQ $(ctl version 2>/dev/null || echo '?') node $nodename on 127.0.0.1:$amqp_port, data in $rmq_dir"
write_env LOOPAWARE_TEST_AMQP_URL "amqp://guest:guest@127.0.0.1:$amqp_port/"
