"""The cluster under test: the one KUBECONFIG names, or the local one that e2e/cluster/up.sh starts."""

import base64
import json
import os
import re
import shutil
import subprocess
import time

from .procs import CACHE, REPO, run

CLUSTER_DIR = os.environ.get("WHARF_CLUSTER_DIR", os.path.join(REPO, ".local", "cluster"))


def _env_value(name):
    with open(os.path.join(REPO, "e2e", "cluster", "config.env")) as f:
        for line in f:
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip()
    raise KeyError(name)


class Cluster:
    """`local` is True when this test run started (and owns) the cluster."""

    def __init__(self, kubeconfig, local):
        self.kubeconfig = kubeconfig
        self.local = local
        # The kubectl built with the local cluster, else the one on PATH.
        self.kubectl_bin = os.path.join(CLUSTER_DIR, "bin", "kubectl") if local else (shutil.which("kubectl") or "kubectl")
        self.node_ip = _env_value("NODE_IP") if local else None

    def kubectl(self, *args, check=True, input=None, timeout=300):
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        p = subprocess.run([self.kubectl_bin, *args], capture_output=True, text=True, env=env, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
        return p

    def apply(self, manifest, namespace=None):
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, input=manifest if isinstance(manifest, str) else json.dumps(manifest))

    def get(self, kind, name, namespace=None):
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        p = self.kubectl(*args, check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def wait(self, condition, target, namespace, timeout=120):
        self.kubectl("wait", f"--for={condition}", target, "-n", namespace, f"--timeout={timeout}s", timeout=timeout + 30)

    def wait_until(self, what, predicate, timeout=120, interval=0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def load_image(self, archive):
        """Makes an image archive available to the cluster's nodes."""
        if os.environ.get("WHARF_E2E_IMAGES_PRELOADED") == "1":
            return  # the cluster's nodes already have (or can pull) the wharf.local/* images
        if self.local:
            sock = os.path.join(CLUSTER_DIR, "containerd", "containerd.sock")
            run(["ctr", "--address", sock, "-n", "k8s.io", "images", "import", "--no-unpack", archive])
        elif os.environ.get("KIND_CLUSTER_NAME"):
            run(["kind", "load", "image-archive", archive, "--name", os.environ["KIND_CLUSTER_NAME"]])
        else:
            raise AssertionError(
                "cannot load images into the cluster KUBECONFIG names: set KIND_CLUSTER_NAME for kind, "
                "or preload the wharf.local/* images on its nodes and set WHARF_E2E_IMAGES_PRELOADED=1"
            )

    def trust_http_registry(self, address):
        """Lets the local node's containerd pull from a plain-HTTP registry (hosts.toml)."""
        d = os.path.join(CLUSTER_DIR, "certs.d", address)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "hosts.toml"), "w") as f:
            f.write(f'server = "http://{address}"\n\n[host."http://{address}"]\n  capabilities = ["pull", "resolve"]\n')


class PortForward:
    """`kubectl port-forward svc/<name>`: the Service, reachable from this machine on any cluster."""

    def __init__(self, cluster, namespace, service, port=5000):
        env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
        self.proc = subprocess.Popen([cluster.kubectl_bin, "-n", namespace, "port-forward", f"svc/{service}", f"0:{port}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 30
        self.address = None
        while time.monotonic() < deadline and self.address is None:
            line = self.proc.stdout.readline()
            m = re.search(r"127\.0\.0\.1:(\d+)", line or "")
            if m:
                self.address = f"127.0.0.1:{m.group(1)}"
            elif not line and self.proc.poll() is not None:
                break
        assert self.address, f"port-forward did not start: {self.proc.stderr.read() if self.proc.poll() is not None else ''}"

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def dockerconfigjson(registry, user, password):
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {registry: {"username": user, "password": password, "auth": auth}}}
    return base64.b64encode(json.dumps(config).encode()).decode()


def build_image(kind):
    """Builds one of e2e/images/build.sh's images into the cache; returns (name, archive)."""
    os.makedirs(os.path.join(CACHE, "images"), exist_ok=True)
    archive = os.path.join(CACHE, "images", f"{kind}.tar")
    name = run([os.path.join(REPO, "e2e", "images", "build.sh"), kind, archive], timeout=1800).stdout.strip()
    return name, archive
