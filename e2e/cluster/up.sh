#!/usr/bin/env bash
# Starts a real single-node Kubernetes cluster from upstream parts, without Docker:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy (built from
# their Go modules), Debian's containerd + runc + CNI plugins, and CoreDNS as a cluster add-on.
# All state lives under $WHARF_CLUSTER_DIR (default .local/cluster); down.sh removes all of it.
# Idempotent: when the cluster is already up, it only prints how to use it.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

components=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy provisioner)

print_usage() {
    say "ready. Use it with:"
    echo "export KUBECONFIG=$state/kubeconfig"
}

all_alive() {
    for c in "${components[@]}"; do alive "$c" || return 1; done
}

if [ -d "$state" ] && all_alive && KUBECONFIG=$state/kubeconfig "$state/bin/kubectl" get --raw /readyz >/dev/null 2>&1; then
    say "already running"
    print_usage
    exit 0
fi
if [ -d "$state" ]; then
    say "a previous cluster was left half-started; tearing it down first"
    "$cluster_dir/down.sh"
fi

[ "$(id -u)" = 0 ] || die "the local cluster needs root (containers, bridges, iptables)"
"$repo_root/e2e/tools/install-deps.sh" || die "installing Debian packages failed (see above)"
k8s_bin=$("$cluster_dir/build-k8s.sh") || die "building Kubernetes $K8S_VERSION failed"
tools_bin=$("$repo_root/e2e/tools/build-go-tools.sh") || die "building CoreDNS/crictl failed"

t0=$SECONDS
mkdir -p "$state"/{pki,etcd,containerd,cni/net.d,cni/ipam,certs.d,kubelet,pod-logs,images} "$pids" "$logs"
ln -sfn "$k8s_bin" "$state/bin"
ln -sfn "$tools_bin" "$state/tools"

# --- network: the pod bridge (its gateway address is the node's address) and forwarding ---
cat /proc/sys/net/ipv4/ip_forward >"$state/ip_forward.orig"
echo 1 >/proc/sys/net/ipv4/ip_forward
if ! ip link show "$WHARF_BRIDGE" >/dev/null 2>&1; then
    ip link add "$WHARF_BRIDGE" type bridge
    echo "$WHARF_BRIDGE" >"$state/bridge.created"
fi
ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$WHARF_BRIDGE"
ip link set "$WHARF_BRIDGE" up
ls /var/run/netns 2>/dev/null | sort >"$state/netns.before" || true

# --- PKI: one CA, a serving or client certificate per component ---
"$cluster_dir/pki.sh" "$pki"

kubeconfig() { # NAME USER_CERT
    local server=${3:-https://$NODE_IP:$APISERVER_PORT}
    KUBECONFIG=$state/$1.kubeconfig "$k8s_bin/kubectl" config set-cluster wharf-local \
        --server="$server" --certificate-authority="$pki/ca.crt" --embed-certs >/dev/null
    KUBECONFIG=$state/$1.kubeconfig "$k8s_bin/kubectl" config set-credentials "$2" \
        --client-certificate="$pki/$2.crt" --client-key="$pki/$2.key" --embed-certs >/dev/null
    KUBECONFIG=$state/$1.kubeconfig "$k8s_bin/kubectl" config set-context wharf-local \
        --cluster=wharf-local --user="$2" >/dev/null
    KUBECONFIG=$state/$1.kubeconfig "$k8s_bin/kubectl" config use-context wharf-local >/dev/null
}
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kubelet kubelet-client
kubeconfig kube-proxy kube-proxy
mv "$state/admin.kubeconfig" "$state/kubeconfig"

say "[$((SECONDS - t0))s] starting control plane"
# --- control plane ---
start etcd "$k8s_bin/etcd" --name wharf-etcd --data-dir "$state/etcd" \
    --listen-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "wharf-etcd=http://127.0.0.1:$ETCD_PEER_PORT" \
    --cert-file "$pki/etcd-server.crt" --key-file "$pki/etcd-server.key" \
    --client-cert-auth --trusted-ca-file "$pki/ca.crt" \
    --listen-metrics-urls "http://127.0.0.1:$((ETCD_CLIENT_PORT + 1))" \
    --quota-backend-bytes 2147483648 --snapshot-count 10000 --unsafe-no-fsync
wait_for etcd 30 etcd curl -sf "http://127.0.0.1:$((ETCD_CLIENT_PORT + 1))/health"

start kube-apiserver "$k8s_bin/kube-apiserver" \
    --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --etcd-servers "https://127.0.0.1:$ETCD_CLIENT_PORT" \
    --etcd-cafile "$pki/ca.crt" --etcd-certfile "$pki/apiserver-etcd-client.crt" --etcd-keyfile "$pki/apiserver-etcd-client.key" \
    --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false --v=1
wait_for kube-apiserver 90 kube-apiserver env KUBECONFIG="$state/kubeconfig" "$k8s_bin/kubectl" get --raw /readyz

start kube-controller-manager "$k8s_bin/kube-controller-manager" \
    --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
    --use-service-account-credentials --controllers '*,bootstrapsigner,tokencleaner' \
    --service-cluster-ip-range "$SERVICE_CIDR" --leader-elect=false --v=1
start kube-scheduler "$k8s_bin/kube-scheduler" \
    --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" \
    --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --v=1

say "[$((SECONDS - t0))s] starting node"
# --- node: containerd, the sandbox image, kubelet, kube-proxy ---
cni_bin=$(dirname "$(dpkg -L containernetworking-plugins | grep '/bridge$' | head -1)")
cat >"$state/containerd/config.toml" <<TOML
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$containerd_sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$state/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "wharf.local/pause:3.10"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$state/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$state/certs.d"
TOML
cat >"$state/cni/net.d/10-wharf.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "wharf",
  "plugins": [
    {"type": "bridge", "bridge": "$WHARF_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$state/cni/ipam", "subnet": "$POD_CIDR",
              "rangeStart": "${NODE_IP%.*}.10", "gateway": "$NODE_IP", "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON
start containerd containerd --config "$state/containerd/config.toml"
wait_for containerd 30 containerd ctr --address "$containerd_sock" version

"$repo_root/e2e/images/build.sh" pause "$state/images/pause.tar" >/dev/null
ctr --address "$containerd_sock" -n k8s.io images import --no-unpack "$state/images/pause.tar" >/dev/null
"$repo_root/e2e/images/build.sh" coredns "$state/images/coredns.tar" >/dev/null
ctr --address "$containerd_sock" -n k8s.io images import --no-unpack "$state/images/coredns.tar" >/dev/null

: >"$state/resolv.conf"
cat >"$state/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-server.crt
tlsPrivateKeyFile: $pki/kubelet-server.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$containerd_sock
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
# Pods get no upstream resolvers: nothing leaves this machine.
resolvConf: "$state/resolv.conf"
podLogsDir: $state/pod-logs
failSwapOn: false
oomScoreAdj: 0
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
start kubelet "$k8s_bin/kubelet" --config "$state/kubelet-config.yaml" --kubeconfig "$state/kubelet.kubeconfig" \
    --root-dir "$state/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1

cat >"$state/kube-proxy-config.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
# Leave the host's conntrack sysctls alone (no CAP_SYS_RESOURCE-free way to raise them here).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
start kube-proxy "$k8s_bin/kube-proxy" --config "$state/kube-proxy-config.yaml" --v=1

export KUBECONFIG=$state/kubeconfig
kubectl() { "$k8s_bin/kubectl" "$@"; }
wait_for "node $NODE_NAME" 90 kubelet kubectl get node "$NODE_NAME"
kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=90s >/dev/null ||
    { tail -n 30 "$logs/kubelet.log" >&2; die "node did not become Ready"; }

say "[$((SECONDS - t0))s] starting cluster DNS"
# --- cluster DNS ---
sed -e "s/@DNS_SERVICE_IP@/$DNS_SERVICE_IP/" "$cluster_dir/coredns.yaml" | kubectl apply -f - >/dev/null
# `kubectl wait` fails at once while the pod does not exist yet, hence the retry around it.
if ! wait_for "CoreDNS" 120 "" kubectl -n kube-system wait --for=condition=Ready pod -l k8s-app=kube-dns --timeout=10s; then
    kubectl -n kube-system describe pods -l k8s-app=kube-dns >&2
    die "CoreDNS did not become ready"
fi

say "[$((SECONDS - t0))s] starting the volume provisioner"
# --- storage: a default StorageClass served by provisioner.sh ---
kubectl apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: wharf.dev/local-hostpath
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML
start provisioner "$cluster_dir/provisioner.sh" "$state" "$k8s_bin/kubectl"

say "up in $((SECONDS - t0))s (Kubernetes $K8S_VERSION)"
print_usage
