"""The change counter: what lets a process cache hooks and connections and still see another process's changes.

Every write of a hook, script or connection bumps one counter row (``store_changes``) in the same transaction as
the change (:func:`bump`), so the counter moves exactly when the change commits, on SQLite and PostgreSQL alike.
A cache keeps what it read together with the counter it read first (:class:`VersionedCache`), and trusts it while
the counter has not moved. A :class:`ChangeWatch` reads the counter at most once per :data:`CHECK_SECONDS` per
process (one primary-key read), whatever the request rate.

Staleness bound: a request that starts more than :data:`CHECK_SECONDS` after a change committed sees it, in every
process. Threat: a deleted hook that keeps running, or a rotated-away Auth Token that keeps passing the signature
check, for longer than that.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zingyconn.database import read_only
from zingyconn.schema import CHANGE_COUNTER_ID, store_changes

#: How long a read of the counter is trusted: the staleness bound of every cache built on it (see the module doc).
CHECK_SECONDS: Final = 0.25
#: Entries one cache keeps; past this it starts over (keys come from request paths: an attacker's 404s among them).
MAX_ENTRIES: Final = 4096

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def bump(conn: Connection) -> None:
    """Count one change of a hook, script or connection, inside the caller's write transaction *conn*."""
    conn.execute(
        store_changes.update()
        .where(store_changes.c.id == CHANGE_COUNTER_ID)
        .values(version=store_changes.c.version + 1)
    )


class ChangeWatch:
    """This process's view of the change counter: read again once the last read is :data:`CHECK_SECONDS` old.

    Stores on one engine share one watch (:meth:`of`), so a change made in this process is seen by all its caches at
    once (:meth:`changed`); other processes see it within the bound.

    Args:
        engine: The store's engine.
        check_seconds: How long one read is trusted (the staleness bound).
        clock: Monotonic seconds (injected by tests).
    """

    def __init__(
        self, engine: Engine, *, check_seconds: float = CHECK_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._reader = read_only(engine)
        self._check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._version: int | None = None
        self._read_at = float("-inf")  # when the last read *started*: a change committed before then is in it

    @classmethod
    def of(cls, engine: Engine) -> ChangeWatch:
        """Return the watch every store of this process on *engine* shares."""
        with _WATCHES_LOCK:
            watch = _WATCHES.get(engine)
            if watch is None:
                watch = _WATCHES[engine] = cls(engine)
            return watch

    def changed(self) -> None:
        """Read the counter again on next use: this process just committed a change (call after the commit)."""
        self._read_at = float("-inf")

    def known(self) -> int | None:
        """Return the counter as read less than ``check_seconds`` ago, or None when a read is due (no query)."""
        if self._clock() - self._read_at < self._check_seconds:
            return self._version
        return None

    def current(self) -> int:
        """Return the counter, reading it if the last read is ``check_seconds`` old (one thread reads; others wait).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: The store could not be read.
        """
        known = self.known()
        if known is not None:
            return known
        with self._lock:
            known = self.known()  # another thread may have read it while this one waited
            if known is not None:
                return known
            started = self._clock()
            with self._reader.connect() as conn:
                version = conn.execute(
                    sa.select(store_changes.c.version).where(store_changes.c.id == CHANGE_COUNTER_ID)
                ).scalar()
            self._version, self._read_at = int(version or 0), started
            return self._version


_WATCHES: Final[weakref.WeakKeyDictionary[Engine, ChangeWatch]] = weakref.WeakKeyDictionary()
_WATCHES_LOCK: Final = threading.Lock()


class VersionedCache(Generic[K, V]):
    """Values read from the store, each valid while the change counter is where it was before the value was read.

    Callers read the counter first (:meth:`ChangeWatch.current`), then the value, and :meth:`put` it with that
    counter: a change committed in between moves the counter, so the value is read again next time.
    """

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: dict[K, tuple[int, V]] = {}
        self._max_entries = max_entries

    def get(self, key: K, version: int | None) -> tuple[bool, V | None]:
        """Return (True, value) when *key* was read at counter *version*; (False, None) otherwise."""
        entry = self._entries.get(key)
        if version is None or entry is None or entry[0] != version:
            return False, None
        return True, entry[1]

    def put(self, key: K, version: int, value: V) -> None:
        """Keep *value* of *key*, read after the counter was *version*."""
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # simpler than LRU; a dropped entry costs one read
        self._entries[key] = (version, value)

    def drop(self, key: K) -> None:
        """Forget *key* (this process changed it: the next read must not wait for the counter)."""
        self._entries.pop(key, None)
