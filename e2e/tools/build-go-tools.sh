#!/usr/bin/env bash
# Builds the Go tools the tests use, by module path at pinned versions, into a cache keyed by
# version: CoreDNS (cluster DNS), the OCI distribution-spec conformance suite, oras, crane and
# versitygw (the S3 server of the object-storage tests).
# Prints the bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../cluster/versions.env
. "$here/../cluster/versions.env"
cache=${WHARF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wharf}
bin=$cache/tools/bin
mkdir -p "$bin"
export CGO_ENABLED=0

stamp() { echo "$bin/.$1-$2"; }

if [ ! -f "$(stamp coredns "$COREDNS_VERSION")" ]; then
    echo "building coredns $COREDNS_VERSION" >&2
    GOBIN=$bin go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
    touch "$(stamp coredns "$COREDNS_VERSION")"
fi

if [ ! -f "$(stamp oras "$ORAS_VERSION")" ]; then
    echo "building oras $ORAS_VERSION" >&2
    GOBIN=$bin go install -trimpath -ldflags "-s -w" "oras.land/oras/cmd/oras@$ORAS_VERSION"
    touch "$(stamp oras "$ORAS_VERSION")"
fi

if [ ! -f "$(stamp crane "$CRANE_VERSION")" ]; then
    echo "building crane $CRANE_VERSION" >&2
    GOBIN=$bin go install -trimpath -ldflags "-s -w" "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
    touch "$(stamp crane "$CRANE_VERSION")"
fi

if [ ! -f "$(stamp versitygw "$VERSITYGW_VERSION")" ]; then
    echo "building versitygw $VERSITYGW_VERSION" >&2
    GOBIN=$bin go install -trimpath -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
    touch "$(stamp versitygw "$VERSITYGW_VERSION")"
fi

if [ ! -f "$(stamp conformance "$CONFORMANCE_VERSION")" ]; then
    echo "building the OCI conformance suite $CONFORMANCE_VERSION" >&2
    mod=github.com/opencontainers/distribution-spec/conformance
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && go mod init build >/dev/null 2>&1 && go mod download -json "$mod@$CONFORMANCE_VERSION" >dl.json)
    src=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/dl.json")
    # The module cache is read-only; the suite is a test binary, built from a writable copy.
    cp -r "$src" "$work/conformance" && chmod -R u+w "$work/conformance"
    (cd "$work/conformance" && GOFLAGS=-mod=mod go test -c -o "$bin/conformance.test" .)
    touch "$(stamp conformance "$CONFORMANCE_VERSION")"
fi
echo "$bin"
