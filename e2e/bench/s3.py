#!/usr/bin/env python3
"""`make bench-s3`: wharf on S3 against Distribution's own s3 driver, on the same S3 server
(versitygw, e2e/tools/s3-server.sh) and in one run: first `registry-bench` from ../shared/bench
with both as targets (push, chunked push, pull, small blobs, manifests, listings, peak RSS), then
garbage collection of a store of WHARF_BENCH_S3_GC_BLOBS blobs (default 100,000) pushed over HTTP
to both: Distribution's offline `garbage-collect` against wharf's online GC. Rewrites the "On S3"
and "Garbage collection on S3" sections of docs/benchmarks.md, each only when its part ran
(WHARF_BENCH_S3_REGISTRY=0 or WHARF_BENCH_S3_GC=0 leaves one out)."""

import base64
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from support.s3 import S3Server  # noqa: E402

from kube_bench import REPO, write_section  # noqa: E402

# The GC benchmark's helpers (its module is named gc.py, which `import gc` cannot reach).
_spec = importlib.util.spec_from_file_location("gc_bench", os.path.join(os.path.dirname(os.path.abspath(__file__)), "gc.py"))
gc_bench = importlib.util.module_from_spec(_spec)
os.environ.setdefault("WHARF_BENCH_GC_BLOBS", os.environ.get("WHARF_BENCH_S3_GC_BLOBS", "100000"))
os.environ.setdefault("WHARF_BENCH_GC_MANIFESTS", str(int(os.environ["WHARF_BENCH_GC_BLOBS"]) // 5))
_spec.loader.exec_module(gc_bench)

BENCH = gc_bench.BENCH
BEGIN, END = "<!-- s3-bench:begin -->", "<!-- s3-bench:end -->"
GC_BEGIN, GC_END = "<!-- s3-gc-bench:begin -->", "<!-- s3-gc-bench:end -->"
ADMIN, PASSWORD = gc_bench.ADMIN, gc_bench.PASSWORD


def distribution_config(server, path, bucket):
    """Distribution's benchmark configuration with its s3 driver in place of the filesystem."""
    text = open(os.path.join(BENCH, "distribution-config.yml")).read()
    start = text.index("storage:")
    end = text.index("  cache:")
    s3 = ("storage:\n  s3:\n"
          f"    accesskey: {server.access_key}\n    secretkey: {server.secret_key}\n"
          f"    region: us-east-1\n    regionendpoint: {server.endpoint}\n    bucket: {bucket}\n"
          "    secure: false\n    v4auth: true\n    rootdirectory: /\n")
    with open(path, "w") as f:
        f.write(text[:start] + s3 + text[end:])
    return path


def start_distribution(config, port, log):
    env = {**server_env, "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(["docker-registry", "serve", config], env=env, stdout=log, stderr=subprocess.STDOUT)
    gc_bench.wait_up(port)
    return proc


def start_wharf(binary, server, port, prefix, log, htpasswd=None):
    config = os.path.join(work, f"wharf-{prefix}.yaml")
    with open(config, "w") as f:
        f.write(server.config(prefix=prefix, bucket="wharf"))
    args = [binary, "registry", "--config", config, "--listen", f"127.0.0.1:{port}"]
    if htpasswd:
        args += ["--htpasswd", htpasswd]
    proc = subprocess.Popen(args, env={**server_env, "WHARF_LOG": "error"}, stdout=log, stderr=subprocess.STDOUT)
    gc_bench.wait_up(port)
    return proc


def stored_files(server, bucket, prefix):
    return len(server.objects_under(prefix, bucket=bucket))


def registry_bench(binary, server):
    ref_port, wharf_port = gc_bench.free_port(), gc_bench.free_port()
    log = open(os.path.join(work, "servers.log"), "ab")
    ref = start_distribution(distribution_config(server, os.path.join(work, "ref.yml"), "distribution"), ref_port, log)
    own = start_wharf(binary, server, wharf_port, "bench", log)
    try:
        args = ["python3", os.path.join(BENCH, "registry-bench"),
                "--target", f"distribution-s3=http://127.0.0.1:{ref_port}", "--target", f"wharf-s3=http://127.0.0.1:{wharf_port}",
                "--pid", f"distribution-s3={ref.pid}", "--pid", f"wharf-s3={own.pid}",
                "--json", os.path.join(work, "results.json"), *os.environ.get("BENCH_ARGS", "").split()]
        p = subprocess.run(args, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"registry-bench failed (a verification error is a failure):\n{p.stdout}\n{p.stderr}")
        return p.stdout.strip()
    finally:
        for proc in (ref, own):
            proc.terminate()
            proc.wait(30)


def gc_comparison(binary, server):
    htpasswd = os.path.join(work, "htpasswd")
    subprocess.run(["htpasswd", "-cbB", "-C", "5", htpasswd, ADMIN, PASSWORD], check=True, capture_output=True)
    auth = "Basic " + base64.b64encode(f"{ADMIN}:{PASSWORD}".encode()).decode()
    ref_config = distribution_config(server, os.path.join(work, "ref-gc.yml"), "distribution-gc")
    ref_port, wharf_port = gc_bench.free_port(), gc_bench.free_port()
    log = open(os.path.join(work, "servers.log"), "ab")
    ref = start_distribution(ref_config, ref_port, log)
    own = start_wharf(binary, server, wharf_port, "gc", log, htpasswd)
    work_items = gc_bench.plan()
    started = time.monotonic()
    ref_digests = gc_bench.populate(ref_port, None, work_items)
    ref_push = time.monotonic() - started
    print(f"distribution populated in {ref_push:.0f}s", file=sys.stderr, flush=True)
    started = time.monotonic()
    own_digests = gc_bench.populate(wharf_port, auth, work_items)
    own_push = time.monotonic() - started
    print(f"wharf populated in {own_push:.0f}s", file=sys.stderr, flush=True)
    assert ref_digests == own_digests, "the two registries computed different manifest digests"
    gc_bench.delete_quarter(ref_port, None, work_items, ref_digests)
    gc_bench.delete_quarter(wharf_port, auth, work_items, own_digests)
    ref.terminate()
    ref.wait(30)
    blobs_dir = ("docker/registry/v2/blobs", "gc/blobs")
    before = (stored_files(server, "distribution-gc", blobs_dir[0]), stored_files(server, "wharf", blobs_dir[1]))

    started = time.monotonic()
    proc = subprocess.Popen(["docker-registry", "garbage-collect", ref_config], env=server_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    ref_seconds, ref_rss = time.monotonic() - started, usage.ru_maxrss * 1024
    print(f"distribution collected in {ref_seconds:.1f}s", file=sys.stderr, flush=True)
    assert status == 0, f"garbage-collect exited {status}"

    with open(f"/proc/{own.pid}/clear_refs", "w") as f:
        f.write("5")
    c = gc_bench.Client(wharf_port, auth)
    c.conn.timeout = 3600
    started = time.monotonic()
    status, _, body = c.request("POST", "/admin/v1/gc", json.dumps({"gracePeriod": "0s"}).encode(),
                                {"Content-Type": "application/json"})
    own_seconds = time.monotonic() - started
    assert status == 200, body
    own_rss = next(int(line.split()[1]) * 1024 for line in open(f"/proc/{own.pid}/status") if line.startswith("VmHWM:"))
    own.terminate()
    own.wait(30)
    # One object per blob on both: Distribution's `<hex>/data`, wharf's `<hex>`.
    after = (stored_files(server, "distribution-gc", blobs_dir[0]), stored_files(server, "wharf", blobs_dir[1]))
    assert after[0] == after[1], f"wharf kept {after[1]} blobs, Distribution {after[0]}"
    return {"push": (ref_push, own_push), "gc": (ref_seconds, own_seconds), "rss": (ref_rss, own_rss),
            "before": before, "after": after, "report": json.loads(body)}


def main():
    global work, server_env
    work = tempfile.mkdtemp(prefix="wharf-bench-s3-")
    binary = subprocess.run([os.path.join(REPO, "e2e/tools/build-static.sh")], capture_output=True, text=True,
                            check=True).stdout.strip()
    server = S3Server(os.path.join(work, "s3")).start(buckets=("distribution", "distribution-gc", "wharf"))
    server_env = server.env()
    try:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        results = registry_bench(binary, server) if os.environ.get("WHARF_BENCH_S3_REGISTRY", "1") == "1" else None
        if results is not None:
            print(results)
        gc = gc_comparison(binary, server) if os.environ.get("WHARF_BENCH_S3_GC", "1") == "1" else None
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", work])
    if results is not None:
        write_section(BEGIN, END, [
            "## On S3", "",
            f"Produced by `make bench-s3` (e2e/bench/s3.py) on {stamp}: wharf (static release build, `storage.s3`)",
            "and Distribution (`docker-registry` with its own s3 driver, otherwise the reference configuration)",
            "on the same S3 server (versitygw, posix backend, on this machine's disk), side by side in one run",
            "of `registry-bench`. Ratios are wharf / Distribution.", "", "```", results, "```"])
    if gc:
        write_section(GC_BEGIN, GC_END, gc_lines(gc, stamp))


def gc_lines(gc, stamp):
    mib = lambda b: f"{b / 1048576:.1f} MiB"  # noqa: E731
    (rp, op), (rs, os_), (rr, orss) = gc["push"], gc["gc"], gc["rss"]
    return ["### Garbage collection on S3", "",
            f"Produced by `make bench-s3` (e2e/bench/s3.py) on {stamp}, on the same S3 server: {gc_bench.BLOBS} blobs "
            f"and {gc_bench.MANIFESTS} manifests in {gc_bench.REPOSITORIES} repositories pushed over HTTP to both, "
            "a quarter of the manifests deleted.",
            "Distribution: offline `garbage-collect` (server stopped); wharf: online `POST /admin/v1/gc`, grace 0.", "",
            "| measurement | Distribution | wharf | ratio |", "|---|---|---|---|",
            f"| populating over HTTP | {rp:.0f} s | {op:.0f} s | {rp / op:.1f}× |",
            f"| collection wall time | {rs:.1f} s | {os_:.1f} s | {rs / os_:.1f}× faster |",
            f"| collection peak RSS | {mib(rr)} | {mib(orss)} | {orss / rr:.2f}× |",
            f"| blobs before / after | {gc['before'][0]} / {gc['after'][0]} | {gc['before'][1]} / {gc['after'][1]} | |",
            "", f"wharf's report: {json.dumps(gc['report'])}."]


if __name__ == "__main__":
    main()
