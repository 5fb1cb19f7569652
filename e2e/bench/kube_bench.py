"""Helpers the operator benchmarks share: kubectl, the leader's metrics, bounded waits, and
rewriting one marked section of docs/benchmarks.md."""

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "e2e"))
from support.procs import parse_prometheus  # noqa: E402

KUBECTL = os.environ.get("KUBECTL", "kubectl")
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


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


def wait(what, predicate, timeout, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    sys.exit(f"timed out after {timeout}s waiting for {what}")


def mib(v):
    return f"{v / 1048576:.1f} MiB"


def write_section(begin, end, lines):
    """Replaces the text between `begin` and `end` in docs/benchmarks.md (or appends it)."""
    section = [begin, *lines, "", end]
    path = os.path.join(REPO, "docs", "benchmarks.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if begin in text:
        text = text[:text.index(begin)] + "\n".join(section) + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    open(path, "w").write(text)
    print("\n".join(section))
