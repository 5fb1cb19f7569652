#!/usr/bin/env bash
# Stops the local cluster and removes everything up.sh created: every process it started (by
# PID), the pods' containers and network namespaces, the bridge, the iptables chains of
# kube-proxy, kubelet and CNI, every mount under the state directory, and the directory itself.
# Safe to run when nothing is up.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

[ -d "$state" ] || { say "not running"; exit 0; }

stop() {
    local name=$1
    [ -f "$pids/$name.pid" ] || return 0
    local pid; pid=$(cat "$pids/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pids/$name.pid"
}

# Network namespaces created since up.sh started: the pods' sandboxes.
pod_netns() {
    [ -f "$state/netns.before" ] || return 0
    ls /var/run/netns 2>/dev/null | grep -vxF -f "$state/netns.before" || true
}

# Pods first, through the kubelet, so that CNI tears down their network (veths, IPs, host
# ports). Controllers stop before, so that nothing recreates or reschedules them.
stop provisioner
stop kube-controller-manager
stop kube-scheduler
if alive kube-apiserver && alive kubelet; then
    KUBECONFIG=$state/kubeconfig "$state/bin/kubectl" delete pods --all --all-namespaces \
        --grace-period=1 --wait=false >/dev/null 2>&1
    for _ in $(seq 1 100); do
        [ -z "$(pod_netns)" ] && break
        sleep 0.3
    done
fi
for c in kube-proxy kubelet kube-apiserver etcd; do stop "$c"; done

# Containers that survived (a crashed kubelet): kill them and their shims through containerd.
if alive containerd; then
    for ns in k8s.io default; do
        for task in $(ctr --address "$containerd_sock" -n "$ns" tasks ls -q 2>/dev/null); do
            ctr --address "$containerd_sock" -n "$ns" tasks kill -s SIGKILL "$task" >/dev/null 2>&1
            sleep 0.2
            ctr --address "$containerd_sock" -n "$ns" tasks rm -f "$task" >/dev/null 2>&1
        done
    done
fi
stop containerd
# Shims started by our containerd (their command line names our socket).
pkill -9 -f "containerd-shim.*-address $containerd_sock" 2>/dev/null || true

# kube-proxy's, kubelet's and CNI's iptables chains (only those: KUBE-* and CNI-*).
cleanup_iptables() {
    local cmd=$1
    command -v "$cmd" >/dev/null || return 0
    for table in filter nat mangle raw; do
        "$cmd-save" -t "$table" 2>/dev/null | grep -E '^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) .*(KUBE-|CNI-)' |
            sed 's/^-A /-D /' | while read -r rule; do eval "$cmd -w -t $table $rule" 2>/dev/null; done
        local chains
        chains=$("$cmd-save" -t "$table" 2>/dev/null | grep -oE '^:(KUBE-|CNI-)[^ ]+' | tr -d ':')
        for c in $chains; do "$cmd" -w -t "$table" -F "$c" 2>/dev/null; done
        for c in $chains; do "$cmd" -w -t "$table" -X "$c" 2>/dev/null; done
    done
}
cleanup_iptables iptables
cleanup_iptables ip6tables

# CNI plugins still running for our pods: an ADD in flight when containerd stopped outlives it,
# and the bridge plugin would create the bridge again after it is deleted below. They are
# recognised by the pod network namespace in their CNI_NETNS.
kill_cni_plugins() {
    local ours; ours=$(pod_netns)
    [ -n "$ours" ] || return 0
    local environ pid netns
    for environ in /proc/[0-9]*/environ; do
        netns=$(tr '\0' '\n' <"$environ" 2>/dev/null | sed -n 's/^CNI_NETNS=//p')
        [ -n "$netns" ] || continue
        grep -qxF "$(basename "$netns")" <<<"$ours" || continue
        pid=${environ#/proc/}; pid=${pid%/environ}
        kill -9 "$pid" 2>/dev/null
    done
}
kill_cni_plugins

for ns in $(pod_netns); do ip netns delete "$ns" 2>/dev/null; done
# Deleted until it stays gone: a plugin that was between our scan and its own exit could still
# recreate it once.
if [ -f "$state/bridge.created" ]; then
    bridge=$(cat "$state/bridge.created")
    gone=0
    for _ in $(seq 1 40); do
        if ip link show "$bridge" >/dev/null 2>&1; then
            ip link delete "$bridge" 2>/dev/null
            gone=0
        else
            gone=$((gone + 1))
            [ "$gone" -ge 4 ] && break
        fi
        sleep 0.25
    done
    ip link show "$bridge" >/dev/null 2>&1 && say "WARNING: bridge $bridge could not be removed"
fi
[ -f "$state/ip_forward.orig" ] && cat "$state/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward

# Mounts under the state directory (secrets, projected tokens, rootfs overlays), deepest first.
awk -v s="$state" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
done
rm -rf "$state"
say "down"
