#!/usr/bin/env python3
"""`make bench-operator`: the operator at scale on the local cluster (or KUBECONFIG's), measured:
time from `kubectl apply` to Ready, operator memory idle and with N Registries, and API requests
per reconcile (first pass, and a pass with nothing to do). Rewrites the "Operator" section of
docs/benchmarks.md. Expects the operator installed (`make run` does it) and bounds every wait."""

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "e2e"))
from support.procs import parse_prometheus  # noqa: E402
COUNT = int(os.environ.get("WHARF_BENCH_REGISTRIES", "50"))
NAMESPACE = "bench-operator"
KUBECTL = os.environ.get("KUBECTL", "kubectl")
BEGIN, END = "<!-- operator-bench:begin -->", "<!-- operator-bench:end -->"


def kubectl(*args, input=None, check=True, timeout=300):
    p = subprocess.run([KUBECTL, *args], capture_output=True, text=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)}: {p.stderr}")
    return p.stdout


def leader():
    lease = json.loads(kubectl("-n", "wharf-system", "get", "lease", "wharf-operator", "-o", "json"))
    return lease["spec"]["holderIdentity"].split("_")[0]


def metrics(pod):
    return parse_prometheus(kubectl("get", "--raw", f"/api/v1/namespaces/wharf-system/pods/{pod}:8080/proxy/metrics"))


def requests(m, verbs=("GET", "POST", "PUT", "PATCH", "DELETE")):
    return sum(m.get(f'wharf_operator_api_requests_total{{verb="{v}"}}', 0) for v in verbs)


def reconciles(m):
    return m.get('wharf_operator_reconciles_total{controller="registry",result="success"}', 0)


def ready_count():
    items = json.loads(kubectl("-n", NAMESPACE, "get", "registries", "-o", "json"))["items"]
    return sum(1 for r in items if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in r.get("status", {}).get("conditions", [])))


def wait(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    sys.exit(f"timed out after {timeout}s waiting for {what}")


def mib(v):
    return f"{v / 1048576:.1f} MiB"


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
    section = [BEGIN, "## Operator", "",
               f"Produced by `make bench-operator` (e2e/bench/operator.py) on {stamp}, on the local single-node",
               "cluster, with the operator installed by `kubectl apply -k config/default` (2 replicas, leader",
               "measured through its `/metrics`). API requests are counted inside the operator's Kubernetes",
               "client, excluding leader-election renewals (their own client); watches are not counted.", "",
               "| measurement | result |", "|---|---|"]
    section += [f"| {k} | {v} |" for k, v in rows]
    section += ["", END]
    path = os.path.join(REPO, "docs", "benchmarks.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + "\n".join(section) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    open(path, "w").write(text)
    print("\n".join(section))


if __name__ == "__main__":
    main()
