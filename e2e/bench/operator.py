#!/usr/bin/env python3
"""`make bench-operator`: the operator at scale on the local cluster (or KUBECONFIG's), measured:
time from `kubectl apply` to Ready, operator memory idle and with N Registries, and API requests
per reconcile (first pass, and a pass with nothing to do). Rewrites the "Operator" section of
docs/benchmarks.md. Expects the operator installed (`make run` does it) and bounds every wait."""

import json
import os
import time
from datetime import datetime, timezone

from kube_bench import kubectl, leader, metrics, mib, requests, wait, write_section

COUNT = int(os.environ.get("WHARF_BENCH_REGISTRIES", "50"))
NAMESPACE = "bench-operator"
BEGIN, END = "<!-- operator-bench:begin -->", "<!-- operator-bench:end -->"


def reconciles(m):
    return m.get('wharf_operator_reconciles_total{controller="registry",result="success"}', 0)


def ready_count():
    items = json.loads(kubectl("-n", NAMESPACE, "get", "registries", "-o", "json"))["items"]
    return sum(1 for r in items if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in r.get("status", {}).get("conditions", [])))


def main():
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=180s", timeout=240)
    pod = leader()
    idle = metrics(pod)
    kubectl("create", "namespace", NAMESPACE)

    # One Registry alone: apply -> Ready.
    def registry(name):
        return json.dumps({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": name},
                           "spec": {"storage": {"emptyDir": {"sizeLimit": "64Mi"}},
                                    "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"memory": "64Mi"}}}})
    start = time.monotonic()
    kubectl("-n", NAMESPACE, "apply", "-f", "-", input=registry("single"))
    wait("one Registry Ready", lambda: ready_count() == 1, 180)
    single = time.monotonic() - start

    before = metrics(pod)
    start = time.monotonic()
    kubectl("-n", NAMESPACE, "apply", "-f", "-", input="\n---\n".join(registry(f"r{i:03}") for i in range(COUNT)))
    wait(f"{COUNT} Registries Ready", lambda: ready_count() == COUNT + 1, 900)
    all_ready = time.monotonic() - start
    time.sleep(5)
    loaded = metrics(pod)
    first_pass_requests = requests(loaded) - requests(before)
    first_pass_reconciles = reconciles(loaded) - reconciles(before)

    # Every Registry once more with nothing to do.
    before = loaded
    kubectl("-n", NAMESPACE, "annotate", "registries", "--all", "bench/poke=1", "--overwrite")
    wait("the no-op reconciles", lambda: reconciles(metrics(pod)) >= reconciles(before) + COUNT + 1, 120)
    time.sleep(3)
    after = metrics(pod)
    noop_requests = requests(after) - requests(before)
    noop_reconciles = reconciles(after) - reconciles(before)

    kubectl("delete", "namespace", NAMESPACE, "--wait=false")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    rows = [
        ("kubectl apply → Ready, one Registry (emptyDir)", f"{single:.1f} s"),
        (f"kubectl apply → all Ready, {COUNT} Registries at once", f"{all_ready:.1f} s"),
        ("operator RSS, idle (only the `make run` sample Registry)", mib(idle["wharf_operator_resident_memory_bytes"])),
        (f"operator RSS with {COUNT + 2} Registries (all Ready)", mib(after["wharf_operator_resident_memory_bytes"])),
        ("operator peak RSS over the run", mib(after["wharf_operator_peak_resident_memory_bytes"])),
        ("API requests per reconcile while creating (all verbs, incl. status and events)",
         f"{first_pass_requests / max(first_pass_reconciles, 1):.2f} ({first_pass_requests:.0f} / {first_pass_reconciles:.0f})"),
        ("API requests per reconcile with nothing to do",
         f"{noop_requests / max(noop_reconciles, 1):.2f} ({noop_requests:.0f} / {noop_reconciles:.0f})"),
    ]
    lines = ["## Operator", "",
             f"Produced by `make bench-operator` (e2e/bench/operator.py) on {stamp}, on the local single-node",
             "cluster, with the operator installed by `kubectl apply -k config/default` (2 replicas, leader",
             "measured through its `/metrics`). API requests are counted inside the operator's Kubernetes",
             "client, excluding leader-election renewals (their own client); watches are not counted.", "",
             "| measurement | result |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    write_section(BEGIN, END, lines)


if __name__ == "__main__":
    main()
