"""The OCI distribution-spec conformance suite, every workflow and every optional API on,
against a fresh `wharf registry` on each storage backend (filesystem, S3): all Pass, no Skip, no
Disabled, no Fail."""

import os
import xml.etree.ElementTree as ET

from support.procs import CACHE, run
from support.registry import Registry

CONFORMANCE = os.path.join(CACHE, "tools", "bin", "conformance.test")


def test_oci_distribution_spec_conformance(wharf_bin, backend, tmp_path):
    assert os.access(CONFORMANCE, os.X_OK), f"{CONFORMANCE} missing: run e2e/tools/build-go-tools.sh"
    registry = Registry(wharf_bin, args=["--allow-sparse-manifests"], **backend).start()
    results = tmp_path / "results"
    env = {
        **os.environ,
        "OCI_REGISTRY": registry.address,
        "OCI_TLS": "disabled",
        "OCI_VERSION": "dev",
        "OCI_RESULTS_DIR": str(results),
        "OCI_REPO1": "conformance/repo1",
        "OCI_REPO2": "conformance/deeper/repo2",
        "OCI_LOG": "warn",
        "OCI_API_PULL": "true",
        "OCI_API_PUSH": "true",
        "OCI_API_BLOBS_ATOMIC": "true",
        "OCI_API_BLOBS_DELETE": "true",
        "OCI_API_BLOBS_DIGEST_HEADER": "true",
        "OCI_API_BLOBS_MOUNT_ANONYMOUS": "true",
        "OCI_API_BLOBS_UPLOAD_CANCEL": "true",
        "OCI_API_MANIFESTS_ATOMIC": "true",
        "OCI_API_MANIFESTS_DELETE": "true",
        "OCI_API_MANIFESTS_DIGEST_HEADER": "true",
        "OCI_API_MANIFESTS_TAG_PARAM": "true",
        "OCI_API_TAGS_ATOMIC": "true",
        "OCI_API_TAGS_DELETE": "true",
        "OCI_API_TAGS_LIST": "true",
        "OCI_API_REFERRER": "true",
        "OCI_DATA_SPARSE": "true",
        "OCI_DATA_SHA512": "true",
    }
    try:
        proc = run([CONFORMANCE], check=False, cwd=tmp_path, env=env, timeout=900)
    finally:
        registry.stop()
    junit = results / "junit.xml"
    # A configuration error makes the suite exit 0 without a report: its absence is a failure.
    assert junit.exists(), f"no junit.xml (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    cases = ET.parse(junit).getroot().iter("testcase")
    outcomes = {}
    failed = []
    for case in cases:
        status = case.get("status") or ("failure" if case.find("failure") is not None else "passed")
        if case.find("skipped") is not None:
            status = "skipped"
        outcomes[status] = outcomes.get(status, 0) + 1
        if status != "passed":
            detail = case.find("failure") if case.find("failure") is not None else case.find("skipped")
            failed.append(f"{case.get('classname')} / {case.get('name')}: {status} {detail.get('message') if detail is not None else ''}")
    suites = list(ET.parse(junit).getroot().iter("testsuite"))
    disabled = sum(int(s.get("disabled", 0)) for s in suites)
    print(f"conformance: {outcomes}, disabled={disabled}")
    assert outcomes.get("passed", 0) > 50, outcomes
    assert not failed, "\n".join(failed[:40]) + f"\nregistry log:\n{registry.logs()[-3000:]}"
    assert disabled == 0, f"{disabled} disabled"
    assert proc.returncode == 0, proc.stdout[-3000:]
