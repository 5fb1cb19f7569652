"""What a Registry says when it cannot become Ready, on the real cluster: the cause, in the words of
the object that knows it (a claim whose StorageClass does not exist, an image that cannot be
pulled, a container that keeps crashing with its last log line, a pod no node takes), `Stalled`
as soon as it cannot progress by itself, and within seconds, as fast as a missing Secret. A
RetentionPolicy whose Registry does not exist stalls the same way."""

import time

from support.operator import condition, module_namespace, operator_fixture

operator = operator_fixture("retentionpolicies")


namespace = module_namespace("e2e-status")


def registry(name, **spec):
    spec.setdefault("storage", {"emptyDir": {}})
    spec.setdefault("resources", {"requests": {"cpu": "10m", "memory": "32Mi"}})
    return {"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": name}, "spec": spec}


def stalled_with(cluster, kind, name, namespace, reason, timeout=60):
    """Applies nothing; waits for Stalled=True with `reason`; returns (conditions by type, seconds)."""
    started = time.monotonic()

    def stalled():
        obj = cluster.get(kind, name, namespace)
        c = condition(obj, "Stalled")
        if c and c["status"] == "True" and c["reason"] == reason and \
                obj["status"].get("observedGeneration") == obj["metadata"]["generation"]:
            return {t: condition(obj, t) for t in ("Ready", "Reconciling", "Stalled")}
        return None
    try:
        conditions = cluster.wait_until(f"{kind} {name} to stall with {reason}", stalled, timeout=timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"{kind} {name} did not stall with {reason}: {(cluster.get(kind, name, namespace) or {}).get('status')}")
    return conditions, time.monotonic() - started


def assert_stalled(conditions, reason, *parts):
    ready, reconciling, stalled = conditions["Ready"], conditions["Reconciling"], conditions["Stalled"]
    assert ready["status"] == "False" and ready["reason"] == reason, ready
    assert reconciling["status"] == "False", reconciling
    for part in parts:
        assert part in stalled["message"], (part, stalled["message"])
        assert part in ready["message"], (part, ready["message"])


def test_a_missing_secret_stalls_and_the_time_it_takes_is_the_baseline(cluster, namespace):
    cluster.apply(registry("secretless", auth={"htpasswdSecretRef": {"name": "nobody-made-this"}}), namespace)
    conditions, seconds = stalled_with(cluster, "registry", "secretless", namespace, "SecretNotFound")
    assert_stalled(conditions, "SecretNotFound", "nobody-made-this")
    print(f"\nmissing Secret -> Stalled: {seconds:.2f}s")


def test_a_volume_claim_that_cannot_bind_names_the_claim_and_the_storage_class(cluster, namespace):
    cluster.apply(registry("unbound", storage={"persistentVolume": {"size": "1Gi", "storageClassName": "no-such-class",
                                                                     "deletionPolicy": "Delete"}}), namespace)
    conditions, seconds = stalled_with(cluster, "registry", "unbound", namespace, "VolumeClaimPending")
    assert_stalled(conditions, "VolumeClaimPending", "data-unbound-0", "StorageClass no-such-class does not exist")
    print(f"\nmissing StorageClass -> Stalled: {seconds:.2f}s")
    # The provisioner's own words arrive a moment later and are quoted.
    def quoted():
        c = condition(cluster.get("registry", "unbound", namespace), "Stalled")
        return "ProvisioningFailed" in c["message"] and c
    c = cluster.wait_until("the provisioner's event in the message", quoted, timeout=30)
    assert "no-such-class" in c["message"]
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             "involvedObject.kind=Registry,involvedObject.name=unbound", "-o",
                             "jsonpath={range .items[*]}{.reason}{'\\n'}{end}").stdout.split()
    assert "VolumeClaimPending" in events, events


def test_an_image_that_cannot_be_pulled_stalls_with_the_image(cluster, namespace):
    # Nothing listens on port 1 of the loopback address: the pull fails at once.
    cluster.apply(registry("unpullable", image={"repository": "127.0.0.1:1/wharf/none", "tag": "1"}), namespace)
    conditions, seconds = stalled_with(cluster, "registry", "unpullable", namespace, "ImagePullFailed", timeout=90)
    assert_stalled(conditions, "ImagePullFailed", "127.0.0.1:1/wharf/none:1")
    print(f"\nimage pull error -> Stalled: {seconds:.2f}s")


def test_a_crashing_registry_stalls_with_its_last_log_line(cluster, namespace):
    # A serving certificate that is not one: the registry refuses to start, every time.
    cluster.kubectl("create", "secret", "generic", "broken-tls", "-n", namespace,
                    "--from-literal=tls.crt=not a certificate", "--from-literal=tls.key=not a key")
    cluster.apply(registry("crashing", tls={"secretRef": {"name": "broken-tls"}}), namespace)
    conditions, seconds = stalled_with(cluster, "registry", "crashing", namespace, "CrashLoopBackOff", timeout=120)
    message = conditions["Stalled"]["message"]
    assert_stalled(conditions, "CrashLoopBackOff", "keeps crashing")
    pod = cluster.kubectl("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/instance=crashing", "-o",
                          "jsonpath={.items[0].status.containerStatuses[0].lastState.terminated.message}").stdout
    last = [line for line in pod.splitlines() if line.strip()][-1]
    assert "certificate" in message.lower() or "tls" in message.lower(), message
    assert ": " in message and message.split(": ", 1)[1], f"the last log line ({last!r}) is quoted: {message}"
    print(f"\ncrash loop -> Stalled: {seconds:.2f}s ({message})")


def test_a_pod_no_node_takes_stalls_with_the_schedulers_message(cluster, namespace):
    cluster.apply(registry("huge", resources={"requests": {"cpu": "500", "memory": "32Mi"}}), namespace)
    conditions, seconds = stalled_with(cluster, "registry", "huge", namespace, "Unschedulable")
    assert_stalled(conditions, "Unschedulable", "Insufficient cpu")
    print(f"\nunschedulable -> Stalled: {seconds:.2f}s")


def test_a_retention_policy_without_its_registry_stalls(cluster, namespace):
    cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "orphan"},
                   "spec": {"registryRef": {"name": "not-here"}, "keep": [{"tags": ["v*"]}]}}, namespace)
    conditions, _ = stalled_with(cluster, "retentionpolicy", "orphan", namespace, "RegistryNotFound")
    assert_stalled(conditions, "RegistryNotFound", "not-here")
    cluster.kubectl("delete", "retentionpolicy", "orphan", "-n", namespace, "--wait=true", "--timeout=60s")
