"""The admin API manages a tenant's connections (secrets write-only) and variables, audited, never showing a secret."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator import Emulator
from tests.hosts.live_server import LiveServer, live_server
from tests.servers import free_port, uvicorn_in_thread
from zingyconn.config import Settings
from zingyconn.hosts.audit import AuditTrail
from zingyconn.http.echo import EchoRecorder, create_app
from zingyconn.runtime import Runtime
from zingyconn.twilio.profile import TwilioProfile
from zingyconn.variables import MAX_VARIABLE_BYTES_PER_TENANT

ADMIN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
SECRET = "api-s3cret/value+1"
BASE = "/api/v1/admin/tenants/acme"
HTTP = {"type": "http", "base_url": "https://api.crm.example", "auth": "bearer"}
TWILIO = {"type": "twilio", "account_sid": "AC" + "0" * 32}
OAUTH2 = {
    "auth": "oauth2",
    "token_url": "https://auth.crm.example/oauth/token",
    "client_id": "zc-client",
    "scope": "notes.write",
}


@pytest.fixture
def server(tmp_path: Path, emulator: Emulator) -> Iterator[LiveServer]:
    """A server whose tenant 'acme' has Twilio connection 'main' on the emulator's account."""
    env = {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_TWILIO_BASE_URL": emulator.base_url}
    with Runtime(Settings.from_env(env)) as runtime:
        profile = TwilioProfile(account_sid=emulator.account_sid, api_key=emulator.api_key, secret=emulator.api_secret)
        runtime.store.put("acme", "main", profile)
        with live_server(runtime, admin_token=ADMIN) as live:
            yield live


@pytest.fixture
def echo() -> Iterator[tuple[EchoRecorder, str]]:
    """The echo API on loopback and its base URL."""
    recorder = EchoRecorder()
    with uvicorn_in_thread(create_app(recorder), name="echo") as port:
        yield recorder, f"http://127.0.0.1:{port}"


def _audited(server: LiveServer) -> list[dict[str, Any]]:
    """The tenant's audit rows, oldest first."""
    return [event.to_json() for event in reversed(AuditTrail(server.runtime.engine).list(tenant="acme"))]


def _secret_in(text: str, secret: str = SECRET) -> bool:
    """Whether *text* holds *secret* raw, base64- or JSON-encoded."""
    return any(form in text for form in (secret, base64.b64encode(secret.encode()).decode(), json.dumps(secret)[1:-1]))


def test_http_connection_is_put_listed_shown_tested_and_deleted(
    server: LiveServer, echo: tuple[EchoRecorder, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A PUT saves an HTTP connection the way ``connections add`` does; list, show and the PUT's answer show it
    masked; a test call reaches the API with the secret; delete removes it; both changes are audited by name, and
    the secret is in no response, audit row or log record."""
    caplog.set_level(logging.DEBUG)
    recorder, echo_url = echo
    body = {"type": "http", "base_url": f"{echo_url}/api", "auth": "bearer", "secret": SECRET,
            "allowed_methods": ["get", "POST"], "allowed_prefixes": ["/notes"], "local_test_target": True}  # fmt: skip
    url = server.url(f"{BASE}/connections/crm")

    put = httpx.put(url, json=body, headers=AUTH)
    listed = httpx.get(server.url(f"{BASE}/connections"), headers=AUTH)
    shown = httpx.get(url, headers=AUTH)
    tested = httpx.post(f"{url}/test", headers=AUTH)
    deleted = httpx.delete(url, headers=AUTH)
    gone = httpx.get(url, headers=AUTH)

    assert put.status_code == 200, put.text
    connection = put.json()["connection"]
    assert (connection["name"], connection["type"], connection["revision"]) == ("crm", "http", 1)
    assert (connection["base_url"], connection["auth"], connection["secret"]) == (
        f"{echo_url}/api", "bearer", "********")  # fmt: skip
    assert (connection["allowed_methods"], connection["allowed_prefixes"]) == ("GET,POST", "/notes")
    assert shown.json()["connection"] == connection
    assert [(c["name"], c["type"]) for c in listed.json()["connections"]] == [("crm", "http"), ("main", "twilio")]
    assert tested.status_code == 200, tested.text
    assert tested.json()["answered"] == f"{echo_url}/api/notes (HTTP 200, bearer)"
    assert [(r.method, r.path, r.headers["authorization"]) for r in recorder.requests] == [
        ("GET", "/api/notes", f"Bearer {SECRET}")]  # fmt: skip
    assert deleted.json() == {"ok": True}
    assert (gone.status_code, gone.json()["error"]["type"]) == (404, "ConnectionNotFoundError")

    events = _audited(server)
    assert [(e["actor"], e["action"], e["target"]) for e in events] == [
        ("admin-api", "connection.save", "crm"), ("admin-api", "connection.delete", "crm")]  # fmt: skip
    assert events[0]["detail"] == {"type": "http", "edited": False}
    assert events[0]["client"] == "127.0.0.1"
    for text in (put.text, listed.text, shown.text, tested.text, json.dumps(events), caplog.text):
        assert not _secret_in(text)


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        pytest.param({"auth": "basic", "secret": f"ann:{SECRET}"}, {"auth": "basic"}, id="basic"),
        pytest.param({"auth": "header:X-Api-Key"}, {"auth": "header:X-Api-Key"}, id="header"),
        pytest.param({"auth": "query:key"}, {"auth": "query:key"}, id="query"),
        pytest.param(OAUTH2, OAUTH2, id="oauth2"),
    ],
)
def test_every_http_auth_scheme_can_be_put(server: LiveServer, fields: dict[str, str], shown: dict[str, str]) -> None:
    """Basic, header, query and OAuth 2 connections are saved with their scheme's fields, the secret masked."""
    body = {"type": "http", "base_url": "https://api.crm.example/v1", "secret": SECRET, **fields}
    put = httpx.put(server.url(f"{BASE}/connections/crm"), json=body, headers=AUTH)

    assert put.status_code == 200, put.text
    assert shown.items() <= put.json()["connection"].items()
    assert not _secret_in(put.text)
    stored = server.runtime.store.get("acme", "crm")
    assert stored.secrets()[0] == body["secret"]


def test_a_twilio_connection_is_put_replaced_and_tested(server: LiveServer, emulator: Emulator) -> None:
    """A Twilio connection is saved with masked SIDs, replaced by a second PUT (revision 2, audited as an edit),
    and tested against the emulator."""
    body = {"type": "twilio", "account_sid": emulator.account_sid, "api_key": emulator.api_key,
            "secret": emulator.api_secret}  # fmt: skip
    url = server.url(f"{BASE}/connections/sms")

    first = httpx.put(url, json=body, headers=AUTH)
    second = httpx.put(url, json=body, headers=AUTH)
    tested = httpx.post(f"{url}/test", headers=AUTH)

    assert first.status_code == 200, first.text
    assert (first.json()["connection"]["revision"], second.json()["connection"]["revision"]) == (1, 2)
    assert second.json()["connection"]["account_sid"] != emulator.account_sid  # masked
    assert second.json()["connection"]["secret"] == "********"
    assert tested.status_code == 200, tested.text
    assert tested.json()["answered"].startswith("API key SK")
    assert [r.method for r in emulator.requests] == ["GET"]
    assert [e["detail"]["edited"] for e in _audited(server)] == [False, True]
    for response in (first, second, tested):
        assert not _secret_in(response.text, emulator.api_secret)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"base_url": "https://api.crm.example"}, "type", id="no-type"),
        pytest.param({"type": "ftp"}, "type", id="unknown-type"),
        pytest.param({**HTTP, "base_url": "http://api.crm.example"}, "base_url", id="plain-http"),
        pytest.param({**HTTP, "base_url": "https://10.0.0.1"}, "base_url", id="private"),
        pytest.param({**HTTP, "auth": "digest"}, "auth", id="auth"),
        pytest.param({**HTTP, "auth": "oauth2", "token_url": OAUTH2["token_url"]}, "client_id", id="oauth2-no-client"),
        pytest.param({**HTTP, "allowed_methods": "GET"}, "allowed_methods", id="methods-not-a-list"),
        pytest.param({**HTTP, "allowed_methods": ["CONNECT"]}, "allowed_methods", id="connect"),
        pytest.param({**HTTP, "local_test_target": "yes"}, "local_test_target", id="flag-not-a-bool"),
        pytest.param({**HTTP, "account_sid": TWILIO["account_sid"]}, "account_sid", id="twilio-field-on-http"),
        pytest.param({**TWILIO, "account_sid": "AC123"}, "account_sid", id="bad-sid"),
        pytest.param({**TWILIO, "base_url": HTTP["base_url"]}, "base_url", id="http-field-on-twilio"),
        pytest.param({**TWILIO, "secret": 5}, "secret", id="secret-kind"),
    ],
)
def test_a_bad_put_is_a_400_naming_the_field_and_saves_nothing(
    server: LiveServer, body: dict[str, Any], field: str
) -> None:
    """Each bad body is refused with 400, the JSON error shape and the offending field; nothing is saved."""
    response = httpx.put(server.url(f"{BASE}/connections/crm"), json={"secret": SECRET, **body}, headers=AUTH)

    assert response.status_code == 400, response.text
    assert response.json()["ok"] is False
    assert response.json()["error"]["field"] == field
    assert not _secret_in(response.text)
    assert [c.name for c in server.runtime.store.list("acme")] == ["main"]
    assert _audited(server) == []


def test_a_put_without_a_secret_is_refused_even_when_one_is_stored(server: LiveServer) -> None:
    """Every PUT carries the secret: a replace cannot point a stored secret at another base URL."""
    body = {"type": "http", "base_url": "https://api.crm.example", "auth": "bearer", "secret": SECRET}
    url = server.url(f"{BASE}/connections/crm")
    assert httpx.put(url, json=body, headers=AUTH).status_code == 200

    moved = httpx.put(url, json={**body, "base_url": "https://elsewhere.example", "secret": None}, headers=AUTH)

    assert (moved.status_code, moved.json()["error"]["field"]) == (400, "secret")
    assert server.runtime.store.get("acme", "crm").directory_entry() == {"base_url": "https://api.crm.example"}


def test_testing_an_unreachable_api_is_a_502_error_shape(server: LiveServer) -> None:
    """A connection whose API does not answer fails its test with 502 and the JSON error shape, not a traceback."""
    body = {"type": "http", "base_url": f"http://127.0.0.1:{free_port()}", "auth": "query:key", "secret": SECRET,
            "local_test_target": True}  # fmt: skip
    url = server.url(f"{BASE}/connections/down")
    assert httpx.put(url, json=body, headers=AUTH).status_code == 200

    tested = httpx.post(f"{url}/test", headers=AUTH)
    missing = httpx.post(server.url(f"{BASE}/connections/nope/test"), headers=AUTH)

    assert tested.status_code == 502, tested.text
    assert tested.json()["ok"] is False
    assert tested.json()["error"]["type"] == "RequestFailedError"
    message = tested.json()["error"]["message"]
    assert message.startswith(f"GET {body['base_url']}/ for 'down' got no answer: The request failed: ConnectError")
    assert message.endswith("Check that the API is up and that the base URL is right.")
    assert "Traceback" not in tested.text
    assert not _secret_in(tested.text)
    assert (missing.status_code, missing.json()["error"]["type"]) == (404, "ConnectionNotFoundError")


def test_variables_are_set_listed_and_unset_with_the_caps(server: LiveServer) -> None:
    """PUT sets a variable (a snippet reads it), GET lists them, DELETE unsets; bad names and oversize values are
    400s naming the field; set and unset are audited without the value."""
    url = server.url(f"{BASE}/vars")

    put = httpx.put(f"{url}/SUPPORT_NUMBER", json={"value": "+15005550006"}, headers=AUTH)
    ran = server.runtime.run("acme", 'return zingyConn.vars["SUPPORT_NUMBER"]')
    listed = httpx.get(url, headers=AUTH)
    bad_name = httpx.put(f"{url}/9lives", json={"value": "x"}, headers=AUTH)
    no_value = httpx.put(f"{url}/EMPTY", json={}, headers=AUTH)
    not_text = httpx.put(f"{url}/COUNT", json={"value": 3}, headers=AUTH)
    too_big = httpx.put(f"{url}/BIG", json={"value": "x" * MAX_VARIABLE_BYTES_PER_TENANT}, headers=AUTH)
    unset = httpx.delete(f"{url}/SUPPORT_NUMBER", headers=AUTH)
    unset_again = httpx.delete(f"{url}/SUPPORT_NUMBER", headers=AUTH)

    assert put.status_code == 200, put.text
    assert (put.json()["variable"]["name"], put.json()["variable"]["value"]) == ("SUPPORT_NUMBER", "+15005550006")
    assert ran.value == "+15005550006"
    assert [(v["name"], v["value"]) for v in listed.json()["variables"]] == [("SUPPORT_NUMBER", "+15005550006")]
    for response, field in ((bad_name, "name"), (no_value, "value"), (not_text, "value"), (too_big, "value")):
        assert (response.status_code, response.json()["error"]["field"]) == (400, field), response.text
    assert unset.json() == {"ok": True}
    assert (unset_again.status_code, unset_again.json()["error"]["type"]) == (404, "NotFoundError")
    assert httpx.get(url, headers=AUTH).json()["variables"] == []
    events = _audited(server)
    assert [(e["actor"], e["action"], e["target"]) for e in events] == [
        ("admin-api", "variable.set", "SUPPORT_NUMBER"), ("admin-api", "variable.unset", "SUPPORT_NUMBER")]  # fmt: skip
    assert "+15005550006" not in json.dumps(events)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/connections"),
        ("GET", "/connections/main"),
        ("PUT", "/connections/crm"),
        ("DELETE", "/connections/main"),
        ("POST", "/connections/main/test"),
        ("GET", "/vars"),
        ("PUT", "/vars/X"),
        ("DELETE", "/vars/X"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong"])
def test_tenant_routes_need_the_admin_token(server: LiveServer, method: str, path: str, token: str | None) -> None:
    """Without the right admin token every connections and variables route answers 401 and changes nothing."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    body = {"type": "http", "base_url": "https://api.crm.example", "auth": "bearer", "secret": SECRET, "value": "v"}
    response = httpx.request(method, server.url(BASE + path), json=body, headers=headers)

    assert (response.status_code, response.json()["error"]["type"]) == (401, "UnauthorizedError")
    assert [c.name for c in server.runtime.store.list("acme")] == ["main"]
    assert server.runtime.variables.list("acme") == []
