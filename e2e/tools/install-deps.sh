#!/usr/bin/env bash
# Installs the Debian packages the build, the local cluster and the tests need, in one serial apt run,
# only when something is missing. Exits non-zero with a clear message when apt cannot install them.
set -euo pipefail
packages=(
    # local cluster: container runtime, networking, iptables for kube-proxy
    containerd runc containernetworking-plugins iptables conntrack iproute2 ethtool socat
    # images without Docker, a static shell for test pods, TLS tooling
    busybox-static openssl ca-certificates
    # real registry clients and the benchmark's reference server and load generators
    skopeo podman docker-registry wrk apache2-utils nginx-light
    # C toolchain for static builds (the pause binary) and musl-free static Rust linking
    build-essential pkg-config curl jq
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing Debian packages (${missing[*]}) and not root: install them with apt-get" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -q >&2 || { echo "install-deps: apt-get update failed: no package registry reachable?" >&2; exit 1; }
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        { echo "install-deps: apt-get install ${missing[*]} failed" >&2; exit 1; }
fi
# Debian starts containerd as a service on install; the local cluster runs its own instance.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q containerd 2>/dev/null; then
    systemctl disable --now containerd >/dev/null 2>&1 || true
fi
