"""The connection store: sealed profiles of every connection type per (tenant, name) on SQLAlchemy Core.

Every record is sealed by the :class:`~zingyconn.secrets.keyring.Keyring` with AAD = (tenant, name, type,
revision), so a record copied to another row does not open, and neither does an older record restored over a newer
revision (a backup's, or one an attacker with write access kept: a rotated-away Auth Token coming back to life).
Each write reads the row's revision under the write lock, seals for the next one and stores both in the same
transaction; key rotation (:mod:`zingyconn.secrets.rotation`) re-seals one record per transaction with a
compare-and-swap on ``revision`` (:meth:`ConnectionStore.reseal`), so it runs online next to writers and can be
interrupted at any point and simply run again.

Records sealed before the revision was bound (``seal_version`` 1, the AAD of (tenant, name, type) only) still
open; each is re-sealed bound to its revision the first time it is read or written, or by ``keys rotate``. What
is left: restoring a whole row (record *and* its revision column) is not detected; that needs a counter kept
outside the database.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.changes import ChangeWatch, VersionedCache, bump
from zingyconn.config import Settings
from zingyconn.connection_types import Profile, connection_type
from zingyconn.database import create_engine, read_only, upsert_insert
from zingyconn.errors import ConnectionNotFoundError, DecryptionError, ZingyConnError
from zingyconn.names import validate_name
from zingyconn.schema import connections
from zingyconn.secrets.keyring import Keyring

if TYPE_CHECKING:
    from zingyconn.secrets.rotation import RotationProgress, RotationReport

# Bumped if the AAD layout ever changes, so old and new bindings can never be confused.
AAD_LABEL: Final = "zingyconn.connection/2"
#: The binding of records sealed before the revision was part of it (``seal_version`` 1); opened, then re-sealed.
LEGACY_AAD_LABEL: Final = "zingyconn.connection/1"
#: ``connections.seal_version`` of a record whose AAD binds its revision.
SEAL_VERSION: Final = 2
LEGACY_SEAL_VERSION: Final = 1
#: Tries of one put when another process inserts the same new connection at the same moment.
PUT_ATTEMPTS: Final = 5
# Re-tries of one record's compare-and-swap when a concurrent writer keeps changing it during rotation.
CAS_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class ConnectionSummary:
    """What may be shown about a connection without its secret.

    Attributes:
        tenant: The owning tenant.
        name: The connection name.
        type: The connection type (``"twilio"``).
        account_sid: The masked Account SID (empty for a type without one).
        api_key: The masked API Key SID, or ``None``.
        key_id: The master key that sealed the record.
        revision: Incremented by every write.
        created_at: Unix time of the first put.
        updated_at: Unix time of the last put.
    """

    tenant: str
    name: str
    type: str
    account_sid: str
    api_key: str | None
    key_id: str
    revision: int
    created_at: float
    updated_at: float


def _aad(tenant: str, name: str, type_: str, revision: int) -> bytes:
    # JSON of a list is an unambiguous encoding: ("a,b", "c") and ("a", "b,c") give different bytes.
    return json.dumps([AAD_LABEL, tenant, name, type_, revision], separators=(",", ":")).encode()


def _legacy_aad(tenant: str, name: str, type_: str) -> bytes:
    return json.dumps([LEGACY_AAD_LABEL, tenant, name, type_], separators=(",", ":")).encode()


def _what(tenant: str, name: str) -> str:
    return f"{name!r} (tenant {tenant!r})"


#: Tenants whose profiles one store object keeps (see ConnectionStore.profiles); past this the cache starts over.
PROFILES_CACHE_TENANTS = 1024


class ConnectionStore:
    """Sealed connection profiles per tenant; safe for many threads and processes on one database."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        *,
        clock: Callable[[], float] = time.time,
        changes: ChangeWatch | None = None,
    ) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._clock = clock
        self.keyring = keyring
        self._changes = changes if changes is not None else ChangeWatch.of(engine)
        # tenant -> profiles, valid while the change counter stays where it was when they were read (see
        # profiles(cached=True)). Decrypted secrets already live in this process for the runs that use them.
        self._profiles_cache: VersionedCache[str, dict[str, Profile]] = VersionedCache(
            max_entries=PROFILES_CACHE_TENANTS
        )

    @property
    def engine(self) -> Engine:
        """The database engine the records live in."""
        return self._engine

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionStore:
        """Open the store and keyring that *settings* describe (creating the embedded defaults on first use)."""
        return cls(create_engine(settings.db_url), Keyring.from_settings(settings))

    def put(self, tenant: str, name: str, profile: Profile) -> int:
        """Validate and save *profile* as connection *name* of *tenant*, replacing any; return the new revision.

        One transaction reads the row's revision under the write lock (``FOR UPDATE`` on PostgreSQL; SQLite's
        transactions begin IMMEDIATE), seals the profile for the next revision and writes both: concurrent puts
        serialize in the database, every one is counted, and the last one wins whole (no mixed fields).
        """
        validate_name(tenant, field="tenant")
        validate_name(name, field="name")
        profile.validate()
        keyring = self.current_keyring()
        plaintext = json.dumps(profile.to_json()).encode()
        type_ = connection_type(profile.connection_type).name  # only a registered type is stored
        summary = {field: value for field, value in profile.masked().items() if field != "secret"}
        insert = upsert_insert(self._engine)
        for _ in range(PUT_ATTEMPTS):
            with self._engine.begin() as conn:
                current = conn.execute(
                    sa.select(connections.c.revision).where(*self._key(tenant, name)).with_for_update()
                ).scalar()
                revision = 1 if current is None else int(current) + 1
                now = self._clock()
                values = {
                    "type": type_,
                    "key_id": keyring.primary_key_id,
                    "record": keyring.seal(plaintext, aad=_aad(tenant, name, type_, revision)),
                    "seal_version": SEAL_VERSION,
                    "summary": summary,
                    "revision": revision,
                    "updated_at": now,
                }
                if current is None:
                    statement = insert(connections).values(tenant=tenant, name=name, created_at=now, **values)
                    written = conn.execute(statement.on_conflict_do_nothing().returning(connections.c.revision)).first()
                    done = written is not None
                else:
                    done = (
                        conn.execute(
                            sa.update(connections)
                            .where(*self._key(tenant, name), connections.c.revision == current)
                            .values(**values)
                        ).rowcount
                        == 1
                    )
                if done:
                    bump(conn)
            if done:
                self._changes.changed()
                self._profiles_cache.drop(tenant)  # seen here at once, without waiting for the counter
                return revision
        raise ZingyConnError(
            f"Connection {name!r} of tenant {tenant!r} is being written by other processes at the same moment; "
            "try again."
        )

    def get(self, tenant: str, name: str) -> Profile:
        """Return the decrypted profile of connection *name* of *tenant*.

        Raises:
            ConnectionNotFoundError: No such connection in this tenant (other tenants are never consulted).
            DecryptionError: The record does not open with this keyring.
        """
        with self._reader.connect() as conn:
            row = conn.execute(sa.select(*_SEALED).where(*self._key(tenant, name))).first()
        if row is None:
            raise ConnectionNotFoundError(f"Tenant {tenant!r} has no connection named {name!r}.")
        return self.open_row(tenant, name, row)

    def describe(self, tenant: str, name: str) -> ConnectionSummary:
        """Return the summary of one connection, without decrypting it."""
        with self._reader.connect() as conn:
            row = conn.execute(sa.select(connections).where(*self._key(tenant, name))).first()
        if row is None:
            raise ConnectionNotFoundError(f"Tenant {tenant!r} has no connection named {name!r}.")
        return _summary(row)

    def list(self, tenant: str) -> builtins.list[ConnectionSummary]:
        """Return the summaries of *tenant*'s connections by name (never secrets; needs no key)."""
        validate_name(tenant, field="tenant")
        with self._reader.connect() as conn:
            rows = conn.execute(
                sa.select(connections).where(connections.c.tenant == tenant).order_by(connections.c.name)
            ).all()
        return [_summary(row) for row in rows]

    def delete(self, tenant: str, name: str) -> None:
        """Delete connection *name* of *tenant* (ConnectionNotFoundError if there is none)."""
        with self._engine.begin() as conn:
            deleted = conn.execute(sa.delete(connections).where(*self._key(tenant, name))).rowcount
            bump(conn)
        self._changes.changed()
        self._profiles_cache.drop(tenant)
        if deleted == 0:
            raise ConnectionNotFoundError(f"Tenant {tenant!r} has no connection named {name!r}.")

    def secrets(self, tenant: str) -> builtins.list[str]:
        """Return every secret of every connection of *tenant*, for masking run output."""
        return [secret for profile in self.profiles(tenant).values() for secret in profile.secrets()]

    def profiles(self, tenant: str, *, cached: bool = False) -> dict[str, Profile]:
        """Return every connection of *tenant*, decrypted, by name (one query: a run's broker session and masking).

        Args:
            cached: Reuse what this store object read for *tenant* while the change counter has not moved
                (:mod:`zingyconn.changes`: a change made anywhere is seen within
                :data:`~zingyconn.changes.CHECK_SECONDS`); its own :meth:`put` and :meth:`delete` drop the entry at
                once. False: read now.
        """
        validate_name(tenant, field="tenant")
        version = self._changes.current() if cached else None
        if cached:
            current = self.cached_profiles(tenant)
            if current is not None:
                return current
        with self._reader.connect() as conn:
            rows = conn.execute(sa.select(connections.c.name, *_SEALED).where(connections.c.tenant == tenant)).all()
        found = {row.name: self.open_row(tenant, row.name, row) for row in rows}
        if version is not None:
            self._profiles_cache.put(tenant, version, found)
        return dict(found)

    def cached_profiles(self, tenant: str) -> dict[str, Profile] | None:
        """Return what :meth:`profiles` read for *tenant* if still current, or None (no query).

        Current: the change counter, read less than :data:`~zingyconn.changes.CHECK_SECONDS` ago, has not moved
        since.
        """
        found, profiles = self._profiles_cache.get(tenant, self._changes.known())
        return dict(profiles) if found and profiles is not None else None

    # Key rotation lives in zingyconn.secrets.rotation; these three keep the store's callers working.
    def key_usage(self) -> dict[str, int]:
        """Return how many records each key id seals (:meth:`KeyRotation.key_usage`)."""
        from zingyconn.secrets.rotation import KeyRotation

        return KeyRotation(self).key_usage()

    def rotate(self, *, progress: RotationProgress | None = None) -> RotationReport:
        """Re-seal every record under the primary key, then verify (:meth:`KeyRotation.rotate`)."""
        from zingyconn.secrets.rotation import KeyRotation

        return KeyRotation(self).rotate(progress=progress)

    def retire(self, key_id: str) -> Keyring:
        """Remove *key_id* from the keyring once no record is sealed with it (:meth:`KeyRotation.retire`)."""
        from zingyconn.secrets.rotation import KeyRotation

        return KeyRotation(self).retire(key_id)

    def reseal(self, tenant: str, name: str) -> bool:
        """Re-seal one record under the primary key, bound to its next revision (compare-and-swap on revision).

        Returns False when the record does not open, or concurrent writers kept changing it.
        """
        primary = self.keyring.primary_key_id
        for _ in range(CAS_ATTEMPTS):
            with self._engine.begin() as conn:
                row = conn.execute(sa.select(connections.c.key_id, *_SEALED).where(*self._key(tenant, name))).first()
                if row is None or (row.key_id == primary and row.seal_version == SEAL_VERSION):
                    return True  # deleted, or re-written under the primary key by a concurrent put
                try:
                    plaintext = self.keyring.unseal(
                        row.record, aad=_row_aad(tenant, name, row), what=_what(tenant, name)
                    )
                except DecryptionError:
                    return False
                revision = int(row.revision) + 1
                record = self.keyring.seal(plaintext, aad=_aad(tenant, name, row.type, revision))
                swapped = conn.execute(
                    sa.update(connections)
                    .where(*self._key(tenant, name), connections.c.revision == row.revision)
                    .values(record=record, key_id=primary, revision=revision, seal_version=SEAL_VERSION)
                )
                if swapped.rowcount == 1:
                    return True
        return False

    def current_keyring(self) -> Keyring:
        """Pick up a changed key file (``keys new|rotate|retire`` run by another process) before sealing."""
        self.keyring = self.keyring.reloaded()
        return self.keyring

    def open_row(self, tenant: str, name: str, row: Any, *, upgrade: bool = True) -> Profile:
        """Decrypt *row* (``type``, ``record``, ``revision``, ``seal_version``) of connection *name* of *tenant*.

        A record of the old binding (``seal_version`` 1) is re-sealed bound to its revision at once when *upgrade*.
        """
        aad, what, keyring = _row_aad(tenant, name, row), _what(tenant, name), self.keyring
        try:
            plaintext = keyring.unseal(row.record, aad=aad, what=what)
        except DecryptionError:
            # Sealed with a key added to the key file after this process read it (another process ran `keys new`
            # and `keys rotate`): re-read the file once. A damaged record fails again, with the same opaque error.
            fresh = self.current_keyring()
            if fresh is keyring:
                raise
            plaintext = fresh.unseal(row.record, aad=aad, what=what)
        if upgrade and row.seal_version != SEAL_VERSION:
            self.reseal(tenant, name)
        data: dict[str, Any] = json.loads(plaintext)
        return connection_type(row.type).load_profile(data)

    @staticmethod
    def _key(tenant: str, name: str) -> tuple[sa.ColumnElement[bool], sa.ColumnElement[bool]]:
        tenant, name = validate_name(tenant, field="tenant"), validate_name(name, field="name")
        return connections.c.tenant == tenant, connections.c.name == name


#: The columns a record is opened with.
_SEALED: Final = (connections.c.type, connections.c.record, connections.c.revision, connections.c.seal_version)


def _row_aad(tenant: str, name: str, row: Any) -> bytes:
    """Return the AAD *row* was sealed with: bound to its revision, or the old binding for ``seal_version`` 1."""
    if row.seal_version == LEGACY_SEAL_VERSION:
        return _legacy_aad(tenant, name, row.type)
    return _aad(tenant, name, row.type, int(row.revision))


def _summary(row: sa.Row[Any]) -> ConnectionSummary:
    summary = row.summary or {}
    return ConnectionSummary(
        tenant=row.tenant,
        name=row.name,
        type=row.type,
        account_sid=str(summary.get("account_sid", "")),
        api_key=summary.get("api_key"),
        key_id=row.key_id,
        revision=int(row.revision),
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
    )
