#!/usr/bin/env python3
"""`make bench-replication`: `wharf replicate` against `skopeo sync`, copying the same image set
between the same kind of registries in one run.

The source is the reference registry (Distribution, `docker-registry`) holding 200 images in 20
repositories, about 1 GiB of blobs in all: every image has its own config and top layer
(default 4 MiB) on one of four shared base layers (default 48 MiB each), as real image sets do.
Each tool copies the whole set into an empty Distribution of its own (first copy), then again
into the same one (re-run of the unchanged set). Measured per run: wall time and the tool's
peak RSS (from wait4). Afterwards every destination tag is checked against the source digest.
Rewrites the "Replication" section of docs/benchmarks.md."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kube_bench import REPO, write_section  # noqa: E402
from support.distribution import Distribution  # noqa: E402
from support.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Client  # noqa: E402

REPOSITORIES = int(os.environ.get("WHARF_BENCH_REPL_REPOSITORIES", "20"))
TAGS = int(os.environ.get("WHARF_BENCH_REPL_TAGS", "10"))
BASES = 4
BASE_MIB = int(os.environ.get("WHARF_BENCH_REPL_BASE_MIB", "48"))
TOP_MIB = float(os.environ.get("WHARF_BENCH_REPL_TOP_MIB", "4"))
BEGIN, END = "<!-- replication-bench:begin -->", "<!-- replication-bench:end -->"


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fill(source):
    """Pushes the image set; returns {repository: {tag: digest}} and the bytes of distinct blobs."""
    client = Client(source.address, timeout=300)
    bases = [os.urandom(BASE_MIB << 20) for _ in range(BASES)]
    distinct = 0
    for n, base in enumerate(bases):
        assert client.push_blob(f"bench/app-{n:02d}", base)[0] == 201
        distinct += len(base)
    client.close()
    images = {}

    def push_repository(r):
        c = Client(source.address, timeout=300)
        repo = f"bench/app-{r:02d}"
        tags, pushed = {}, 0
        base = bases[r % BASES]
        if r >= BASES:
            # The base layer, mounted from where it was first pushed: the source stores it once.
            status, _, _ = c.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest_of(base)}&from=bench/app-{r % BASES:02d}")
            assert status == 201, status
        for t in range(TAGS):
            top = os.urandom(int(TOP_MIB * (1 << 20)))
            config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex(),
                                 "rootfs": {"type": "layers", "diff_ids": []}}).encode()
            for blob in (config, top):
                assert c.push_blob(repo, blob)[0] == 201
            pushed += len(top) + len(config)
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(base), "size": len(base)},
                           {"mediaType": OCI_LAYER, "digest": digest_of(top), "size": len(top)}],
            }).encode()
            tag = f"1.{t}.0"
            status, headers, body = c.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
            assert status == 201, (status, body)
            tags[tag] = headers["docker-content-digest"]
        c.close()
        return repo, tags, pushed

    with ThreadPoolExecutor(4) as pool:
        for repo, tags, pushed in pool.map(push_repository, range(REPOSITORIES)):
            images[repo] = tags
            distinct += pushed
    return images, distinct


def hwm(pid):
    """The process's peak RSS so far (VmHWM), in bytes; 0 once it is gone."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measured(args, log):
    """Runs a tool to its end: (seconds, peak RSS in bytes). The peak is the process's own
    VmHWM, sampled every 20 ms: wait4's ru_maxrss would also count this Python process, whose
    pages the child holds until it execs (Linux carries that peak across exec)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        started, peak = time.monotonic(), 0
        while proc.poll() is None:
            peak = max(peak, hwm(proc.pid))
            time.sleep(0.02)
        seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{args[0]} failed ({proc.returncode}): {open(log, errors='replace').read()[-3000:]}")
    return seconds, peak


def skopeo_sync(source, destination, images, workdir):
    spec = workdir / "skopeo-sync.yaml"
    spec.write_text(json.dumps({source.address: {"tls-verify": False, "images": {r: sorted(t) for r, t in images.items()}}}))
    return measured(["skopeo", "--insecure-policy", "sync", "--preserve-digests", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                     str(spec), destination.address], workdir / "skopeo.log")


def wharf_replicate(binary, source, destination, workdir):
    policy = workdir / "policy.json"
    policy.write_text(json.dumps({"rules": [{"repositories": ["bench/**"]}]}))
    summary = workdir / "summary.json"
    seconds, rss = measured([binary, "replicate", "--source", source.url, "--destination", destination.url,
                             "--policy", str(policy), "--termination-log", str(summary)], workdir / "wharf.log")
    return seconds, rss, json.loads(summary.read_text())


def verify(destination, images):
    """Every source tag at the destination with the same digest. skopeo names a repository
    after the last part of the source's, wharf keeps the whole name; either is found."""
    c = Client(destination.address, timeout=120)
    status, _, body = c.request("GET", "/v2/_catalog?n=1000")
    catalog = json.loads(body)["repositories"]
    for repo, tags in images.items():
        base = repo.rsplit("/", 1)[-1]
        [copied] = [d for d in catalog if d in (repo, base) or d.endswith("/" + base)]
        for tag, digest in tags.items():
            status, headers, _ = c.request("HEAD", f"/v2/{copied}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert status == 200 and headers["docker-content-digest"] == digest, (destination.url, repo, tag, status)
    c.close()


def mib(n):
    return f"{n / (1 << 20):.1f} MiB"


def main():
    binary = subprocess.run([os.path.join(REPO, "e2e/tools/build-static.sh")], capture_output=True, text=True,
                            check=True).stdout.strip()
    version = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="wharf-bench-repl-"))
    registries = {name: Distribution(work / name) for name in ("source", "skopeo", "wharf")}
    for name, r in registries.items():
        r.directory.mkdir()
        r.start()
    try:
        print(f"filling the source with {REPOSITORIES * TAGS} images ...", file=sys.stderr)
        images, distinct = fill(registries["source"])
        results = {}
        for tool in ("skopeo", "wharf"):
            destination = registries[tool]
            runs = []
            for attempt in ("first copy", "re-run"):
                if tool == "skopeo":
                    seconds, rss = skopeo_sync(registries["source"], destination, images, work)
                    summary = None
                else:
                    seconds, rss, summary = wharf_replicate(binary, registries["source"], destination, work)
                print(f"{tool} {attempt}: {seconds:.1f} s, {mib(rss)}", file=sys.stderr)
                runs.append((seconds, rss, summary))
            verify(destination, images)
            results[tool] = runs
    finally:
        for r in registries.values():
            r.stop()
        shutil.rmtree(work, ignore_errors=True)

    (s_first, s_first_rss, _), (s_again, s_again_rss, _) = results["skopeo"]
    (w_first, w_first_rss, w_sum), (w_again, w_again_rss, w_again_sum) = results["wharf"]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    lines = [
        "## Replication",
        "",
        f"Produced by `make bench-replication` (e2e/bench/replication.py) on {stamp}: {REPOSITORIES * TAGS} images in",
        f"{REPOSITORIES} repositories on the reference registry (Distribution, `docker-registry`), {mib(distinct)} of",
        f"distinct blobs: each image has its own config and {TOP_MIB:g} MiB top layer on one of {BASES} shared {BASE_MIB} MiB",
        "base layers. Each tool copies the whole set into an empty Distribution of its own, then again",
        "(nothing changed). Every destination tag is then checked against the source's digest. The re-run",
        "target is read against skopeo's first copy (the time a mirror job takes today); both ratios are shown.",
        f"`skopeo sync --preserve-digests --src yaml` ({version}; without `--preserve-digests` it rewrote",
        "manifests and the destination digests differed, so the check failed) against `wharf replicate` (static release build,",
        "default concurrency 4); peak RSS is the tool's own VmHWM, sampled every 20 ms.",
        "",
        "| measurement | skopeo sync | wharf replicate | ratio (target) |",
        "|---|---|---|---|",
        f"| first copy: wall time | {s_first:.1f} s | {w_first:.1f} s | {w_first / s_first:.2f}× (≤ 0.5×) |",
        f"| re-run of the unchanged set: wall time | {s_again:.1f} s | {w_again:.1f} s | "
        f"{w_again / s_again:.3f}× of skopeo's re-run, {w_again / s_first:.3f}× of its first copy (≤ 0.1×) |",
        f"| peak RSS, first copy | {mib(s_first_rss)} | {mib(w_first_rss)} | {w_first_rss / s_first_rss:.2f}× (< 64 MiB) |",
        f"| peak RSS, re-run | {mib(s_again_rss)} | {mib(w_again_rss)} | {w_again_rss / s_again_rss:.2f}× |",
        "",
        f"wharf's summaries: first copy {json.dumps({k: w_sum[k] for k in ('tagsSelected', 'copied', 'blobsCopied', 'blobsMounted', 'blobsPresent', 'bytesTransferred')})};",
        f"re-run {json.dumps({k: w_again_sum[k] for k in ('tagsSelected', 'copied', 'skipped', 'blobsCopied', 'bytesTransferred')})}.",
    ]
    write_section(BEGIN, END, lines)


if __name__ == "__main__":
    main()
