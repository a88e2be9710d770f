"""Reusable harness: the Twilio emulator served by a real uvicorn on a free 127.0.0.1 port in a background thread.

Use the ``emulator`` fixture (tests/conftest.py), or :func:`running_emulator` for a custom state::

    def test_send(emulator: Emulator) -> None:
        client = emulator.client()                      # twilio.rest.Client, Auth Token credentials
        message = client.messages.create(to="+15551234567", from_=MAGIC_SENDER, body="hi")
        emulator.state.advance(10)                       # queued -> sending -> sent -> delivered (+ callbacks)
        assert [(r.method, r.path) for r in emulator.requests] == [("POST", emulator.messages_path)]
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import http.server
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from openapi_schema_validator import OAS30Validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from twilio.rest import Client

from tests.servers import free_port, uvicorn_in_thread
from zingyconn.twilio.emulator import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    DEFAULT_AUTH_TOKEN,
    EmulatorHttpClient,
    EmulatorState,
    RequestRecord,
    create_app,
)

#: The frozen start time of the test clock (2026-01-01T00:00:00Z); tests move it with ``state.advance``.
START_TIME: Final = 1_767_225_600.0
#: Twilio's magic "valid sender" number.
MAGIC_SENDER: Final = "+15005550006"
#: A valid recipient with no special behaviour.
RECIPIENT: Final = "+15551234567"
#: The Messages part of twilio-oai's ``twilio_api_v2010.json`` (copied unchanged; see its ``info``).
SPEC_PATH: Final = Path(__file__).parent / "zingyconn" / "twilio" / "twilio_messages_oai.json"
ERROR_KEYS: Final = frozenset({"code", "message", "more_info", "status"})
_OPERATIONS: Final = (
    (re.compile(r"/2010-04-01/Accounts/[^/]+/Messages\.json"), "/2010-04-01/Accounts/{AccountSid}/Messages.json"),
    (
        re.compile(r"/2010-04-01/Accounts/[^/]+/Messages/[^/]+\.json"),
        "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json",
    ),
)

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "DEFAULT_AUTH_TOKEN",
    "MAGIC_SENDER",
    "RECIPIENT",
    "START_TIME",
    "Emulator",
    "EmulatorHttpClient",
    "ReceivedCallback",
    "ResponseRecord",
    "callback_receiver",
    "check_response",
    "frozen_state",
    "running_emulator",
]


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """One response the emulator sent: request method and path, HTTP status, raw body."""

    method: str
    path: str
    status: int
    body: bytes


class _ResponseRecorder:
    """ASGI middleware that keeps every response, so the tests can check each one against the OpenAPI contract."""

    def __init__(self, app: ASGIApp, log: list[ResponseRecord]) -> None:
        self.app, self.log = app, log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, chunks = 0, []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        self.log.append(ResponseRecord(scope["method"], scope["path"], status, b"".join(chunks)))


@functools.cache
def _spec() -> dict[str, Any]:
    return dict(json.loads(SPEC_PATH.read_text(encoding="utf-8")))


def _check_dates(resource: dict[str, Any]) -> None:
    """Twilio's dates (format ``date-time-rfc-2822``): RFC 2822 in GMT with ``+0000``, parseable by the library."""
    for name in ("date_created", "date_updated", "date_sent"):
        value = resource[name]
        assert value is None or (value.endswith(" +0000") and email.utils.parsedate(value) is not None), value


def check_response(record: ResponseRecord) -> None:
    """Assert that *record* is what the OpenAPI spec promises for its operation, or a Twilio-shaped error."""
    if record.status >= 400:
        body = json.loads(record.body)
        assert set(body) == ERROR_KEYS, body
        assert isinstance(body["code"], int), body
        assert isinstance(body["message"], str), body
        assert body["status"] == record.status, body
        assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}", body
        return
    template = next((name for pattern, name in _OPERATIONS if pattern.fullmatch(record.path)), None)
    assert template is not None, f"{record.method} {record.path} answered {record.status} outside the Messages API"
    responses = _spec()["paths"][template][record.method.lower()]["responses"]
    assert str(record.status) in responses, f"{record.method} {template}: status {record.status} is not in the spec"
    content = responses[str(record.status)].get("content")
    if content is None:
        assert record.body == b"", record.body
        return
    schema = {**content["application/json"]["schema"], "components": _spec()["components"]}
    body = json.loads(record.body)
    OAS30Validator(schema).validate(body)
    for resource in body.get("messages", [body]):
        _check_dates(resource)


@dataclass(frozen=True)
class Emulator:
    """A running emulator: where it listens, the credentials to use, and its state (clock, logs)."""

    base_url: str
    state: EmulatorState
    account_sid: str = DEFAULT_ACCOUNT_SID
    auth_token: str = DEFAULT_AUTH_TOKEN
    api_key: str = DEFAULT_API_KEY
    api_secret: str = DEFAULT_API_SECRET
    responses: list[ResponseRecord] = field(default_factory=list)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request the emulator received, in order (method, path, form, username)."""
        return self.state.requests

    @property
    def messages_path(self) -> str:
        """The path of the account's Messages list resource."""
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def http_client(self) -> EmulatorHttpClient:
        """A fresh ``TwilioHttpClient`` that sends everything to this emulator."""
        return EmulatorHttpClient(self.base_url)

    def client(self, *, api_key: bool = False) -> Client:
        """A real ``twilio.rest.Client`` for the default account (Auth Token, or the API key if *api_key*)."""
        if api_key:
            return Client(self.api_key, self.api_secret, self.account_sid, http_client=self.http_client())
        return Client(self.account_sid, self.auth_token, http_client=self.http_client())


def frozen_state(**kwargs: object) -> EmulatorState:
    """An :class:`EmulatorState` whose clock stands still at :data:`START_TIME` until ``advance`` moves it."""
    return EmulatorState(clock=lambda: START_TIME, **kwargs)  # type: ignore[arg-type]  # kwargs are EmulatorState's


@contextlib.contextmanager
def running_emulator(state: EmulatorState | None = None, *, tick_seconds: float | None = None) -> Iterator[Emulator]:
    """Serve *state* (default: :func:`frozen_state`) on a free loopback port for the duration of the block.

    Every response is recorded in ``Emulator.responses``; the ``emulator`` fixture checks them all against the
    OpenAPI contract (:func:`check_response`) when the test ends.
    """
    state = state if state is not None else frozen_state()
    responses: list[ResponseRecord] = []
    app = _ResponseRecorder(create_app(state, tick_seconds=tick_seconds), responses)
    with uvicorn_in_thread(app, name="emulator", lifespan="on") as port:
        yield Emulator(base_url=f"http://127.0.0.1:{port}", state=state, responses=responses)


@dataclass(frozen=True, slots=True)
class ReceivedCallback:
    """One POST a :func:`callback_receiver` got: the full URL it was sent to, its form and its headers."""

    url: str
    form: dict[str, str]
    headers: dict[str, str]


@contextlib.contextmanager
def callback_receiver() -> Iterator[tuple[str, list[ReceivedCallback]]]:
    """Receive status callbacks on a free loopback port; yield (URL to give as StatusCallback, received list)."""
    received: list[ReceivedCallback] = []
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
            received.append(ReceivedCallback(base + self.path, form, dict(self.headers.items())))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
            """Stay quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name=f"callbacks-{port}", daemon=True)
    thread.start()
    try:
        yield f"{base}/status?tenant=acme", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
