"""A small world for capability tests: the emulator with hex credentials, a store with connections of two tenants.

Tenant ``acme`` has ``main`` (Auth Token) and ``keyed`` (API key); tenant ``globex`` has ``theirs`` (another
account). The store is SQLite in the test's tmp dir; the emulator is real uvicorn on loopback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import sqlalchemy as sa

from tests.emulator import Emulator, frozen_state, running_emulator
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.store import ConnectionStore
from zingyconn.twilio.emulator.accounts import Account, ApiKey
from zingyconn.twilio.profile import TwilioProfile

ACCOUNT_SID: Final = "AC" + "a1" * 16
AUTH_TOKEN: Final = "0123456789abcdef" * 2  # test credential
API_KEY: Final = "SK" + "b2" * 16
API_SECRET: Final = "KeySecretKeySecretKeySecret01234"  # test credential
OTHER_SID: Final = "AC" + "c3" * 16
OTHER_TOKEN: Final = "fedcba9876543210" * 2  # test credential
MASTER_KEY: Final = bytes(range(32))
SENDER: Final = "+15005550006"
RECIPIENT: Final = "+15551234567"


@dataclass(frozen=True)
class World:
    """The running emulator, the store and the settings that point at them."""

    emulator: Emulator
    engine: sa.Engine
    keyring: Keyring
    store: ConnectionStore
    settings: Settings

    @property
    def messages_path(self) -> str:
        """Path of acme's account Messages list."""
        return f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@contextlib.contextmanager
def twilio_world(tmp_path: Path) -> Iterator[World]:
    """Start the emulator and a store with the connections described in the module docstring."""
    state = frozen_state(
        accounts=[Account(ACCOUNT_SID, AUTH_TOKEN), Account(OTHER_SID, OTHER_TOKEN)],
        api_keys=[ApiKey(API_KEY, API_SECRET, ACCOUNT_SID)],
    )
    with running_emulator(state) as emulator:
        db_url = f"sqlite:///{tmp_path / 'zingyconn.db'}"
        engine = create_engine(db_url)
        keyring = Keyring([("k1", MASTER_KEY)])
        store = ConnectionStore(engine, keyring)
        store.put("acme", "main", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))
        store.put("acme", "keyed", TwilioProfile(account_sid=ACCOUNT_SID, api_key=API_KEY, secret=API_SECRET))
        store.put("globex", "theirs", TwilioProfile(account_sid=OTHER_SID, secret=OTHER_TOKEN))
        settings = Settings(data_dir=tmp_path, db_url=db_url, twilio_base_url=emulator.base_url)
        try:
            yield World(emulator=emulator, engine=engine, keyring=keyring, store=store, settings=settings)
        finally:
            engine.dispose()
