"""A loopback proxy in front of the emulator that misbehaves on message creates, as a real network and Twilio do.

Two faults: answer Twilio's 429 (error 20429, with ``Retry-After``) to the first N creates without forwarding them,
as a Twilio under load does; or forward the first N creates to the emulator (which creates the message) and then
close the connection without an answer, as a connection dropped after the request went out does. Tests point
``ZINGYCONN_TWILIO_BASE_URL`` at it and count what it refused and dropped.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import re
import socket
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
    """The running proxy: where it listens, creates still to refuse or drop, and how many it refused and dropped."""

    base_url: str
    failures_left: int
    drops_left: int = 0
    refused: int = 0
    dropped: int = 0


@contextlib.contextmanager
def flaky_twilio(
    upstream: str, *, fail_creates: int = 0, drop_creates: int = 0, retry_after_seconds: float = 1.0
) -> Iterator[FlakyTwilio]:
    """Serve the proxy on a free loopback port for the duration of the block.

    Args:
        fail_creates: Creates answered 429 (not forwarded).
        drop_creates: Creates forwarded, then left without an answer (the connection is closed).
        retry_after_seconds: The ``Retry-After`` of the 429 answers.
    """
    port = free_port()
    proxy = FlakyTwilio(base_url=f"http://127.0.0.1:{port}", failures_left=fail_creates, drops_left=drop_creates)
    lock = threading.Lock()
    target = urlsplit(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            drop = False
            if self.command == "POST" and _CREATE.fullmatch(urlsplit(self.path).path):
                with lock:
                    refuse = proxy.failures_left > 0
                    if refuse:
                        proxy.failures_left -= 1
                        proxy.refused += 1
                    drop = not refuse and proxy.drops_left > 0
                    if drop:
                        proxy.drops_left -= 1
                        proxy.dropped += 1
                if refuse:
                    headers = {"Retry-After": f"{retry_after_seconds:g}"}
                    self._answer(429, json.dumps(TOO_MANY_REQUESTS).encode(), "application/json", headers)
                    return
            connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
            headers = {name: value for name in _FORWARDED_HEADERS if (value := self.headers.get(name)) is not None}
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            connection.close()
            if drop:  # the message exists upstream; the caller never hears of it
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._answer(response.status, answer, response.getheader("Content-Type", "application/json"))

        def _answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
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
