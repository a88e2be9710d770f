"""Key rotation on a shared key file reaches stores that are already running, without a restart."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.errors import DecryptionError
from zingyconn.schema import connections
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.store import ConnectionStore
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


KEY_1, KEY_2 = bytes(range(32)), bytes(range(32, 64))
#: ZINGYCONN_KEYS on the processes of each phase of the documented rolling rotation (README "Scaling out").
PHASES = ([("k1", KEY_1)], [("k1", KEY_1), ("k2", KEY_2)], [("k2", KEY_2), ("k1", KEY_1)], [("k2", KEY_2)])


def _mixed_fleet_round_trips(engine_url: str, old: list[tuple[str, bytes]], new: list[tuple[str, bytes]]) -> None:
    """Processes of two consecutive phases run side by side: each writes, and each reads every record."""
    stores = [ConnectionStore(create_engine(engine_url), Keyring(keys)) for keys in (old, new)]
    for n, store in enumerate(stores):
        store.put("acme", f"by-{n}", PROFILE)
    for store in stores:
        for summary in store.list("acme"):
            assert store.get("acme", summary.name) == PROFILE


def test_environment_keys_rotate_in_two_rolling_restarts_without_an_unreadable_record(settings: Settings) -> None:
    """k1 -> k1,k2 -> k2,k1 (then keys rotate) -> k2: at no step can a process meet a record it cannot open."""
    for old, new in itertools.pairwise(PHASES):
        if new == PHASES[-1]:  # before dropping k1: keys rotate from any process, then keys retire
            rotator = ConnectionStore(create_engine(settings.db_url), Keyring(old))
            assert rotator.rotate().failed == ()
            rotator.retire("k1")
        _mixed_fleet_round_trips(settings.db_url, old, new)


def test_prepending_a_new_environment_key_in_one_step_leaves_old_processes_unable_to_read(settings: Settings) -> None:
    """Why two restarts: a process restarted with k2 first seals records a not-yet-restarted k1 process cannot open."""
    with pytest.raises(DecryptionError):
        _mixed_fleet_round_trips(settings.db_url, PHASES[0], PHASES[2])
