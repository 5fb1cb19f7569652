"""The reference CNCF Distribution registry (`docker-registry`, a Debian package `make deps`
installs) as a process for a test: its own storage and port, deletes enabled, no auth."""

import shutil
import subprocess

from .procs import free_port, wait_http

CONFIG = """version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: "127.0.0.1:%d", secret: wharf-e2e}
"""


class Distribution:
    def __init__(self, directory):
        if shutil.which("docker-registry") is None:
            raise AssertionError("docker-registry is missing: run `make deps` (Debian package docker-registry)")
        self.directory = directory
        self.storage = directory / "storage"
        self.port = free_port()
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"http://{self.address}"

    def start(self):
        (self.directory / "config.yml").write_text(CONFIG % (self.storage, self.port))
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.directory / "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.directory / "registry.log", "wb"))
        wait_http(f"{self.url}/v2/", timeout=20)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
