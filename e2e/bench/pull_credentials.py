#!/usr/bin/env python3
"""`make bench-pull-credentials`: one ImagePullCredential synced into 1,000 namespaces on the
local control plane, against the API server's own limit measured in the same run: the time
`kubectl apply --server-side` takes to write the same 1,000 Secrets. Also the leader's peak RSS,
its API requests, and that an idle operator makes no write calls. Rewrites the "Pull
credentials" section of docs/benchmarks.md. Expects the operator installed (`make run`)."""

import base64
import json
import os
import time
from datetime import datetime, timezone

from kube_bench import WRITE_VERBS, kubectl, leader, metrics, mib, requests, wait, write_section

COUNT = int(os.environ.get("WHARF_BENCH_NAMESPACES", "1000"))
LABEL = "bench-pull-credentials"
SOURCE_NS = "bench-pc-source"
IPC = "bench-pull"
IDLE_SECONDS = 30
BEGIN, END = "<!-- pull-credentials-bench:begin -->", "<!-- pull-credentials-bench:end -->"


def docker_config():
    auth = base64.b64encode(b"bench:not-a-real-password").decode()
    body = json.dumps({"auths": {"registry.example:5000": {"username": "bench", "password": "not-a-real-password", "auth": auth}}})
    return base64.b64encode(body.encode()).decode()


def namespaces():
    return [f"bench-pc-{i:04}" for i in range(COUNT)]


def as_list(items):
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def synced():
    status = json.loads(kubectl("get", "imagepullcredential", IPC, "-o", "json")).get("status", {})
    return status.get("namespaces", {}).get("synced", 0)


def copies(name):
    out = kubectl("get", "secrets", "-A", "--field-selector", f"metadata.name={name}", "-o", "name")
    return len(out.split())


def cleanup():
    kubectl("delete", "imagepullcredential", IPC, "--ignore-not-found", "--wait=true", "--timeout=300s", timeout=360)
    kubectl("delete", "namespace", "-l", LABEL, "--wait=false", check=False)
    kubectl("delete", "namespace", SOURCE_NS, "--ignore-not-found", "--wait=false")


def main():
    cleanup()
    wait("earlier bench namespaces to go", lambda: not kubectl("get", "namespaces", "-l", LABEL, "-o", "name").strip(), 600, 2)
    kubectl("create", "namespace", SOURCE_NS)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull", "namespace": SOURCE_NS},
              "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": docker_config()}}
    kubectl("apply", "-f", "-", input=json.dumps(secret))
    kubectl("apply", "--server-side", "-f", "-", input=as_list(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": {LABEL: "yes"}}} for n in namespaces()]),
        timeout=900)
    wait("the namespaces' default ServiceAccounts", lambda: len(kubectl(
        "get", "serviceaccounts", "-A", "--field-selector", "metadata.name=default", "-o", "name").split()) >= COUNT, 600, 2)

    # The API server's own limit: kubectl writes the same Secrets.
    baseline = [{**secret, "metadata": {"name": "bench-kubectl", "namespace": n}} for n in namespaces()]
    start = time.monotonic()
    kubectl("apply", "--server-side", "--field-manager=bench", "-f", "-", input=as_list(baseline), timeout=1800)
    kubectl_time = time.monotonic() - start
    assert copies("bench-kubectl") == COUNT

    pod = leader()
    before = metrics(pod)
    start = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "wharf.dev/v1alpha1", "kind": "ImagePullCredential", "metadata": {"name": IPC},
        "spec": {"source": {"secretRef": {"namespace": SOURCE_NS, "name": "pull"}}, "secretName": IPC,
                 "namespaceSelector": {"matchLabels": {LABEL: "yes"}}, "inject": {"mode": "None"}}}))
    wait(f"{COUNT} namespaces synced", lambda: synced() == COUNT, 1800, 0.2)
    operator_time = time.monotonic() - start
    assert copies(IPC) == COUNT, "status and reality disagree"
    after_sync = metrics(pod)

    # Idle: once settled, nothing is written, even when a resync is forced by a no-op edit.
    time.sleep(5)
    settled = metrics(pod)
    kubectl("annotate", "imagepullcredential", IPC, "bench/poke=1", "--overwrite")
    time.sleep(IDLE_SECONDS)
    idle = metrics(pod)
    idle_writes = requests(idle, WRITE_VERBS) - requests(settled, WRITE_VERBS)

    cleanup()
    kubectl("delete", "secrets", "-A", "--field-selector", "metadata.name=bench-kubectl", "--wait=false", check=False)
    ratio = operator_time / kubectl_time
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    rows = [
        (f"`kubectl apply --server-side` of {COUNT} Secrets (the API server's limit)", f"{kubectl_time:.1f} s"),
        (f"ImagePullCredential applied → {COUNT} namespaces synced (status)", f"{operator_time:.1f} s"),
        ("ratio (target ≤ 1.5×)", f"{ratio:.2f}×"),
        ("operator API requests for the sync (all verbs)", f"{requests(after_sync) - requests(before):.0f}"),
        ("operator RSS after the sync", mib(after_sync["wharf_operator_resident_memory_bytes"])),
        ("operator peak RSS (target < 100 MiB)", mib(idle["wharf_operator_peak_resident_memory_bytes"])),
        (f"write calls by the idle operator over {IDLE_SECONDS} s, after a no-op edit", f"{idle_writes:.0f}"),
    ]
    lines = ["## Pull credentials", "",
             f"Produced by `make bench-pull-credentials` (e2e/bench/pull_credentials.py) on {stamp}, on the local",
             f"single-node cluster: one ImagePullCredential (a copied dockerconfigjson source) selecting {COUNT}",
             "labelled namespaces, compared in the same run with `kubectl apply --server-side` writing the same",
             "Secrets. The operator writes with 32 requests in flight; kubectl writes one object at a time.", "",
             "| measurement | result |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    write_section(BEGIN, END, lines)


if __name__ == "__main__":
    main()
