"""A loopback proxy in front of the emulator that answers Twilio's 429 (error 20429) to the first N message creates.

It stands in for a Twilio under load: the tasks tests point ``ZINGYCONN_TWILIO_BASE_URL`` at it to see a transient
failure retried, and count how many creates it refused.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from tests.servers import free_port

_CREATE: Final = re.compile(r"/2010-04-01/Accounts/[^/]+/Messages\.json")
#: Twilio's answer when an account sends faster than its rate (https://www.twilio.com/docs/errors/20429).
TOO_MANY_REQUESTS: Final = {
    "code": 20429,
    "message": "Too Many Requests",
    "more_info": "https://www.twilio.com/docs/errors/20429",
    "status": 429,
}
_FORWARDED_HEADERS: Final = ("Authorization", "Content-Type", "Accept", "User-Agent")


@dataclass
class FlakyTwilio:
    """The running proxy: where it listens, creates still to refuse, creates refused so far."""

    base_url: str
    failures_left: int
    refused: int = 0


@contextlib.contextmanager
def flaky_twilio(upstream: str, *, fail_creates: int) -> Iterator[FlakyTwilio]:
    """Serve the proxy on a free loopback port for the duration of the block."""
    port = free_port()
    proxy = FlakyTwilio(base_url=f"http://127.0.0.1:{port}", failures_left=fail_creates)
    lock = threading.Lock()
    target = urlsplit(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.command == "POST" and _CREATE.fullmatch(urlsplit(self.path).path):
                with lock:
                    refuse = proxy.failures_left > 0
                    if refuse:
                        proxy.failures_left -= 1
                        proxy.refused += 1
                if refuse:
                    self._answer(429, json.dumps(TOO_MANY_REQUESTS).encode(), "application/json")
                    return
            connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
            headers = {name: value for name in _FORWARDED_HEADERS if (value := self.headers.get(name)) is not None}
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            self._answer(response.status, response.read(), response.getheader("Content-Type", "application/json"))
            connection.close()

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _forward  # noqa: N815  # http.server's handler names

        def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
            """Stay quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name=f"flaky-twilio-{port}", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
