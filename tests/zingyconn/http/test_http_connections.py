"""HTTP connections end to end: a snippet calls a loopback API through the host, which adds the credential; the
run's result, output, logs, errors and history never hold it, and what the connection does not allow is refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.errors import EgressDeniedError, QuotaExceededError
from tests.servers import uvicorn_in_thread
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.egress.broker import EgressBroker
from zingyconn.egress.ratelimit import SqlRateLimiter
from zingyconn.errors import InvalidConnectionError
from zingyconn.http.broker import HttpRequest, RunHttpRequests, send
from zingyconn.http.client import HttpApi, connection_client
from zingyconn.http.echo import EchoRecorder, create_app
from zingyconn.http.profile import HttpProfile
from zingyconn.http.rules import DEFAULT_HTTP_RATE
from zingyconn.runtime import Runtime
from zingyconn.schema import runs
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.store import ConnectionStore
from zingyconn.twilio.profile import TwilioProfile

#: A secret whose URL-encoded and base64 forms differ from it (``/``, ``+``, ``=``).
SECRET = "s3cr3t/t0ken+Value=42"
BASIC = "crm-user:pa55/w0rd+x"

POST_NOTE = """
api = zingyConn.http(event.get("connection", "crm"))
answer = api.post("/notes", json={"text": "call back"}, params={"source": "test"})
print("echoed", answer.text)
log.info("echoed", body=answer.json(), headers=answer.headers)
return {"status": answer.status_code, "echo": answer.json()}
"""

CALL = """
api = zingyConn.http(event.get("connection", "crm"))
answer = api.request(event["method"], event["path"], params=event.get("params"), headers=event.get("headers"))
return {"status": answer.status_code, "echo": answer.json()}
"""


def _forms(secret: str) -> list[str]:
    """The secret as it could leak: raw, base64 (alone and as a Basic header's user:pass), URL-encoded."""
    return [secret, base64.b64encode(secret.encode()).decode(), quote(secret, safe=""), quote(secret)]


class World:
    """The echo API on loopback and a store with acme's HTTP connections."""

    def __init__(self, tmp_path: Path, port: int, recorder: EchoRecorder) -> None:
        self.recorder = recorder
        self.base_url = f"http://127.0.0.1:{port}"
        db_url = f"sqlite:///{tmp_path / 'zingyconn.db'}"
        self.engine = create_engine(db_url)
        self.keyring = Keyring([("k1", bytes(range(32)))])
        store = ConnectionStore(self.engine, self.keyring)
        prefixes = ("/notes", "/status", "/redirect")
        for name, auth, secret in (
            ("crm", "bearer", SECRET),
            ("basic", "basic", BASIC),
            ("keyed", "header:X-Api-Key", SECRET),
            ("query", "query:api_key", SECRET),
        ):
            store.put("acme", name, self.profile(auth, secret, prefixes=prefixes, methods=("GET", "POST")))
        store.put("acme", "sms", TwilioProfile(account_sid="AC" + "0" * 32, secret="f" * 32))
        self.settings = Settings(data_dir=tmp_path, db_url=db_url)

    def profile(
        self, auth: str, secret: str, *, prefixes: tuple[str, ...] = ("/",), methods: tuple[str, ...] = ("GET",)
    ) -> HttpProfile:
        """A local-test-target profile of the echo API."""
        return HttpProfile(
            base_url=self.base_url,
            auth=auth,
            secret=secret,
            allowed_methods=methods,
            allowed_prefixes=prefixes,
            local_test_target=True,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The echo API and the store."""
    recorder = EchoRecorder()
    with uvicorn_in_thread(create_app(recorder), name="echo") as port:
        running = World(tmp_path_factory.mktemp("http"), port, recorder)
        yield running
        running.engine.dispose()


@pytest.fixture(scope="module")
def runtime(world: World) -> Iterator[Runtime]:
    """A runtime on the world's store."""
    with Runtime(world.settings, engine=world.engine, keyring=world.keyring) as running:
        yield running


def _stored(world: World, run_id: str) -> str:
    with world.engine.connect() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().one()
    return json.dumps({key: row[key] for key in ("result", "stdout", "logs", "error", "egress", "event", "source")})


def _assert_never_leaks(world: World, result: object, run_id: str, secret: str) -> None:
    everything = json.dumps(result) + _stored(world, run_id)
    for form in _forms(secret) + ([secret.partition(":")[2]] if ":" in secret else []):
        assert form not in everything


@pytest.mark.parametrize(
    ("connection", "secret", "header", "sent"),
    [
        ("crm", SECRET, "authorization", f"Bearer {SECRET}"),
        ("basic", BASIC, "authorization", "Basic " + base64.b64encode(BASIC.encode()).decode()),
        ("keyed", SECRET, "x-api-key", SECRET),
    ],
)
def test_posts_json_with_the_injected_credential_that_never_comes_back(
    world: World, runtime: Runtime, connection: str, secret: str, header: str, sent: str
) -> None:
    """The API receives the JSON and the credential; the snippet gets the echo with every form of it masked, and
    the result, output, logs and history hold none of them."""
    before = len(world.recorder.requests)
    result = runtime.run("acme", POST_NOTE, event={"connection": connection})
    assert result.ok, result.error
    received = world.recorder.requests[before:]

    assert [(r.method, r.path, r.query) for r in received] == [("POST", "/notes", {"source": "test"})]
    assert received[0].headers[header] == sent
    assert json.loads(received[0].body) == {"text": "call back"}
    assert result.value["status"] == 200
    assert result.value["echo"]["json"] == {"text": "call back"}
    assert "****" in result.value["echo"]["headers"][header]
    _assert_never_leaks(world, result.to_json(), result.run_id, secret)


def test_query_credential_is_added_and_masked_in_the_echo(world: World, runtime: Runtime) -> None:
    """An API key in the query string arrives; the echoed query shows it masked, and a snippet's own parameter of
    the same name does not replace it."""
    before = len(world.recorder.requests)
    event = {"connection": "query", "method": "GET", "path": "/notes", "params": {"api_key": "mine", "q": "x"}}
    result = runtime.run("acme", CALL, event=event)
    assert result.ok, result.error

    assert world.recorder.requests[before].query == {"api_key": SECRET, "q": "x"}
    assert result.value["echo"]["query"] == {"api_key": "****", "q": "x"}
    _assert_never_leaks(world, result.to_json(), result.run_id, SECRET)


def test_a_redirect_within_the_allowed_prefixes_is_followed(world: World, runtime: Runtime) -> None:
    """/redirect?to=/notes/1 is followed (with the credential, on the same origin); the echo comes from /notes/1."""
    before = len(world.recorder.requests)
    event = {"method": "GET", "path": "/redirect", "params": {"to": f"/notes/1?k={SECRET}"}}
    result = runtime.run("acme", CALL, event=event)
    assert result.ok, result.error

    assert [r.path for r in world.recorder.requests[before:]] == ["/redirect", "/notes/1"]
    assert result.value["echo"]["path"] == "/notes/1"
    _assert_never_leaks(world, result.to_json(), result.run_id, SECRET)


@pytest.mark.parametrize(
    ("event", "message", "reached"),
    [
        ({"method": "GET", "path": "http://evil.example/notes"}, "is not a path under the connection's base URL", []),
        ({"method": "GET", "path": "//evil.example/notes"}, "is not a path under the connection's base URL", []),
        ({"method": "GET", "path": "/admin"}, "Path '/admin' is not allowed by this connection", []),
        ({"method": "GET", "path": "/notesX"}, "is not allowed by this connection", []),
        ({"method": "GET", "path": "/notes/../admin"}, "'.' or '..' segments", []),
        ({"method": "GET", "path": "/notes/%2e%2e/admin"}, "'.' or '..' segments", []),
        ({"method": "DELETE", "path": "/notes/1"}, "Method DELETE is not allowed by this connection", []),
        ({"method": "GET", "path": "/notes", "headers": {"Authorization": "Bearer x"}}, "'Authorization' header", []),
        (
            {"method": "GET", "path": "/redirect", "params": {"to": "/admin"}},
            "outside this connection's base URL and allowed prefixes; the redirect was not followed",
            ["/redirect"],
        ),
        (
            {"method": "GET", "path": "/redirect", "params": {"to": f"http://localhost:1/notes/{SECRET}"}},
            "the redirect was not followed",
            ["/redirect"],
        ),
    ],
)
def test_what_the_connection_does_not_allow_is_refused(
    world: World, runtime: Runtime, event: dict[str, object], message: str, reached: list[str]
) -> None:
    """Another host, another prefix, dot segments, a disallowed method, the credential header and a redirect
    elsewhere are refused with a clear error; only what is listed reached the API, and nothing leaks."""
    before = len(world.recorder.requests)
    result = runtime.run("acme", CALL, event=event)

    assert not result.ok
    assert result.error is not None
    assert result.error.type == "EgressDeniedError"
    assert message in result.error.message
    assert [r.path for r in world.recorder.requests[before:]] == reached
    _assert_never_leaks(world, result.to_json(), result.run_id, SECRET)


LOOK_UP = """
try:
    zingyConn.http(event["connection"])
except LookupError as missing:
    return str(missing)
return "found"
"""


@pytest.mark.parametrize(
    ("tenant", "connection", "said"),
    [
        ("acme", "crm", "found"),
        ("acme", "nope", "No HTTP connection named 'nope'."),
        ("acme", "sms", "No HTTP connection named 'sms'."),  # a Twilio connection is not an HTTP one
        ("globex", "crm", "No HTTP connection named 'crm'."),  # another tenant's is not found
    ],
)
def test_an_unknown_name_is_refused_when_the_client_is_made(
    world: World, runtime: Runtime, tenant: str, connection: str, said: str
) -> None:
    """``zingyConn.http(name)`` raises LookupError for a name the run's tenant has no HTTP connection under, as
    ``zingyConn.twilio(name)`` does, before any request is sent."""
    before = len(world.recorder.requests)
    result = runtime.run(tenant, LOOK_UP, event={"connection": connection})
    assert result.ok, result.error
    assert result.value == said
    assert len(world.recorder.requests) == before
    assert result.egress == ()


def test_a_name_missing_from_the_runs_directory_is_asked_of_the_host(world: World) -> None:
    """A name the run's directory lacks (a connection added since it was read) is looked up on the host, by type."""
    broker = EgressBroker(ConnectionStore(world.engine, world.keyring))
    session = broker.session("acme", profiles={})
    assert isinstance(connection_client(session, "crm", directory={}), HttpApi)  # found by asking the host
    with pytest.raises(LookupError, match="No HTTP connection named 'sms'"):
        connection_client(session, "sms", directory={"crm": {}})


def test_a_private_address_reached_through_dns_is_refused_before_connecting(world: World) -> None:
    """A name that resolves to 10.x or 127.x is refused by the pinned transport before any connection is made
    (the resolver is injected: no packet leaves); a public base URL may not be a private literal either."""
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return {"intranet.example": ["10.1.2.3"], "sneaky.example": ["93.184.216.34", "127.0.0.1"]}[host]

    for host in ("intranet.example", "sneaky.example"):
        profile = HttpProfile(base_url=f"https://{host}/api", auth="bearer", secret=SECRET)
        with pytest.raises(EgressDeniedError, match="resolves to non-public"):
            send(profile.validate(), HttpRequest(method="GET", path="/x"), resolver=resolver)
    assert asked == [("intranet.example", 443), ("sneaky.example", 443)]

    broker = EgressBroker(ConnectionStore(world.engine, world.keyring), resolver=resolver)
    session = broker.session("acme")
    profile = HttpProfile(base_url="https://intranet.example", auth="bearer", secret=SECRET)
    answers = RunHttpRequests(lambda name: profile, session)
    with pytest.raises(EgressDeniedError, match=r"non-public 10\.1\.2\.3") as refused:
        answers.answer({"connection": "x", "method": "GET", "path": "/"})
    assert SECRET not in str(refused.value)

    with pytest.raises(InvalidConnectionError, match="only a connection marked --local-test-target"):
        HttpProfile(base_url="https://127.0.0.1:8443", auth="bearer", secret=SECRET).validate()


def test_the_secret_is_masked_in_response_headers_and_errors(world: World) -> None:
    """An API that echoes the credential in a header hands back only its masked form; an error naming a URL that
    carries a query credential is masked too."""

    async def leaky(request: Request) -> Response:
        return JSONResponse({"seen": request.headers.get("authorization")}, headers={"X-Request-Id": request.headers[
            "authorization"]})  # fmt: skip

    app = Starlette(routes=[Route("/{path:path}", leaky)])
    with uvicorn_in_thread(app, name="leaky") as port:
        answer = send(
            HttpProfile(base_url=f"http://127.0.0.1:{port}", auth="bearer", secret=SECRET, local_test_target=True),
            HttpRequest(method="GET", path="/x"),
        )
    assert answer.headers["x-request-id"] == "Bearer ****"
    assert json.loads(answer.text) == {"seen": "Bearer ****"}

    closed = HttpProfile(base_url="http://127.0.0.1:9", auth="query:key", secret=SECRET, local_test_target=True)
    with pytest.raises(EgressDeniedError) as failed:
        send(closed, HttpRequest(method="GET", path="/x"), timeout_seconds=2)
    assert all(form not in str(failed.value) for form in _forms(SECRET))


def test_a_run_may_make_only_its_request_limit(world: World) -> None:
    """The session's request limit caps a run's HTTP requests (the host refuses the next before sending)."""
    broker = EgressBroker(ConnectionStore(world.engine, world.keyring))
    profile = world.profile("bearer", SECRET, prefixes=("/notes",))
    answers = RunHttpRequests(lambda name: profile, broker.session("acme", max_requests=2))
    before = len(world.recorder.requests)
    for _ in range(2):
        assert answers.answer({"connection": "crm", "method": "GET", "path": "/notes"})["status"] == 200
    with pytest.raises(QuotaExceededError, match="at most 2 HTTP and Twilio requests"):
        answers.answer({"connection": "crm", "method": "GET", "path": "/notes"})
    assert len(world.recorder.requests) == before + 2


def test_a_tenant_may_make_only_its_quota_of_requests(world: World) -> None:
    """The tenant's token bucket (shared by its runs) refuses the request after a burst, before sending it (the
    bucket's clock stands still, so nothing refills while the burst is spent)."""
    limiter = SqlRateLimiter(world.engine, clock=lambda: 1_000_000.0)
    broker = EgressBroker(ConnectionStore(world.engine, world.keyring), rate_limiter=limiter)
    profile = world.profile("bearer", SECRET, prefixes=("/notes",))
    before = len(world.recorder.requests)
    burst = DEFAULT_HTTP_RATE.burst
    for _ in range(2):  # two runs of one tenant share the bucket
        answers = RunHttpRequests(lambda name: profile, broker.session("quota-tenant", max_requests=burst))
        for _request in range(burst // 2):
            answers.answer({"connection": "crm", "method": "GET", "path": "/notes"})
    with pytest.raises(QuotaExceededError, match="per tenant"):
        RunHttpRequests(lambda name: profile, broker.session("quota-tenant")).answer(
            {"connection": "crm", "method": "GET", "path": "/notes"}
        )
    assert len(world.recorder.requests) == before + burst


def _stored_egress(world: World, run_id: str) -> list[dict[str, Any]]:
    with world.engine.connect() as conn:
        stored = conn.execute(sa.select(runs.c.egress).where(runs.c.id == run_id)).scalar_one()
    return list(json.loads(stored) if isinstance(stored, str) else stored)


@pytest.mark.parametrize(("connection", "secret"), [("crm", SECRET), ("basic", BASIC), ("query", SECRET)])
def test_each_request_is_in_the_runs_egress_record_without_the_credential(
    world: World, runtime: Runtime, connection: str, secret: str
) -> None:
    """An answered request and a refused one are both on the run's egress record and in its history: method, host,
    path (no query: a ``query:`` credential goes there), status, outcome, duration; no form of the secret is."""
    source = POST_NOTE.replace('return {"status"', 'api.delete("/notes/1")\nreturn {"status"')
    result = runtime.run("acme", source, event={"connection": connection})
    assert not result.ok  # DELETE is not allowed: the second request is refused
    host = world.base_url.removeprefix("http://")

    for egress in (list(result.egress), _stored_egress(world, result.run_id)):
        answered, refused = egress
        assert (answered["method"], answered["host"], answered["path"], answered["status"]) == (
            "POST", host, "/notes", 200)  # fmt: skip
        assert "outcome" not in answered
        assert answered["duration_ms"] > 0
        assert (refused["method"], refused["path"], refused["status"], refused["outcome"]) == (
            "DELETE", "/notes/1", None, "refused")  # fmt: skip
        assert "Method DELETE is not allowed" in str(refused["error"])
    _assert_never_leaks(world, result.to_json(), result.run_id, secret)


def test_http_and_twilio_requests_share_the_runs_request_limit(world: World) -> None:
    """The session's recorded calls count against ``egress_requests``: the third request of a two-request run is
    refused before sending, and recorded as refused."""
    broker = EgressBroker(ConnectionStore(world.engine, world.keyring))
    session = broker.session("acme", max_requests=2)
    profile = world.profile("bearer", SECRET, prefixes=("/notes",))
    answers = RunHttpRequests(lambda name: profile, session)
    for _ in range(2):
        answers.answer({"connection": "crm", "method": "GET", "path": "/notes"})
    with pytest.raises(QuotaExceededError):
        answers.answer({"connection": "crm", "method": "GET", "path": "/notes"})
    assert [(call["status"], call.get("outcome")) for call in session.egress()] == [
        (200, None), (200, None), (None, "refused")]  # fmt: skip


def test_the_tenant_quota_is_the_zingyconn_quota_http_setting(world: World) -> None:
    """ZINGYCONN_QUOTA_HTTP=PER_SECOND/BURST sets the tenant's bucket: a burst of 2 lets two requests through and
    refuses the third before sending it, naming the setting."""
    ConnectionStore(world.engine, world.keyring).put("slow-tenant", "crm", world.profile("bearer", SECRET))
    env = {"ZINGYCONN_DATA_DIR": str(world.settings.data_dir), "ZINGYCONN_DB_URL": world.settings.db_url,
           "ZINGYCONN_QUOTA_HTTP": "0.001/2"}  # fmt: skip
    source = 'api = zingyConn.http("crm")\nfor _ in range(3):\n    api.get("/notes")\n'
    before = len(world.recorder.requests)
    with Runtime(Settings.from_env(env), engine=world.engine, keyring=world.keyring) as running:
        result = running.run("slow-tenant", source)

    assert result.error is not None
    assert result.error.type == "QuotaExceededError"
    assert "0.001 per second (bursts of 2)" in result.error.message
    assert "ZINGYCONN_QUOTA_HTTP" in result.error.message
    assert len(world.recorder.requests) == before + 2
    assert [call.get("outcome") for call in result.egress] == [None, None, "refused"]
