"""The command API (tenant tokens, cloud flows only), the admin hooks API, and the hooks/tokens CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator
from tests.hosts.live_server import LiveServer, live_server
from zingyconn.config import Settings
from zingyconn.hosts.cli import main
from zingyconn.runtime import Runtime
from zingyconn.secrets.tokens import TokenStore
from zingyconn.twilio.profile import TwilioProfile

ADMIN = "admin-token-for-tests"


@pytest.fixture
def env(tmp_path: Path, emulator: Emulator) -> dict[str, str]:
    """Environment of a store in a temporary directory, talking to the emulator."""
    return {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_TWILIO_BASE_URL": emulator.base_url}


@pytest.fixture
def server(env: dict[str, str], emulator: Emulator) -> Iterator[LiveServer]:
    """A server whose tenant 'acme' has connection 'main' on the emulator's account."""
    with Runtime(Settings.from_env(env)) as runtime:
        # The API-key form: the emulator's default Auth Token is not hex, which the store's validation refuses.
        profile = TwilioProfile(account_sid=emulator.account_sid, api_key=emulator.api_key, secret=emulator.api_secret)
        runtime.store.put("acme", "main", profile)
        with live_server(runtime, admin_token=ADMIN) as live:
            yield live


def _command(server: LiveServer, token: str | None, flow: str | None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if flow is not None:
        headers["X-Zingy-Flow"] = flow
    body = {"fromPhone": MAGIC_SENDER, "toPhone": RECIPIENT, "msg": "hi"}
    return httpx.post(server.url("/api/v1/connections/main/commands/sendMessage"), json=body, headers=headers)


def test_cloud_flow_with_a_tenant_token_runs_the_command(server: LiveServer, emulator: Emulator) -> None:
    """A valid token and X-Zingy-Flow: cloud send the message through the tenant's connection."""
    token = TokenStore(server.runtime.engine).create("acme")
    response = _command(server, token, "cloud")

    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    assert response.json()["result"]["status"] == "queued"
    assert [r.method for r in emulator.requests] == ["POST"]


@pytest.mark.parametrize(
    ("token", "flow", "headers", "status", "error"),
    [
        pytest.param(None, "cloud", {}, 401, "UnauthorizedError", id="no-token"),
        pytest.param("zct_forged", "cloud", {}, 401, "UnauthorizedError", id="unknown-token"),
        pytest.param("VALID", "page", {}, 403, "FlowNotAllowedError", id="page-flow"),
        pytest.param("VALID", "cloud", {"Origin": "https://app.example"}, 403, "FlowNotAllowedError", id="browser"),
        pytest.param("VALID", None, {}, 400, "ValidationError", id="no-flow"),
    ],
)
def test_command_is_refused_without_token_or_from_a_page(
    server: LiveServer,
    emulator: Emulator,
    token: str | None,
    flow: str | None,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    """Missing/unknown tokens are 401; page flows (declared, or a browser's Origin) are 403; nothing is sent."""
    if token == "VALID":
        token = TokenStore(server.runtime.engine).create("acme")
    response = _command(server, token, flow, **headers)

    assert (response.status_code, response.json()["ok"], response.json()["error"]["type"]) == (status, False, error)
    assert emulator.requests == []


def test_a_token_only_reaches_its_own_tenant(server: LiveServer, emulator: Emulator) -> None:
    """Another tenant's token cannot use acme's connection (it has none of that name)."""
    token = TokenStore(server.runtime.engine).create("globex")
    response = _command(server, token, "cloud")

    assert (response.status_code, response.json()["error"]["type"]) == (404, "ConnectionNotFoundError")
    assert emulator.requests == []


def test_admin_api_manages_hooks(server: LiveServer) -> None:
    """With the admin token, hooks are put, shown, listed, run and deleted; compile errors are 400."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    base = server.url("/api/v1/admin/tenants/acme/hooks")

    put = httpx.put(f"{base}/ping", json={"source": "return 'pong'", "limits": {"wall_seconds": 2}}, headers=auth)
    bad = httpx.put(f"{base}/bad", json={"source": "return ().__class__.__base__"}, headers=auth)
    unknown = httpx.put(f"{base}/v", json={"source": "return 1", "verify_with": "nope"}, headers=auth)
    keyed = httpx.put(f"{base}/v", json={"source": "return 1", "verify_with": "main"}, headers=auth)
    listed = httpx.get(base, headers=auth)
    ran = httpx.get(server.url("/hooks/acme/ping"))
    deleted = httpx.delete(f"{base}/ping", headers=auth)
    gone = httpx.get(f"{base}/ping", headers=auth)

    assert (put.status_code, put.json()["hook"]["limits"]) == (200, {"wall_seconds": 2.0})
    assert (bad.status_code, bad.json()["error"]["type"]) == (400, "CompileError")
    assert bad.json()["error"]["errors"]
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (400, "verify_with")
    assert (keyed.status_code, keyed.json()["error"]["field"]) == (400, "verify_with")  # API key: no Auth Token
    assert [hook["name"] for hook in listed.json()["hooks"]] == ["ping"]
    assert ran.text == "pong"
    assert deleted.json() == {"ok": True}
    assert gone.status_code == 404


@pytest.mark.parametrize("token", [None, "wrong"])
def test_admin_api_needs_the_admin_token(server: LiveServer, token: str | None) -> None:
    """Without the right admin token the admin API answers 401 and changes nothing."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = httpx.put(server.url("/api/v1/admin/tenants/acme/hooks/x"), json={"source": "return 1"}, headers=headers)

    assert (response.status_code, response.json()["error"]["type"]) == (401, "UnauthorizedError")
    assert httpx.get(server.url("/hooks/acme/x")).status_code == 404


def test_cli_tokens_and_hooks(env: dict[str, str], server: LiveServer, tmp_path: Path) -> None:
    """`tokens create` prints a token the API accepts; `hooks add/list/show/delete` manage the same store."""
    runner = CliRunner()
    snippet = tmp_path / "reply.py"
    snippet.write_text("return '<Response/>'\n")

    created = runner.invoke(main, ["tokens", "create", "--tenant", "acme", "--label", "ci"], env=env)
    add = runner.invoke(
        main, ["hooks", "add", "sms", "--tenant", "acme", "--file", str(snippet), "--verify-with", "main"], env=env
    )
    plain = runner.invoke(main, ["hooks", "add", "sms", "--tenant", "acme", "--file", str(snippet)], env=env)
    keyed = runner.invoke(
        main, ["hooks", "add", "x", "--tenant", "acme", "--file", str(snippet), "--verify-with", "nope"], env=env
    )
    listed = runner.invoke(main, ["hooks", "list", "--tenant", "acme"], env=env)
    shown = runner.invoke(main, ["hooks", "show", "sms", "--tenant", "acme"], env=env)
    tokens = runner.invoke(main, ["tokens", "list", "--tenant", "acme"], env=env)

    assert created.exit_code == 0, created.output
    assert TokenStore(server.runtime.engine).tenant_for(created.stdout.strip()) == "acme"
    assert (add.exit_code, "holds no Auth Token" in add.output) == (2, True)  # an API-key connection cannot verify
    assert plain.exit_code == 0, plain.output
    assert "/hooks/acme/sms" in plain.output
    assert (keyed.exit_code, "has no connection 'nope'" in keyed.output) == (2, True)
    assert "sms" in listed.output
    assert "verify with: - (no signature check)" in shown.output
    assert "ci" in tokens.output
    deleted = runner.invoke(main, ["hooks", "delete", "sms", "--tenant", "acme"], env=env)
    assert deleted.exit_code == 0
    assert runner.invoke(main, ["hooks", "show", "sms", "--tenant", "acme"], env=env).exit_code == 2
