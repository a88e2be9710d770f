"""Key rotation on a shared key file reaches stores that are already running, without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.errors import DecryptionError
from zingyconn.keyring import Keyring
from zingyconn.schema import connections
from zingyconn.store import ConnectionStore
from zingyconn.twilio.profile import TwilioProfile

PROFILE = TwilioProfile("AC" + "a1" * 16, None, "0123456789abcdef" * 2)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded settings: a key file and a SQLite store in a fresh data directory."""
    return Settings(data_dir=tmp_path, db_url=f"sqlite:///{tmp_path / 'store.db'}")


def _store(settings: Settings) -> ConnectionStore:
    """A store as one process opens it at start-up (its own engine, the key file read once)."""
    return ConnectionStore(create_engine(settings.db_url), Keyring.from_settings(settings, announce=lambda _: None))


def _rotate_everything(settings: Settings) -> None:
    """What an operator runs in another process: keys new, keys rotate, keys retire k1."""
    Keyring.from_settings(settings).with_new_key().save()
    operator = _store(settings)
    assert operator.rotate().failed == ()
    operator.retire("k1")


def test_running_store_reads_records_sealed_with_a_key_added_after_it_started(settings: Settings) -> None:
    """A record re-sealed under a new key by another process opens in a store that only knew the old key."""
    running = _store(settings)
    running.put("acme", "main", PROFILE)
    _rotate_everything(settings)

    assert running.get("acme", "main") == PROFILE
    assert running.keyring.key_ids == ("k2",)


def test_running_store_seals_with_the_new_primary_key_after_keys_new(settings: Settings) -> None:
    """After `keys new` in another process, a running store's next write uses the new primary key."""
    running = _store(settings)
    running.put("acme", "main", PROFILE)
    Keyring.from_settings(settings).with_new_key().save()

    running.put("acme", "other", PROFILE)

    assert running.describe("acme", "other").key_id == "k2"
    assert running.describe("acme", "main").key_id == "k1"


def test_damaged_record_still_fails_opaquely_after_a_reload(settings: Settings) -> None:
    """A tampered record is not rescued by re-reading the key file: the same DecryptionError."""
    running = _store(settings)
    running.put("acme", "main", PROFILE)
    engine = create_engine(settings.db_url)
    with engine.begin() as conn:
        record = conn.execute(connections.select()).one().record
        conn.execute(connections.update().values(record=record[:-1] + bytes([record[-1] ^ 1])))

    with pytest.raises(DecryptionError, match="Could not decrypt connection 'main'"):
        running.get("acme", "main")


def test_keys_from_the_environment_are_never_reloaded(settings: Settings) -> None:
    """A keyring from ZINGYCONN_KEYS has no file to re-read: reloaded() is the same keyring."""
    keyring = Keyring.from_settings(
        Settings(data_dir=settings.data_dir, db_url=settings.db_url, keys="k1:" + "A" * 43 + "=")
    )

    assert keyring.reloaded() is keyring


def test_unchanged_key_file_is_not_read_again(settings: Settings) -> None:
    """Without a change to the key file, reloaded() returns the same keyring (a stat, no parse)."""
    keyring = Keyring.from_settings(settings, announce=lambda _: None)

    assert keyring.reloaded() is keyring
