"""The durable record of background tasks: what is queued, who runs it, what became of it.

The ``tasks`` table is the queue of record (a transactional outbox): creating a task is one INSERT, and Huey
(:mod:`zingyconn.tasks.queue`) only ever carries the ids a dispatcher chose to run next
(:mod:`zingyconn.tasks.dispatcher`).
Each row moves ``queued -> running -> succeeded | failed`` (or ``running -> retrying -> running`` after a transient
failure). A row is *dispatched* (``dispatched_at``) when its id is put on the queue; a worker *claims* it before
running it (one compare-and-set, so an id delivered twice runs once) and holds a *lease* that its process renews
while it lives (:mod:`zingyconn.leases`). A row whose lease ran out (its worker was killed, or its machine died)
is *abandoned*: :meth:`TaskStore.reclaim` makes it ready again. A dispatched row that no worker claimed while the
queue stood empty lost its message (a Redis restart without persistence): :meth:`TaskStore.redispatch_lost`
makes it ready again. The id is the run-level idempotency key of the messages the task sends, so a re-run
returns the stored messages instead of sending them again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.database import read_only
from zingyconn.errors import NotFoundError, ValidationError, WorkerLostError
from zingyconn.leases import LeaseKeeper, process_owner, shared_keeper
from zingyconn.schema import runs, tasks

State = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled"]
Source = Literal["api", "cli", "console", "cron", "snippet", "rerun"]

#: States in which a row may be claimed by a worker.
CLAIMABLE: Final = ("queued", "retrying")
#: States an operator may cancel: the task has not started, or waits between attempts (a running one is not stopped).
CANCELLABLE: Final = ("queued", "retrying")
#: States from which a task may be queued again (``rerun``).
RERUNNABLE: Final = ("failed", "cancelled")
#: States that a reaper watches: the row should move on before ``lease_until``.
IN_FLIGHT: Final = ("queued", "running", "retrying")
#: A dispatched task that no worker claimed this long, while the queue stood empty, lost its queue message.
LOST_AFTER_SECONDS: Final = 5.0
#: A task is given up (``failed``) after this many attempts, whatever the cause: transient Twilio errors, or
#: workers lost while running it (a snippet that kills its worker every time must not loop forever).
MAX_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One background task.

    Attributes:
        id: Task id; also the idempotency key of the task's sends.
        tenant: Owning tenant.
        script: Name of the script to run.
        payload: The ``event`` of the run.
        state: ``queued``, ``running``, ``retrying``, ``succeeded``, ``failed`` or ``cancelled``.
        attempts: Attempts started so far.
        owner: The process running it (:func:`zingyconn.leases.process_owner`), while running.
        lease_until: While running: Unix time by which the worker must renew its lease, or the reaper takes it back.
        dispatched_at: When its id was put on the queue; ``None`` while it waits for the dispatcher.
        run_after: A retry's backoff: not dispatched before this Unix time.
        run_id: The run of the latest attempt in the run history.
        error: Why the latest attempt failed (the run's error object), or ``None``.
        source: Who enqueued it: ``api``, ``cli``, ``console``, ``cron``, ``snippet`` or ``rerun``.
        created_at: Unix time of enqueueing.
        updated_at: Unix time of the last state change.
    """

    id: str
    tenant: str
    script: str
    payload: Any
    state: State
    attempts: int
    owner: str | None
    lease_until: float | None
    dispatched_at: float | None
    run_after: float | None
    run_id: str | None
    error: dict[str, Any] | None
    source: str
    created_at: float
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        """Return the task as a JSON object (``tasks show``, admin API)."""
        return {name: getattr(self, name) for name in self.__slots__}


class TaskExistsError(ValidationError):
    """Raised when a task id is taken: for cron ids (one per script and minute), the minute already fired."""


class TaskStore:
    """Create, dispatch, claim, finish and recover task rows in the store's database (SQLite or PostgreSQL).

    Args:
        engine: The store's engine.
        clock: Unix time now.
        owner: Who claims in this store's name (default: this process, whose leases the keeper renews).
        keeper: Renews the leases of tasks this store's owner runs (default: the process's keeper).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self.engine = engine
        self._reader = read_only(engine)
        self._clock = clock
        self.owner = owner or process_owner()
        self._keeper = keeper if keeper is not None else shared_keeper()
        self._running: set[str] = set()  # tasks this store claimed and has not finished: their leases are renewed
        self._running_lock = threading.Lock()
        self._keeper.register(self._renew)

    def create(
        self,
        tenant: str,
        script: str,
        payload: Any,
        *,
        source: Source,
        task_id: str | None = None,
        existing_ok: bool = False,
    ) -> TaskRecord:
        """Insert a ``queued`` row for a new task and return it; a dispatcher puts it on the queue.

        Args:
            task_id: The id to use (cron minutes, idempotent enqueues); a new random id when ``None``.
            existing_ok: When *task_id* exists for the same tenant, return that task instead of failing: the same
                enqueue, repeated (a retried run, a replayed webhook).

        Raises:
            TaskExistsError: *task_id* is taken (and *existing_ok* is false, or it is another tenant's).
        """
        now = self._clock()
        row = {
            "id": task_id or uuid.uuid4().hex,
            "tenant": tenant,
            "script": script,
            "payload": payload,
            "state": "queued",
            "attempts": 0,
            "source": source,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(tasks.insert().values(**row))
        except sa.exc.IntegrityError:
            if task_id is None:
                raise
            if existing_ok:
                existing = self.get(task_id)
                if existing.tenant == tenant:
                    return existing
            raise TaskExistsError(f"Task {task_id!r} already exists.") from None
        return self.get(str(row["id"]))

    def get(self, task_id: str) -> TaskRecord:
        """Return task *task_id*; NotFoundError if there is none."""
        with self._reader.connect() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            raise NotFoundError(f"There is no task with id {task_id!r}.")
        return _record(row._mapping)

    def recent(self, tenant: str | None = None, *, state: str | None = None, limit: int = 50) -> list[TaskRecord]:
        """Return the newest tasks first, optionally of one tenant and in one state."""
        query = sa.select(tasks).order_by(tasks.c.created_at.desc()).limit(limit)
        if tenant is not None:
            query = query.where(tasks.c.tenant == tenant)
        if state is not None:
            query = query.where(tasks.c.state == state)
        with self._reader.connect() as conn:
            return [_record(row._mapping) for row in conn.execute(query)]

    def count_waiting(self, tenant: str) -> int:
        """Return how many of *tenant*'s tasks are queued, running or waiting to retry."""
        waiting = (tasks.c.tenant == tenant) & tasks.c.state.in_(IN_FLIGHT)
        query = sa.select(sa.func.count()).select_from(tasks).where(waiting)
        with self._reader.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def claim(self, task_id: str) -> TaskRecord | None:
        """Take task *task_id* for this worker: ``queued``/``retrying`` -> ``running``, one more attempt.

        The lease lasts :data:`~zingyconn.leases.LEASE_SECONDS` and is renewed while this process lives.

        Returns:
            The claimed row, or ``None`` when it is not claimable (already running elsewhere, finished, unknown):
            the queue delivered a duplicate, and the caller must not run it.
        """
        now = self._clock()
        values = {
            "state": "running",
            "attempts": tasks.c.attempts + 1,
            "owner": self.owner,
            "lease_until": now + self._keeper.lease_seconds,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            claimed = conn.execute(
                tasks.update().where(tasks.c.id == task_id, tasks.c.state.in_(CLAIMABLE)).values(**values)
            ).rowcount
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first() if claimed else None
        if row is None:
            return None
        # Renewed only from here, after the commit: a claim whose outcome this process never saw (the store died
        # mid-claim) has no keeper, so its lease runs out and the task is reclaimed instead of held for good.
        with self._running_lock:
            self._running.add(task_id)
        return _record(row._mapping)

    def finish(
        self,
        task_id: str,
        *,
        state: Literal["succeeded", "failed"],
        run_id: str | None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record the outcome of this worker's attempt; False if the claim was lost meanwhile (reaped)."""
        return self._move(task_id, state=state, run_id=run_id, error=error)

    def retry_later(self, task_id: str, *, delay_seconds: float, run_id: str | None, error: dict[str, Any]) -> bool:
        """Mark this worker's attempt as a transient failure, to be dispatched again after *delay_seconds*."""
        run_after = self._clock() + delay_seconds
        return self._move(task_id, state="retrying", run_id=run_id, error=error, run_after=run_after)

    def defer(self, task_id: str, *, delay_seconds: float) -> bool:
        """Hand this worker's claim back unrun, to be dispatched after *delay_seconds*; the attempt is not counted."""
        run_after = self._clock() + delay_seconds
        return self._move(task_id, state="retrying", run_id=None, error=None, run_after=run_after, keep_run=True,
                          refund_attempt=True)  # fmt: skip

    def abandon(self, task_id: str) -> None:
        """Stop renewing the lease of this worker's attempt at *task_id* without recording an outcome.

        For an attempt whose outcome could not be recorded (the store failed): the lease runs out within
        :data:`~zingyconn.leases.LEASE_SECONDS` and :meth:`reclaim` makes the task ready again. A no-op once the
        outcome is recorded.
        """
        with self._running_lock:
            self._running.discard(task_id)

    def release(self, task_id: str) -> bool:
        """Give an interrupted attempt back to the queue (``running`` -> ``queued``) on a worker shutdown."""
        return self._move(task_id, state="queued", run_id=None, error=None, keep_run=True)

    def _move(
        self,
        task_id: str,
        *,
        state: State,
        run_id: str | None,
        error: dict[str, Any] | None,
        run_after: float | None = None,
        keep_run: bool = False,
        refund_attempt: bool = False,
    ) -> bool:
        values: dict[str, Any] = {
            "state": state,
            "error": error,
            "lease_until": None,
            "owner": None,
            "dispatched_at": None,
            "run_after": run_after,
            "updated_at": self._clock(),
        }
        if not keep_run:
            values["run_id"] = run_id
        if refund_attempt:
            values["attempts"] = tasks.c.attempts - 1
        mine = (tasks.c.id == task_id) & (tasks.c.state == "running") & (tasks.c.owner == self.owner)
        with self._running_lock:
            self._running.discard(task_id)
        with self.engine.begin() as conn:
            return bool(conn.execute(tasks.update().where(mine).values(**values)).rowcount)

    def reclaim(self) -> list[TaskRecord]:
        """Make tasks whose worker stopped renewing its lease (killed, machine lost) ready again; return them.

        A task out of attempts is failed instead (a snippet that kills its worker every time must not loop).
        """
        now = self._clock()
        query = sa.select(tasks).where(tasks.c.state == "running", tasks.c.lease_until < now)
        with self._reader.connect() as conn:
            stale = [_record(row._mapping) for row in conn.execute(query)]
        return [record for record in stale if self._reclaim_one(record, now)]

    def _reclaim_one(self, record: TaskRecord, now: float) -> bool:
        same = (tasks.c.id == record.id) & (tasks.c.state == "running") & (tasks.c.updated_at == record.updated_at)
        same &= tasks.c.lease_until < now  # renewed meanwhile: its worker lives after all
        if record.attempts >= MAX_ATTEMPTS:
            error = {
                "type": WorkerLostError.__name__,
                "message": f"The worker running attempt {record.attempts} was lost.",
            }
            values: dict[str, Any] = {"state": "failed", "error": error}
        else:
            values = {"state": "queued", "dispatched_at": None}
        with self.engine.begin() as conn:
            moved = conn.execute(
                tasks.update().where(same).values(**values, owner=None, lease_until=None, updated_at=now)
            ).rowcount
        return bool(moved) and values["state"] == "queued"

    def redispatch_lost(self) -> int:
        """Make dispatched tasks no worker claimed within :data:`LOST_AFTER_SECONDS` ready again; return how many.

        Call only while the queue is empty: then a dispatched, unclaimed row's message is gone (a queue that lost
        its data), not waiting its turn.
        """
        cutoff = self._clock() - LOST_AFTER_SECONDS
        lost = tasks.c.state.in_(CLAIMABLE) & (tasks.c.dispatched_at < cutoff)
        with self.engine.begin() as conn:
            return int(conn.execute(tasks.update().where(lost).values(dispatched_at=None)).rowcount)

    def ready_tenants(self) -> list[str]:
        """Return the tenants that have a task ready to dispatch, the one waiting longest first."""
        oldest = sa.func.min(tasks.c.created_at)
        query = sa.select(tasks.c.tenant).where(self._ready()).group_by(tasks.c.tenant).order_by(oldest)
        with self._reader.connect() as conn:
            return [str(tenant) for tenant in conn.execute(query).scalars()]

    def dispatch_next(self, tenant: str) -> str | None:
        """Mark *tenant*'s oldest ready task dispatched and return its id (``None`` if another dispatcher took it)."""
        query = sa.select(tasks.c.id).where(self._ready(), tasks.c.tenant == tenant).order_by(tasks.c.created_at)
        with self._reader.connect() as conn:
            task_id = conn.execute(query.limit(1)).scalar()
        if task_id is None:
            return None
        now = self._clock()
        with self.engine.begin() as conn:
            taken = conn.execute(
                tasks.update().where(tasks.c.id == task_id, self._ready()).values(dispatched_at=now)
            ).rowcount
        return str(task_id) if taken else None

    def undispatch(self, task_id: str) -> None:
        """Make *task_id* ready again after its queue push failed."""
        with self.engine.begin() as conn:
            conn.execute(
                tasks.update().where(tasks.c.id == task_id, tasks.c.state.in_(CLAIMABLE)).values(dispatched_at=None)
            )

    def _ready(self) -> sa.ColumnElement[bool]:
        not_before = tasks.c.run_after.is_(None) | (tasks.c.run_after <= self._clock())
        return tasks.c.state.in_(CLAIMABLE) & tasks.c.dispatched_at.is_(None) & not_before

    def _renew(self, _lease_until: float) -> None:
        with self._running_lock:
            running = sorted(self._running)
        if not running:
            return
        lease_until = self._clock() + self._keeper.lease_seconds
        mine = (tasks.c.owner == self.owner) & (tasks.c.state == "running") & tasks.c.id.in_(running)
        with self.engine.begin() as conn:
            conn.execute(tasks.update().where(mine).values(lease_until=lease_until))

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a task that has not started or waits for its next attempt: no worker claims it afterwards.

        Its queue message, if already dispatched, is then skipped as not claimable. A running attempt is not
        stopped (its sandbox has its own limits); cancel refuses it.

        Raises:
            NotFoundError: No such task.
            ValidationError: The task is running or finished (``field="task"``).
        """
        values = {"state": "cancelled", "lease_until": None, "run_after": None, "updated_at": self._clock()}
        return self._transition(task_id, CANCELLABLE, values, refusal="only queued or retrying tasks can be cancelled")

    def _transition(self, task_id: str, states: tuple[str, ...], values: dict[str, Any], *, refusal: str) -> TaskRecord:
        """Set *values* on task *task_id* if it is in one of *states*; else ValidationError saying *refusal*."""
        with self.engine.begin() as conn:
            moved = conn.execute(
                tasks.update().where(tasks.c.id == task_id, tasks.c.state.in_(states)).values(**values)
            ).rowcount
        record = self.get(task_id)
        if not moved:
            raise ValidationError(f"Task {task_id!r} is {record.state}; {refusal}.", field="task")
        return record

    def rerun(self, task_or_run_id: str) -> TaskRecord:
        """Queue a failed or cancelled task again (same id, so sends it already made are not repeated); accepts a
        run id too.

        Raises:
            NotFoundError: No such task or task run.
            ValidationError: The task has neither failed nor been cancelled (``field="task"``).
        """
        task_id = self._task_id_of(task_or_run_id)
        now = self._clock()
        values = {
            "state": "queued",
            "attempts": 0,
            "error": None,
            "lease_until": None,
            "dispatched_at": None,
            "run_after": None,
            "source": "rerun",
            "updated_at": now,
        }
        return self._transition(task_id, RERUNNABLE, values, refusal="only failed or cancelled tasks can be re-run")

    def _task_id_of(self, task_or_run_id: str) -> str:
        with self._reader.connect() as conn:
            if conn.execute(sa.select(tasks.c.id).where(tasks.c.id == task_or_run_id)).first() is not None:
                return task_or_run_id
            task_id = conn.execute(sa.select(runs.c.task_id).where(runs.c.id == task_or_run_id)).scalar()
        if task_id is None:
            raise NotFoundError(f"There is no task or task run with id {task_or_run_id!r}.")
        return str(task_id)


def _record(row: sa.RowMapping) -> TaskRecord:
    return TaskRecord(**{name: row[name] for name in TaskRecord.__slots__})
