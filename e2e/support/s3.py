"""A real S3-compatible server for a test session (e2e/tools/s3-server.sh: versitygw built from
its Go module), and the registry configuration that stores into it. Each test gets its own key
prefix in one bucket, so tests share the server without seeing each other's objects."""

import os
import uuid

from .procs import REPO, free_port, run

SCRIPT = os.path.join(REPO, "e2e", "tools", "s3-server.sh")
BUCKET = "wharf-tests"


def _clean_env():
    """The environment without the machine's own AWS_* settings (it sets AWS_CA_BUNDLE, for one):
    the server and every client in a test get exactly the S3 settings the test gives them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


class S3Server:
    def __init__(self, data_dir, port=None):
        self.data_dir = str(data_dir)
        self.port = port or free_port()
        self.endpoint = self.access_key = self.secret_key = None

    def start(self, buckets=(BUCKET,)):
        out = run([SCRIPT, "start", self.data_dir, str(self.port), *buckets], env=_clean_env(), timeout=1800).stdout
        fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.endpoint = fields["endpoint"]
        self.access_key = fields["access_key"]
        self.secret_key = fields["secret_key"]
        return self

    def stop(self):
        run([SCRIPT, "stop", self.data_dir], check=False, env=_clean_env())

    def env(self, access_key=None, secret_key=None):
        """What a wharf registry (or any S3 client) needs to reach this server."""
        return {
            **_clean_env(),
            "AWS_ACCESS_KEY_ID": access_key or self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def config(self, prefix=None, bucket=BUCKET, endpoint=None, redirect=False):
        """The `storage.s3` block of a registry config (YAML flow style)."""
        prefix = prefix or f"t-{uuid.uuid4().hex[:12]}"
        return (
            "storage:\n"
            f"  s3: {{bucket: {bucket}, prefix: {prefix}, endpoint: \"{endpoint or self.endpoint}\", "
            f"pathStyle: true, region: us-east-1, redirect: {str(redirect).lower()}}}\n"
        )

    def objects_under(self, prefix, bucket=BUCKET):
        """Relative paths of the objects stored under `prefix` (the posix backend keeps them as
        files), for tests and benchmarks that look at what is stored."""
        root = os.path.join(self.data_dir, "objects", bucket, prefix)
        found = []
        for dirpath, _, files in os.walk(root):
            for name in files:
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
        return sorted(found)
