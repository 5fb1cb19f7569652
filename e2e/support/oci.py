"""A minimal OCI Distribution client over raw HTTP/1.1, for tests that need exact control of
requests (error paths, crash tests): no normalisation of paths, no retries."""

import base64
import hashlib
import http.client
import json
import os

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Client:
    def __init__(self, address, user=None, password=None, timeout=30):
        host, port = address.rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        self.auth = None
        if user is not None:
            self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.conn = None

    def _connection(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def request(self, method, path, body=None, headers=None):
        """Returns (status, headers dict with lowercase keys, body bytes)."""
        headers = dict(headers or {})
        if self.auth and "Authorization" not in headers:
            headers["Authorization"] = self.auth
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 1:
                    raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def push_blob(self, repo, data, digest=None):
        digest = digest or sha256(data)
        if len(data) > 1 << 20:
            # A large body goes in the session's PUT: Distribution answers a POST that carries one
            # with 202 before reading it, and the unread rest of the body breaks the connection.
            status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        else:
            status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data,
                                                 {"Content-Type": "application/octet-stream"})
        if status == 202:
            # A registry without single-request uploads (Distribution) opened a session instead.
            location = headers["location"]
            if "://" in location:
                location = "/" + location.split("://", 1)[1].split("/", 1)[1]
            separator = "&" if "?" in location else "?"
            status, headers, body = self.request("PUT", f"{location}{separator}digest={digest}", data,
                                                 {"Content-Type": "application/octet-stream"})
        return status, headers, body

    def push_image(self, repo, tag, layers, config=None):
        """Pushes config and layers, then the manifest by tag; returns (manifest bytes, digest)."""
        config = config or json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        for blob in [config, *layers]:
            status, _, body = self.push_blob(repo, blob)
            assert status == 201, (status, body)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256(l), "size": len(l)} for l in layers],
        }).encode()
        status, headers, body = self.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
        assert status == 201, (status, body)
        return manifest, headers["docker-content-digest"]


def answers(address, *statuses):
    """Whether the registry at `address` answers `GET /v2/` with one of `statuses` (a Service's
    cluster IP answers only once kube-proxy has caught up)."""
    probe = Client(address, timeout=2)
    try:
        return probe.request("GET", "/v2/")[0] in statuses
    except OSError:
        return False
    finally:
        probe.close()


def error_code(body):
    return json.loads(body)["errors"][0]["code"]


def storage_snapshot(root, parts=("blobs", "repositories")):
    """Every file under the given parts of a filesystem store, with its size."""
    snapshot = {}
    for part in parts:
        base = os.path.join(root, part)
        for dirpath, _, files in os.walk(base):
            for f in files:
                p = os.path.join(dirpath, f)
                snapshot[os.path.relpath(p, root)] = os.path.getsize(p)
    return snapshot


def push_signature(client, repo, subject_digest, subject_bytes):
    """Pushes a cosign-style signature referrer of `subject_digest`; returns its digest."""
    config = b"{}"
    assert client.push_blob(repo, config)[0] == 201
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(config), "size": len(config)}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_bytes)},
    }).encode()
    digest = sha256(manifest)
    status, _, body = client.request("PUT", f"/v2/{repo}/manifests/{digest}", manifest, {"Content-Type": OCI_MANIFEST})
    assert status == 201, body
    return digest
