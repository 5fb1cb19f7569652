#!/usr/bin/env python3
"""`make bench-gc`: garbage collection at scale, wharf against the reference registry in one run.
The same store (default 100,000 blobs and 20,000 manifests in 200 repositories) is pushed to
both over HTTP and a quarter of the manifests deleted through the API. Each collector then runs
on identical copies of its store in two defined states, because on these VMs the host reclaims
the page cache within minutes and "as the pushes left it" is neither warm nor cold:

- in memory: the stores on tmpfs, so the run measures the collectors' own work;
- on disk, cold: copies on the disk, the page cache dropped right before each collector (a store
  far larger than memory, as in production). Needs root; skipped with a note otherwise.

Distribution runs its offline `garbage-collect` (server stopped, as it requires); wharf runs its
online GC through the admin API on a freshly started server, which keeps serving. Measured: wall
time and peak RSS (Distribution: the garbage-collect process; wharf: the server's, reset just
before the run). Both must leave the same number of blobs. Rewrites the "Garbage collection"
section of docs/benchmarks.md."""

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


def drop_page_cache():
    """Writes everything out and empties the page cache; False when not allowed (not root)."""
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


class Wharf:
    def __init__(self, binary, htpasswd):
        self.binary, self.htpasswd, self.server, self.port = binary, htpasswd, None, free_port()

    def start(self, storage):
        self.server = subprocess.Popen([self.binary, "registry", "--storage", storage, "--listen",
                                        f"127.0.0.1:{self.port}", "--htpasswd", self.htpasswd],
                                       env={**os.environ, "WHARF_LOG": "error"},
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_up(self.port)

    def stop(self):
        if self.server:
            self.server.terminate()
            self.server.wait(30)
            self.server = None

    def collect(self, storage, auth, cold):
        """One online collection on a server started for it; (seconds, peak RSS, report)."""
        self.start(storage)
        try:
            if cold and not drop_page_cache():
                return None
            with open(f"/proc/{self.server.pid}/clear_refs", "w") as f:
                f.write("5")
            c = Client(self.port, auth)
            started = time.monotonic()
            status, _, body = c.request("POST", "/admin/v1/gc", json.dumps({"gracePeriod": "0s"}).encode(),
                                        {"Content-Type": "application/json"})
            seconds = time.monotonic() - started
            assert status == 200, body
            rss = next(int(line.split()[1]) * 1024 for line in open(f"/proc/{self.server.pid}/status")
                       if line.startswith("VmHWM:"))
            return seconds, rss, json.loads(body)
        finally:
            self.stop()


def distribution_collect(storage, cold):
    """One offline garbage-collect of a stopped Distribution; (seconds, peak RSS)."""
    if cold and not drop_page_cache():
        return None
    env = {**os.environ, "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": storage}
    started = time.monotonic()
    proc = subprocess.Popen(["docker-registry", "garbage-collect", os.path.join(BENCH, "distribution-config.yml")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    assert status == 0, f"garbage-collect exited {status}"
    return seconds, usage.ru_maxrss * 1024


def main():
    disk_dir = tempfile.mkdtemp(prefix="wharf-bench-gc-")
    # tmpfs for the in-memory runs (and the fast pushes); the disk alone when there is none.
    memory_dir = tempfile.mkdtemp(prefix="wharf-bench-gc-", dir="/dev/shm") if os.path.isdir("/dev/shm") else None
    push_dir = memory_dir or disk_dir
    binary = subprocess.run([os.path.join(REPO, "e2e/tools/build-static.sh")], capture_output=True, text=True,
                            check=True).stdout.strip()
    htpasswd = os.path.join(disk_dir, "htpasswd")
    subprocess.run(["htpasswd", "-cbB", "-C", "5", htpasswd, ADMIN, PASSWORD], check=True, capture_output=True)
    auth = "Basic " + base64.b64encode(f"{ADMIN}:{PASSWORD}".encode()).decode()
    stores = {name: os.path.join(push_dir, name) for name in ("ref", "wharf")}
    ref_port = free_port()
    ref_pid = int(subprocess.run([os.path.join(BENCH, "start-reference-registry"), str(ref_port), stores["ref"]],
                                 capture_output=True, text=True, check=True).stdout.strip())
    wharf = Wharf(binary, htpasswd)
    results = {}
    try:
        wharf.start(stores["wharf"])
        wait_up(ref_port)
        work = plan()
        started = time.monotonic()
        ref_digests = populate(ref_port, None, work)
        print(f"distribution populated in {time.monotonic() - started:.0f}s", file=sys.stderr)
        started = time.monotonic()
        wharf_digests = populate(wharf.port, auth, work)
        print(f"wharf populated in {time.monotonic() - started:.0f}s", file=sys.stderr)
        assert ref_digests == wharf_digests, "the two registries computed different manifest digests"
        delete_quarter(ref_port, None, work, ref_digests)
        delete_quarter(wharf.port, auth, work, wharf_digests)
        os.kill(ref_pid, signal.SIGTERM)
        wharf.stop()
        time.sleep(1)
        before = (distribution_blobs(stores["ref"]), count_blobs(os.path.join(stores["wharf"], "blobs")))

        # Identical copies on the disk first: the in-memory runs consume the originals.
        scenarios = [("in memory", stores, False)] if memory_dir else []
        if memory_dir:
            on_disk = {name: os.path.join(disk_dir, name) for name in stores}
            for name in stores:
                subprocess.run(["cp", "-a", stores[name], on_disk[name]], check=True)
            scenarios.append(("on disk, cold cache", on_disk, True))
        else:
            scenarios.append(("on disk, cold cache", stores, True))
        for label, where, cold in scenarios:
            ref = distribution_collect(where["ref"], cold)
            own = wharf.collect(where["wharf"], auth, cold)
            if ref is None or own is None:
                print(f"{label}: skipped (the page cache cannot be dropped without root)", file=sys.stderr)
                continue
            after = (distribution_blobs(where["ref"]), count_blobs(os.path.join(where["wharf"], "blobs")))
            assert after[0] == after[1], f"{label}: wharf kept {after[1]} blobs, Distribution {after[0]}"
            results[label] = (ref, own, after)
            print(f"{label}: Distribution {ref[0]:.2f}s, wharf {own[0]:.2f}s", file=sys.stderr)
    finally:
        wharf.stop()
        try:
            os.kill(ref_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        shutil.rmtree(disk_dir, ignore_errors=True)
        if memory_dir:
            shutil.rmtree(memory_dir, ignore_errors=True)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    mib = lambda b: f"{b / 1048576:.1f} MiB"  # noqa: E731
    after = next(iter(results.values()))[2]
    rows = [("blobs before / after", f"{before[0]} / {after[0]}", f"{before[1]} / {after[1]}", "")]
    for label, ((ref_s, ref_rss), (own_s, own_rss, _), _) in results.items():
        rows += [(f"{label}: wall time", f"{ref_s:.2f} s", f"{own_s:.2f} s",
                  f"{ref_s / own_s:.1f}× faster (target ≥ 5×)"),
                 (f"{label}: peak RSS", mib(ref_rss), mib(own_rss), f"{own_rss / ref_rss:.2f}× (target ≤ 0.5×)")]
    rows.append(("registry available during the collection", "no (offline)", "yes (online)", ""))
    reports = "; ".join(f"{label}: {json.dumps(r[1][2])}" for label, r in results.items())
    lines = ["## Garbage collection", "",
             f"Produced by `make bench-gc` (e2e/bench/gc.py) on {stamp}: {BLOBS} blobs and {MANIFESTS} manifests",
             f"in {REPOSITORIES} repositories pushed over HTTP to Distribution (`docker-registry`, the reference) and",
             "to wharf (static release build), then a quarter of the manifests deleted through the API. Each",
             "collector then runs on identical copies of its store: in memory (tmpfs: the collectors' own work)",
             "and on disk with the page cache dropped right before it (a store larger than memory; on these VMs",
             "the host reclaims the page cache within minutes, so \"as the pushes left it\" is no defined state).",
             "Distribution: `docker-registry garbage-collect` with the server stopped (it has no online mode);",
             "peak RSS is that process's. wharf: `POST /admin/v1/gc` while serving, grace period 0, on a freshly",
             "started server; peak RSS is the whole server's, reset just before the run.", "",
             "| measurement | Distribution | wharf | ratio |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", f"wharf's reports: {reports}."]
    write_section(BEGIN, END, lines)


if __name__ == "__main__":
    main()
