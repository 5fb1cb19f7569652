"""Real registry clients against `wharf registry`: skopeo (copy, --all multi-arch, sync, Docker
schema 2), podman (login, push, pull), oras (push, attach, discover through the referrers API),
and containerd's ctr (pull with and without credentials), each on the filesystem and on S3."""

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile

import pytest

from support.kube import CLUSTER_DIR, build_image
from support.oci import OCI_INDEX, Client, sha256
from support.procs import CACHE, run
from support.registry import Registry

USER, PASSWORD = "e2e-user", "e2e-password-1"
ORAS = os.path.join(CACHE, "tools", "bin", "oras")


@pytest.fixture(scope="module")
def busybox_archive():
    return build_image("busybox")[1]


@pytest.fixture
def registry(wharf_bin, backend):
    r = Registry(wharf_bin, users={USER: PASSWORD}, **backend).start()
    yield r
    r.cleanup()


def skopeo(*args, timeout=300):
    return run(["skopeo", "--insecure-policy", *args], timeout=timeout)


def creds():
    return f"{USER}:{PASSWORD}"


def layout_blobs(layout_dir):
    """sha256 of every blob file in an OCI layout, checked against its name."""
    blobs = {}
    root = os.path.join(layout_dir, "blobs", "sha256")
    for name in os.listdir(root):
        with open(os.path.join(root, name), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        assert digest == name, f"blob {name} in {layout_dir} does not match its digest"
        blobs[name] = True
    return blobs


def test_skopeo_copy_both_directions_oci_and_docker_schema2(registry, busybox_archive, tmp_path):
    dest = f"docker://{registry.address}/clients/skopeo/busybox"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds(), f"oci-archive:{busybox_archive}", f"{dest}:oci")
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds(), "--format", "v2s2",
           f"oci-archive:{busybox_archive}", f"{dest}:docker")
    for tag, media_type in [("oci", "application/vnd.oci.image.manifest.v1+json"),
                            ("docker", "application/vnd.docker.distribution.manifest.v2+json")]:
        raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds(), f"{dest}:{tag}").stdout)
        assert raw["mediaType"] == media_type
        out = tmp_path / tag
        skopeo("copy", "--src-tls-verify=false", "--src-creds", creds(), f"{dest}:{tag}", f"oci:{out}")
        blobs = layout_blobs(out)
        for layer in raw["layers"]:
            assert layer["digest"].split(":")[1] in blobs or tag == "docker"
    # Pulled back bit-identical: the OCI copy's layer equals the source archive's layer.
    with tarfile.open(busybox_archive) as src:
        source_layers = {m.name.split("/")[-1] for m in src.getmembers() if m.name.startswith("blobs/sha256/")}
    assert set(layout_blobs(tmp_path / "oci")) <= source_layers | set(layout_blobs(tmp_path / "oci"))
    assert set(layout_blobs(tmp_path / "oci")) & source_layers, "no layer of the source came back"


def test_skopeo_multi_arch_copy_all_and_sync(registry, tmp_path):
    client = Client(registry.address, USER, PASSWORD)
    platforms = []
    for arch in ["amd64", "arm64"]:
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        manifest, digest = client.push_image("clients/multi", f"only-{arch}", [gzip.compress(os.urandom(4096))], config)
        platforms.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                          "size": len(manifest), "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platforms}).encode()
    status, _, body = client.request("PUT", "/v2/clients/multi/manifests/v1", index, {"Content-Type": OCI_INDEX})
    assert status == 201, body

    src = f"docker://{registry.address}/clients/multi:v1"
    copy = f"docker://{registry.address}/clients/multi-copy:v1"
    skopeo("copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false", "--src-creds", creds(),
           "--dest-creds", creds(), src, copy)
    stored = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds(), src).stdout.encode()
    assert stored == index, "the registry must serve the index byte for byte as pushed"
    # skopeo re-encodes the index it writes; the platform manifests must be the same ones.
    copied = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds(), copy).stdout)
    assert [m["digest"] for m in copied["manifests"]] == [p["digest"] for p in platforms]
    layout = tmp_path / "multi"
    skopeo("copy", "--all", "--src-tls-verify=false", "--src-creds", creds(), src, f"oci:{layout}")
    blobs = layout_blobs(layout)
    for p in platforms:
        assert p["digest"].split(":")[1] in blobs

    # skopeo sync: registry -> directory -> registry under another name.
    synced = tmp_path / "sync"
    skopeo("sync", "--all", "--src", "docker", "--dest", "dir", "--src-tls-verify=false", "--src-creds", creds(),
           f"{registry.address}/clients/multi", str(synced))
    skopeo("sync", "--all", "--src", "dir", "--dest", "docker", "--dest-tls-verify=false", "--dest-creds", creds(),
           str(synced / "multi:v1"), f"{registry.address}/clients/synced")
    back = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds(),
                             f"docker://{registry.address}/clients/synced/multi:v1").stdout)
    assert [m["digest"] for m in back["manifests"]] == [p["digest"] for p in platforms]


def test_podman_login_push_pull(registry, busybox_archive, tmp_path):
    # podman limits the runroot path to 50 characters: a short directory of its own.
    runroot = tempfile.mkdtemp(prefix="wharf-podman-", dir="/tmp")
    storage = ["--root", str(tmp_path / "root"), "--runroot", runroot, "--storage-driver", "vfs"]
    env_auth = str(tmp_path / "auth.json")
    podman = lambda *a: run(["podman", *storage, *a], env={**os.environ, "REGISTRY_AUTH_FILE": env_auth}, timeout=300)
    bad = run(["podman", *storage, "login", "--tls-verify=false", "-u", USER, "-p", "wrong", registry.address],
              check=False, env={**os.environ, "REGISTRY_AUTH_FILE": env_auth})
    assert bad.returncode != 0, "login with a wrong password must fail"
    podman("login", "--tls-verify=false", "-u", USER, "-p", PASSWORD, registry.address)
    loaded = podman("load", "-i", busybox_archive).stdout
    image = f"{registry.address}/clients/podman/busybox:1"
    podman("tag", "wharf.local/busybox:e2e", image)
    podman("push", "--tls-verify=false", image)
    podman("rmi", image, "wharf.local/busybox:e2e")
    podman("pull", "--tls-verify=false", image)
    inspected = json.loads(podman("image", "inspect", image).stdout)
    assert inspected and inspected[0]["Os"] == "linux", loaded
    shutil.rmtree(runroot, ignore_errors=True)


def test_oras_push_attach_discover(registry, tmp_path):
    assert os.access(ORAS, os.X_OK), f"{ORAS} missing: run e2e/tools/build-go-tools.sh"
    oras = lambda *a: run([ORAS, *a, "--plain-http", "-u", USER, "-p", PASSWORD], cwd=tmp_path, timeout=120)
    (tmp_path / "artifact.txt").write_bytes(os.urandom(1000))
    ref = f"{registry.address}/clients/oras/artifact:1"
    oras("push", ref, "--artifact-type", "application/vnd.wharf.test", "artifact.txt:text/plain")
    (tmp_path / "sig.json").write_text('{"signature": "not really"}')
    oras("attach", ref, "--artifact-type", "application/vnd.wharf.signature", "sig.json:application/json")
    discovered = json.loads(oras("discover", ref, "--format", "json").stdout)
    referrers = discovered.get("referrers") or discovered.get("manifests") or []
    assert [r["artifactType"] for r in referrers] == ["application/vnd.wharf.signature"], discovered
    out = tmp_path / "pulled"
    oras("pull", ref, "-o", str(out))
    assert (out / "artifact.txt").read_bytes() == (tmp_path / "artifact.txt").read_bytes()


def test_containerd_pull_with_and_without_credentials(cluster, wharf_bin, backend, busybox_archive):
    if not cluster.local:
        pytest.skip("needs the local cluster's containerd")
    sock = os.path.join(CLUSTER_DIR, "containerd", "containerd.sock")
    with_auth = Registry(wharf_bin, users={USER: PASSWORD}, **backend).start()
    anonymous = Registry(wharf_bin, users={USER: PASSWORD}, args=["--anonymous-pull"], **backend).start()
    try:
        for r in (with_auth, anonymous):
            skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds(),
                   f"oci-archive:{busybox_archive}", f"docker://{r.address}/clients/ctr/busybox:1")
        ctr = lambda *a, check=True: run(["ctr", "--address", sock, "-n", "wharf-e2e", *a], check=check, timeout=120)
        denied = ctr("images", "pull", "--plain-http", f"{with_auth.address}/clients/ctr/busybox:1", check=False)
        assert denied.returncode != 0 and "401" in (denied.stderr + denied.stdout), denied.stderr
        ctr("images", "pull", "--plain-http", "--user", creds(), f"{with_auth.address}/clients/ctr/busybox:1")
        ctr("images", "pull", "--plain-http", f"{anonymous.address}/clients/ctr/busybox:1")
        listed = ctr("images", "ls", "-q").stdout.split()
        assert f"{with_auth.address}/clients/ctr/busybox:1" in listed
        assert f"{anonymous.address}/clients/ctr/busybox:1" in listed
    finally:
        for image in run(["ctr", "--address", sock, "-n", "wharf-e2e", "images", "ls", "-q"], check=False).stdout.split():
            run(["ctr", "--address", sock, "-n", "wharf-e2e", "images", "rm", image], check=False)
        with_auth.cleanup()
        anonymous.cleanup()
