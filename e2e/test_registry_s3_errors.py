"""S3 specifics: a small blob pushed whole is one write to its key, and one with the wrong digest
stores nothing; `redirect: true` hands blob downloads to the bucket with presigned URLs; bad S3
settings and an S3 server that goes away: the registry refuses to start with a message
that says what is wrong (missing bucket, wrong keys, an endpoint that does not answer), and while
running answers 503 with an OCI error body instead of hanging; when the server is back, everything
pushed before is still there."""

import json
import os
import subprocess
import time
import urllib.request

from support.oci import OCI_MANIFEST, Client, error_code, sha256
from support.procs import free_port
from support.s3 import BUCKET, S3Server


def start_fails(wharf_bin, server, config, env, within=30):
    path = os.path.join(server.data_dir, f"config-{os.urandom(3).hex()}.yaml")
    with open(path, "w") as f:
        f.write(config)
    started = time.monotonic()
    p = subprocess.run([wharf_bin, "registry", "--config", path, "--listen", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, timeout=within + 30, env=env)
    elapsed = time.monotonic() - started
    assert p.returncode != 0, f"the registry started with {config!r}"
    assert elapsed < within, f"took {elapsed:.1f}s to give up"
    return p.stderr.strip().splitlines()[-1]


def test_bad_settings_stop_the_registry_at_start_with_the_reason(wharf_bin, tmp_path):
    server = S3Server(tmp_path / "s3").start()
    try:
        said = start_fails(wharf_bin, server, server.config(bucket="no-such-bucket"), server.env())
        assert "bucket \"no-such-bucket\" is not usable: the bucket does not exist" in said, said
        said = start_fails(wharf_bin, server, server.config(), server.env(secret_key="not-the-secret"))
        assert "the secret access key is wrong" in said, said
        assert "not-the-secret" not in said
        said = start_fails(wharf_bin, server, server.config(), server.env(access_key="NOBODY"))
        assert "access key" in said.lower(), said
        down = f"http://127.0.0.1:{free_port()}"
        said = start_fails(wharf_bin, server, server.config(endpoint=down), server.env())
        assert "does not answer" in said, said
    finally:
        server.stop()


def test_a_vanished_server_gives_503_and_loses_nothing(wharf_bin, tmp_path):
    from support.registry import Registry

    server = S3Server(tmp_path / "s3").start()
    registry = Registry(wharf_bin, s3=server).start()
    try:
        c = Client(registry.address, timeout=60)
        manifest, digest = c.push_image("outage/app", "v1", [os.urandom(100_000)])
        server.stop()
        for method, path, body in (("GET", "/v2/outage/app/manifests/v1", None),
                                   ("POST", "/v2/outage/app/blobs/uploads/", None),
                                   ("GET", "/v2/outage/app/tags/list", None)):
            started = time.monotonic()
            status, _, answer = c.request(method, path, body, {"Accept": OCI_MANIFEST})
            elapsed = time.monotonic() - started
            assert status == 503, (method, path, status, answer)
            assert json.loads(answer)["errors"][0]["code"] == "UNAVAILABLE", answer
            assert elapsed < 30, f"{method} {path} took {elapsed:.1f}s to fail"
        status, _, _ = c.request("GET", "/readyz")
        assert status == 503, "a registry whose storage is gone must not be ready"
        server.start()  # same data directory, same port, same keys
        status, headers, body = c.request("GET", "/v2/outage/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert status == 200 and body == manifest and headers["docker-content-digest"] == digest
        for layer in json.loads(manifest)["layers"]:
            assert c.request("GET", f"/v2/outage/app/blobs/{layer['digest']}")[0] == 200
        assert c.request("GET", "/readyz")[0] == 200
        assert os.path.isdir(os.path.join(server.data_dir, "objects", BUCKET))
    finally:
        registry.cleanup()
        server.stop()


def test_redirect_hands_blob_downloads_to_the_bucket(wharf_bin, s3_server, tmp_path):
    from support.registry import Registry

    prefix = f"redirect-{os.urandom(4).hex()}"
    config = tmp_path / "redirect.yaml"
    config.write_text(s3_server.config(prefix=prefix, redirect=True))
    registry = Registry(wharf_bin, users={"admin": "redirect-pw"}, env=s3_server.env(),
                        args=["--config", str(config)]).start()
    try:
        c = Client(registry.address, "admin", "redirect-pw")
        layer = os.urandom(300_000)
        manifest, _ = c.push_image("redirect/app", "v1", [layer])
        digest = json.loads(manifest)["layers"][0]["digest"]
        status, headers, _ = c.request("GET", f"/v2/redirect/app/blobs/{digest}")
        assert status == 307, status
        location = headers["location"]
        assert location.startswith(s3_server.endpoint) and "X-Amz-Signature=" in location, location
        with urllib.request.urlopen(location, timeout=30) as r:
            assert r.read() == layer, "the presigned URL serves other bytes"
        # Still only for clients the registry lets read: no credentials, no redirect.
        assert Client(registry.address).request("GET", f"/v2/redirect/app/blobs/{digest}")[0] == 401
        # Manifests and HEAD stay with the registry.
        assert c.request("HEAD", f"/v2/redirect/app/blobs/{digest}")[0] == 200
        assert c.request("GET", "/v2/redirect/app/manifests/v1", headers={"Accept": OCI_MANIFEST})[2] == manifest
    finally:
        registry.cleanup()


def test_whole_blobs_are_one_write_and_a_wrong_digest_stores_nothing(wharf_bin, s3_server):
    from support.registry import Registry

    registry = Registry(wharf_bin, s3=s3_server).start()
    stored = lambda part: [p for p in s3_server.objects_under(registry.s3_prefix) if p.startswith(part)]  # noqa: E731
    try:
        c = Client(registry.address, timeout=60)
        small = os.urandom(4096)
        wrong = sha256(b"other bytes")
        octets = {"Content-Type": "application/octet-stream"}
        status, _, body = c.request("POST", f"/v2/whole/app/blobs/uploads/?digest={wrong}", small, octets)
        assert (status, error_code(body)) == (400, "DIGEST_INVALID"), (status, body)
        status, headers, _ = c.request("POST", "/v2/whole/app/blobs/uploads/")
        assert status == 202
        location = headers["location"]
        status, _, body = c.request("PUT", f"{location}?digest={wrong}", small, octets)
        assert (status, error_code(body)) == (400, "DIGEST_INVALID"), (status, body)
        assert c.request("GET", location)[0] == 404, "the failed upload is still open"
        assert stored("blobs/") == [] and stored("uploads/") == [], s3_server.objects_under(registry.s3_prefix)

        # Whole in the POST, whole in the PUT, and one beyond a single write (segment and copy).
        pushed = []
        for data, in_post in ((small, True), (os.urandom(5000), False), (os.urandom(9 << 20), False)):
            digest = sha256(data)
            if in_post:
                status, headers, body = c.request("POST", f"/v2/whole/app/blobs/uploads/?digest={digest}", data, octets)
            else:
                location = c.request("POST", "/v2/whole/app/blobs/uploads/")[1]["location"]
                status, headers, body = c.request("PUT", f"{location}?digest={digest}", data, octets)
            assert status == 201 and headers["docker-content-digest"] == digest, (status, body)
            status, _, read = c.request("GET", f"/v2/whole/app/blobs/{digest}")
            assert status == 200 and read == data
            pushed.append(f"blobs/sha256/{digest[7:9]}/{digest[7:]}")
        assert stored("blobs/") == sorted(pushed)
        assert stored("uploads/") == [], "a finished upload left its state or segments behind"
    finally:
        registry.cleanup()
