"""A tracking server that is up but broken, run as its own process by the tests:

    python tests/fault_server.py fail   # /health answers 200, every other request 503
    python tests/fault_server.py hang   # /health answers 200, every other request never gets an answer
    python tests/fault_server.py forbid # /health answers 200, every other request 403 (a server that refuses us)

Prints the port it listens on (127.0.0.1, chosen by the OS), then serves until killed.
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0].rstrip("/") == "/health":
            self._send(200, b"OK")
        elif MODE == "fail":
            self._send(503, b"service unavailable")
        elif MODE == "forbid":
            self._send(403, b"forbidden")
        else:
            time.sleep(3600)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
