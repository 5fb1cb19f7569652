"""A small round-robin HTTP proxy for replica tests: every request (not every connection) goes
to the next backend, so the PATCHes of one upload alternate between replicas; a backend that
refuses the connection (killed) is skipped, as a Service's endpoints drop a dead pod."""

import http.client
import http.server
import threading

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class RoundRobinProxy:
    def __init__(self, backends, host="127.0.0.1"):
        self.backends = list(backends)  # "host:port"
        self.counts = {b: 0 for b in self.backends}
        self._next = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                last_error = None
                for backend in proxy._order():
                    host, port = backend.rsplit(":", 1)
                    conn = http.client.HTTPConnection(host, int(port), timeout=120)
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        response = conn.getresponse()
                        data = response.read()
                    except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected) as e:
                        last_error = e
                        continue
                    finally:
                        conn.close()
                    with proxy._lock:
                        proxy.counts[backend] += 1
                    self.send_response(response.status)
                    for k, v in response.getheaders():
                        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    # A HEAD answer carries the length of the body it does not send.
                    length = response.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    return
                self.send_error(502, f"no backend answered: {last_error}")

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.address = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _order(self):
        """Backends starting with the next one in turn."""
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.backends)
        return self.backends[start:] + self.backends[:start]

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
