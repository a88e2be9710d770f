"""Tests of zingyconn.connection_types: Twilio registers itself; the store seals a profile of any registered type."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sandbox.errors import EgressDeniedError
from zingyconn import connection_types
from zingyconn.connection_types import ConnectionType, basic_auth, connection_type, snippet_modules
from zingyconn.database import create_engine
from zingyconn.egress.broker import EgressBroker
from zingyconn.egress.outcome import Outcome
from zingyconn.egress.protocol import OP_CONNECT, OP_HTTP
from zingyconn.errors import UnknownConnectionTypeError
from zingyconn.schema import connections
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.store import ConnectionStore
from zingyconn.twilio.billing import TWILIO_WRITES
from zingyconn.twilio.profile import TwilioProfile

TOKEN = "bearer-token-that-must-stay-sealed"


@dataclass(frozen=True, slots=True)
class BearerProfile:
    """A second kind of profile, shaped like an HTTP API's: a base URL and a bearer token."""

    base_url: str
    token: str = field(repr=False)

    @property
    def connection_type(self) -> str:
        return "bearer"

    def validate(self) -> BearerProfile:
        return self

    def to_json(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "token": self.token}

    def masked(self) -> dict[str, str | None]:
        return {"base_url": self.base_url, "token": "********"}

    def secrets(self) -> tuple[str, ...]:
        return (self.token,)

    def directory_entry(self) -> dict[str, Any]:
        return {"base_url": self.base_url}

    def auth_headers(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.token}")]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BearerProfile:
        return cls(base_url=str(data["base_url"]), token=str(data["token"]))


BEARER = ConnectionType(
    name="bearer",
    load_profile=BearerProfile.from_json,
    writes=TWILIO_WRITES,
    quota_rates=lambda configured: {},
    quota_variable=lambda bucket: f"BEARER_{bucket.upper()}",
    other_writes="other_writes",
    # These tests store and open profiles only; the type's client, commands and check are never loaded.
    host_client="tests.zingyconn.test_connection_types:BearerProfile",
    commands="tests.zingyconn.test_connection_types:BearerProfile",
    verify="tests.zingyconn.test_connection_types:BearerProfile",
    directory_context_key="bearer",
)


@pytest.fixture
def bearer(monkeypatch: pytest.MonkeyPatch) -> ConnectionType:
    """The bearer type, registered for one test only."""
    monkeypatch.setitem(connection_types._registered(), BEARER.name, BEARER)
    return BEARER


@pytest.fixture
def store(tmp_path: Path) -> ConnectionStore:
    """A store on an empty SQLite file."""
    return ConnectionStore(create_engine(f"sqlite:///{tmp_path / 'store.db'}"), Keyring([("k1", bytes(range(32)))]))


def test_twilio_is_registered_by_its_package() -> None:
    """The twilio package declares its type: its profiles round-trip, its write rules and snippet modules are found."""
    profile = TwilioProfile(account_sid="AC" + "ab" * 16, secret="f" * 32)
    twilio = connection_type("twilio")
    assert twilio.load_profile(profile.to_json()) == profile
    assert twilio.writes is TWILIO_WRITES
    assert "twilio.rest" in snippet_modules()
    assert profile.auth_headers() == [basic_auth(profile.account_sid, "f" * 32)]


def test_the_core_finds_twilio_without_importing_it() -> None:
    """Importing the store and the broker loads no Twilio module; the first lookup of a type does."""
    check = (
        "import sys, zingyconn.secrets.store, zingyconn.egress.broker, zingyconn.runtime\n"
        "assert not [m for m in sys.modules if m.startswith('zingyconn.twilio')], 'imported too early'\n"
        "from zingyconn.connection_types import connection_type\n"
        "connection_type('twilio')\n"
        "assert 'zingyconn.twilio.connection_type' in sys.modules\n"
        "assert 'twilio.rest' not in sys.modules, 'registering Twilio must not import its client library'\n"
        "assert 'twilio.jwt' not in sys.modules, 'registering Twilio must not import its token library'\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_store_seals_a_profile_of_any_registered_type(store: ConnectionStore, bearer: ConnectionType) -> None:
    """A profile of another type is stored under its type, sealed, and opened by its type's codec."""
    profile = BearerProfile(base_url="https://api.example.com", token=TOKEN)
    store.put("acme", "api", profile)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(connections).where(connections.c.name == "api")).one()
    assert row.type == "bearer"
    assert TOKEN.encode() not in row.record
    assert store.get("acme", "api") == profile
    assert store.describe("acme", "api").type == "bearer"
    assert store.secrets("acme") == [TOKEN]


def test_a_connection_of_an_unregistered_type_does_not_open(
    store: ConnectionStore, bearer: ConnectionType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row whose type no installed package declares fails with a one-line error naming the type."""
    store.put("acme", "api", BearerProfile(base_url="https://api.example.com", token=TOKEN))
    monkeypatch.delitem(connection_types._registered(), bearer.name)
    with pytest.raises(UnknownConnectionTypeError, match="'bearer'") as raised:
        store.get("acme", "api")
    assert TOKEN not in str(raised.value)


def test_the_twilio_channel_finds_only_twilio_connections(store: ConnectionStore, bearer: ConnectionType) -> None:
    """zingyConn.twilio(name) does not find a connection of another type (its secret never reaches Twilio)."""
    store.put("acme", "api", BearerProfile(base_url="https://api.example.com", token=TOKEN))
    store.put("acme", "main", TwilioProfile(account_sid="AC" + "ab" * 16, secret="f" * 32))
    # The emulator origin is a closed port: nothing leaves the machine even if the refusal were missing.
    session = EgressBroker(store, base_url="http://127.0.0.1:9").session("acme", profiles=store.profiles("acme"))
    assert session.request(OP_CONNECT, {"connection": "api"}) == {"found": False}
    assert session.request(OP_CONNECT, {"connection": "main"})["found"] is True
    with pytest.raises(EgressDeniedError, match="No Twilio connection named 'api'"):
        session.request(OP_HTTP, {"method": "GET", "url": "https://api.twilio.com/2010-04-01/Accounts.json",
                                  "connection": "api"})  # fmt: skip
    assert session.calls[-1].outcome is Outcome.REFUSED


def test_webhook_signatures_need_a_twilio_connection() -> None:
    """A connection of another type holds no Auth Token: a hook cannot verify Twilio's signatures with it."""
    from zingyconn.hosts.signature import SignatureError, auth_token_of

    with pytest.raises(SignatureError, match="'api' is a bearer connection"):
        auth_token_of(BearerProfile(base_url="https://api.example.com", token=TOKEN), connection="api")
