# shellcheck shell=bash
# What start-*.sh and stop-*.sh share; sourced by them, never run on its own.
#
# Sets `here` (this dir), `script` (the sourcing script's name) and `server`
# (postgres or rabbitmq, from that name), and the defaults of `state_file`
# ($here/$server.state) and `env_file` ($here/$server.env).

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="$(basename "$0")"
server="${script#*-}"
server="${server%.sh}"
state_file="$here/$server.state"
env_file="$here/$server.env"

log() { echo "$script: $*" >&2; }
die() { log "$*"; exit 1; }

# The script's leading comment block, to stderr; exits with $1 (default 2).
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit "${1:-2}"
}

# parse_args [FLAG=VAR ...] -- "$@": --state FILE, --env FILE and -h/--help, plus the
# script's own boolean flags (each sets its VAR to 1).
parse_args() {
    local -A flags=()
    while [[ "$1" != -- ]]; do flags["${1%%=*}"]="${1#*=}"; shift; done
    shift
    while (($#)); do
        case "$1" in
            --state) state_file="${2:?--state needs a file}"; shift 2 ;;
            --env) env_file="${2:?--env needs a file}"; shift 2 ;;
            -h | --help) usage 0 ;;
            *)
                [[ -n "${flags[$1]:-}" ]] || { log "unknown argument $1"; usage; }
                printf -v "${flags[$1]}" 1
                shift
                ;;
        esac
    done
}

# Hold the state file's lock (in fd $lock_fd) until the script exits: two starts, or a
# start and a stop, must not work on one server at once.
lock_state() {
    mkdir -p "$(dirname "$state_file")"
    exec {lock_fd}>>"$state_file.lock"
    flock "$lock_fd"
}

# write_env VAR URL: write `export VAR=URL` to the env file (mode 0600, atomically) and
# print `VAR=URL` as the last line of stdout.
write_env() {
    local var="$1" url="$2" tmp
    mkdir -p "$(dirname "$env_file")"
    tmp="$(mktemp "$env_file.XXXXXX")"
    chmod 600 "$tmp"
    {
        echo "# Written by .ci/servers/$script; removed by stop-$server.sh."
        printf 'export %s=%q\n' "$var" "$url"
    } >"$tmp"
    mv -f "$tmp" "$env_file"
    echo "$var=$url"
}

# A TCP port free on 127.0.0.1 now (another process may take it before we bind it).
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    else
        echo $((20000 + RANDOM % 40000))
    fi
}

# Close every fd of this (sub)shell beyond stdin/stdout/stderr: a server started from it
# would otherwise hold our flock (the next start would wait forever) and whatever pipe
# the caller reads our output from (the caller would wait for EOF until it stops).
close_inherited_fds() {
    local fd
    [[ -d /proc/$BASHPID/fd ]] || return 0
    for fd in "/proc/$BASHPID/fd/"*; do
        fd="${fd##*/}"
        if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
}
