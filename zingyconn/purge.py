"""The purge: delete stored records older than their retention (:mod:`zingyconn.retention`), in small batches.

What goes, per table (``now`` from the injected clock):

- ``runs``: a run of kind K that started before ``now - retention[K]``;
- ``webhook_responses``: replay records created before ``now - replays retention``;
- ``sent_messages``: send-ledger keys created before ``now - sends retention``;
- ``tasks``: succeeded or failed tasks last updated before ``now - tasks retention`` (queued, running and retrying
  tasks are work still to do, never purged).

``older_than_seconds`` replaces every retention, but never goes below the floors of the replay records and the
send ledger (what stops duplicate webhook runs and sends). ``everything`` (with a tenant) forgets that tenant's
history: all its runs, replay records, ledger keys and finished tasks, whatever their age.

Batches: each transaction deletes at most :data:`BATCH_ROWS` rows chosen by primary key, so the write lock (all of
SQLite's database, PostgreSQL's rows) is held for milliseconds, and concurrent writers (webhooks recording runs)
queue behind one batch, not behind the whole purge.

:class:`PurgeSchedule` runs the purge inside every ``serve`` and ``worker`` process; a lease in the store
(:class:`JobLeases`) lets one of them do it per interval, however many share the database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.database import read_only
from zingyconn.errors import ValidationError
from zingyconn.retention import MIN_REPLAYS_SECONDS, MIN_SENDS_SECONDS, RUN_KINDS, RetentionPolicy
from zingyconn.schema import job_leases, runs, sent_messages, tasks, webhook_responses

#: Rows one transaction deletes at most: a few milliseconds of write lock on SQLite.
BATCH_ROWS: Final = 500
#: Pause between batches, so that writers waiting for the lock get it between two batches.
BATCH_PAUSE_SECONDS: Final = 0.005
#: The lease that elects the one process that purges.
LEASE_NAME: Final = "purge"
#: Finished task states: the only task rows the purge deletes.
FINISHED_TASK_STATES: Final = ("succeeded", "failed")
#: The tables purged, in this order, as named in reports.
TABLES: Final = ("runs", "webhook_responses", "sent_messages", "tasks")

_LOGGER: Final = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge deleted (or, for a dry run, would delete), by table.

    Attributes:
        counts: Rows per table (:data:`TABLES`).
        dry_run: Nothing was deleted; ``counts`` are what would be.
        tenant: The only tenant purged, or ``None`` for every tenant.
    """

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    dry_run: bool = False
    tenant: str | None = None

    @property
    def total(self) -> int:
        """Rows deleted (or that would be) in every table."""
        return sum(self.counts.values())

    def to_json(self) -> dict[str, object]:
        """Return the report as ``zingyconn purge --json`` prints it."""
        return {"ok": True, "dry_run": self.dry_run, "tenant": self.tenant, "deleted": dict(self.counts)}


class Purger:
    """Deletes records older than their retention from one store.

    Args:
        engine: The store.
        policy: Retention per kind of record.
        clock: Unix time now (injected in tests).
        batch_rows: Rows per transaction.
        pause_seconds: Sleep between batches (``sleep`` is injected with it).
    """

    def __init__(
        self,
        engine: Engine,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], float] = time.time,
        batch_rows: int = BATCH_ROWS,
        pause_seconds: float = BATCH_PAUSE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._policy = policy
        self._clock = clock
        self._batch_rows = batch_rows
        self._pause_seconds = pause_seconds
        self._sleep = sleep

    def purge(
        self,
        *,
        tenant: str | None = None,
        older_than_seconds: float | None = None,
        everything: bool = False,
        dry_run: bool = False,
    ) -> PurgeReport:
        """Delete (or with *dry_run*, count) what is older than the retention; see the module docstring.

        Raises:
            ValidationError: *everything* without a *tenant*, or with *older_than_seconds*.
        """
        if everything and tenant is None:
            raise ValidationError("Forgetting all history needs a tenant: pass --tenant T with --all.", field="all")
        if everything and older_than_seconds is not None:
            raise ValidationError("--all forgets everything of the tenant; leave out --older-than.", field="all")
        report = PurgeReport(dry_run=dry_run, tenant=tenant)
        for table, key, condition in self._targets(tenant, older_than_seconds, everything):
            report.counts[table] += self._count(key, condition) if dry_run else self._delete(key, condition)
        return report

    def _targets(
        self, tenant: str | None, older_than_seconds: float | None, everything: bool
    ) -> Iterator[tuple[str, tuple[sa.Column[object], ...], sa.ColumnElement[bool]]]:
        """Yield (table name, primary key columns, condition of the rows to delete)."""
        now = self._clock()
        policy = self._policy

        def older(
            column: sa.Column[float], retention_seconds: float, floor_seconds: float = 0.0
        ) -> sa.ColumnElement[bool]:
            if everything:
                return sa.true()
            chosen = retention_seconds if older_than_seconds is None else older_than_seconds
            return column < now - max(chosen, floor_seconds)

        def scoped(table: sa.Table, *conditions: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
            return sa.and_(*conditions, *(() if tenant is None else (table.c.tenant == tenant,)))

        run_key = (runs.c.id,)
        for kind in RUN_KINDS:
            yield (
                "runs",
                run_key,
                scoped(runs, runs.c.kind == kind, older(runs.c.started_at, policy.runs_seconds[kind])),
            )
        longest = max(policy.runs_seconds.values())  # for kinds a newer version may add
        yield "runs", run_key, scoped(runs, runs.c.kind.not_in(RUN_KINDS), older(runs.c.started_at, longest))
        replays = webhook_responses
        yield (
            "webhook_responses",
            (replays.c.tenant, replays.c.hook, replays.c.token),
            scoped(replays, older(replays.c.created_at, policy.replays_seconds, MIN_REPLAYS_SECONDS)),
        )
        yield (
            "sent_messages",
            (sent_messages.c.tenant, sent_messages.c.key),
            scoped(sent_messages, older(sent_messages.c.created_at, policy.sends_seconds, MIN_SENDS_SECONDS)),
        )
        finished = tasks.c.state.in_(FINISHED_TASK_STATES)
        yield "tasks", (tasks.c.id,), scoped(tasks, finished, older(tasks.c.updated_at, policy.tasks_seconds))

    def _count(self, key: tuple[sa.Column[object], ...], condition: sa.ColumnElement[bool]) -> int:
        table = key[0].table
        with self._reader.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(condition)).scalar() or 0)

    def _delete(self, key: tuple[sa.Column[object], ...], condition: sa.ColumnElement[bool]) -> int:
        table = key[0].table
        assert isinstance(table, sa.Table)
        batch = sa.select(*key).where(condition).limit(self._batch_rows)
        target = key[0].in_(batch.scalar_subquery()) if len(key) == 1 else sa.tuple_(*key).in_(batch)
        deleted = 0
        while True:
            with self._engine.begin() as conn:
                count = int(conn.execute(table.delete().where(target)).rowcount)
            deleted += count
            if count < self._batch_rows:
                return deleted
            self._sleep(self._pause_seconds)


class JobLeases:
    """The ``job_leases`` table: one process among many (``serve`` workers, ``worker`` processes) does a job.

    A lease is a row ``(name, owner, expires_at)``. Taking it is one INSERT, or one compare-and-set UPDATE of a row
    that expired or that the caller already owns; the database picks exactly one winner among concurrent takers on
    SQLite and PostgreSQL alike. A process that dies simply lets its lease expire.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def take(self, name: str, owner: str, *, ttl_seconds: float) -> bool:
        """Hold lease *name* as *owner* for *ttl_seconds*; return False if another owner holds it unexpired."""
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                conn.execute(job_leases.insert().values(name=name, owner=owner, expires_at=now + ttl_seconds))
            return True
        except sa.exc.IntegrityError:
            pass
        with self._engine.begin() as conn:
            taken = conn.execute(
                job_leases.update()
                .where(job_leases.c.name == name, sa.or_(job_leases.c.expires_at <= now, job_leases.c.owner == owner))
                .values(owner=owner, expires_at=now + ttl_seconds)
            ).rowcount
        return bool(taken)

    def holder(self, name: str) -> str | None:
        """Return who holds lease *name* now, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(job_leases.c.owner).where(job_leases.c.name == name, job_leases.c.expires_at > self._clock())
            ).first()
        return None if row is None else str(row.owner)


def schedule_for(engine: Engine, policy: RetentionPolicy) -> PurgeSchedule:
    """Return the purge schedule of a ``serve`` or ``worker`` process on *engine* (started by the caller)."""
    return PurgeSchedule(Purger(engine, policy), JobLeases(engine), interval_seconds=policy.purge_interval_seconds)


class PurgeSchedule:
    """Purges every interval in a background thread, when this process holds the purge lease.

    Args:
        purger: What purges.
        leases: The store's leases (one process per interval purges).
        interval_seconds: Time between two purges (and the lease's lifetime).
        owner: This process's name in the lease (default: ``host:pid``).
        first_delay_seconds: Wait before the first purge (start-up stays quick).
    """

    def __init__(
        self,
        purger: Purger,
        leases: JobLeases,
        *,
        interval_seconds: float,
        owner: str | None = None,
        first_delay_seconds: float = 5.0,
    ) -> None:
        self.purger = purger
        self._leases = leases
        self._interval_seconds = interval_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._first_delay_seconds = first_delay_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> PurgeReport | None:
        """Purge if this process takes the lease; return the report, or None when another process has the turn."""
        if not self._leases.take(LEASE_NAME, self.owner, ttl_seconds=self._interval_seconds):
            return None
        report = self.purger.purge()
        if report.total:
            _LOGGER.info("Purged records older than their retention: %s", report.counts)
        return report

    def start(self) -> None:
        """Start the background thread (no-op when the interval is 0: purging on demand only)."""
        if self._interval_seconds <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="zingyconn-purge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a batch in progress finishes first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        delay = min(self._first_delay_seconds, self._interval_seconds)
        while not self._stop.wait(delay):
            delay = self._interval_seconds
            try:
                self.run_once()
            except sa.exc.SQLAlchemyError as exc:  # the database is down or busy: try again next interval
                _LOGGER.error("The purge failed and will be retried in %g s: %s", self._interval_seconds, exc)
