#!/usr/bin/env bash
# Builds one of the project's OCI images as an OCI archive, without Docker:
#   build.sh wharf   OUT.tar   wharf's image: static binary, CA bundle, non-root, no shell
#   build.sh pause   OUT.tar   the local cluster's pod sandbox
#   build.sh coredns OUT.tar   the local cluster's DNS
#   build.sh busybox OUT.tar   a static busybox, for test pods that need a shell and wget
#   build.sh s3      OUT.tar   the S3 server of the object-storage tests (versitygw, posix backend)
# The image name is printed; WHARF_IMAGE overrides wharf's (default wharf.local/wharf:dev).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
kind=$1 out=$2
cache=${WHARF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wharf}
build=(python3 "$here/build-image.py")

case $kind in
wharf)
    name=${WHARF_IMAGE:-wharf.local/wharf:dev}
    bin=$("$repo/e2e/tools/build-static.sh")
    "${build[@]}" --name "$name" --out "$out" \
        --file "$bin:/wharf:0755" \
        --file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:0644 \
        --dir /tmp:1777 --dir /data:0755 \
        --entrypoint '["/wharf"]' --user 65532:65532 \
        --label org.opencontainers.image.source=wharf >&2
    ;;
pause)
    name=wharf.local/pause:3.10
    mkdir -p "$cache/images"
    cc -static -Os -o "$cache/images/pause" "$here/pause.c"
    "${build[@]}" --name "$name" --out "$out" --file "$cache/images/pause:/pause:0755" \
        --entrypoint '["/pause"]' --user 65535:65535 >&2
    ;;
coredns)
    name=wharf.local/coredns:e2e
    tools=$("$repo/e2e/tools/build-go-tools.sh")
    "${build[@]}" --name "$name" --out "$out" --file "$tools/coredns:/coredns:0755" \
        --entrypoint '["/coredns"]' --user 65532:65532 >&2
    ;;
busybox)
    name=wharf.local/busybox:e2e
    links=()
    for tool in sh wget nslookup sleep cat echo ls env; do links+=(--symlink "/bin/busybox:/bin/$tool"); done
    "${build[@]}" --name "$name" --out "$out" --file /bin/busybox:/bin/busybox:0755 "${links[@]}" \
        --dir /tmp:1777 --env PATH=/bin --cmd '["sh"]' >&2
    ;;
s3)
    name=wharf.local/versitygw:e2e
    tools=$("$repo/e2e/tools/build-go-tools.sh")
    # Buckets are directories of /data; the pod creates them from its args (see the e2e test).
    "${build[@]}" --name "$name" --out "$out" --file "$tools/versitygw:/versitygw:0755" \
        --dir /data:0777 --dir /meta:0777 --dir /tmp:1777 \
        --entrypoint '["/versitygw"]' --user 65532:65532 >&2
    ;;
*)
    echo "usage: $0 wharf|pause|coredns|busybox|s3 OUT.tar" >&2
    exit 2
    ;;
esac
echo "$name"
