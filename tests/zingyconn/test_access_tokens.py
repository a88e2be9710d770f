"""Twilio access tokens minted on the host: they verify with PyJWT against the API key secret, carry the identity,
grants and lifetime asked for, and the secret never reaches the run's result, output, logs, errors or history."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import jwt
import pytest
import sqlalchemy as sa

from sandbox.errors import EgressDeniedError
from tests.zingyconn.capability import ACCOUNT_SID, API_KEY, API_SECRET, AUTH_TOKEN, World, twilio_world
from zingyconn.runtime import Runtime
from zingyconn.schema import runs
from zingyconn.twilio.access_tokens import MAX_TTL_SECONDS, RunAccessTokens

MINT = """
c = zingyConn.twilio(event.get("connection", "keyed"))
token = c.access_token(identity=event.get("identity", "alice"), grants=event.get("grants", []), ttl=event.get("ttl"))
print("minted", len(token))
log.info("minted", size=len(token))
return token
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The emulator and a store with acme's connections (main: Auth Token; keyed: API key)."""
    with twilio_world(tmp_path_factory.mktemp("tokens")) as running:
        yield running


@pytest.fixture(scope="module")
def runtime(world: World) -> Iterator[Runtime]:
    """A runtime on the world's store."""
    with Runtime(world.settings, engine=world.engine, keyring=world.keyring) as running:
        yield running


def _stored(world: World, run_id: str) -> str:
    with world.engine.connect() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().one()
    return json.dumps({key: row[key] for key in ("result", "stdout", "logs", "error", "egress", "event", "source")})


def test_token_verifies_with_the_api_key_secret(world: World, runtime: Runtime) -> None:
    """The JWT is signed with the API key secret (HS256), issued by the key for the account, with the grants."""
    grants = [
        {"type": "video", "room": "r1"},
        {"type": "voice", "outgoing_application_sid": "AP" + "0" * 32, "incoming_allow": True},
        {"type": "conversations", "service_sid": "IS" + "1" * 32},
        {"type": "sync", "service_sid": "IS" + "2" * 32},
    ]
    before = int(time.time())
    result = runtime.run("acme", MINT, event={"grants": grants, "ttl": 600})
    assert result.ok, result.error
    claims = jwt.decode(result.value, API_SECRET, algorithms=["HS256"])
    header = jwt.get_unverified_header(result.value)

    assert header["cty"] == "twilio-fpa;v=1"
    assert (claims["iss"], claims["sub"]) == (API_KEY, ACCOUNT_SID)
    assert claims["grants"]["identity"] == "alice"
    assert claims["grants"]["video"] == {"room": "r1"}
    assert claims["grants"]["voice"] == {
        "incoming": {"allow": True},
        "outgoing": {"application_sid": "AP" + "0" * 32},
    }
    assert claims["grants"]["chat"] == {"service_sid": "IS" + "1" * 32}
    assert claims["grants"]["data_sync"] == {"service_sid": "IS" + "2" * 32}
    assert before + 600 <= claims["exp"] <= int(time.time()) + 600
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(result.value, "not-the-secret-not-the-secret-00", algorithms=["HS256"])

    stored = _stored(world, result.run_id)
    for secret in (API_SECRET, AUTH_TOKEN):
        assert secret not in stored
        assert secret not in json.dumps(result.to_json())


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"connection": "main"}, "signed with an API key: this connection authenticates with the Auth Token"),
        ({"ttl": MAX_TTL_SECONDS + 1}, "MAX_TTL_SECONDS"),
        ({"ttl": 0}, "ttl must be a whole number of seconds"),
        ({"identity": ""}, "identity must be a non-empty string"),
        ({"grants": [{"type": "admin"}]}, "grants[0] has type 'admin'"),
        ({"grants": [{"type": "video", "roomz": "r"}]}, "has no field 'roomz'"),
        ({"grants": [{"type": "voice", "incoming_allow": "yes"}]}, "incoming_allow must be True or False"),
    ],
)
def test_bad_requests_are_refused_with_clear_errors(
    world: World, runtime: Runtime, event: dict[str, object], message: str
) -> None:
    """An Auth Token connection, a missing one, a ttl over the cap and bad grants are refused; nothing leaks."""
    result = runtime.run("acme", MINT, event=event)
    assert not result.ok
    assert result.error is not None
    assert result.error.type == "EgressDeniedError"
    assert message in result.error.message
    assert API_SECRET not in _stored(world, result.run_id)


def test_another_tenants_connection_is_not_found(runtime: Runtime) -> None:
    """globex cannot mint with acme's API key, not even by asking the host directly (the name is looked up in the
    run's tenant only)."""
    result = runtime.run("globex", MINT, event={"connection": "keyed"})
    assert not result.ok
    assert result.error is not None
    assert "No Twilio connection named 'keyed'" in result.error.message
    tokens = RunAccessTokens(lambda name: None)
    with pytest.raises(EgressDeniedError, match="No Twilio connection named 'keyed'"):
        tokens.answer({"connection": "keyed", "identity": "a", "grants": []})


def test_tokens_per_run_are_capped(runtime: Runtime) -> None:
    """A run mints at most MAX_ACCESS_TOKENS_PER_RUN tokens; the next is a quota refusal."""
    source = (
        "c = zingyConn.twilio('keyed')\n"
        "n = 0\n"
        "for i in range(100):\n"
        "    c.access_token(identity='u' + str(i))\n"
        "    n += 1\n"
        "return n\n"
    )
    result = runtime.run("acme", source)
    assert not result.ok
    assert result.error is not None
    assert result.error.type == "QuotaExceededError"
    assert "MAX_ACCESS_TOKENS_PER_RUN" in result.error.message


def test_own_client_cannot_mint(runtime: Runtime) -> None:
    """A Client(sid, token) built by the snippet is not a stored connection: access_token says what to use."""
    source = f"import twilio\nc = twilio.Client('{ACCOUNT_SID}', 'x' * 32)\nreturn c.access_token(identity='a')\n"
    result = runtime.run("acme", source)
    assert not result.ok
    assert result.error is not None
    assert "use zingyConn.twilio('name').access_token" in result.error.message
