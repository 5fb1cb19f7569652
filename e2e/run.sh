#!/usr/bin/env bash
# `make run`: the operator on a cluster, with the sample Registry Ready to push to. Uses the
# cluster KUBECONFIG names when it is reachable, else starts the local one (e2e/cluster/up.sh).
# Installs everything with `kubectl apply -k config/default` (CRDs, RBAC, the operator in
# wharf-system), then applies config/samples/registry.yaml in the namespace `registry`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=${WHARF_CLUSTER_DIR:-$repo/.local/cluster}
image=${WHARF_IMAGE:-wharf.local/wharf:dev}
namespace=${WHARF_RUN_NAMESPACE:-registry}
if [ -n "${KUBECONFIG:-}" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl=(kubectl)
    make -C "$repo" --no-print-directory image
    if [ -n "${KIND_CLUSTER_NAME:-}" ]; then
        kind load image-archive "${XDG_CACHE_HOME:-$HOME/.cache}/wharf/images/wharf.tar" --name "$KIND_CLUSTER_NAME"
    else
        echo "using the cluster KUBECONFIG names: its nodes must be able to pull $image (set WHARF_IMAGE)" >&2
    fi
else
    unset KUBECONFIG
    "$repo/e2e/cluster/up.sh"
    make -C "$repo" --no-print-directory image
    export KUBECONFIG=$state/kubeconfig
    kubectl=("$state/bin/kubectl")
fi
k() { "${kubectl[@]}" "$@"; }

echo "installing the operator (kubectl apply -k config/default, image $image)" >&2
k kustomize "$repo/config/default" | sed "s|wharf.local/wharf:dev|$image|g" | k apply --server-side -f - >/dev/null
k wait --for=condition=Established crd/registries.wharf.dev --timeout=60s >/dev/null
k -n wharf-system rollout status deployment/wharf-operator --timeout=180s >/dev/null

echo "applying config/samples/registry.yaml in namespace $namespace" >&2
k create namespace "$namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
started=$SECONDS
k -n "$namespace" apply --server-side -f "$repo/config/samples/registry.yaml" >/dev/null
if ! k -n "$namespace" wait --for=condition=Ready registry/main --timeout=180s >/dev/null; then
    k -n "$namespace" get registry main -o yaml >&2
    echo "the Registry did not become Ready" >&2
    exit 1
fi
k -n "$namespace" get registry main
cat <<MSG

Registry main is Ready (in $((SECONDS - started))s). Push to it:
  export KUBECONFIG=$KUBECONFIG
  ${kubectl[*]} -n $namespace port-forward service/main 5000:5000 &
  user=\$(${kubectl[*]} -n $namespace get secret main-admin -o jsonpath='{.data.username}' | base64 -d)
  pass=\$(${kubectl[*]} -n $namespace get secret main-admin -o jsonpath='{.data.password}' | base64 -d)
  skopeo copy --dest-tls-verify=false --dest-creds "\$user:\$pass" oci-archive:IMAGE.tar docker://localhost:5000/my/app:1
  curl -u "\$user:\$pass" http://localhost:5000/v2/_catalog
From pods: main.$namespace.svc:5000. Operator logs: ${kubectl[*]} -n wharf-system logs deploy/wharf-operator
MSG
