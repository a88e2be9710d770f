"""A local echo API: records every request it gets and answers it back as JSON, so nothing reaches the internet.

It stands in for a third-party HTTP API in tests and in the demo (``zingyconn demo`` serves it on loopback). Every
method on every path answers ``200`` with ``{"method", "path", "query", "headers", "json" | "body"}``: what arrived,
credentials included, which is what a test of the host's masking needs to see come back. Two paths steer it:

- ``/status/{code}`` answers with that status (an API's error, for the snippet's error handling);
- ``/redirect?to=URL`` answers ``302`` to *URL* (for the host's redirect rules);
- ``GET /_echo/requests`` lists what it recorded, newest last (the demo shows it; the tests read
  :attr:`EchoRecorder.requests` directly).

Use::

    recorder = EchoRecorder()
    app = create_app(recorder)   # a Starlette ASGI app; serve it with uvicorn on 127.0.0.1
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

#: Largest request body read. Threat: a run (or anyone on the host) making the loopback server buffer gigabytes.
MAX_BODY_BYTES: Final = 1024 * 1024

#: Requests kept, oldest dropped first, so a long demo does not grow without bound.
MAX_RECORDED_REQUESTS: Final = 1000

_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True, slots=True)
class EchoedRequest:
    """One request the echo API received.

    Attributes:
        method: The HTTP method.
        path: The URL path.
        query: The query string's parameters (the last value of a repeated name).
        headers: The request headers, names in lower case.
        body: The body as text (UTF-8, undecodable bytes replaced).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str

    def to_json(self) -> dict[str, Any]:
        """Return the request as the API echoes it: the body parsed when it is JSON."""
        document: dict[str, Any] = asdict(self)
        try:
            document["json"] = json.loads(self.body) if self.body else None
        except json.JSONDecodeError:
            document["json"] = None
        return document


class EchoRecorder:
    """What the echo API received, newest last; thread-safe (the server runs in its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: deque[EchoedRequest] = deque(maxlen=MAX_RECORDED_REQUESTS)

    @property
    def requests(self) -> list[EchoedRequest]:
        """A copy of the recorded requests."""
        with self._lock:
            return list(self._requests)

    def add(self, request: EchoedRequest) -> None:
        """Record *request*."""
        with self._lock:
            self._requests.append(request)


async def _read(request: Request) -> EchoedRequest | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return EchoedRequest(
        method=request.method,
        path=request.url.path,
        query=dict(request.query_params),
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body.decode("utf-8", errors="replace"),
    )


def create_app(recorder: EchoRecorder) -> Starlette:
    """Return the echo API as an ASGI app that records into *recorder*."""

    async def echo(request: Request) -> Response:
        received = await _read(request)
        if received is None:
            return JSONResponse({"error": f"The body is over {MAX_BODY_BYTES} bytes."}, status_code=413)
        recorder.add(received)
        status = 200
        if received.path.startswith("/status/") and received.path[8:].isdigit():
            status = int(received.path[8:])
            if not 200 <= status <= 599:
                status = 400
        if received.path == "/redirect" and "to" in received.query:
            return RedirectResponse(received.query["to"], status_code=302)
        return JSONResponse(received.to_json(), status_code=status)

    async def listing(request: Request) -> Response:
        return JSONResponse([item.to_json() for item in recorder.requests])

    return Starlette(
        routes=[
            Route("/_echo/requests", listing, methods=["GET"]),
            Route("/{path:path}", echo, methods=_METHODS),
        ]
    )
