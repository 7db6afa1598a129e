#!/usr/bin/env bash
# Stop the throwaway RabbitMQ node start-rabbitmq.sh started, and remove it.
#
#   bash .ci/servers/stop-rabbitmq.sh [--state FILE] [--env FILE]
#
# `rabbitmqctl stop` (which waits for the node's OS process to exit), then a
# kill of that process if it is still there, then its private epmd, then the
# temp dir, the state file and the env file. Safe to run when nothing is running.
set -euo pipefail

# shellcheck source=SCRIPTDIR/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
parse_args -- "$@"

if [[ ! -s "$state_file" ]]; then
    log "no state file $state_file: nothing to stop"
    rm -f "$env_file" "$state_file.lock"
    exit 0
fi

lock_state
# shellcheck disable=SC1090
source "$state_file"

export HOME="$rmq_dir" ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$epmd_port"
export RABBITMQ_NODENAME="$nodename" RABBITMQ_PID_FILE="$rmq_dir/rabbit.pid"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

node_pid=""
[[ -s "$rmq_dir/rabbit.pid" ]] && node_pid="$(cat "$rmq_dir/rabbit.pid")"

if [[ -d "$rmq_dir" ]]; then
    if ! timeout 60 "$bindir/rabbitmqctl" -q -n "$nodename" stop "$rmq_dir/rabbit.pid" >/dev/null 2>&1; then
        log "rabbitmqctl stop failed (node already down?)"
    fi
fi
# Only the pid this node wrote, and only if it is still a beam process.
if [[ -n "$node_pid" ]] && kill -0 "$node_pid" 2>/dev/null \
    && grep -q beam "/proc/$node_pid/comm" 2>/dev/null; then
    log "the node (pid $node_pid) is still running: killing it"
    kill -KILL "$node_pid" 2>/dev/null || true
fi
# Our private epmd (its own port, so never the system's).
epmd_bin="$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n 1 || true)"
if [[ -n "$epmd_bin" ]]; then
    "$epmd_bin" -port "$epmd_port" -kill >/dev/null 2>&1 || true
fi

[[ -d "$rmq_dir" ]] && rm -rf -- "$rmq_dir"
rm -f "$state_file" "$env_file"
rm -f "$state_file.lock"
log "stopped $nodename and removed its data"
