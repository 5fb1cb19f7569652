#!/usr/bin/env bash
# `make run`: wharf's registry running on a cluster, ready to push to. Uses the cluster KUBECONFIG
# names when it is reachable, else the local one (`make cluster-up`, which make run starts).
# The operator and its Registry resource take this over as they land; today the registry is
# deployed from e2e/run/registry.yaml.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=${WHARF_CLUSTER_DIR:-$repo/.local/cluster}
image=${WHARF_IMAGE:-wharf.local/wharf:dev}
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
sed "s|@IMAGE@|$image|" "$repo/e2e/run/registry.yaml" | "${kubectl[@]}" apply -f - >/dev/null
"${kubectl[@]}" -n wharf-system rollout status deployment/registry --timeout=180s >/dev/null
cat <<MSG

wharf registry is running in namespace wharf-system (Service registry, port 5000).
  export KUBECONFIG=$KUBECONFIG
  ${kubectl[*]} -n wharf-system port-forward service/registry 5000:5000 &
  skopeo copy --dest-tls-verify=false oci-archive:IMAGE.tar docker://localhost:5000/my/app:1   # or podman, oras, crane
  curl http://localhost:5000/v2/_catalog
From pods: registry.wharf-system.svc.cluster.local:5000
MSG
