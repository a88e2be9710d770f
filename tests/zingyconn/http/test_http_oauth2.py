"""OAuth 2 client credentials: the host fetches the access token, caches it across runs, refreshes it when it is
about to expire or the API refuses it, and neither the client secret nor the access token reaches the snippet."""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.errors import EgressDeniedError
from tests.servers import uvicorn_in_thread
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.errors import InvalidConnectionError
from zingyconn.hosts.cli import main
from zingyconn.http.broker import HttpRequest, send
from zingyconn.http.profile import HttpProfile
from zingyconn.runtime import Runtime
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.store import ConnectionStore

CLIENT_SECRET = "client-s3cret/value+1"


@dataclass
class AuthServer:
    """A token endpoint and an API that accepts only the last token it issued."""

    lifetime_seconds: int = 3600
    #: Unique per server: the host's token cache is keyed by it, so no test reuses another's token.
    client_id: str = field(default_factory=lambda: f"client-{uuid.uuid4().hex[:12]}")
    issued: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def app(self) -> Starlette:
        """The ASGI app: POST /oauth/token, and /api/* echoing the Authorization it got."""

        async def token(request: Request) -> Response:
            form = dict(await request.form())
            expected = "Basic " + base64.b64encode(f"{self.client_id}:{CLIENT_SECRET}".encode()).decode()
            if request.headers.get("authorization") != expected or form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            issued = f"access-{next(self.counter)}-{'x' * 24}"
            self.issued.append(issued)
            return JSONResponse({"access_token": issued, "token_type": "Bearer", "expires_in": self.lifetime_seconds})

        async def api(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            self.seen.append(auth)
            if not self.issued or auth != f"Bearer {self.issued[-1]}":
                return JSONResponse({"error": "invalid_token"}, status_code=401)
            return JSONResponse({"auth": auth, "scope_ok": True})

        return Starlette(routes=[Route("/oauth/token", token, methods=["POST"]), Route("/api/{rest:path}", api)])


@pytest.fixture
def server() -> Iterator[tuple[AuthServer, str]]:
    """The auth server on loopback and its base URL."""
    auth = AuthServer()
    with uvicorn_in_thread(auth.app(), name="oauth") as port:
        yield auth, f"http://127.0.0.1:{port}"


def _profile(auth: AuthServer, base: str, secret: str = CLIENT_SECRET) -> HttpProfile:
    return HttpProfile(
        base_url=f"{base}/api",
        auth="oauth2",
        secret=secret,
        token_url=f"{base}/oauth/token",
        client_id=auth.client_id,
        local_test_target=True,
    ).validate()


def test_the_token_is_fetched_once_cached_and_never_reaches_the_snippet(
    server: tuple[AuthServer, str], tmp_path: Path
) -> None:
    """Two runs share one token; the API gets it as a Bearer; the runs see it masked, never the client secret."""
    auth, base = server
    db_url = f"sqlite:///{tmp_path / 'zingyconn.db'}"
    engine = create_engine(db_url)
    keyring = Keyring([("k1", bytes(range(32)))])
    ConnectionStore(engine, keyring).put("acme", "crm", _profile(auth, base))
    snippet = "answer = zingyConn.http('crm').get('/items')\nprint(answer.text)\nreturn answer.json()"
    with Runtime(Settings(data_dir=tmp_path, db_url=db_url), engine=engine, keyring=keyring) as runtime:
        results = [runtime.run("acme", snippet) for _ in range(2)]
        stored = [runtime.history.get("acme", result.run_id).to_json() for result in results]
    engine.dispose()

    assert all(result.ok for result in results), [result.error for result in results]
    assert len(auth.issued) == 1
    assert auth.seen == [f"Bearer {auth.issued[0]}"] * 2
    assert results[0].value == {"auth": "Bearer ****", "scope_ok": True}
    everything = json.dumps([[result.to_json() for result in results], stored])
    for secret in (auth.issued[0], CLIENT_SECRET):
        assert secret not in everything


def test_a_token_about_to_expire_or_refused_is_replaced(server: tuple[AuthServer, str]) -> None:
    """A token within the refresh margin is fetched again; a cached token the API refuses (401) is replaced once."""
    auth, base = server
    auth.lifetime_seconds = 5  # inside the 30 s margin: never reused
    profile = _profile(auth, base, secret=CLIENT_SECRET)
    for _ in range(2):
        assert send(profile, HttpRequest(method="GET", path="/a")).status == 200
    assert len(auth.issued) == 2

    auth.lifetime_seconds = 3600
    assert send(profile, HttpRequest(method="GET", path="/a")).status == 200  # cached now
    auth.issued.append("revoked-elsewhere")  # the API now accepts only a token the host does not hold
    answer = send(profile, HttpRequest(method="GET", path="/a"))
    assert answer.status == 200  # refused with the cached token, then sent once more with a fresh one
    assert len(auth.issued) == 5
    assert auth.seen[-2:] == [f"Bearer {auth.issued[2]}", f"Bearer {auth.issued[4]}"]


def test_a_wrong_client_secret_is_a_clear_refusal(server: tuple[AuthServer, str]) -> None:
    """The token endpoint's 401 becomes one sentence naming the endpoint and what to check; nothing reaches the
    API."""
    auth, base = server
    with pytest.raises(EgressDeniedError, match=r"token endpoint .*/oauth/token answered HTTP 401") as refused:
        send(_profile(auth, base, secret="wrong-secret-123"), HttpRequest(method="GET", path="/a"))
    assert "client id and secret" in str(refused.value)
    assert "wrong-secret-123" not in str(refused.value)
    assert auth.seen == []


def test_oauth2_options_are_checked_and_added_from_the_cli(server: tuple[AuthServer, str], tmp_path: Path) -> None:
    """A token URL off the local test target's origin or a missing client id is refused; the CLI stores the rest."""
    auth, base = server
    with pytest.raises(InvalidConnectionError, match="base URL's origin"):
        HttpProfile(base_url=f"{base}/api", auth="oauth2", secret="s" * 10, token_url="http://127.0.0.2:1/t",
                    client_id="c", local_test_target=True).validate()  # fmt: skip
    with pytest.raises(InvalidConnectionError, match="client_id is required"):
        HttpProfile(base_url=f"{base}/api", auth="oauth2", secret="s" * 10, token_url=f"{base}/t",
                    local_test_target=True).validate()  # fmt: skip
    env = {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_KEYS": "", "ZINGYCONN_DB_URL": ""}
    args = ["connections", "add", "crm", "--type", "http", "--base-url", f"{base}/api", "--auth", "oauth2",
            "--token-url", f"{base}/oauth/token", "--client-id", auth.client_id, "--local-test-target"]  # fmt: skip
    added = CliRunner().invoke(main, args, input=CLIENT_SECRET + "\n", env=env, catch_exceptions=False)
    tested = CliRunner().invoke(main, ["connections", "test", "crm"], env=env, catch_exceptions=False)
    assert added.exit_code == 0, added.output
    assert tested.exit_code == 0, tested.output
    assert CLIENT_SECRET not in added.output + tested.output
    assert ConnectionStore.from_settings(Settings.from_env(env)).get("default", "crm") == _profile(auth, base)
