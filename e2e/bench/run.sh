#!/usr/bin/env bash
# `make bench`: wharf's registry (release build, the binary of the image) against the reference
# CNCF Distribution registry, side by side in one run of ../shared/bench/registry-bench, plus the
# machine's physical limits. Writes docs/benchmarks.md. BENCH_ARGS passes options to the harness
# (e.g. BENCH_ARGS="--quick" for a smoke run, "--only a,b" for some scenarios).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bench=${WHARF_BENCH_DIR:-$repo/../shared/bench}
[ -x "$bench/registry-bench" ] || { echo "bench: $bench/registry-bench not found (set WHARF_BENCH_DIR)" >&2; exit 1; }
"$repo/e2e/tools/install-deps.sh"
wharf=$("$repo/e2e/tools/build-static.sh")
work=$(mktemp -d "${TMPDIR:-/tmp}/wharf-bench.XXXXXX")
ref_pid= wharf_pid=
cleanup() {
    [ -n "$ref_pid" ] && kill "$ref_pid" 2>/dev/null
    [ -n "$wharf_pid" ] && kill "$wharf_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ref_port=$(free_port)
ref_pid=$("$bench/start-reference-registry" "$ref_port" "$work/ref")
wharf_port=$(free_port)
# Same settings as the reference: no request logging, no background jobs during the run.
WHARF_LOG=error "$wharf" registry --storage "$work/wharf" --listen "127.0.0.1:$wharf_port" >"$work/wharf.log" 2>&1 &
wharf_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$wharf_port/v2/" >/dev/null && break; sleep 0.1; done

limits=$("$bench/machine-limits" -r 3 2>&1)
started=$(date -u +%Y-%m-%dT%H:%MZ)
# shellcheck disable=SC2086
results=$(python3 "$bench/registry-bench" \
    --target "distribution=http://127.0.0.1:$ref_port" --target "wharf=http://127.0.0.1:$wharf_port" \
    --pid "distribution=$ref_pid" --pid "wharf=$wharf_pid" \
    --json "$work/results.json" --note "wharf $(git -C "$repo" rev-parse --short HEAD)" ${BENCH_ARGS:-} 2>&1) || {
    echo "$results" >&2
    echo "bench: registry-bench failed (a verification error is a failure)" >&2
    exit 1
}
echo "$results"
mkdir -p "$repo/docs"
{
    echo "# Benchmarks"
    echo
    echo "Produced by \`make bench\` (e2e/bench/run.sh) on $started: \`registry-bench\` from"
    echo "\`../shared/bench\` against the reference CNCF Distribution registry (Debian's \`docker-registry\`,"
    echo "first target, ratio 1.0) and \`wharf registry\` (static release build, filesystem storage, no"
    echo "fsync, like the reference), side by side in one run on this project's 2-core machine."
    echo "Ratios are wharf / Distribution from that single run (a ratio between about 0.7 and 1.35 is"
    echo "noise on these machines, see the harness README). Harness options: \`${BENCH_ARGS:-(defaults)}\`."
    echo
    echo "## Registry benchmark"
    echo
    echo '```'
    echo "$results"
    echo '```'
    echo
    echo "## Physical limits of the machine (\`machine-limits -r 3\`)"
    echo
    echo '```'
    echo "$limits"
    echo '```'
} >"$repo/docs/benchmarks.md"
echo "bench: wrote docs/benchmarks.md" >&2
