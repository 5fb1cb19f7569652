"""Operating the registry: TLS from files and its reload, Prometheus metrics, graceful shutdown
that finishes in-flight requests, and configuration by file with flag overrides."""

import http.client
import os
import signal
import socket
import subprocess
import ssl
import threading
import time

from support.oci import Client, sha256
from support.procs import free_port, run, wait_http
from support.registry import Registry


def make_cert(directory, name, common_name):
    key, cert = os.path.join(directory, f"{name}.key"), os.path.join(directory, f"{name}.crt")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={common_name}",
         "-addext", "subjectAltName=IP:127.0.0.1"])
    return cert, key


def served_common_name(port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]


def test_tls_serves_and_reloads_rotated_certificates(wharf_bin, tmp_path):
    first_cert, first_key = make_cert(tmp_path, "first", "wharf-first")
    second_cert, second_key = make_cert(tmp_path, "second", "wharf-second")
    live_cert, live_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    live_cert.write_bytes(open(first_cert, "rb").read())
    live_key.write_bytes(open(first_key, "rb").read())
    registry = Registry(wharf_bin, tls=(str(live_cert), str(live_key))).start()
    port = registry.port
    try:
        assert served_common_name(port, first_cert) == "wharf-first"
        ctx = ssl.create_default_context(cafile=first_cert)
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        conn.request("GET", "/v2/")
        assert conn.getresponse().status == 200
        # Rotate in place, as a mounted Secret or cert-manager does: new connections get the new one.
        live_key.write_bytes(open(second_key, "rb").read())
        live_cert.write_bytes(open(second_cert, "rb").read())
        deadline = time.monotonic() + 10
        while served_common_name_or_none(port, second_cert) != "wharf-second":
            assert time.monotonic() < deadline, "rotated certificate was not picked up"
            time.sleep(0.3)
    finally:
        registry.cleanup()


def served_common_name_or_none(port, cafile):
    try:
        return served_common_name(port, cafile)
    except ssl.SSLError:
        return None


def test_metrics_count_requests_bytes_and_latency(wharf_bin):
    registry = Registry(wharf_bin).start()
    try:
        client = Client(registry.address)
        data = os.urandom(10_000)
        assert client.push_blob("ops/metrics", data)[0] == 201
        assert client.request("GET", f"/v2/ops/metrics/blobs/{sha256(data)}")[0] == 200
        assert client.request("GET", "/v2/ops/metrics/manifests/missing")[0] == 404
        status, headers, body = client.request("GET", "/metrics")
        text = body.decode()
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert 'wharf_registry_http_requests_total{route="upload_start",method="POST",status="201"} 1' in text
        assert 'wharf_registry_http_requests_total{route="blob",method="GET",status="200"} 1' in text
        assert 'wharf_registry_http_requests_total{route="manifest",method="GET",status="404"} 1' in text
        assert 'wharf_registry_http_request_duration_seconds_count{route="blob"} 1' in text
        assert "wharf_registry_bytes_received_total 10000" in text
        assert "wharf_registry_bytes_sent_total 10000" in text
        assert "wharf_registry_uploads_in_flight 0" in text
        # Every API response carries a request id; a sane one from the caller is kept.
        assert client.request("GET", "/v2/")[1]["x-request-id"]
        assert client.request("GET", "/v2/", headers={"X-Request-Id": "trace-42"})[1]["x-request-id"] == "trace-42"
        assert client.request("GET", "/healthz")[0] == 200
        assert client.request("GET", "/readyz")[0] == 200
    finally:
        registry.cleanup()


def test_sigterm_finishes_in_flight_requests_then_exits(wharf_bin):
    registry = Registry(wharf_bin).start()
    try:
        data = os.urandom(64 << 20)
        assert Client(registry.address, timeout=60).push_blob("ops/drain", data)[0] == 201
        host, port = registry.address.split(":")
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.sendall(f"GET /v2/ops/drain/blobs/{sha256(data)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        registry.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # New connections are refused while the download in flight goes on.
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            refused = False
        except OSError:
            refused = True
        assert refused, "the listener must close on SIGTERM"
        assert registry.proc.poll() is None, "exited before the in-flight download finished"
        received = bytearray(first)
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        body = bytes(received).split(b"\r\n\r\n", 1)[1]
        assert body == data, f"download cut short: {len(body)} of {len(data)} bytes"
        assert registry.proc.wait(20) == 0
    finally:
        registry.cleanup()


def test_config_file_with_flag_and_environment_overrides(wharf_bin, tmp_path):
    port, other_port = free_port(), free_port()
    config = tmp_path / "registry.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{other_port}\n"
        f"storage:\n  filesystem: {{root: {tmp_path / 'data'}}}\n  deletes: false\n"
        "log: {format: text}\n"
    )
    env = {**os.environ, "WHARF_REGISTRY_LISTEN": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([wharf_bin, "registry", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/")  # the environment overrides the file's address
        client = Client(f"127.0.0.1:{port}")
        assert client.push_blob("ops/config", b"x")[0] == 201
        assert os.path.isdir(tmp_path / "data" / "blobs"), "storage root from the file"
        assert client.request("DELETE", f"/v2/ops/config/blobs/{sha256(b'x')}")[0] == 405, "deletes: false from the file"
    finally:
        proc.terminate()
        proc.wait(10)
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage:\n  filesytem: {root: /x}\n")
    p = run([wharf_bin, "registry", "--config", str(bad)], check=False, timeout=30)
    assert p.returncode != 0 and "filesytem" in p.stderr, p.stderr
