"""Tests of zingyconn.secrets.store on SQLite and on a real PostgreSQL server (sealing, rotation, revision binding)."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.zingyconn.twilio.test_profile import profiles
from zingyconn.changes import CHECK_SECONDS, ChangeWatch
from zingyconn.database import create_engine
from zingyconn.errors import ConnectionNotFoundError, DecryptionError, KeyringError, ValidationError
from zingyconn.schema import connections, schema_version
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.store import LEGACY_AAD_LABEL, ConnectionStore
from zingyconn.twilio import CONNECTION_TYPE
from zingyconn.twilio.profile import TwilioProfile

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
SID = "AC" + "ab" * 16
TOKEN_A = "1234abcd" * 4
TOKEN_B = "feedbeef" * 4
KEY_SECRET = "SuperSecretKeySecretValue0123456"  # 32 alphanumerics, easy to find in raw bytes


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated engine on the store."""
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: sa.Engine) -> ConnectionStore:
    """A store sealing with key k1."""
    return ConnectionStore(engine, Keyring([("k1", KEY_1)]))


def _profile(secret: str = TOKEN_A) -> TwilioProfile:
    return TwilioProfile(account_sid=SID, api_key=None, secret=secret)


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tenant=names, name=names, profile=profiles())
def test_put_then_get_returns_the_profile(
    store: ConnectionStore, tenant: str, name: str, profile: TwilioProfile
) -> None:
    """Any valid profile saved under any valid (tenant, name) comes back equal."""
    store.put(tenant, name, profile)
    assert store.get(tenant, name) == profile


def test_put_replaces_and_counts_revisions(store: ConnectionStore) -> None:
    """A second put replaces the profile, keeps created_at and bumps the revision."""
    assert store.put("acme", "primary", _profile(TOKEN_A)) == 1
    first = store.describe("acme", "primary")
    assert store.put("acme", "primary", _profile(TOKEN_B)) == 2
    assert store.get("acme", "primary").to_json()["secret"] == TOKEN_B
    assert store.describe("acme", "primary").created_at == first.created_at


def test_list_shows_masked_sids_and_never_secrets(store: ConnectionStore, engine: sa.Engine) -> None:
    """list() returns names, types and masked SIDs only, sorted by name, without needing a key."""
    store.put("acme", "b", TwilioProfile(SID, "SK" + "cd" * 16, KEY_SECRET))
    store.put("acme", "a", _profile())
    summaries = store.list("acme")
    assert [(s.name, s.type, s.account_sid, s.api_key) for s in summaries] == [
        ("a", "twilio", "ACab…abab", None),
        ("b", "twilio", "ACab…abab", "SKcd…cdcd"),
    ]
    assert KEY_SECRET not in repr(summaries)
    assert [s.name for s in ConnectionStore(engine, Keyring([("other", KEY_2)])).list("acme")] == ["a", "b"]


def test_two_tenants_with_the_same_name_are_isolated(store: ConnectionStore) -> None:
    """Tenants sharing a connection name see only their own profile; deleting one leaves the other."""
    store.put("acme", "primary", _profile(TOKEN_A))
    store.put("globex", "primary", _profile(TOKEN_B))
    assert store.get("acme", "primary").to_json()["secret"] == TOKEN_A
    assert store.get("globex", "primary").to_json()["secret"] == TOKEN_B
    assert store.secrets("acme") == [TOKEN_A]
    store.delete("acme", "primary")
    with pytest.raises(ConnectionNotFoundError):
        store.get("acme", "primary")
    assert store.get("globex", "primary").to_json()["secret"] == TOKEN_B


def test_missing_connection_error_does_not_list_other_names(store: ConnectionStore) -> None:
    """Asking for a missing connection names only what was asked for."""
    store.put("acme", "secret-project", _profile())
    with pytest.raises(ConnectionNotFoundError) as caught:
        store.get("globex", "secret-project")
    assert str(caught.value) == "Tenant 'globex' has no connection named 'secret-project'."
    with pytest.raises(ConnectionNotFoundError):
        store.delete("acme", "nothing")


def test_invalid_names_and_profiles_are_refused_before_writing(store: ConnectionStore) -> None:
    """Bad tenant/name or a bad profile raise a field-named error and write nothing."""
    with pytest.raises(ValidationError) as caught:
        store.put("acme corp", "primary", _profile())
    assert caught.value.field == "tenant"
    with pytest.raises(ValidationError) as caught:
        store.put("acme", "../x", _profile())
    assert caught.value.field == "name"
    with pytest.raises(ValidationError) as caught:
        store.put("acme", "primary", _profile("short"))
    assert caught.value.field == "secret"
    assert store.list("acme") == []


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param(("acme", "a"), ("acme", "b"), id="between-rows"),
        pytest.param(("acme", "a"), ("globex", "a"), id="between-tenants"),
    ],
)
def test_a_record_moved_to_another_row_does_not_decrypt(
    store: ConnectionStore, engine: sa.Engine, source: tuple[str, str], target: tuple[str, str]
) -> None:
    """Copying one row's ciphertext over another's gives DecryptionError naming the target connection."""
    store.put(*source, _profile(TOKEN_A))
    store.put(*target, _profile(TOKEN_B))
    with engine.begin() as conn:
        record = conn.execute(
            sa.select(connections.c.record).where(connections.c.tenant == source[0], connections.c.name == source[1])
        ).scalar_one()
        conn.execute(
            sa.update(connections)
            .where(connections.c.tenant == target[0], connections.c.name == target[1])
            .values(record=record)
        )
    with pytest.raises(DecryptionError, match=f"'{target[1]}' \\(tenant '{target[0]}'\\)"):
        store.get(*target)
    assert store.get(*source).to_json()["secret"] == TOKEN_A


def test_a_tampered_record_does_not_decrypt(store: ConnectionStore, engine: sa.Engine) -> None:
    """Changing one byte of a stored record gives DecryptionError."""
    store.put("acme", "primary", _profile())
    with engine.begin() as conn:
        record = bytearray(conn.execute(sa.select(connections.c.record)).scalar_one())
        record[len(record) // 2] ^= 0x01
        conn.execute(sa.update(connections).values(record=bytes(record)))
    with pytest.raises(DecryptionError):
        store.get("acme", "primary")


def test_the_wrong_key_gives_an_opaque_error(store: ConnectionStore, engine: sa.Engine) -> None:
    """A store opened with another key cannot read records and says so without detail."""
    store.put("acme", "primary", _profile())
    with pytest.raises(DecryptionError, match="Could not decrypt connection 'primary'") as caught:
        ConnectionStore(engine, Keyring([("k1", KEY_2)])).get("acme", "primary")
    assert TOKEN_A not in str(caught.value)


def test_no_plaintext_secret_reaches_the_database(store: ConnectionStore, engine: sa.Engine, db_url: str) -> None:
    """The raw bytes of the SQLite files (incl. WAL) or of PostgreSQL's rows hold no secret and no full SID."""
    store.put("acme", "token", _profile(TOKEN_A))
    store.put("acme", "key", TwilioProfile(SID, "SK" + "cd" * 16, KEY_SECRET))
    needles = [TOKEN_A.encode(), KEY_SECRET.encode(), SID.encode(), ("SK" + "cd" * 16).encode()]
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert any(p.name.endswith("-wal") for p in files)
        raw = b"".join(p.read_bytes() for p in files)
    else:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT record, row_to_json(connections)::text FROM connections")).all()
        raw = b"".join(bytes(record) + text.encode() for record, text in rows)
    assert raw
    for needle in needles:
        assert needle not in raw


def test_rotation_interrupted_half_way_loses_nothing_and_a_rerun_finishes(engine: sa.Engine) -> None:
    """A crash after half the records were re-sealed leaves every record readable; rotating again completes."""
    old = ConnectionStore(engine, Keyring([("k1", KEY_1)]))
    for number in range(10):
        old.put("acme", f"c{number}", _profile(f"{number:032x}"))
    store = ConnectionStore(engine, old.keyring.with_new_key("k2", KEY_2))

    class CrashError(Exception):
        """The injected crash."""

    def crash_half_way(stage: str, done: int, total: int) -> None:
        if done == total // 2:
            raise CrashError

    with pytest.raises(CrashError):
        store.rotate(progress=crash_half_way)
    assert store.key_usage() == {"k1": 5, "k2": 5}
    assert [store.get("acme", f"c{n}").to_json()["secret"] for n in range(10)] == [f"{n:032x}" for n in range(10)]
    with pytest.raises(KeyringError, match="'k1' still seals 5 connection record"):
        store.retire("k1")

    calls: list[tuple[str, int, int]] = []
    report = store.rotate(progress=lambda *call: calls.append(call))
    assert (report.resealed, report.verified, report.failed, report.key_usage) == (5, 10, (), {"k2": 10})
    assert calls[:5] == [("reseal", n, 5) for n in range(1, 6)]
    assert calls[5:] == [("verify", n, 10) for n in range(1, 11)]
    assert store.retire("k1").key_ids == ("k2",)
    assert ConnectionStore(engine, Keyring([("k2", KEY_2)])).get("acme", "c9").to_json()["secret"] == f"{9:032x}"


def test_a_put_during_rotation_is_kept(engine: sa.Engine) -> None:
    """A write landing mid-rotation (even from a process still sealing with the old key) is not overwritten."""
    old = ConnectionStore(engine, Keyring([("k1", KEY_1)]))
    for number in range(4):
        old.put("acme", f"c{number}", _profile(TOKEN_A))
    store = ConnectionStore(engine, old.keyring.with_new_key("k2", KEY_2))

    def write_meanwhile(stage: str, done: int, total: int) -> None:
        if (stage, done) == ("reseal", 1):
            old.put("acme", "c0", _profile(TOKEN_B))  # already re-sealed: goes back to k1
            old.put("acme", "c3", _profile(TOKEN_B))  # not re-sealed yet

    report = store.rotate(progress=write_meanwhile)
    assert store.get("acme", "c0").to_json()["secret"] == store.get("acme", "c3").to_json()["secret"] == TOKEN_B
    assert report.key_usage == {"k1": 1, "k2": 3}
    assert store.rotate().key_usage == {"k2": 4}


def _rotate_and_die(db_url: str, stop_after: int) -> None:
    store = ConnectionStore(create_engine(db_url), Keyring([("k2", KEY_2), ("k1", KEY_1)]))

    def die(stage: str, done: int, total: int) -> None:
        if done == stop_after:
            os._exit(9)  # no cleanup at all, as if the machine lost power

    store.rotate(progress=die)


def test_rotation_killed_mid_way_is_finished_by_a_rerun(engine: sa.Engine, db_url: str) -> None:
    """A rotating process killed without cleanup leaves every record readable; a rerun completes it."""
    old = ConnectionStore(engine, Keyring([("k1", KEY_1)]))
    for number in range(6):
        old.put("acme", f"c{number}", _profile(f"{number:032x}"))
    process = multiprocessing.get_context("spawn").Process(target=_rotate_and_die, args=(db_url, 3))
    process.start()
    process.join(60)
    assert process.exitcode == 9
    store = ConnectionStore(engine, Keyring([("k2", KEY_2), ("k1", KEY_1)]))
    assert store.key_usage() == {"k1": 3, "k2": 3}
    report = store.rotate()
    assert (report.resealed, report.verified, report.key_usage) == (3, 6, {"k2": 6})


def test_rotation_reports_records_it_cannot_decrypt_and_goes_on(engine: sa.Engine) -> None:
    """A record sealed with a key that is gone is reported as failed; the others are rotated."""
    ConnectionStore(engine, Keyring([("k0", bytes(32))])).put("acme", "lost", _profile())
    ConnectionStore(engine, Keyring([("k1", KEY_1)])).put("acme", "kept", _profile())
    store = ConnectionStore(engine, Keyring([("k2", KEY_2), ("k1", KEY_1)]))
    report = store.rotate()
    assert report.failed == (("acme", "lost"),)
    assert (report.resealed, report.verified, report.key_usage) == (1, 1, {"k0": 1, "k2": 1})


def test_retire_removes_the_key_from_the_key_file(engine: sa.Engine, tmp_path: Path) -> None:
    """Retiring an unused key rewrites the key file without it."""
    path = tmp_path / "keys"
    Keyring([("k2", KEY_2), ("k1", KEY_1)], path=path).save()
    store = ConnectionStore(engine, Keyring.from_file(path))
    store.put("acme", "primary", _profile())
    store.retire("k1")
    assert Keyring.from_file(path).key_ids == ("k2",)
    assert store.get("acme", "primary").to_json()["secret"] == TOKEN_A


def _put_many(db_url: str, worker: int, count: int, start: BarrierType) -> None:
    store = ConnectionStore(create_engine(db_url), Keyring([("k1", KEY_1)]))
    start.wait(60)  # all processes write at the same time, not one after another as they finish importing
    for number in range(count):
        store.put("acme", "shared", _profile(f"{worker:016x}{number:016x}"))
        store.put("acme", f"own-{worker}", _profile(f"{worker:016x}{number:016x}"))


@pytest.mark.slow
def test_concurrent_puts_from_several_processes_lose_no_update(store: ConnectionStore, db_url: str) -> None:
    """Four processes writing the same and their own connections: every write is counted, none is torn."""
    workers, count = 4, 15
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers)
    processes = [context.Process(target=_put_many, args=(db_url, worker, count, start)) for worker in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [process.exitcode for process in processes] == [0] * workers
    assert store.describe("acme", "shared").revision == workers * count
    written = {f"{worker:016x}{number:016x}" for worker in range(workers) for number in range(count)}
    assert store.get("acme", "shared").to_json()["secret"] in written
    for worker in range(workers):
        assert store.describe("acme", f"own-{worker}").revision == count
        assert store.get("acme", f"own-{worker}").to_json()["secret"] == f"{worker:016x}{count - 1:016x}"


def test_profiles_are_reused_until_the_change_counter_moves_and_dropped_by_own_writes(engine: sa.Engine) -> None:
    """profiles(cached=True) reuses a read; another store's change shows once the counter is read again."""
    now = [1000.0]
    store = ConnectionStore(engine, Keyring([("k1", KEY_1)]), changes=ChangeWatch(engine, clock=lambda: now[0]))
    elsewhere = ConnectionStore(engine, Keyring([("k1", KEY_1)]))  # another process, as far as caching goes
    store.put("acme", "main", _profile(TOKEN_A))
    assert store.profiles("acme", cached=True)["main"].to_json()["secret"] == TOKEN_A

    elsewhere.put("acme", "main", _profile(TOKEN_B))
    elsewhere.put("acme", "second", _profile(TOKEN_B))
    now[0] += CHECK_SECONDS / 2
    assert set(store.profiles("acme", cached=True)) == {"main"}  # the counter is not read again yet
    assert store.profiles("acme")["main"].to_json()["secret"] == TOKEN_B  # max age 0: read now
    now[0] += CHECK_SECONDS
    assert store.profiles("acme", cached=True)["main"].to_json()["secret"] == TOKEN_B

    store.delete("acme", "second")  # its own write drops the entry at once
    assert set(store.profiles("acme", cached=True)) == {"main"}
    store.put("acme", "main", _profile(TOKEN_A))
    assert store.profiles("acme", cached=True)["main"].to_json()["secret"] == TOKEN_A


def test_cached_profiles_are_copies(store: ConnectionStore) -> None:
    """A caller changing the returned dict does not change what the next caller gets."""
    store.put("acme", "main", _profile())
    store.profiles("acme", cached=True).clear()
    assert set(store.profiles("acme", cached=True)) == {"main"}


# -- sealed records bind their revision ------------------------------------------------------------------------

OLD_TOKEN, NEW_TOKEN = TOKEN_A, TOKEN_B


def _row(engine: sa.Engine, name: str = "main") -> Any:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(connections.c.record, connections.c.revision, connections.c.seal_version).where(
                connections.c.tenant == "acme", connections.c.name == name
            )
        ).one()


def _set_record(engine: sa.Engine, record: bytes, **columns: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(connections)
            .where(connections.c.tenant == "acme", connections.c.name == "main")
            .values(record=record, **columns)
        )


def _put_legacy(engine: sa.Engine, keyring: Keyring, secret: str) -> bytes:
    """Write connection acme/main as a store made before the revision binding did (seal_version 1)."""
    aad = json.dumps([LEGACY_AAD_LABEL, "acme", "main", CONNECTION_TYPE], separators=(",", ":")).encode()
    record = keyring.seal(json.dumps(_profile(secret).to_json()).encode(), aad=aad)
    with engine.begin() as conn:
        conn.execute(sa.delete(connections))
        conn.execute(
            connections.insert().values(
                tenant="acme",
                name="main",
                type=CONNECTION_TYPE,
                key_id=keyring.primary_key_id,
                record=record,
                revision=3,
                seal_version=1,
                created_at=0.0,
                updated_at=0.0,
            )
        )
    return record


def test_an_older_record_restored_over_a_newer_revision_is_refused(engine: sa.Engine) -> None:
    """The rotated-away token's record, copied back over the row, gives the opaque DecryptionError."""
    store = ConnectionStore(engine, Keyring([("k1", KEY_1)]))
    store.put("acme", "main", _profile(OLD_TOKEN))
    old = _row(engine).record
    assert store.put("acme", "main", _profile(NEW_TOKEN)) == 2

    _set_record(engine, old)

    with pytest.raises(DecryptionError, match="restored from an older revision") as caught:
        store.get("acme", "main")
    assert OLD_TOKEN not in str(caught.value)
    assert NEW_TOKEN not in str(caught.value)
    with pytest.raises(DecryptionError):
        store.profiles("acme")


def test_a_record_sealed_for_a_later_revision_is_refused_too(engine: sa.Engine) -> None:
    """Binding works both ways: the current record does not open under another revision number."""
    store = ConnectionStore(engine, Keyring([("k1", KEY_1)]))
    store.put("acme", "main", _profile(OLD_TOKEN))
    _set_record(engine, _row(engine).record, revision=7)

    with pytest.raises(DecryptionError):
        store.get("acme", "main")


def test_rotation_and_puts_keep_records_bound_to_their_revision(engine: sa.Engine) -> None:
    """A rotation bumps the revision and re-seals for it; the record of before the rotation is then refused."""
    store = ConnectionStore(engine, Keyring([("k1", KEY_1)]))
    store.put("acme", "main", _profile(OLD_TOKEN))
    before = _row(engine).record
    store.keyring = store.keyring.with_new_key("k2", KEY_2)
    report = store.rotate()

    assert (report.resealed, report.failed, _row(engine).revision) == (1, (), 2)
    assert store.get("acme", "main").to_json()["secret"] == OLD_TOKEN
    _set_record(engine, before)
    with pytest.raises(DecryptionError):
        store.get("acme", "main")


def test_a_legacy_record_opens_once_and_is_resealed_bound_to_its_revision(engine: sa.Engine) -> None:
    """Upgrade on next read: the old binding opens, the row becomes seal_version 2 at the next revision, and the
    legacy record restored over it no longer opens."""
    keyring = Keyring([("k1", KEY_1)])
    legacy = _put_legacy(engine, keyring, OLD_TOKEN)
    store = ConnectionStore(engine, keyring)

    assert store.get("acme", "main").to_json()["secret"] == OLD_TOKEN
    upgraded = _row(engine)
    assert (upgraded.revision, upgraded.seal_version) == (4, 2)
    assert store.get("acme", "main").to_json()["secret"] == OLD_TOKEN

    _set_record(engine, legacy)
    with pytest.raises(DecryptionError):
        store.get("acme", "main")


def test_keys_rotate_reseals_legacy_records_under_the_same_key(engine: sa.Engine) -> None:
    """``keys rotate`` upgrades every legacy record even when its key is already the primary one."""
    keyring = Keyring([("k1", KEY_1)])
    _put_legacy(engine, keyring, OLD_TOKEN)
    report = ConnectionStore(engine, keyring).rotate()

    assert (report.resealed, report.verified, report.failed) == (1, 1, ())
    assert _row(engine).seal_version == 2


def test_a_put_over_a_legacy_record_writes_the_new_binding(engine: sa.Engine) -> None:
    """Upgrade on next write."""
    keyring = Keyring([("k1", KEY_1)])
    _put_legacy(engine, keyring, OLD_TOKEN)
    store = ConnectionStore(engine, keyring)

    assert store.put("acme", "main", _profile(NEW_TOKEN)) == 4
    assert (_row(engine).seal_version, store.get("acme", "main").to_json()["secret"]) == (2, NEW_TOKEN)


def test_a_store_made_before_the_binding_migrates_and_keeps_its_records(tmp_path: Path) -> None:
    """A database at schema version 1 (no seal_version column) gets the column; its records open and upgrade."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    keyring = Keyring([("k1", KEY_1)])
    engine = create_engine(url)
    legacy = _put_legacy(engine, keyring, OLD_TOKEN)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE connections DROP COLUMN seal_version"))
        conn.execute(sa.delete(schema_version).where(schema_version.c.version > 1))
    engine.dispose()

    migrated = create_engine(url)
    try:
        assert _row(migrated).seal_version == 1
        store = ConnectionStore(migrated, keyring)
        assert store.get("acme", "main").to_json()["secret"] == OLD_TOKEN
        assert _row(migrated).seal_version == 2
        _set_record(migrated, legacy)
        with pytest.raises(DecryptionError):
            store.get("acme", "main")
    finally:
        migrated.dispose()
