#!/usr/bin/env bash
# A real S3-compatible server on 127.0.0.1 for the object-storage tests:
#   s3-server.sh start DATA_DIR PORT [BUCKET...]   prints endpoint=, access_key=, secret_key=, pid=
#   s3-server.sh stop DATA_DIR                      ends it (by the PID it recorded)
# The server is versitygw (Apache-2.0) with its posix backend, built from its Go module at the
# version pinned in e2e/cluster/versions.env. MinIO was the first candidate, but the Go proxy
# serves it only as a pseudo-version from February 2026 (its last source release) and it is
# AGPL; versitygw is current, does conditional writes (If-None-Match / If-Match) and multipart
# uploads, and stores objects as plain files, which keeps crash tests easy to inspect.
# Buckets named on the command line are created (as directories of the posix backend).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() { echo "usage: $0 start DATA_DIR PORT [BUCKET...] | stop DATA_DIR" >&2; exit 2; }

case "${1:-}" in
start)
    [ $# -ge 3 ] || usage
    data=$2 port=$3
    shift 3
    bin=$("$here/build-go-tools.sh")
    mkdir -p "$data/objects" "$data/meta"
    for bucket in "$@"; do mkdir -p "$data/objects/$bucket"; done
    # Keys are per data directory, so a restart on the same data keeps its credentials.
    if [ ! -f "$data/credentials" ]; then
        printf 'access_key=%s\nsecret_key=%s\n' \
            "WHARF$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)" \
            "$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')" >"$data/credentials"
    fi
    # shellcheck disable=SC1091
    . "$data/credentials"
    ROOT_ACCESS_KEY_ID=$access_key ROOT_SECRET_ACCESS_KEY=$secret_key \
        setsid "$bin/versitygw" --port "127.0.0.1:$port" --quiet \
        posix --sidecar "$data/meta" "$data/objects" >"$data/server.log" 2>&1 </dev/null &
    echo $! >"$data/pid"
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "endpoint=http://127.0.0.1:$port"
            echo "access_key=$access_key"
            echo "secret_key=$secret_key"
            echo "pid=$(cat "$data/pid")"
            exit 0
        fi
        if ! kill -0 "$(cat "$data/pid")" 2>/dev/null; then
            echo "the S3 server exited:" >&2
            cat "$data/server.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "the S3 server did not listen on 127.0.0.1:$port within 10 s" >&2
    exit 1
    ;;
stop)
    [ $# -eq 2 ] || usage
    pidfile=$2/pid
    [ -f "$pidfile" ] || exit 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    ;;
*) usage ;;
esac
