"""Push and pull times through the admin API, what retention rules decide on: each manifest of a
repository with its tags, when it was pushed and when it was last pulled. Pulls cost no write on
the request path; they are written in batches and survive a restart."""

import json
import os
import time
import urllib.parse

from support.oci import OCI_MANIFEST, Client
from support.registry import Registry

ADMIN, PASSWORD = "admin", "usage-admin-password"


def listing(registry, repo):
    c = Client(registry.address, ADMIN, PASSWORD)
    try:
        status, _, body = c.request("GET", "/admin/v1/manifests?" + urllib.parse.urlencode({"repository": repo}))
        assert status == 200, body
        return {m["digest"]: m for m in json.loads(body)["manifests"]}
    finally:
        c.close()


def test_manifests_listing_reports_tags_push_and_pull_times(wharf_bin):
    registry = Registry(wharf_bin, users={ADMIN: PASSWORD}).start()
    try:
        c = Client(registry.address, ADMIN, PASSWORD)
        before = int(time.time())
        _, v1 = c.push_image("team/app", "v1", [os.urandom(100)])
        v2_bytes, v2 = c.push_image("team/app", "v2", [os.urandom(100)])
        assert c.request("PUT", "/v2/team/app/manifests/latest", v2_bytes, {"Content-Type": OCI_MANIFEST})[0] == 201
        assert c.request("GET", "/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})[0] == 200
        assert c.request("HEAD", "/v2/team/app/manifests/v2", headers={"Accept": OCI_MANIFEST})[0] == 200
        seen = listing(registry, "team/app")
        assert set(seen) == {v1, v2}
        assert seen[v1]["tags"] == ["v1"] and sorted(seen[v2]["tags"]) == ["latest", "v2"]
        for m in seen.values():
            assert before - 2 <= m["pushedAt"] <= int(time.time()) + 1, m
        assert seen[v1]["lastPulledAt"] >= before
        assert seen[v2]["lastPulledAt"] is None, "a HEAD is not a pull"
        assert not os.path.exists(os.path.join(registry.storage, "_wharf", "pulls")), "pulls are batched, not written per request"

        # A clean stop writes what is pending; the times survive the restart.
        registry.stop()
        registry.start()
        again = listing(registry, "team/app")
        assert again[v1]["lastPulledAt"] == seen[v1]["lastPulledAt"]
        assert os.path.exists(os.path.join(registry.storage, "_wharf", "pulls", "team", "app.json"))

        status, _, body = Client(registry.address, ADMIN, PASSWORD).request("GET", "/admin/v1/manifests?repository=no/such")
        assert status == 404 and json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"
        status, _, _ = Client(registry.address).request("GET", "/admin/v1/manifests?repository=team/app")
        assert status == 401
        c.close()
    finally:
        registry.cleanup()
