#!/usr/bin/env bash
# Generates the local cluster's PKI into DIR: a CA, serving certificates for etcd, the API server
# and the kubelet, client certificates for every component, and the ServiceAccount signing key.
# EC P-256 throughout: generated in milliseconds, accepted by every component.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dir=$1
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

openssl_conf() { # KIND SANS
    cat <<CONF
[req]
distinguished_name = dn
[dn]
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = $1
CONF
    if [ -n "$2" ]; then echo "subjectAltName = $2"; fi
}

# cert NAME SUBJECT EXTENDED_KEY_USAGE [SANS]
cert() {
    key "$1"
    openssl_conf "$3" "${4:-}" >"$1.cnf"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" -config "$1.cnf" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile "$1.cnf" -extensions ext -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.cnf"
}

key ca
openssl req -x509 -new -key ca.key -subj "/CN=wharf-local-ca" -days 30 -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null

cert etcd-server "/CN=etcd" serverAuth "IP:127.0.0.1,DNS:localhost"
cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:$NODE_IP,IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=wharf-admin" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
cert kubelet-server "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
key sa
openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
chmod 600 ./*.key
