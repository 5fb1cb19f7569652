#!/usr/bin/env bash
# A minimal dynamic volume provisioner for the single-node test cluster (StorageClass `standard`):
# for each pending claim of that class it creates a host directory and a hostPath PersistentVolume
# bound to the claim; when a claim is deleted, it removes the released volume and its directory.
# The volume controller, binding, StatefulSet claim retention and garbage collection it relies on
# are all Kubernetes' own; only this directory-making step stands in for a CSI driver.
# Directories are world-writable because hostPath volumes ignore fsGroup (the pods run non-root).
set -uo pipefail
state=$1 kubectl=$2
export KUBECONFIG=$state/kubeconfig
volumes=$state/volumes
provisioner=wharf.dev/local-hostpath
mkdir -p "$volumes"

while true; do
    "$kubectl" get pvc -A -o json 2>/dev/null | jq -r --arg p "$provisioner" '
        .items[] | select(.status.phase == "Pending" and (.spec.volumeName // "") == ""
            and (.metadata.annotations["volume.kubernetes.io/storage-provisioner"] // "") == $p)
        | [.metadata.namespace, .metadata.name, .metadata.uid, .spec.resources.requests.storage,
           (.spec.accessModes | join(",")), .spec.storageClassName] | @tsv' |
    while IFS=$'\t' read -r ns name uid size modes class; do
        pv="pvc-$uid"
        dir="$volumes/$pv"
        mkdir -p "$dir" && chmod 0777 "$dir"
        modes_json=$(jq -cn --arg m "$modes" '$m | split(",")')
        "$kubectl" apply -f - >/dev/null <<YAML || echo "provisioner: cannot create $pv for $ns/$name" >&2
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $pv
  annotations: {pv.kubernetes.io/provisioned-by: $provisioner}
spec:
  capacity: {storage: "$size"}
  accessModes: $modes_json
  persistentVolumeReclaimPolicy: Delete
  storageClassName: $class
  claimRef: {namespace: $ns, name: $name, uid: $uid}
  hostPath: {path: $dir, type: Directory}
YAML
        echo "provisioner: $pv for $ns/$name ($size)"
    done
    "$kubectl" get pv -o json 2>/dev/null | jq -r --arg p "$provisioner" '
        .items[] | select(.status.phase == "Released"
            and .metadata.annotations["pv.kubernetes.io/provisioned-by"] == $p
            and .spec.persistentVolumeReclaimPolicy == "Delete") | .metadata.name' |
    while read -r pv; do
        rm -rf "${volumes:?}/$pv"
        "$kubectl" delete pv "$pv" --wait=false >/dev/null 2>&1 && echo "provisioner: deleted $pv"
    done
    sleep 1
done
