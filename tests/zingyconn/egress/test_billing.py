"""Twilio writes through the broker: every billable product has its own per-tenant quota; the deny list holds.

Snippets run in the real sandbox with the real twilio client; the broker's emulator origin is a loopback listener
that answers every request with a created resource and records what reached it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.errors import EgressDeniedError
from sandbox.supervisor import Sandbox
from tests.zingyconn.capability import ACCOUNT_SID, MASTER_KEY, RECIPIENT, SENDER, World, twilio_world
from zingyconn.egress.broker import EgressBroker
from zingyconn.egress.protocol import OP_HTTP
from zingyconn.egress.ratelimit import SqlRateLimiter
from zingyconn.runtime import Runtime
from zingyconn.twilio.billing import PRODUCT_NAMES, TWILIO_WRITES, normalise_path

#: Each product's quota in these tests: two at once, then nothing for a quarter of an hour.
BURST = 2
CALL = f'c.calls.create(to="{RECIPIENT}", from_="{SENDER}", url="https://example.com/twiml")'
#: One billable create of each product, as a snippet writes it with the twilio client (``c`` is the connection).
CREATES = {
    "messages": f'c.messages.create(to="{RECIPIENT}", from_="{SENDER}", body="hi")',
    "calls": CALL,
    "verifications": f'c.verify.v2.services("VA{"0" * 32}").verifications.create(to="{RECIPIENT}", channel="sms")',
    "conversations": 'c.conversations.v1.conversations.create(friendly_name="support")',
    "notify": f'c.notify.v1.services("IS{"0" * 32}").notifications.create(identity=["u1"], body="hi")',
    "video_rooms": 'c.video.v1.rooms.create(unique_name="standup")',
    "studio_executions": f'c.studio.v2.flows("FW{"0" * 32}").executions.create(to="{RECIPIENT}", from_="{SENDER}")',
    "lookups": f'c.lookups.v2.phone_numbers("{RECIPIENT}").fetch(fields="line_type_intelligence")',
    "other_writes": f'c.chat.v2.services("IS{"0" * 32}").channels.create(friendly_name="unlisted")',
}


@dataclasses.dataclass
class Listener:
    """A loopback Twilio stand-in: every request gets a 201 with a resource; its method and path are recorded."""

    base_url: str
    seen: list[tuple[str, str]]


@contextlib.contextmanager
def listening() -> Iterator[Listener]:
    """Run a :class:`Listener` on a free loopback port."""
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's API
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path.split("?", 1)[0]))
            body = json.dumps({"sid": "XX" + "0" * 32, "status": "queued", "phone_number": RECIPIENT}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # http.server's API
            self.do_POST()

        def do_DELETE(self) -> None:  # http.server's API
            self.do_POST()

        def log_message(self, format: str, *args: object) -> None:  # the stdlib's signature
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Listener(f"http://127.0.0.1:{server.server_port}", seen)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Listener]]:
    """A store with acme's connections, and the listener every Twilio URL is mapped onto."""
    with twilio_world(tmp_path_factory.mktemp("billing")) as running, listening() as listener:
        yield running, listener


@pytest.fixture(scope="module")
def runtime(world: tuple[World, Listener]) -> Iterator[Runtime]:
    """A runtime whose every product quota is BURST per tenant, configured as ZINGYCONN_QUOTA_* would."""
    running, listener = world
    quotas = dict.fromkeys(PRODUCT_NAMES, (0.001, BURST))
    settings = dataclasses.replace(running.settings, twilio_base_url=listener.base_url, quotas=quotas)
    sandbox = Sandbox(environment="tests.zingyconn.egress.billing_environment:environment")
    with sandbox, Runtime(settings, engine=running.engine, keyring=running.keyring, sandbox=sandbox) as started:
        yield started


@pytest.mark.parametrize("product", PRODUCT_NAMES)
def test_each_paid_product_has_its_own_per_tenant_quota(
    world: tuple[World, Listener], runtime: Runtime, product: str
) -> None:
    """A snippet creating one more than its quota of a product is refused, naming the product and how to raise it."""
    _, listener = world
    before = len(listener.seen)
    source = f'c = zingyConn.twilio("main")\nfor _ in range({BURST + 1}):\n    {CREATES[product]}\nreturn "all sent"'
    result = runtime.run("acme", source)

    assert result.error is not None, f"{product}: {BURST + 1} creates went out"
    assert result.error.type == "QuotaExceededError"
    assert f"Twilio {product} are rate limited" in result.error.message
    assert f"ZINGYCONN_QUOTA_{product.upper()}" in result.error.message
    assert len(listener.seen) - before == BURST  # the refused one never reached Twilio


def test_a_spent_quota_leaves_other_products_and_tenants_alone(world: tuple[World, Listener], runtime: Runtime) -> None:
    """Once one tenant's calls are spent, its messages and another tenant's calls still go out."""
    store = world[0].store
    for tenant in ("initech", "hooli"):
        store.put(tenant, "main", store.get("acme", "main"))
    spend = f'c = zingyConn.twilio("main")\nfor _ in range({BURST + 1}):\n    {CALL}'
    assert runtime.run("initech", spend).error is not None
    message = f'c = zingyConn.twilio("main")\n{CREATES["messages"]}\nreturn "sent"'
    assert runtime.run("initech", message).value == "sent"
    assert runtime.run("hooli", f'c = zingyConn.twilio("main")\n{CALL}\nreturn "called"').value == "called"


A = f"/2010-04-01/Accounts/{ACCOUNT_SID}"
#: Writes a snippet never needs, each spelled the ways a router reads as the same resource.
DENIED = [
    ("POST", "api.twilio.com", "/2010-04-01/Accounts.json"),
    ("POST", "api.twilio.com", "/2010-04-01/Accounts"),
    ("POST", "api.twilio.com", "/2010-04-01/Accounts/"),
    ("POST", "api.twilio.com", "/2010-04-01/Accounts.json/"),
    ("POST", "api.twilio.com", "/2010-04-01/ACCOUNTS.JSON"),
    ("POST", "api.twilio.com", f"{A}.json"),
    ("POST", "api.twilio.com", f"{A}/.json"),
    ("POST", "api.twilio.com", f"{A}/"),
    ("POST", "api.twilio.com", f"{A}.xml"),
    ("POST", "api.twilio.com", f"{A.lower()}.json"),
    ("DELETE", "api.twilio.com", f"{A}.json"),
    ("POST", "api.sydney.au1.twilio.com", f"{A}.json"),
    ("POST", "api.twilio.com", f"{A}/Keys.json"),
    ("POST", "api.twilio.com", f"{A}/Keys/"),
    ("POST", "api.twilio.com", f"{A}/Keys/.json"),
    ("DELETE", "api.twilio.com", f"{A}/Keys/SK1/.json"),
    ("DELETE", "api.twilio.com", f"{A}/Keys/SK1.json/"),
    ("DELETE", "api.twilio.com", f"{A}/keys/sk1"),
    ("POST", "api.twilio.com", f"{A}/SigningKeys.json"),
    ("POST", "api.dublin.ie1.twilio.com", f"{A}/Keys.json"),
    ("POST", "api.twilio.com", f"{A}/IncomingPhoneNumbers.json"),
    ("POST", "api.twilio.com", f"{A}/IncomingPhoneNumbers/Local.json"),
    ("POST", "api.twilio.com", f"{A}/IncomingPhoneNumbers/PN1.json"),
    ("DELETE", "api.twilio.com", f"{A}/IncomingPhoneNumbers/PN1/.json"),
    ("POST", "api.twilio.com", f"{A}/AvailablePhoneNumbers/US/Local.json"),
    ("POST", "api.twilio.com", f"{A}/SIP/CredentialLists.json"),
    ("POST", "api.twilio.com", f"{A}/SIP/Domains/SD1/IpAccessControlListMappings.json"),
    ("POST", "api.twilio.com", f"{A}/OutgoingCallerIds.json"),
    ("POST", "api.twilio.com", f"{A}/Applications.json"),
    ("POST", "accounts.twilio.com", "/v1/AuthTokens/Promote"),
    ("POST", "accounts.sydney.au1.twilio.com", "/v1/AuthTokens/Promote"),
    ("POST", "ACCOUNTS.twilio.com", "/v1/AuthTokens/Secondary"),
    ("GET", "accounts.twilio.com", "/v1/Credentials/PublicKeys"),
    ("POST", "iam.twilio.com", "/v1/Keys"),
    ("DELETE", "iam.dublin.ie1.twilio.com", "/v1/Keys/SK1"),
    ("POST", "numbers.twilio.com", "/v2/HostedNumber/Orders"),
    ("POST", "trunking.twilio.com", "/v1/Trunks"),
    ("POST", "voice.twilio.com", "/v1/DialingPermissions/Settings"),
    ("POST", "messaging.twilio.com", "/v1/a2p/BrandRegistrations"),
    # Spellings a servlet or suffix-matching router reads as the resource; NFKC folds fullwidth letters.
    ("POST", "api.twilio.com", f"{A}/Keys.json;v=1"),
    ("POST", "api.twilio.com", f"{A}/Keys;v=1.json"),
    ("POST", "api.twilio.com", f"{A}/Keys.json.json"),
    ("POST", "api.twilio.com", f"{A}/Keys..json"),
    ("POST", "api.twilio.com", f"{A}/Ｋｅｙｓ.json"),
    ("POST", "api.twilio.com", f"/2008-08-01/Accounts/{ACCOUNT_SID}/IncomingPhoneNumbers"),
    ("POST", "api.twilio.com", "/2008-08-01/Accounts"),
    # Management the first table missed: code given the account's credentials, sinks, SIP routes, campaigns.
    ("POST", "serverless.twilio.com", "/v1/Services"),
    ("POST", "serverless.twilio.com", "/v1/Services/ZS1/Environments/ZE1/Variables"),
    ("POST", "events.twilio.com", "/v1/Sinks"),
    ("POST", "events.twilio.com", "/v1/Subscriptions"),
    ("POST", "preview-iam.twilio.com", "/OR1/RoleAssignments"),
    ("POST", "oauth.twilio.com", "/v1/token"),
    ("POST", "voice.twilio.com", "/v1/ByocTrunks"),
    ("POST", "voice.twilio.com", "/v1/ConnectionPolicies/NY1/Targets"),
    ("POST", "routes.twilio.com", "/v2/PhoneNumbers/+15005550006"),
    ("POST", "messaging.twilio.com", "/v1/Services/MG1/Compliance/Usa2p"),
    ("POST", "messaging.twilio.com", "/v1/Services/PreregisteredUsa2p"),
    ("POST", "trusthub.twilio.com", "/v1/CustomerProfiles"),
    ("POST", "marketplace.twilio.com", "/v1/InstalledAddOns"),
    ("POST", "preview.twilio.com", "/marketplace/InstalledAddOns"),
    ("POST", "preview.twilio.com", "/HostedNumbers/HostedNumberOrders"),
    ("POST", "api.twilio.com", f"{A}/SMS/ShortCodes/SC1.json"),
    # Spellings that already held: a query string, a region without an edge, a dot-dot-semicolon segment.
    ("POST", "api.twilio.com", f"{A}/Keys.json?FriendlyName=x"),
    ("POST", "api.us1.twilio.com", f"{A}/Keys.json"),
    ("POST", "api.twilio.com", f"{A}/Keys/..;/Keys"),
]


@pytest.fixture
def broker(world: tuple[World, Listener]) -> Iterator[EgressBroker]:
    """A broker whose Twilio URLs are mapped onto the listener."""
    running, listener = world
    broker = EgressBroker(running.store, base_url=listener.base_url, rate_limiter=SqlRateLimiter(running.engine))
    yield broker
    broker.close()


@pytest.mark.parametrize(("method", "host", "path"), DENIED, ids=[f"{m} {h}{p}" for m, h, p in DENIED])
def test_account_management_writes_are_refused_in_every_spelling(
    world: tuple[World, Listener], broker: EgressBroker, method: str, host: str, path: str
) -> None:
    """A denied write is refused before it reaches Twilio, however its host and path are spelled."""
    _, listener = world
    before = len(listener.seen)
    session = broker.session("acme")
    request = {"method": method, "url": f"https://{host}{path}", "params": [], "data": [], "headers": {}}
    with pytest.raises(EgressDeniedError, match="not allowed"):
        session.request(OP_HTTP, {**request, "connection": "main"})
    assert len(listener.seen) == before
    assert session.calls[-1].status is None


#: Spellings the URL policy already refuses as ambiguous; the deny list must read them as the resource they name.
@pytest.mark.parametrize(
    ("method", "host", "path"),
    [
        ("POST", "api.twilio.com", f"/2010-04-01//Accounts/{ACCOUNT_SID}/./Keys/SK1/.json"),
        ("POST", "api.twilio.com", f"/2010-04-01/Accounts/{ACCOUNT_SID}/%4Beys.json"),
        ("POST", "api.twilio.com", f"/2010-04-01/Accounts/{ACCOUNT_SID}/%254Beys.json"),
        ("POST", "api.twilio.com", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/../Keys.json"),
        ("POST", "api.twilio.com", f"/2010-04-01/Accounts/{ACCOUNT_SID}%2FKeys.json"),
        ("DELETE", "api.twilio.com", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Keys/SK1%2E%6A%73%6F%6E"),
        ("POST", "api.twilio.com", f"/2010-04-01/Accounts/{ACCOUNT_SID}\\IncomingPhoneNumbers.json"),
        ("POST", "accounts.twilio.com.", "/v1/AuthTokens/Promote"),
        ("POST", "accounts.twilio.com:443", "/v1/AuthTokens/Promote"),
    ],
)
def test_the_deny_list_reads_normalised_spellings(method: str, host: str, path: str) -> None:
    """Escapes (even twice), dot segments, repeated or escaped slashes, ports and trailing dots hide no write."""
    with pytest.raises(EgressDeniedError, match="not allowed"):
        TWILIO_WRITES.refuse(method, host, path)


@pytest.mark.parametrize(
    ("method", "host", "path", "product"),
    [
        ("GET", "api.twilio.com", f"{A}.json", None),
        ("GET", "api.twilio.com", f"{A}/IncomingPhoneNumbers.json", None),
        ("DELETE", "api.twilio.com", f"{A}/Messages/SM1.json", None),
        ("POST", "api.twilio.com", f"{A}/Messages.json", "messages"),
        ("POST", "api.twilio.com", f"{A}/SMS/Messages/", "messages"),
        ("POST", "api.twilio.com", f"{A}/Calls.json", "calls"),
        ("POST", "api.twilio.com", f"{A}/Conferences/CF1/Participants.json", "calls"),
        ("POST", "verify.twilio.com", "/v2/Services/VA1/Verifications", "verifications"),
        ("POST", "conversations.twilio.com", "/v1/Conversations/CH1/Messages", "conversations"),
        ("POST", "api.twilio.com", f"{A}/Messages/SM1.json", "other_writes"),
        ("POST", "api.twilio.com", f"{A}/Calls.json;v=1", "calls"),
        ("POST", "api.twilio.com", f"{A}/Calls.json.json", "calls"),
        ("POST", "api.twilio.com", f"/2008-08-01/Accounts/{ACCOUNT_SID}/SMS/Messages", "messages"),
        ("GET", "serverless.twilio.com", "/v1/Services", None),
        ("GET", "events.twilio.com", "/v1/Sinks", None),
        ("POST", "chat.twilio.com", "/v2/Services/IS1/Channels", "other_writes"),
    ],
)
def test_using_the_account_passes_and_spends_its_product(
    method: str, host: str, path: str, product: str | None
) -> None:
    """Reads, deletes of one's own resources and creates pass the deny list; each write spends a product's bucket."""
    TWILIO_WRITES.refuse(method, host, path)
    assert TWILIO_WRITES.product(method, host, path) == product


def test_normalise_path_resolves_what_a_router_would() -> None:
    """Escapes, dot segments, repeated slashes, case and a format suffix (or a lone one) all collapse."""
    assert normalise_path("/2010-04-01//Accounts/AC1/%2E/Keys/SK1/.json") == "/2010-04-01/accounts/ac1/keys/sk1"
    assert normalise_path("/a/%252e%252e/B.xml/") == "/b"
    assert normalise_path("/A/Ｋｅｙｓ;v=1/SK1.json.json") == "/a/keys/sk1"


def test_a_snippet_cannot_buy_a_number(runtime: Runtime, world: tuple[World, Listener]) -> None:
    """Buying a number through the twilio client from a snippet is refused and never leaves the host."""
    _, listener = world
    before = len(listener.seen)
    source = 'c = zingyConn.twilio("main")\nreturn c.incoming_phone_numbers.create(phone_number="+15005550006").sid'
    result = runtime.run("acme", source)
    assert result.error is not None
    assert result.error.type == "EgressDeniedError"
    assert "buys or releases numbers" in result.error.message
    assert len(listener.seen) == before


def test_a_product_quota_is_shared_with_another_process(
    world: tuple[World, Listener], runtime: Runtime, tmp_path: Path
) -> None:
    """Calls spent here leave none for `zingyconn run` in another process on the same store: its call is refused."""
    running, listener = world
    store = running.store
    store.put("umbrella", "main", store.get("acme", "main"))
    spend = f'c = zingyConn.twilio("main")\nfor _ in range({BURST}):\n    {CALL}\nreturn "spent"'
    assert runtime.run("umbrella", spend).value == "spent"
    (tmp_path / "call.py").write_text(f'c = zingyConn.twilio("main")\n{CALL}\nreturn "called"')
    before = len(listener.seen)
    env = {
        "ZINGYCONN_DATA_DIR": str(running.settings.data_dir),
        "ZINGYCONN_DB_URL": running.settings.db_url,
        "ZINGYCONN_KEYS": "k1:" + base64.b64encode(MASTER_KEY).decode(),
        "ZINGYCONN_TWILIO_BASE_URL": listener.base_url,
        "ZINGYCONN_QUEUE_URL": "",
        "ZINGYCONN_QUOTA_CALLS": f"0.001/{BURST}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "zingyconn", "run", "--tenant", "umbrella", "--json", str(tmp_path / "call.py")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["type"] == "QuotaExceededError"
    assert len(listener.seen) == before
