"""Token authentication, robot accounts and scoped permissions on a real `wharf registry`, with
real clients (skopeo, podman, crane, oras, containerd) and raw HTTP for the refusals: a pull-only
credential cannot push or delete, `team-a/**` cannot read `team-b`, expired, revoked, rotated-out
credentials and forged, expired or wrongly-signed tokens are refused, the catalog is filtered,
and no secret ever reaches the log."""

import base64
import hashlib
import hmac
import json
import os
import shutil
import tempfile
import time
import urllib.parse

import pytest

from support.kube import CLUSTER_DIR, build_image
from support.oci import Client
from support.procs import CACHE, run
from support.registry import Registry

ADMIN, ADMIN_PASSWORD = "admin", "admin-password-1"
CI, CI_PASSWORD = "ci", "ci-password-1"
SIGNING_KEY = "0123456789abcdef0123456789abcdef-e2e-key"
SERVICE = "wharf-e2e"
TOOLS = os.path.join(CACHE, "tools", "bin")


@pytest.fixture(scope="module")
def busybox_archive():
    return build_image("busybox")[1]


@pytest.fixture(scope="module")
def registry(wharf_bin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    key = tmp / "signing-key"
    key.write_text(SIGNING_KEY)
    config = tmp / "config.yaml"
    config.write_text(json.dumps({
        "auth": {
            "token": {"enabled": True, "service": SERVICE, "keyFile": str(key), "lifetime": "60s"},
            "access": [{"users": [CI], "repositories": ["team-a/**"], "actions": ["pull", "push"]}],
        },
    }))
    r = Registry(wharf_bin, users={ADMIN: ADMIN_PASSWORD, CI: CI_PASSWORD},
                 args=["--config", str(config)], env={"WHARF_LOG": "info"}).start()
    yield r
    r.cleanup()


def admin_call(registry, method, path, body=None):
    c = Client(registry.address, ADMIN, ADMIN_PASSWORD)
    try:
        data = json.dumps(body).encode() if body is not None else None
        status, _, raw = c.request(method, path, data, {"Content-Type": "application/json"} if data else None)
        return status, (json.loads(raw) if raw else None)
    finally:
        c.close()


def make_robot(registry, name, repositories, actions, expires_in=None):
    admin_call(registry, "DELETE", f"/admin/v1/robots/{name}")
    body = {"name": name, "permissions": [{"repositories": repositories, "actions": actions}]}
    if expires_in:
        body["expiresIn"] = expires_in
    status, robot = admin_call(registry, "POST", "/admin/v1/robots", body)
    assert status == 201, robot
    return robot["username"], robot["secret"]


def token(registry, user, password, *scopes, offline=False):
    query = urllib.parse.urlencode([("service", SERVICE), *[("scope", s) for s in scopes]]
                                   + ([("offline_token", "true")] if offline else []))
    c = Client(registry.address, user, password)
    try:
        status, _, body = c.request("GET", f"/auth/token?{query}")
    finally:
        c.close()
    return status, (json.loads(body) if body else None)


def bearer(registry, method, path, tok, body=None, headers=None):
    c = Client(registry.address)
    try:
        return c.request(method, path, body, {"Authorization": f"Bearer {tok}", **(headers or {})})
    finally:
        c.close()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(claims, key=SIGNING_KEY, alg="HS256"):
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = "" if alg == "none" else b64(hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def skopeo(*args, check=True):
    return run(["skopeo", "--insecure-policy", *args], check=check, timeout=300)


def push(registry, archive, ref, creds=f"{ADMIN}:{ADMIN_PASSWORD}", check=True):
    return skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds,
                  f"oci-archive:{archive}", f"docker://{registry.address}/{ref}", check=check)


def test_challenge_is_bearer_and_real_clients_use_the_token_flow(registry, busybox_archive, tmp_path):
    status, headers, _ = Client(registry.address).request("GET", "/v2/team-a/app/manifests/1")
    assert status == 401
    challenge = headers["www-authenticate"]
    assert challenge.startswith(f'Bearer realm="http://{registry.address}/auth/token"'), challenge
    assert f'service="{SERVICE}"' in challenge and 'scope="repository:team-a/app:pull"' in challenge

    push(registry, busybox_archive, "team-a/app:1")
    push(registry, busybox_archive, "team-b/x:1")
    user, secret = make_robot(registry, "clients", ["team-a/**"], ["pull", "push"])

    # skopeo (containers/image) pulls with the robot
    skopeo("copy", "--src-tls-verify=false", "--src-creds", f"{user}:{secret}",
           f"docker://{registry.address}/team-a/app:1", f"oci:{tmp_path}/skopeo:1")
    # podman: login, push, pull
    auth_file = tmp_path / "podman-auth.json"
    # podman limits the runroot path to 50 characters: a short directory of its own.
    runroot = tempfile.mkdtemp(prefix="wharf-podman-", dir="/tmp")
    podman = lambda *a: run(["podman", "--root", str(tmp_path / "podman-root"), "--runroot", runroot,
                             "--storage-driver", "vfs", *a], timeout=300)
    try:
        podman("login", "--tls-verify=false", "--authfile", str(auth_file), "-u", user, "-p", secret, registry.address)
        podman("pull", "--tls-verify=false", "--authfile", str(auth_file), f"{registry.address}/team-a/app:1")
        podman("push", "--tls-verify=false", "--authfile", str(auth_file), f"{registry.address}/team-a/app:1",
               f"{registry.address}/team-a/podman:1")
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    # crane: login then copy inside team-a (pull + push under one token per repository)
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker")}
    crane = os.path.join(TOOLS, "crane")
    run([crane, "auth", "login", "--insecure", "-u", user, "-p", secret, registry.address], env=env)
    run([crane, "copy", "--insecure", f"{registry.address}/team-a/app:1", f"{registry.address}/team-a/crane:1"], env=env)
    digest = run([crane, "digest", "--insecure", f"{registry.address}/team-a/crane:1"], env=env).stdout.strip()
    assert digest.startswith("sha256:")
    denied = run([crane, "digest", "--insecure", f"{registry.address}/team-b/x:1"], env=env, check=False)
    assert denied.returncode != 0
    # oras: push an artifact and pull it back
    oras = os.path.join(TOOLS, "oras")
    artifact = tmp_path / "notes.txt"
    artifact.write_text("token-authenticated artifact\n")
    run([oras, "push", "--plain-http", "-u", user, "-p", secret, f"{registry.address}/team-a/notes:1",
         "notes.txt:text/plain"], cwd=str(tmp_path))
    out = tmp_path / "pulled"
    run([oras, "pull", "--plain-http", "-u", user, "-p", secret, "-o", str(out), f"{registry.address}/team-a/notes:1"])
    assert (out / "notes.txt").read_text() == "token-authenticated artifact\n"


def test_containerd_pulls_through_the_token_flow(cluster, registry, busybox_archive):
    if not cluster.local:
        pytest.skip("needs the local cluster's containerd")
    push(registry, busybox_archive, "team-a/ctr:1")
    user, secret = make_robot(registry, "ctr", ["team-a/**"], ["pull"])
    sock = os.path.join(CLUSTER_DIR, "containerd", "containerd.sock")
    ctr = lambda *a, check=True: run(["ctr", "--address", sock, "-n", "wharf-e2e-auth", *a], check=check, timeout=120)
    ref = f"{registry.address}/team-a/ctr:1"
    try:
        denied = ctr("images", "pull", "--plain-http", ref, check=False)
        assert denied.returncode != 0 and "401" in denied.stderr + denied.stdout, denied.stderr
        ctr("images", "pull", "--plain-http", "--user", f"{user}:{secret}", ref)
        assert ref in ctr("images", "ls", "-q").stdout.split()
    finally:
        ctr("images", "rm", ref, check=False)


def test_pull_only_credentials_cannot_push_or_delete(registry, busybox_archive):
    push(registry, busybox_archive, "team-a/app:1")
    user, secret = make_robot(registry, "puller", ["team-a/**"], ["pull"])
    refused = push(registry, busybox_archive, "team-a/app:2", creds=f"{user}:{secret}", check=False)
    assert refused.returncode != 0, "a pull-only robot pushed"

    status, tok = token(registry, user, secret, "repository:team-a/app:pull,push,delete")
    assert status == 200
    claims = json.loads(base64.urlsafe_b64decode(tok["token"].split(".")[1] + "=="))
    assert claims["access"] == [{"type": "repository", "name": "team-a/app", "actions": ["pull"]}]
    status, _, _ = bearer(registry, "HEAD", "/v2/team-a/app/manifests/1", tok["token"],
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200
    status, headers, _ = bearer(registry, "DELETE", "/v2/team-a/app/manifests/1", tok["token"])
    assert status == 401 and 'error="insufficient_scope"' in headers["www-authenticate"]
    status, _, _ = bearer(registry, "POST", "/v2/team-a/app/blobs/uploads/", tok["token"])
    assert status == 401
    # the same with basic auth: authenticated, so 403 DENIED
    c = Client(registry.address, user, secret)
    status, _, body = c.request("DELETE", "/v2/team-a/app/manifests/1")
    assert status == 403 and json.loads(body)["errors"][0]["code"] == "DENIED"
    # and the tag is still there
    status, _, _ = c.request("HEAD", "/v2/team-a/app/manifests/1",
                             headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200
    c.close()


def test_team_a_credentials_cannot_read_team_b_and_the_catalog_is_filtered(registry, busybox_archive):
    push(registry, busybox_archive, "team-a/app:1")
    push(registry, busybox_archive, "team-b/x:1")
    user, secret = make_robot(registry, "team-a-reader", ["team-a/**"], ["pull"])
    refused = skopeo("inspect", "--tls-verify=false", "--creds", f"{user}:{secret}",
                     f"docker://{registry.address}/team-b/x:1", check=False)
    assert refused.returncode != 0
    status, tok = token(registry, user, secret, "repository:team-b/x:pull", "registry:catalog:*")
    assert status == 200
    status, _, _ = bearer(registry, "GET", "/v2/team-b/x/tags/list", tok["token"])
    assert status == 401
    status, _, body = bearer(registry, "GET", "/v2/_catalog", tok["token"])
    assert status == 200
    repos = json.loads(body)["repositories"]
    assert "team-a/app" in repos and not [r for r in repos if r.startswith("team-b/")], repos
    # basic auth for the htpasswd user with an access rule: same filter
    status, _, body = Client(registry.address, CI, CI_PASSWORD).request("GET", "/v2/_catalog")
    assert status == 200 and all(r.startswith("team-a/") for r in json.loads(body)["repositories"])
    status, _, body = Client(registry.address, ADMIN, ADMIN_PASSWORD).request("GET", "/v2/_catalog")
    assert "team-b/x" in json.loads(body)["repositories"]


def test_expired_revoked_and_rotated_out_credentials_are_refused(registry, busybox_archive):
    push(registry, busybox_archive, "team-a/app:1")
    scope = "repository:team-a/app:pull"
    user, secret = make_robot(registry, "short", ["team-a/**"], ["pull"], expires_in="2s")
    assert token(registry, user, secret, scope)[0] == 200
    time.sleep(3)
    assert token(registry, user, secret, scope)[0] == 401
    assert Client(registry.address, user, secret).request("GET", "/v2/team-a/app/tags/list")[0] == 401

    user, secret = make_robot(registry, "revoked", ["team-a/**"], ["pull"])
    status, tok = token(registry, user, secret, scope, offline=True)
    assert status == 200 and tok["refresh_token"]
    assert admin_call(registry, "DELETE", "/admin/v1/robots/revoked")[0] == 204
    assert token(registry, user, secret, scope)[0] == 401
    c = Client(registry.address)
    refreshed = c.request("POST", "/auth/token", urllib.parse.urlencode(
        {"grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "service": SERVICE, "scope": scope}),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert refreshed[0] == 401, "a revoked robot's refresh token still works"

    # rotation: the old secret keeps working for its grace period, then stops
    user, old = make_robot(registry, "rotated", ["team-a/**"], ["pull"])
    status, offline = token(registry, user, old, scope, offline=True)
    status, rotated = admin_call(registry, "POST", "/admin/v1/robots/rotated/rotate", {"previousValidFor": "3s"})
    assert status == 200
    new = rotated["secret"]
    assert new != old and len(rotated["secrets"]) == 2
    assert token(registry, user, old, scope)[0] == 200
    assert token(registry, user, new, scope)[0] == 200
    time.sleep(4)
    assert token(registry, user, old, scope)[0] == 401
    assert token(registry, user, new, scope)[0] == 200
    refreshed = c.request("POST", "/auth/token", urllib.parse.urlencode(
        {"grant_type": "refresh_token", "refresh_token": offline["refresh_token"], "service": SERVICE}),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert refreshed[0] == 401, "a refresh token outlived the secret it came from"
    c.close()


def test_forged_expired_and_wrongly_signed_tokens_are_refused(registry, busybox_archive):
    push(registry, busybox_archive, "team-a/app:1")
    now = int(time.time())
    claims = {"iss": "wharf", "sub": "mallory", "aud": SERVICE, "exp": now + 60, "nbf": now, "iat": now, "jti": "x",
              "access": [{"type": "repository", "name": "team-a/app", "actions": ["pull"]}]}
    path = "/v2/team-a/app/tags/list"
    # the harness forges correctly: with the real key the token is accepted ...
    assert bearer(registry, "GET", path, forge(claims))[0] == 200
    # ... and every variation is refused
    assert bearer(registry, "GET", path, forge(claims, key="another-registry-key-0123456789abcdef"))[0] == 401
    assert bearer(registry, "GET", path, forge({**claims, "exp": now - 60}))[0] == 401
    assert bearer(registry, "GET", path, forge({**claims, "nbf": now + 600}))[0] == 401
    assert bearer(registry, "GET", path, forge({**claims, "aud": "other-service"}))[0] == 401
    assert bearer(registry, "GET", path, forge(claims, alg="none"))[0] == 401
    real = token(registry, ADMIN, ADMIN_PASSWORD, "repository:team-a/app:pull")[1]["token"]
    head, body, sig = real.split(".")
    widened = json.loads(base64.urlsafe_b64decode(body + "=="))
    widened["access"][0]["actions"].append("delete")
    assert bearer(registry, "DELETE", "/v2/team-a/app/manifests/1", f"{head}.{b64(json.dumps(widened).encode())}.{sig}")[0] == 401


def test_admin_api_refuses_non_admins_and_bad_requests(registry):
    user, secret = make_robot(registry, "not-admin", ["**"], ["pull", "push", "delete"])
    for creds in [(user, secret), (CI, CI_PASSWORD)]:
        status, _, _ = Client(registry.address, *creds).request("GET", "/admin/v1/robots")
        assert status == 403
    assert Client(registry.address).request("GET", "/admin/v1/robots")[0] == 401
    status, body = admin_call(registry, "POST", "/admin/v1/robots",
                              {"name": "Bad Name", "permissions": [{"repositories": ["x"], "actions": ["pull"]}]})
    assert status == 400 and "robot name" in body["errors"][0]["message"]
    status, body = admin_call(registry, "POST", "/admin/v1/robots", {"name": "nothing", "permissions": []})
    assert status == 400
    status, body = admin_call(registry, "POST", "/admin/v1/robots",
                              {"name": "not-admin", "permissions": [{"repositories": ["x"], "actions": ["pull"]}]})
    assert status == 409
    status, listing = admin_call(registry, "GET", "/admin/v1/robots")
    assert status == 200 and any(r["name"] == "not-admin" for r in listing["robots"])
    assert all("secret" not in r and "sha256" not in json.dumps(r) for r in listing["robots"])


def test_no_secret_reaches_the_log(registry, busybox_archive):
    user, secret = make_robot(registry, "logged", ["team-a/**"], ["pull", "push"])
    push(registry, busybox_archive, "team-a/logs:1", creds=f"{user}:{secret}")
    push(registry, busybox_archive, "team-a/logs:2", creds=f"{user}:wrong-secret-value", check=False)
    tok = token(registry, user, secret, "repository:team-a/logs:pull", offline=True)[1]
    logs = registry.logs() + open(registry.log_path, errors="replace").read()
    assert "token issued" in logs, "the log does not show token activity at all"
    for value in [secret, "wrong-secret-value", ADMIN_PASSWORD, CI_PASSWORD, SIGNING_KEY, tok["token"],
                  tok["refresh_token"], base64.b64encode(f"{user}:{secret}".encode()).decode()]:
        assert value not in logs, "a credential reached the log"


def test_robots_and_tokens_survive_restarts_and_are_shared_by_replicas(wharf_bin, tmp_path):
    """Two registry processes on one storage, as replicas sharing a volume: a robot created
    through one works on the other, a token issued by one is accepted by the other (the signing
    key is generated once, in storage), and both survive a restart."""
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"auth": {"token": {"enabled": True, "service": SERVICE}}}))
    storage = str(tmp_path / "shared")
    users = {ADMIN: ADMIN_PASSWORD}
    a = Registry(wharf_bin, storage=storage, users=users, args=["--config", str(config)]).start()
    b = Registry(wharf_bin, storage=storage, users=users, args=["--config", str(config)]).start()
    try:
        user, secret = make_robot(a, "shared", ["team-a/**"], ["pull"])
        status, tok = token(b, user, secret, "repository:team-a/app:pull")
        assert status == 200, "a robot created through one replica must work on the other"
        assert bearer(a, "GET", "/v2/team-a/app/tags/list", tok["token"])[0] in (200, 404)
        a.stop()
        a.start()
        assert bearer(a, "GET", "/v2/team-a/app/tags/list", tok["token"])[0] in (200, 404), "token refused after a restart"
        assert token(a, user, secret, "repository:team-a/app:pull")[0] == 200, "robot lost in a restart"
        assert admin_call(b, "DELETE", "/admin/v1/robots/shared")[0] == 204
        time.sleep(6)  # replicas trust a verified robot for up to 5 s
        assert token(a, user, secret, "repository:team-a/app:pull")[0] == 401, "revocation did not reach the other replica"
    finally:
        a.cleanup()
        b.cleanup()
