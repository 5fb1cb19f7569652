"""A `wharf registry` process for a test: its own storage, port, optional auth and TLS."""

import os
import shutil
import signal
import subprocess
import tempfile

from .procs import free_port, run, wait_http


def write_htpasswd(path, users):
    """bcrypt entries made by Apache's own htpasswd tool (apache2-utils)."""
    lines = [run(["htpasswd", "-nbB", "-C", "5", user, password]).stdout.strip() for user, password in users.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class Registry:
    def __init__(self, binary, host="127.0.0.1", port=None, storage=None, users=None, args=(), env=None, tls=None,
                 s3=None, s3_prefix=None, config=""):
        self.binary = binary
        self.host = host
        self.port = port or free_port(host if host != "0.0.0.0" else "127.0.0.1")
        self.tmp = tempfile.mkdtemp(prefix="wharf-registry-")
        self.storage = storage or os.path.join(self.tmp, "data")
        self.users = users or {}
        self.extra_args = list(args)
        self.tls = tls  # (cert, key) PEM paths: serve HTTPS
        self.env = env or {}
        # S3 storage: an S3Server (support/s3.py) and the key prefix in its bucket. Several
        # registries with the same prefix are replicas of one registry.
        self.s3 = s3
        self.s3_prefix = s3_prefix or (f"r-{os.urandom(6).hex()}" if s3 else None)
        self.config_text = config
        self.proc = None
        self.log_path = os.path.join(self.tmp, "registry.log")

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    @property
    def layout_root(self):
        """Where the storage layout (blobs/, repositories/, uploads/) is on disk: the storage
        directory, or the registry's prefix in the S3 server's bucket (kept as plain files)."""
        if self.s3:
            from .s3 import BUCKET
            return os.path.join(self.s3.data_dir, "objects", BUCKET, self.s3_prefix)
        return self.storage

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def start(self):
        args = [self.binary, "registry", "--storage", self.storage, "--listen", self.address, *self.extra_args]
        config = self.config_text
        base_env = os.environ
        if self.s3:
            config = self.s3.config(prefix=self.s3_prefix) + config
            base_env = self.s3.env()
        if config:
            path = os.path.join(self.tmp, "config.yaml")
            with open(path, "w") as f:
                f.write(config)
            args += ["--config", path]
        if self.users:
            path = os.path.join(self.tmp, "htpasswd")
            write_htpasswd(path, self.users)
            args += ["--htpasswd", path]
        if self.tls:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        env = {**base_env, "WHARF_LOG": "info", **self.env}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_http(f"{self.url}/healthz", cafile=self.tls[0] if self.tls else None)
        except AssertionError:
            self.stop()
            raise AssertionError(f"wharf registry did not start: {self.logs()}")
        return self

    def kill(self):
        """SIGKILL: the crash the storage must survive."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()

    def logs(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
