"""The command API maps each error class to its documented HTTP status and the one JSON error shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator
from tests.hosts.live_server import LiveServer, live_server
from tests.servers import free_port
from zingyconn.config import Settings
from zingyconn.egress.ratelimit import Rate
from zingyconn.runtime import Runtime
from zingyconn.secrets.tokens import TokenStore
from zingyconn.twilio.profile import TwilioProfile

SEND = {"fromPhone": MAGIC_SENDER, "toPhone": RECIPIENT, "msg": "hi"}


@pytest.fixture
def env(tmp_path: Path, emulator: Emulator) -> dict[str, str]:
    """A store in a temporary directory whose Twilio calls go to the emulator."""
    return {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_TWILIO_BASE_URL": emulator.base_url}


def _serve(env: dict[str, str], emulator: Emulator, **runtime_options: Any) -> Iterator[tuple[LiveServer, str]]:
    with Runtime(Settings.from_env(env), **runtime_options) as runtime:
        profile = TwilioProfile(account_sid=emulator.account_sid, api_key=emulator.api_key, secret=emulator.api_secret)
        runtime.store.put("acme", "main", profile)
        token = TokenStore(runtime.engine).create("acme")
        with live_server(runtime, max_body_bytes=4096) as live:
            yield live, token


@pytest.fixture
def server(env: dict[str, str], emulator: Emulator) -> Iterator[tuple[LiveServer, str]]:
    """A server with tenant 'acme', its connection 'main' on the emulator, and an API token of acme."""
    yield from _serve(env, emulator)


def _call(
    server: LiveServer, token: str, body: Any, *, command: str = "sendMessage", connection: str = "main", **headers: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "X-Zingy-Flow": "cloud", **headers}
    url = server.url(f"/api/v1/connections/{connection}/commands/{command}")
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers={**headers, "Content-Type": "application/json"})
    return httpx.post(url, json=body, headers=headers)


def _error(response: httpx.Response) -> dict[str, Any]:
    document = response.json()
    assert document["ok"] is False
    error: dict[str, Any] = document["error"]
    return error


def test_twilio_error_is_502_with_twilios_status_code_and_more_info(server: tuple[LiveServer, str]) -> None:
    """A send Twilio refuses (the recipient opted out) is 502 carrying Twilio's own status, code and link."""
    live, token = server
    response = _call(live, token, {**SEND, "toPhone": "+15005550004"})

    assert response.status_code == 502
    assert _error(response) == {
        "type": "TwilioError",
        "message": "Attempt to send to unsubscribed recipient",
        "status": 400,
        "code": 21610,
        "more_info": "https://www.twilio.com/docs/errors/21610",
    }


def test_twilio_404_is_still_502(server: tuple[LiveServer, str]) -> None:
    """Twilio's 404 (an unknown message) is Twilio's answer, not a missing API route: 502 with status 404."""
    live, token = server
    response = _call(live, token, {"sid": "SM" + "0" * 32}, command="readMessage")

    assert response.status_code == 502
    assert (_error(response)["status"], _error(response)["code"]) == (404, 20404)


@pytest.mark.parametrize(
    ("body", "command", "error_type", "field"),
    [
        pytest.param({**SEND, "toPhone": "5551234567"}, "sendMessage", "InvalidCommandError", "toPhone", id="input"),
        pytest.param(b"{not json", "sendMessage", "ValidationError", "body", id="not-json"),
        pytest.param(b"[1, 2]", "sendMessage", "ValidationError", "body", id="not-an-object"),
        pytest.param({}, "sendEmail", "InvalidCommandError", "command", id="unknown-command"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    server: tuple[LiveServer, str], emulator: Emulator, body: Any, command: str, error_type: str, field: str
) -> None:
    """Bad input is 400 with the offending field, and nothing reaches Twilio."""
    live, token = server
    response = _call(live, token, body, command=command)

    assert response.status_code == 400
    assert (_error(response)["type"], _error(response)["field"]) == (error_type, field)
    assert emulator.requests == []


def test_unknown_connection_is_404(server: tuple[LiveServer, str]) -> None:
    """A connection the tenant does not have is 404 ConnectionNotFoundError."""
    live, token = server
    response = _call(live, token, SEND, connection="nope")

    assert (response.status_code, _error(response)["type"]) == (404, "ConnectionNotFoundError")


def test_idempotency_key_reused_for_another_message_is_409(server: tuple[LiveServer, str]) -> None:
    """The same Idempotency-Key with different inputs is 409 IdempotencyConflictError; the first send stands."""
    live, token = server
    first = _call(live, token, SEND, **{"Idempotency-Key": "order-1"})
    second = _call(live, token, {**SEND, "msg": "something else"}, **{"Idempotency-Key": "order-1"})

    assert first.status_code == 200
    assert (second.status_code, _error(second)["type"]) == (409, "IdempotencyConflictError")


def test_body_over_the_cap_is_413(server: tuple[LiveServer, str]) -> None:
    """A request body larger than the server's cap is 413 PayloadTooLargeError."""
    live, token = server
    response = _call(live, token, {**SEND, "msg": "x" * 5000})

    assert (response.status_code, _error(response)["type"]) == (413, "PayloadTooLargeError")


def test_send_rate_limit_is_429(env: dict[str, str], emulator: Emulator) -> None:
    """The per-tenant send rate limit refuses with 429 QuotaExceededError, naming the limit."""
    for live, token in _serve(env, emulator, message_rate=Rate(per_second=0.001, burst=1)):
        first = _call(live, token, SEND)
        second = _call(live, token, SEND)

        assert first.status_code == 200
        assert (second.status_code, _error(second)["type"]) == (429, "QuotaExceededError")
        assert "rate limited to" in _error(second)["message"]


def test_twilio_unreachable_is_502_egress_denied(env: dict[str, str], emulator: Emulator) -> None:
    """No answer from the Twilio API (nothing listens at its URL) is 502 EgressDeniedError, not an opaque 500."""
    closed = {**env, "ZINGYCONN_TWILIO_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    for live, token in _serve(closed, emulator):
        response = _call(live, token, {"sid": "SM" + "0" * 32}, command="readMessage")

        assert (response.status_code, _error(response)["type"]) == (502, "EgressDeniedError")
        assert "request failed" in _error(response)["message"]
        assert "status" not in _error(response)  # not Twilio's answer: no Twilio status or code
