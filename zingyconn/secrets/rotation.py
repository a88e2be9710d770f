"""Key rotation of the connection store: re-seal every record under the primary key, verify, retire old keys.

``zingyconn keys rotate`` runs :meth:`KeyRotation.rotate` next to live writers: each record is re-sealed in its own
transaction with a compare-and-swap on ``revision`` (:meth:`ConnectionStore.reseal
<zingyconn.secrets.store.ConnectionStore.reseal>`), so an interrupted rotation leaves every record under either
the old or the new key (both open) and simply runs again; a verification pass then opens every record.
:meth:`KeyRotation.retire` drops a key from the keyring only once no record is sealed with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from zingyconn.database import read_only
from zingyconn.errors import DecryptionError, KeyringError
from zingyconn.schema import connections
from zingyconn.secrets.keyring import Keyring, record_key_id
from zingyconn.secrets.store import SEAL_VERSION, ConnectionStore

# Rows read per query while rotating or verifying: bounded memory whatever the number of records.
BATCH_SIZE: Final = 500

#: ``progress(stage, done, total)``, called after each record; stage is ``"reseal"`` or ``"verify"``.
RotationProgress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class RotationReport:
    """The outcome of :meth:`KeyRotation.rotate`.

    Attributes:
        primary_key_id: The key every record should now be sealed with.
        resealed: Records re-sealed by this run.
        verified: Records that decrypted in the verification pass.
        failed: ``(tenant, name)`` of records that did not decrypt (damaged, or sealed with a missing key).
        key_usage: Number of records per key id after the run.
    """

    primary_key_id: str
    resealed: int
    verified: int
    failed: tuple[tuple[str, str], ...]
    key_usage: dict[str, int]


class KeyRotation:
    """Rotate and retire the master keys of *store*'s records."""

    def __init__(self, store: ConnectionStore) -> None:
        self._store = store
        self._reader = read_only(store.engine)

    def key_usage(self) -> dict[str, int]:
        """Return how many records each key id seals."""
        with self._reader.connect() as conn:
            rows = conn.execute(sa.select(connections.c.key_id, sa.func.count()).group_by(connections.c.key_id)).all()
        return {str(key_id): int(count) for key_id, count in rows}

    def rotate(self, *, progress: RotationProgress | None = None) -> RotationReport:
        """Re-seal every record under the primary key, then check that every record decrypts.

        Each record is re-sealed in its own transaction with a compare-and-swap on ``revision``; an interrupted
        rotation leaves every record sealed under either the old or the new key (both open), and a second run
        only touches the records still under an old key.
        """
        primary = self._store.current_keyring().primary_key_id
        pending = sa.or_(connections.c.key_id != primary, connections.c.seal_version != SEAL_VERSION)
        with self._reader.connect() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).where(pending)).scalar_one())
        done, failed = 0, set()
        for row in self._rows_where(pending):
            if not self._store.reseal(row.tenant, row.name):
                failed.add((row.tenant, row.name))
            done += 1
            if progress is not None:
                progress("reseal", done, total)
        verified = self._verify(failed, progress)
        return RotationReport(primary, done - len(failed), verified, tuple(sorted(failed)), self.key_usage())

    def retire(self, key_id: str) -> Keyring:
        """Remove *key_id* from the store's keyring (and its key file) once no record is sealed with it.

        Raises:
            KeyringError: Unknown key, the primary key, or records still sealed with it.
        """
        remaining = self._store.keyring.without_key(key_id)
        in_use = self.key_usage().get(key_id, 0)
        if in_use:
            raise KeyringError(
                f"Key {key_id!r} still seals {in_use} connection record(s); run `zingyconn keys rotate` first."
            )
        if remaining.path is not None:
            remaining.save()
        self._store.keyring = remaining
        return remaining

    def _verify(self, failed: set[tuple[str, str]], progress: RotationProgress | None) -> int:
        with self._reader.connect() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(connections)).scalar_one())
        verified = 0
        for done, row in enumerate(self._rows_where(sa.true()), start=1):
            try:
                self._store.open_row(row.tenant, row.name, row, upgrade=False)
                if record_key_id(row.record) == row.key_id:  # the key_id column drives `retire`: it must not lie
                    verified += 1
                else:
                    failed.add((row.tenant, row.name))
            except DecryptionError:
                failed.add((row.tenant, row.name))
            if progress is not None:
                progress("verify", done, total)
        return verified

    # Rows are typed Any: SQLAlchemy 2.0 and 2.1 spell the generic Row type differently.
    def _rows_where(self, condition: sa.ColumnElement[bool]) -> Iterator[Any]:
        """Yield matching rows in key order, one bounded batch per query (keyset paging)."""
        after = ("", "")
        while True:
            with self._reader.connect() as conn:
                rows = conn.execute(
                    sa.select(
                        connections.c.tenant,
                        connections.c.name,
                        connections.c.type,
                        connections.c.key_id,
                        connections.c.record,
                        connections.c.revision,
                        connections.c.seal_version,
                    )
                    .where(condition, sa.tuple_(connections.c.tenant, connections.c.name) > after)
                    .order_by(connections.c.tenant, connections.c.name)
                    .limit(BATCH_SIZE)
                ).all()
            if not rows:
                return
            yield from rows
            after = (rows[-1].tenant, rows[-1].name)
