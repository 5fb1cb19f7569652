"""Push notifications from a real `wharf registry` to a receiver on loopback: each stored tag is
one event with the repository, tag and digest, sent with the bearer token from the configured
file; a receiver that answers 503 or 429 gets the event again after a backoff, exactly once
delivered; a receiver that is down never slows a push, and what could not be delivered is
counted in /metrics."""

import http.server
import json
import os
import threading
import time

import pytest

from support.oci import Client, sha256
from support.procs import free_port, parse_prometheus
from support.registry import Registry

TOKEN = "push-events-token-1"


class Receiver:
    """An HTTP server on loopback that records every request and answers from a script."""

    def __init__(self, answers=()):
        self.requests, self.answers, self.lock = [], list(answers), threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status, headers = receiver.answers.pop(0) if receiver.answers else (202, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/events/team/main"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self):
        with self.lock:
            return [json.loads(body) for _, _, body in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def registry_with(wharf_bin, tmp_path, url, **endpoint):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    settings = {"name": "operator", "url": url, "tokenFile": str(token), "backoff": "1s", **endpoint}
    config = "notifications:\n  endpoints:\n    - " + json.dumps(settings) + "\n"
    return Registry(wharf_bin, config=config).start()


def notification_metrics(registry):
    c = Client(registry.address)
    status, _, body = c.request("GET", "/metrics")
    c.close()
    assert status == 200
    return parse_prometheus(body.decode())


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_every_stored_tag_is_one_event_with_the_token(wharf_bin, tmp_path, receiver):
    registry = registry_with(wharf_bin, tmp_path, receiver.url)
    try:
        c = Client(registry.address)
        manifest, digest = c.push_image("team/app", "v1", [os.urandom(128)])
        # Two tags in one PUT (`?tag=`), and a push by digest only, which names no tag.
        assert c.request("PUT", "/v2/team/app/manifests/" + digest + "?tag=v1.0&tag=stable", manifest,
                         {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})[0] == 201
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(receiver.requests) < 3:
            time.sleep(0.1)
        events = [e for body in receiver.events() for e in body["events"]]
        assert sorted(e["tag"] for e in events) == ["stable", "v1", "v1.0"], events
        for event in events:
            assert (event["action"], event["repository"], event["digest"]) == ("push", "team/app", digest)
            assert event["size"] == len(manifest) and event["mediaType"].endswith("manifest.v1+json")
        for path, headers, _ in receiver.requests:
            assert path == "/events/team/main"
            assert headers["authorization"] == f"Bearer {TOKEN}"
            assert headers["content-type"] == "application/json"
        assert digest == sha256(manifest)
        values = notification_metrics(registry)
        assert values['wharf_registry_notifications_total{endpoint="operator",result="sent"}'] == 3
        c.close()
    finally:
        registry.cleanup()


def test_a_busy_receiver_gets_the_event_again_and_once(wharf_bin, tmp_path):
    receiver = Receiver(answers=[(503, {}), (429, {"Retry-After": "1"}), (202, {})])
    registry = registry_with(wharf_bin, tmp_path, receiver.url)
    try:
        c = Client(registry.address)
        _, digest = c.push_image("team/app", "v2", [os.urandom(128)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(receiver.requests) < 3:
            time.sleep(0.1)
        time.sleep(1)
        assert len(receiver.requests) == 3, receiver.requests
        assert all(json.loads(body)["events"][0]["digest"] == digest for _, _, body in receiver.requests)
        values = notification_metrics(registry)
        assert values['wharf_registry_notifications_total{endpoint="operator",result="sent"}'] == 1
        assert values['wharf_registry_notification_retries_total{endpoint="operator"}'] == 2
        c.close()
    finally:
        registry.cleanup()
        receiver.close()


def test_a_receiver_that_is_down_never_slows_a_push_and_the_loss_is_counted(wharf_bin, tmp_path):
    down = f"http://127.0.0.1:{free_port()}/events/team/main"
    registry = registry_with(wharf_bin, tmp_path, down, maxAttempts=2, queueSize=4)
    try:
        c = Client(registry.address)
        started = time.monotonic()
        for n in range(20):
            c.push_image("team/app", f"t{n}", [os.urandom(64)])
        pushing = time.monotonic() - started
        assert pushing < 20, f"20 pushes took {pushing:.1f} s with the receiver down"
        deadline = time.monotonic() + 30
        key = 'wharf_registry_notifications_total{endpoint="operator",result="%s"}'
        while time.monotonic() < deadline:
            values = notification_metrics(registry)
            if values[key % "failed"] + values[key % "dropped"] == 20:
                break
            time.sleep(0.2)
        assert values[key % "failed"] + values[key % "dropped"] == 20, values
        assert values[key % "sent"] == 0
        c.close()
    finally:
        registry.cleanup()


def test_a_refused_event_is_not_retried(wharf_bin, tmp_path):
    receiver = Receiver(answers=[(401, {})])
    registry = registry_with(wharf_bin, tmp_path, receiver.url)
    try:
        c = Client(registry.address)
        c.push_image("team/app", "v3", [os.urandom(64)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not receiver.requests:
            time.sleep(0.1)
        time.sleep(1.5)
        assert len(receiver.requests) == 1
        values = notification_metrics(registry)
        assert values['wharf_registry_notifications_total{endpoint="operator",result="failed"}'] == 1
        c.close()
    finally:
        registry.cleanup()
        receiver.close()


def test_a_bad_endpoint_url_stops_the_registry_at_start_with_a_reason(wharf_bin, tmp_path):
    registry = Registry(wharf_bin, config='notifications:\n  endpoints:\n    - {name: operator, url: "ftp://x"}\n')
    with pytest.raises(AssertionError):
        registry.start()
    log = open(registry.log_path).read()
    assert "notification endpoint operator" in log and "not an http(s) URL" in log, log
    registry.cleanup()
