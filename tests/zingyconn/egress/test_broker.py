"""The egress broker, host side: allowlist, credentials, quotas, rate limits, records (no sandbox involved).

Every server here listens on 127.0.0.1; the address checks are proven with injected resolvers that answer with
loopback and private addresses, and with one test that runs inside its own empty network namespace.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sandbox.errors import EgressDeniedError, QuotaExceededError
from tests.zingyconn.capability import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    RECIPIENT,
    SENDER,
    World,
    twilio_world,
)
from zingyconn.database import create_engine
from zingyconn.egress.broker import EgressBroker
from zingyconn.egress.ledger import SendLedger
from zingyconn.egress.policy import UrlPolicy
from zingyconn.egress.protocol import OP_CONNECT, OP_CREDENTIALS, OP_HTTP
from zingyconn.egress.ratelimit import LEASE_SECONDS, LeasedRateLimiter, Rate, RedisRateLimiter, SqlRateLimiter
from zingyconn.egress.transport import PinnedBackend, is_public_address
from zingyconn.errors import ConnectionNotFoundError
from zingyconn.twilio.billing import TWILIO_WRITES
from zingyconn.twilio.client import PLACEHOLDER_PASSWORD

API = "https://api.twilio.com/2010-04-01"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """The emulator and a store with acme's and globex's connections."""
    with twilio_world(tmp_path) as running:
        yield running


@pytest.fixture
def broker(world: World) -> Iterator[EgressBroker]:
    """A broker pointed at the emulator, with a SQL rate limiter."""
    broker = EgressBroker(
        world.store,
        base_url=world.emulator.base_url,
        rate_limiter=SqlRateLimiter(world.engine),
        ledger=SendLedger(world.engine),
    )
    yield broker
    broker.close()


def _http(url: str, **extra: Any) -> dict[str, Any]:
    return {"method": "GET", "url": url, "params": [], "data": [], "headers": {}, **extra}


def test_connection_client_sends_with_the_stored_token(world: World, broker: EgressBroker) -> None:
    """A host-side client of acme's "main" creates a message as the account; the call is recorded."""
    session = broker.session("acme")
    client = broker.client("acme", "main", session=session)
    message = client.messages.create(to=RECIPIENT, from_=SENDER, body="hi")

    assert client.password == PLACEHOLDER_PASSWORD
    assert message.status == "queued"
    assert [(r.method, r.path, r.username) for r in world.emulator.requests] == [
        ("POST", world.messages_path, ACCOUNT_SID)
    ]
    [call] = session.egress()
    assert (call["method"], call["path"], call["status"]) == ("POST", world.messages_path, 201)
    assert call["host"] == world.emulator.base_url.removeprefix("http://")
    assert AUTH_TOKEN in session.secrets


def test_api_key_connection_authenticates_as_the_key(world: World, broker: EgressBroker) -> None:
    """An API-key connection sends the key SID as the Basic user and the account SID in the path."""
    client = broker.client("acme", "keyed")
    client.messages.list(limit=1)

    assert [(r.path, r.username) for r in world.emulator.requests] == [(world.messages_path, API_KEY)]


@pytest.mark.parametrize("name", ["nope", "theirs"])
def test_unknown_and_foreign_connections_are_not_found_alike(broker: EgressBroker, name: str) -> None:
    """Another tenant's connection name is reported exactly like a name that does not exist."""
    with pytest.raises(ConnectionNotFoundError, match=f"^Tenant 'acme' has no connection named '{name}'.$"):
        broker.client("acme", name)
    assert broker.session("acme").request(OP_CONNECT, {"connection": name}) == {"found": False}


def test_connect_answer_carries_no_secret(broker: EgressBroker) -> None:
    """The connect answer names the account and Basic user only."""
    answer = broker.session("acme").request(OP_CONNECT, {"connection": "keyed"})
    assert answer == {"found": True, "account_sid": ACCOUNT_SID, "username": API_KEY}


def test_registered_credentials_are_used_and_remembered_for_masking(world: World, broker: EgressBroker) -> None:
    """Credentials a snippet registers authenticate its requests and join the session's secrets."""
    session = broker.session("acme")
    credential = session.request(OP_CREDENTIALS, {"username": ACCOUNT_SID, "password": AUTH_TOKEN})["credential"]
    answer = session.request(OP_HTTP, _http(f"{API}/Accounts/{ACCOUNT_SID}/Messages.json", credential=credential))

    assert answer["status"] == 200
    assert world.emulator.requests[-1].username == ACCOUNT_SID
    assert session.secrets == [AUTH_TOKEN]


def test_proxy_variables_are_ignored(world: World, broker: EgressBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY and ALL_PROXY in the host's environment do not divert broker traffic."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # discard port: a proxied request would fail
    broker.client("acme", "main").messages.list(limit=1)
    assert world.emulator.requests[-1].username == ACCOUNT_SID


def test_snippet_headers_cannot_set_authorization_or_host(world: World, broker: EgressBroker) -> None:
    """Authorization, Host and other non-allowlisted headers from the child are dropped."""
    forged = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    headers = {"Authorization": f"Basic {forged}", "Host": "evil.example", "X-Forwarded-For": "1.2.3.4"}
    answer = broker.session("acme").request(
        OP_HTTP, _http(f"{API}/Accounts/{ACCOUNT_SID}/Messages.json", headers=headers)
    )

    assert answer["status"] == 401  # no credentials were sent: the forged header never left the broker
    assert world.emulator.requests[-1].username is None


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://169.254.169.254/latest/meta-data/iam/", id="metadata"),
        pytest.param("https://evil.example/2010-04-01/Accounts.json", id="foreign-host"),
        pytest.param("http://api.twilio.com/2010-04-01/Accounts.json", id="plain-http"),
        pytest.param("https://user:pw@api.twilio.com/x", id="userinfo"),
        pytest.param("https://api.twilio.com.evil.example/x", id="suffix-trick"),
        pytest.param("https://evil.example#.twilio.com/x", id="fragment-trick"),
        pytest.param("https://api.x@evil.example#.us1.twilio.com/x", id="edge-splice"),
        pytest.param("https://api.twilio.com:8443/x", id="odd-port"),
        pytest.param("https://api.twilio.com\\@evil.example/x", id="backslash"),
        pytest.param("https://api.twilio.com/x\r\nHost: evil", id="crlf"),
        pytest.param("https://127.0.0.1/x", id="ip-literal"),
        pytest.param("https://[::1]/x", id="ipv6-literal"),
        pytest.param("file:///etc/passwd", id="file-scheme"),
        pytest.param("https://twilio.com./x", id="trailing-dot"),
        pytest.param("http://[::1", id="unparsable"),
        pytest.param("https://api.twilio.com:99999/x", id="port-out-of-range"),
        pytest.param("https://api.twilio.com%2f@evil.example/x", id="encoded-slash-userinfo"),
        pytest.param("https://xn--twilio-.com/x", id="not-twilio-suffix"),
    ],
)
def test_real_mode_policy_refuses_non_twilio_urls(url: str) -> None:
    """Without an emulator only https://*.twilio.com (plain DNS name, default port) is reachable."""
    with pytest.raises(EgressDeniedError, match="not allowed"):
        UrlPolicy(None, writes=TWILIO_WRITES).target(url)


def test_real_mode_policy_keeps_twilio_urls() -> None:
    """Twilio product hosts pass unchanged (the default port is normalised away)."""
    target = UrlPolicy(None, writes=TWILIO_WRITES).target(
        "https://API.twilio.com:443/2010-04-01/Accounts/AC1/Messages.json?PageSize=2"
    )
    assert (target.url, target.host) == (
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?PageSize=2",
        "api.twilio.com",
    )
    assert (
        UrlPolicy(None, writes=TWILIO_WRITES).target("https://messaging.twilio.com/v1/Services").host
        == "messaging.twilio.com"
    )


def test_emulator_mode_maps_twilio_onto_the_base_url_and_nothing_else() -> None:
    """With a base URL, Twilio URLs go to it, its own origin is allowed, and every other origin is refused."""
    policy = UrlPolicy("http://127.0.0.1:8765", writes=TWILIO_WRITES)
    assert policy.target(f"{API}/Accounts.json?x=1").url == "http://127.0.0.1:8765/2010-04-01/Accounts.json?x=1"
    assert policy.target("http://127.0.0.1:8765/2010-04-01/Accounts.json").host == "127.0.0.1:8765"
    for url in ("http://127.0.0.1:8766/x", "http://localhost:8765/x", "http://169.254.169.254/x"):
        with pytest.raises(EgressDeniedError):
            policy.target(url)


def test_refused_request_is_recorded_and_never_sent(world: World, broker: EgressBroker) -> None:
    """A refused URL raises EgressDeniedError in the caller, is recorded with its reason, and sends nothing."""
    session = broker.session("acme")
    with pytest.raises(EgressDeniedError):
        session.request(OP_HTTP, _http("http://169.254.169.254/latest/meta-data/", connection="main"))

    [call] = session.egress()
    assert (call["host"], call["status"]) == ("169.254.169.254", None)
    assert "EgressDeniedError" in call["error"]
    assert world.emulator.requests == []


def test_get_page_with_a_foreign_url_is_refused(world: World, broker: EgressBroker) -> None:
    """``get_page(url)`` on a brokered client cannot carry the credentials anywhere but Twilio."""
    client = broker.client("acme", "main")
    with pytest.raises(EgressDeniedError):
        client.messages.get_page("https://evil.example/steal")
    with pytest.raises(EgressDeniedError):
        client.request("GET", "http://169.254.169.254/latest/meta-data/")
    assert world.emulator.requests == []


def test_per_session_request_cap(broker: EgressBroker) -> None:
    """The request after the session's cap raises QuotaExceededError naming the limit."""
    session = broker.session("acme", max_requests=2)
    url = f"{API}/Accounts/{ACCOUNT_SID}/Messages.json"
    for _ in range(2):
        session.request(OP_HTTP, _http(url, connection="main"))
    with pytest.raises(QuotaExceededError, match="egress_requests"):
        session.request(OP_HTTP, _http(url, connection="main"))


def test_message_creation_is_rate_limited_per_tenant(world: World) -> None:
    """Once a tenant's bucket is empty, creating a message is refused before it reaches Twilio."""
    broker = EgressBroker(
        world.store,
        base_url=world.emulator.base_url,
        rate_limiter=SqlRateLimiter(world.engine, clock=lambda: 1000.0),
        message_rate=Rate(per_second=1.0, burst=3),
        max_rate_wait_seconds=0.0,
    )
    client = broker.client("acme", "main")
    for _ in range(3):
        client.messages.create(to=RECIPIENT, from_=SENDER, body="hi")
    with pytest.raises(QuotaExceededError, match="rate limited"):
        client.messages.create(to=RECIPIENT, from_=SENDER, body="one too many")
    client.messages.list(limit=1)  # reads are not rate limited

    assert [r.method for r in world.emulator.requests] == ["POST", "POST", "POST", "GET"]
    other = broker.client("acme", "keyed")  # same tenant, other connection: same bucket
    with pytest.raises(QuotaExceededError):
        other.messages.create(to=RECIPIENT, from_=SENDER, body="still acme")


def test_idempotency_key_deduplicates_creates_across_sessions(world: World, broker: EgressBroker) -> None:
    """Two sessions with the same idempotency key send the first message once and replay it the second time."""
    sids = []
    for _ in range(2):
        session = broker.session("acme", idempotency_key="task-1")
        sids.append(
            broker.client("acme", "main", session=session).messages.create(to=RECIPIENT, from_=SENDER, body="x").sid
        )
    assert sids[0] == sids[1]
    assert [r.method for r in world.emulator.requests] == ["POST"]


@contextlib.contextmanager
def _odd_server(status: int, body: bytes, *, delay_seconds: float = 0.0) -> Iterator[str]:
    """Serve every request with *status* and *body* on a free loopback port; yield its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's API
            time.sleep(delay_seconds)
            self.send_response(status)
            self.send_header("Location", "http://169.254.169.254/")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # http.server's API
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_redirects_are_refused(world: World) -> None:
    """A 3xx answer is refused, never followed."""
    with _odd_server(302, b"") as base_url:
        session = EgressBroker(world.store, base_url=base_url).session("acme")
        with pytest.raises(EgressDeniedError, match="redirect"):
            session.request(OP_HTTP, _http(f"{API}/Accounts.json"))
    assert session.egress()[-1]["outcome"] == "refused"
    assert "retryable" not in session.egress()[-1]


def test_oversized_answers_are_dropped(world: World) -> None:
    """An answer over the response cap is refused instead of being passed to the snippet."""
    with _odd_server(200, b"x" * 5000) as base_url:
        session = EgressBroker(world.store, base_url=base_url, max_response_bytes=4096).session("acme")
        with pytest.raises(EgressDeniedError, match="larger than"):
            session.request(OP_HTTP, _http(f"{API}/Accounts.json"))


def test_request_timeout_is_bounded_by_the_run_deadline(world: World) -> None:
    """A slow answer ends in EgressDeniedError once the session's deadline passes."""
    with _odd_server(200, b"{}", delay_seconds=3.0) as base_url:
        broker = EgressBroker(world.store, base_url=base_url)
        session = broker.session("acme", deadline=broker.clock() + 0.3)
        with pytest.raises(EgressDeniedError, match="timed out"):
            session.request(OP_HTTP, _http(f"{API}/Accounts.json"))
        assert session.egress()[-1]["outcome"] == "timed_out"
        assert session.egress()[-1]["retryable"] is True
        expired = broker.session("acme", deadline=broker.clock() - 1)
        with pytest.raises(EgressDeniedError, match="no time left"):
            expired.request(OP_HTTP, _http(f"{API}/Accounts.json"))


def test_a_request_no_server_answers_is_recorded_as_no_answer(world: World) -> None:
    """A refused connection is typed on the record (``outcome: no_answer``, retryable), whatever its message says."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{unused.getsockname()[1]}"  # bound, not listening: connections are refused
        session = EgressBroker(world.store, base_url=base_url).session("acme")
        with pytest.raises(EgressDeniedError):
            session.request(OP_HTTP, _http(f"{API}/Accounts.json"))
    record = session.egress()[-1]
    assert (record["status"], record["outcome"], record["retryable"]) == (None, "no_answer", True)


@pytest.mark.parametrize(
    "addresses",
    [
        pytest.param(["127.0.0.1"], id="loopback"),
        pytest.param(["169.254.169.254"], id="metadata"),
        pytest.param(["10.0.0.7"], id="rfc1918"),
        pytest.param(["100.64.0.1"], id="cgnat"),
        pytest.param(["::1"], id="ipv6-loopback"),
        pytest.param(["::ffff:127.0.0.1"], id="ipv4-mapped"),
        pytest.param(["fe80::1%eth0"], id="link-local-v6"),
        pytest.param(["2002:7f00:1::"], id="6to4-loopback"),
        pytest.param(["8.8.8.8", "192.168.1.1"], id="mixed-answer"),
        pytest.param([], id="no-answer"),
    ],
)
def test_pinned_backend_refuses_private_answers(addresses: list[str]) -> None:
    """A name resolving (even partly) to a non-public address is refused before any connection."""
    backend = PinnedBackend(resolver=lambda host, port: addresses)
    with pytest.raises(EgressDeniedError):
        backend.pin("api.twilio.com", 443)


def test_real_mode_refuses_a_twilio_name_that_resolves_to_loopback(world: World) -> None:
    """DNS answering 127.0.0.1 for api.twilio.com (rebinding) is refused; the loopback emulator gets nothing."""
    import socket

    def resolve_like_localhost(host: str, port: int) -> list[str]:
        return [str(info[4][0]) for info in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)]

    session = EgressBroker(world.store, resolver=resolve_like_localhost).session("acme")
    with pytest.raises(EgressDeniedError, match="non-public"):
        session.request(OP_HTTP, _http(f"{API}/Accounts/{ACCOUNT_SID}/Messages.json", connection="main"))
    assert world.emulator.requests == []


def test_public_addresses_pass_the_check() -> None:
    """Globally routable unicast addresses are public; the documentation and multicast ranges are not."""
    import ipaddress

    assert is_public_address(ipaddress.ip_address("8.8.8.8"))
    assert is_public_address(ipaddress.ip_address("2606:4700:4700::1111"))
    assert not is_public_address(ipaddress.ip_address("192.0.2.1"))
    assert not is_public_address(ipaddress.ip_address("224.0.0.1"))


_PIN_SCRIPT = r"""
import socket, subprocess, sys, threading
from sandbox.errors import EgressDeniedError
from zingyconn.egress.transport import HttpTransport, PinnedBackend
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", "8.8.8.8/32", "dev", "lo"], check=True)
seen = []
listeners = []
for address in ("8.8.8.8", "127.0.0.1"):
    sock = socket.socket(); sock.bind((address, 443)); sock.listen(); listeners.append(sock)
    def accept(sock=sock, address=address):
        conn, _ = sock.accept(); seen.append(address); conn.close()
    threading.Thread(target=accept, daemon=True).start()
answers = iter([["8.8.8.8"], ["127.0.0.1"], ["127.0.0.1"]])  # rebinding: the 2nd answer would be loopback
transport = HttpTransport(PinnedBackend(resolver=lambda host, port: next(answers)), max_response_bytes=1000)
try:
    transport.send("GET", "https://api.twilio.com/x", headers=[("Host", "api.twilio.com")], body=b"", timeout_seconds=2)
except EgressDeniedError as exc:
    print("denied:", exc)
import time; time.sleep(0.2)
print("seen:", seen)
"""


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs unshare and ip")
def test_connection_goes_to_the_checked_address_in_a_private_netns() -> None:
    """Inside an empty network namespace: the transport connects to the address it checked, resolving once.

    8.8.8.8 is put on the namespace's own loopback device, so nothing leaves the box; the TLS handshake then
    fails against the bare listener, which is expected. A second (rebound) answer would have pointed at 127.0.0.1.
    """
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("network namespaces are unavailable here")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _PIN_SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "seen: ['8.8.8.8']" in done.stdout, done.stdout


def test_sql_rate_limiter_refills_over_time(tmp_path: Path) -> None:
    """A bucket empties after its burst and gains tokens at its rate (injected clock)."""
    now = [0.0]
    limiter = SqlRateLimiter(create_engine(f"sqlite:///{tmp_path / 'r.db'}"), clock=lambda: now[0])
    rate = Rate(per_second=2.0, burst=2)
    assert [limiter.acquire("t", "b", rate) for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert [limiter.acquire("t", "b", rate) for _ in range(2)] == [True, False]
    assert limiter.acquire("other", "b", rate)  # buckets are per tenant


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sql_rate_limiter_never_overspends_under_concurrency(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Eight threads racing for a bucket of 20 (clock frozen) get exactly 20 tokens between them."""
    url = f"sqlite:///{tmp_path / 'r.db'}" if backend == "sqlite" else str(request.getfixturevalue("postgres_url"))
    engine = create_engine(url)
    limiter = SqlRateLimiter(engine, clock=lambda: 50.0)
    rate = Rate(per_second=0.001, burst=20)
    granted: list[bool] = []

    def take() -> None:
        granted.extend(limiter.acquire("t", "b", rate) for _ in range(10))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()
    assert granted.count(True) == 20


@pytest.mark.postgres
def test_sql_rate_limiter_on_postgres(postgres_url: str) -> None:
    """The same bucket arithmetic holds on PostgreSQL, where the row is locked with FOR UPDATE."""
    engine = create_engine(postgres_url)
    limiter = SqlRateLimiter(engine, clock=lambda: 10.0)
    rate = Rate(per_second=1.0, burst=2)
    assert [limiter.acquire("t", "b", rate) for _ in range(3)] == [True, True, False]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM rate_buckets")).scalar() == 1
    engine.dispose()


def test_sql_take_hands_out_several_tokens_or_the_last_one(tmp_path: Path) -> None:
    """take(n) takes n tokens when the bucket holds them, else one, else none; n is capped at the burst."""
    limiter = SqlRateLimiter(create_engine(f"sqlite:///{tmp_path / 'r.db'}"), clock=lambda: 0.0)
    rate = Rate(per_second=0.001, burst=7)
    assert [limiter.take("t", "b", rate, 3) for _ in range(4)] == [3, 3, 1, 0]
    assert limiter.take("u", "b", rate, 50) == 7
    assert [limiter.take("v", "b", rate, 3, keep=3) for _ in range(4)] == [3, 1, 1, 1]  # 3 only while 6 are left


def test_leased_limiter_spends_a_lease_locally_and_never_overspends(tmp_path: Path) -> None:
    """Two processes' leased limiters on one bucket of 20 get exactly 20 tokens, taking them 5 at a time."""
    shared = SqlRateLimiter(create_engine(f"sqlite:///{tmp_path / 'r.db'}"), clock=lambda: 0.0)
    takes: list[int] = []
    original = shared.take

    def counted(tenant: str, bucket: str, rate: Rate, tokens: int, *, keep: int = 0) -> int:
        takes.append(original(tenant, bucket, rate, tokens, keep=keep))
        return takes[-1]

    shared.take = counted  # type: ignore[method-assign]
    first, second = LeasedRateLimiter(shared), LeasedRateLimiter(shared)
    rate = Rate(per_second=0.001, burst=100)
    granted = [limiter.acquire("t", "b", rate) for _ in range(13) for limiter in (first, second)]
    assert granted.count(True) == 26
    assert takes == [5] * 6  # each limiter took 3 leases of 5 (13 = 5 + 5 + 3)
    takes.clear()
    spent = [first.acquire("t", "b", rate) for _ in range(200)]
    assert spent.count(True) == 100 - 30 + 2  # what the bucket had left, plus first's unspent lease
    # Leases while 20 or more were left (15 beyond the lease), then one token per message, then refusals.
    assert takes == [5] * 11 + [1] * 15 + [0] * 128


def test_leased_limiter_lease_expires_and_small_bursts_take_one_token_each(tmp_path: Path) -> None:
    """An unspent lease is given up after LEASE_SECONDS; with a burst under 20 every message takes its own token."""
    now = [0.0]
    shared = SqlRateLimiter(create_engine(f"sqlite:///{tmp_path / 'r.db'}"), clock=lambda: 0.0)
    leased = LeasedRateLimiter(shared, clock=lambda: now[0])
    big = Rate(per_second=0.001, burst=100)
    assert leased.acquire("t", "big", big)  # takes 5, spends 1
    now[0] = LEASE_SECONDS + 0.1
    assert leased.acquire("t", "big", big)  # the 4 left expired: a new lease of 5
    assert shared.take("t", "big", big, 90) == 90  # exactly two leases of 5 were taken
    assert shared.take("t", "big", big, 1) == 0

    small = Rate(per_second=0.001, burst=3)
    assert [leased.acquire("t", "small", small) for _ in range(4)] == [True, True, True, False]
    assert shared.take("t", "small", small, 1) == 0


def test_leases_taken_by_two_threads_at_once_are_added_together(tmp_path: Path) -> None:
    """Two threads that both find no lease both take one; the second adds to the first instead of throwing it away."""
    shared = SqlRateLimiter(create_engine(f"sqlite:///{tmp_path / 'r.db'}"), clock=lambda: 0.0)
    leased = LeasedRateLimiter(shared, clock=lambda: 0.0)
    big = Rate(per_second=0.001, burst=100)
    original = shared.take
    overlapped: list[bool] = []

    def take_while_another_thread_takes(tenant: str, bucket: str, rate: Rate, tokens: int, *, keep: int = 0) -> int:
        if not overlapped:  # the other thread's acquire runs while this take is in flight (no lease yet either)
            overlapped.append(False)
            overlapped[0] = leased.acquire(tenant, bucket, rate)
        return original(tenant, bucket, rate, tokens, keep=keep)

    shared.take = take_while_another_thread_takes  # type: ignore[method-assign]
    assert leased.acquire("t", "b", big)
    assert overlapped == [True]
    shared.take = original  # type: ignore[method-assign]

    # Two leases of 5 were taken from the bucket and 2 spent: the 8 left are all spent locally, with no new take.
    assert shared.take("t", "b", big, 90) == 90
    assert [leased.acquire("t", "b", big) for _ in range(9)] == [True] * 8 + [False]


@pytest.mark.redis
def test_redis_rate_limiter_shares_one_bucket(redis_url: str) -> None:
    """Two limiters on one Redis (two machines) draw from the same bucket, refilled by the Lua script."""
    now = [100.0]
    first = RedisRateLimiter(redis_url, clock=lambda: now[0], prefix="test:rate")
    second = RedisRateLimiter(redis_url, clock=lambda: now[0], prefix="test:rate")
    rate = Rate(per_second=1.0, burst=2)
    tenant = f"t{time.monotonic_ns()}"
    assert [first.acquire(tenant, "b", rate), second.acquire(tenant, "b", rate), first.acquire(tenant, "b", rate)] == [
        True,
        True,
        False,
    ]
    now[0] = 101.0
    assert second.acquire(tenant, "b", rate)
    first.close()
    second.close()


@pytest.mark.redis
def test_redis_take_hands_out_several_tokens_or_the_last_one(redis_url: str) -> None:
    """The Lua script takes n tokens when the bucket holds them, else one, else none."""
    limiter = RedisRateLimiter(redis_url, clock=lambda: 100.0, prefix="test:rate")
    rate = Rate(per_second=0.001, burst=7)
    tenant = f"t{time.monotonic_ns()}"
    assert [limiter.take(tenant, "b", rate, 3) for _ in range(4)] == [3, 3, 1, 0]
    assert [limiter.take(tenant + "k", "b", rate, 3, keep=3) for _ in range(4)] == [3, 1, 1, 1]
    limiter.close()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        pytest.param("POST", "https://api.twilio.com/2010-04-01/Accounts/AC1.json", id="close-or-suspend-account"),
        pytest.param("POST", "https://api.twilio.com/2010-04-01/Accounts.json", id="create-sub-account"),
        pytest.param("POST", "https://api.twilio.com/2010-04-01/Accounts/AC1/Keys.json", id="mint-api-key"),
        pytest.param("DELETE", "https://api.twilio.com/2010-04-01/Accounts/AC1/Keys/SK1.json", id="delete-api-key"),
        pytest.param("POST", "https://api.twilio.com/2010-04-01/Accounts/AC1/SigningKeys.json", id="mint-signing-key"),
        pytest.param("POST", "https://accounts.twilio.com/v1/AuthTokens/Promote", id="promote-auth-token"),
        pytest.param("GET", "https://iam.twilio.com/v1/Keys", id="iam-host"),
        pytest.param("POST", "http://127.0.0.1:8765/2010-04-01/Accounts/AC1.json", id="emulator-origin-too"),
    ],
)
def test_account_management_is_refused(method: str, url: str) -> None:
    """Requests that manage the account (tokens, keys, sub-accounts, closing it) are refused before any lookup."""
    with pytest.raises(EgressDeniedError, match="not manage it"):
        UrlPolicy("http://127.0.0.1:8765" if "127.0.0.1" in url else None, writes=TWILIO_WRITES).target(
            url, method=method
        )


@pytest.mark.parametrize(
    ("method", "url"),
    [
        pytest.param("GET", "https://api.twilio.com/2010-04-01/Accounts/AC1.json", id="fetch-account"),
        pytest.param("POST", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json", id="send"),
        pytest.param("POST", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/SM1.json", id="redact"),
        pytest.param("DELETE", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/SM1.json", id="delete"),
    ],
)
def test_using_the_account_is_allowed(method: str, url: str) -> None:
    """Using the account (messages, reading the account) passes the account-management check."""
    assert UrlPolicy(None, writes=TWILIO_WRITES).target(url, method=method).path.startswith("/2010-04-01/Accounts/")
