# Shared by up.sh and down.sh: paths, process bookkeeping, logging.
# shellcheck shell=bash
cluster_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$cluster_dir/../.." && pwd)
# shellcheck source=config.env
. "$cluster_dir/config.env"
# shellcheck source=versions.env
. "$cluster_dir/versions.env"
state=${WHARF_CLUSTER_DIR:-$repo_root/.local/cluster}
pids=$state/pids
logs=$state/logs
pki=$state/pki
containerd_sock=$state/containerd/containerd.sock

say() { echo "cluster: $*" >&2; }
die() { echo "cluster: ERROR: $*" >&2; exit 1; }

alive() { [ -f "$pids/$1.pid" ] && kill -0 "$(cat "$pids/$1.pid")" 2>/dev/null; }

# start NAME CMD...: runs CMD in its own session, logging to logs/NAME.log, PID in pids/NAME.pid.
start() {
    local name=$1; shift
    mkdir -p "$pids" "$logs"
    setsid "$@" </dev/null >"$logs/$name.log" 2>&1 &
    echo $! >"$pids/$name.pid"
}

# wait_for WHAT SECONDS CMD...: retries CMD until it succeeds, or fails with the component's log.
wait_for() {
    local what=$1 seconds=$2 log=$3; shift 3
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            [ -n "$log" ] && [ -f "$logs/$log.log" ] && tail -n 30 "$logs/$log.log" >&2
            die "$what did not come up within ${seconds}s (log: $logs/$log.log)"
        fi
        sleep 0.3
    done
}
