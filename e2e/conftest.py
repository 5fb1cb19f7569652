"""Shared fixtures: the wharf binary and image, the cluster (KUBECONFIG's, or a local one this run
starts and stops), namespaces. `--fail-on-skip` (or WHARF_FAIL_ON_SKIP=1, which CI sets) turns
every skip into a failure, so a missing prerequisite can never pass silently."""

import os
import subprocess
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support.kube import CLUSTER_DIR, Cluster, build_image  # noqa: E402
from support.procs import REPO, run  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--fail-on-skip",
        action="store_true",
        default=os.environ.get("WHARF_FAIL_ON_SKIP") == "1",
        help="report skipped tests as failures",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "last: run after every other test (cluster teardown checks)")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.config.getoption("--fail-on-skip"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and skips fail this run (--fail-on-skip): {reason}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One real S3 server (versitygw) for the session; tests use their own key prefixes."""
    from support.s3 import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture(params=["filesystem", "s3"])
def backend(request):
    """The storage a registry test runs on: {"s3": S3Server or None}, as Registry(**backend)."""
    if request.param == "s3":
        return {"s3": request.getfixturevalue("s3_server")}
    return {}


@pytest.fixture(scope="session")
def wharf_bin():
    """The debug build of wharf (cargo test has built most of it already)."""
    run(["cargo", "build", "--locked", "-q"], cwd=REPO, timeout=3600)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    path = os.path.join(target, "debug", "wharf")
    assert os.access(path, os.X_OK), f"cargo build did not produce {path}"
    return path


def _reachable(kubeconfig):
    try:
        p = subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"],
            capture_output=True, timeout=15,
        )
        return p.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def cluster():
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig and _reachable(kubeconfig):
        yield Cluster(kubeconfig, local=False)
        return
    up = subprocess.run([os.path.join(REPO, "e2e", "cluster", "up.sh")], capture_output=True, text=True, timeout=3600)
    if up.returncode != 0:
        pytest.fail(f"the local cluster did not start (e2e/cluster/up.sh exited {up.returncode}):\n{up.stderr[-6000:]}")
    c = Cluster(os.path.join(CLUSTER_DIR, "kubeconfig"), local=True)
    yield c
    if os.environ.get("WHARF_KEEP_CLUSTER") != "1" and os.path.isdir(CLUSTER_DIR):
        subprocess.run([os.path.join(REPO, "e2e", "cluster", "down.sh")], capture_output=True, timeout=600)


@pytest.fixture(scope="session")
def wharf_image(cluster):
    name, archive = build_image("wharf")
    cluster.load_image(archive)
    return name


@pytest.fixture(scope="session")
def busybox_image(cluster):
    name, archive = build_image("busybox")
    cluster.load_image(archive)
    return name, archive


@pytest.fixture
def namespace(cluster):
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
