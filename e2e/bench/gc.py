#!/usr/bin/env python3
"""`make bench-gc`: garbage collection at scale, wharf against the reference registry in one run.
The same store (default 100,000 blobs and 20,000 manifests in 200 repositories) is pushed to
both over HTTP; a quarter of the manifests are then deleted through the API. Distribution runs
its offline `garbage-collect` (server stopped, as it requires); wharf runs its online GC through
the admin API while serving. Measured: wall time and peak RSS of each (Distribution: the
garbage-collect process; wharf: the peak RSS of a server restarted after the pushes, reset just before the run). Both must
leave the same number of blobs. Rewrites the "Garbage collection" section of docs/benchmarks.md."""

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

from kube_bench import REPO, write_section

BLOBS = int(os.environ.get("WHARF_BENCH_GC_BLOBS", "100000"))
MANIFESTS = int(os.environ.get("WHARF_BENCH_GC_MANIFESTS", "20000"))
REPOSITORIES = 200
THREADS = 8
BENCH = os.environ.get("WHARF_BENCH_DIR", os.path.join(REPO, "..", "shared", "bench"))
ADMIN, PASSWORD = "bench", "bench-gc-password"
BEGIN, END = "<!-- gc-bench:begin -->", "<!-- gc-bench:end -->"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


class Client:
    def __init__(self, port, auth=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.auth = auth

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.auth:
            headers["Authorization"] = self.auth
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, r, data

    def push_blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, r, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert status == 202, (status, body)
        location = r.getheader("Location")
        sep = "&" if "?" in location else "?"
        if location.startswith("http"):
            location = "/" + location.split("/", 3)[3]
        status, _, body = self.request("PUT", f"{location}{sep}digest={digest}", data,
                                       {"Content-Type": "application/octet-stream"})
        assert status == 201, (status, body)
        return digest


def plan():
    """Per repository: manifests, each with a unique config and layers, BLOBS in total."""
    per_manifest_layers = max(1, BLOBS // MANIFESTS - 1)
    work = []
    for m in range(MANIFESTS):
        repo = f"bench/repo-{m % REPOSITORIES:03}"
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": m}).encode()
        layers = [f"layer {m} {i} ".encode() * 4 for i in range(per_manifest_layers)]
        work.append((repo, f"t{m}", config, layers))
    return work


def populate(port, auth, work):
    errors = []
    digests = [None] * len(work)

    def worker(start):
        c = Client(port, auth)
        try:
            for i in range(start, len(work), THREADS):
                repo, tag, config, layers = work[i]
                config_digest = c.push_blob(repo, config)
                layer_digests = [c.push_blob(repo, layer) for layer in layers]
                manifest = json.dumps({
                    "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                               "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(l)}
                               for d, l in zip(layer_digests, layers)],
                }).encode()
                status, r, body = c.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": MANIFEST_TYPE})
                assert status == 201, (status, body)
                digests[i] = r.getheader("Docker-Content-Digest")
        except Exception as e:  # reported after the join
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"populating failed: {errors[:3]}")
    return digests


def delete_quarter(port, auth, work, digests):
    c = Client(port, auth)
    for i in range(0, len(work), 4):
        status, _, body = c.request("DELETE", f"/v2/{work[i][0]}/manifests/{digests[i]}")
        assert status == 202, (status, body)


def count_blobs(root):
    return sum(len(files) for _, _, files in os.walk(root))


def distribution_blobs(storage):
    return sum(1 for _, _, files in os.walk(os.path.join(storage, "docker/registry/v2/blobs")) if "data" in files)


def main():
    work_dir = tempfile.mkdtemp(prefix="wharf-bench-gc-")
    wharf = subprocess.run([os.path.join(REPO, "e2e/tools/build-static.sh")], capture_output=True, text=True,
                           check=True).stdout.strip()
    ref_port, wharf_port = free_port(), free_port()
    ref_storage = os.path.join(work_dir, "ref")
    ref_pid = int(subprocess.run([os.path.join(BENCH, "start-reference-registry"), str(ref_port), ref_storage],
                                 capture_output=True, text=True, check=True).stdout.strip())
    htpasswd = os.path.join(work_dir, "htpasswd")
    subprocess.run(["htpasswd", "-cbB", "-C", "5", htpasswd, ADMIN, PASSWORD], check=True, capture_output=True)
    wharf_storage = os.path.join(work_dir, "wharf")
    def start_wharf():
        return subprocess.Popen([wharf, "registry", "--storage", wharf_storage, "--listen", f"127.0.0.1:{wharf_port}",
                                 "--htpasswd", htpasswd], env={**os.environ, "WHARF_LOG": "error"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    server = start_wharf()
    auth = "Basic " + base64.b64encode(f"{ADMIN}:{PASSWORD}".encode()).decode()
    try:
        wait_up(ref_port)
        wait_up(wharf_port)
        work = plan()
        started = time.monotonic()
        ref_digests = populate(ref_port, None, work)
        print(f"distribution populated in {time.monotonic() - started:.0f}s", file=sys.stderr)
        started = time.monotonic()
        wharf_digests = populate(wharf_port, auth, work)
        print(f"wharf populated in {time.monotonic() - started:.0f}s", file=sys.stderr)
        assert ref_digests == wharf_digests, "the two registries computed different manifest digests"
        delete_quarter(ref_port, None, work, ref_digests)
        delete_quarter(wharf_port, auth, work, wharf_digests)
        ref_before = distribution_blobs(ref_storage)
        wharf_before = count_blobs(os.path.join(wharf_storage, "blobs"))

        # Distribution: offline, as its garbage-collect requires.
        os.kill(ref_pid, signal.SIGTERM)
        time.sleep(1)
        env = {**os.environ, "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": ref_storage}
        started = time.monotonic()
        proc = subprocess.Popen(["docker-registry", "garbage-collect", os.path.join(BENCH, "distribution-config.yml")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        ref_seconds = time.monotonic() - started
        assert status == 0, f"garbage-collect exited {status}"
        ref_rss = usage.ru_maxrss * 1024
        ref_after = distribution_blobs(ref_storage)

        # wharf: online, through the admin API. The server is restarted first, as Distribution's
        # garbage-collect is a fresh process: the peak RSS is then the collection's (plus what
        # serving needs), not what the allocator kept from 120,000 uploads.
        server.terminate()
        server.wait(30)
        server = start_wharf()
        wait_up(wharf_port)
        with open(f"/proc/{server.pid}/clear_refs", "w") as f:
            f.write("5")
        c = Client(wharf_port, auth)
        started = time.monotonic()
        status, _, body = c.request("POST", "/admin/v1/gc", json.dumps({"gracePeriod": "0s"}).encode(),
                                    {"Content-Type": "application/json"})
        wharf_seconds = time.monotonic() - started
        assert status == 200, body
        report = json.loads(body)
        wharf_rss = next(int(line.split()[1]) * 1024 for line in open(f"/proc/{server.pid}/status")
                         if line.startswith("VmHWM:"))
        wharf_after = count_blobs(os.path.join(wharf_storage, "blobs"))
        assert wharf_after == ref_after, f"wharf kept {wharf_after} blobs, Distribution {ref_after}"
    finally:
        server.terminate()
        server.wait(30)
        try:
            os.kill(ref_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        shutil.rmtree(work_dir, ignore_errors=True)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    mib = lambda b: f"{b / 1048576:.1f} MiB"
    rows = [
        ("blobs before / after", f"{ref_before} / {ref_after}", f"{wharf_before} / {wharf_after}", ""),
        ("wall time of the collection", f"{ref_seconds:.2f} s", f"{wharf_seconds:.2f} s",
         f"{ref_seconds / wharf_seconds:.1f}× faster (target ≥ 5×)"),
        ("peak RSS during the collection", mib(ref_rss), mib(wharf_rss),
         f"{wharf_rss / ref_rss:.2f}× (target ≤ 0.5×)"),
        ("registry available during the collection", "no (offline)", "yes (online)", ""),
    ]
    lines = ["## Garbage collection", "",
             f"Produced by `make bench-gc` (e2e/bench/gc.py) on {stamp}: {BLOBS} blobs and {MANIFESTS} manifests",
             f"in {REPOSITORIES} repositories pushed over HTTP to Distribution (`docker-registry`, the reference) and",
             "to wharf (static release build), then a quarter of the manifests deleted through the API.",
             "Distribution: `docker-registry garbage-collect` with the server stopped (it has no online mode);",
             "peak RSS is that process's. wharf: `POST /admin/v1/gc` while serving, grace period 0, on a server",
             "restarted after the pushes (as Distribution's collector is a fresh process); peak RSS is the whole",
             f"server's, reset just before. wharf's report: {json.dumps(report)}.", "",
             "| measurement | Distribution | wharf | ratio |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    write_section(BEGIN, END, lines)


if __name__ == "__main__":
    main()
