"""The durable record of background tasks: what is queued, who runs it, what became of it.

The queue (Huey, :mod:`zingyconn.tasks.queue`) carries only task ids. Each id has a row in the ``tasks`` table that
moves ``queued -> running -> succeeded | failed`` (or ``running -> retrying -> running`` on a transient failure). A
worker *claims* a row before running it (one compare-and-set, so a message delivered twice runs once) and holds a
*lease* until the run's wall-clock limit has surely passed. A row whose lease ran out (or whose worker on this
machine is gone, e.g. after a SIGKILL) is *abandoned*: :meth:`TaskStore.reclaim` puts it back on the queue. The same
id is the run-level idempotency key of the messages the task sends, so the re-run returns the stored messages
instead of sending them again.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.database import read_only
from zingyconn.errors import NotFoundError, ValidationError
from zingyconn.schema import runs, tasks

State = Literal["queued", "running", "retrying", "succeeded", "failed"]
Source = Literal["api", "cli", "console", "cron", "snippet", "rerun"]

#: States in which a row may be claimed by a worker.
CLAIMABLE: Final = ("queued", "retrying")
#: States that a reaper watches: the row should move on before ``lease_until``.
IN_FLIGHT: Final = ("queued", "running", "retrying")
#: How long a queued task may wait before the reaper suspects its queue message was lost (e.g. a worker killed
#: between taking the message and claiming the row) and enqueues it again; duplicates are harmless (claims dedupe).
QUEUED_GRACE_SECONDS: Final = 600.0
#: Added to the wall-clock limit of a run to get its lease: time for the host to reap the child and record the run.
LEASE_SLACK_SECONDS: Final = 30.0
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
        state: ``queued``, ``running``, ``retrying``, ``succeeded`` or ``failed``.
        attempts: Attempts started so far.
        owner: ``place:pid`` of the worker running it (:func:`worker_identity`), while running.
        lease_until: Unix time by which the row must move on, or the reaper takes it back.
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


def worker_identity() -> str:
    """Return ``place:pid``: who holds a claim, and whether that worker is provably gone (same place, no such pid)."""
    return f"{_place()}:{os.getpid()}"


@functools.cache
def _place() -> str:
    # Where a pid means the same process: the host name, this boot, and the PID namespace. Two containers that share
    # a host name (``--network host``) have separate PID namespaces, and must not judge each other's pids.
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid").removeprefix("pid:[").rstrip("]"))
    return "/".join(parts)


def _is_dead_local_worker(owner: str | None) -> bool:
    place, _, pid = (owner or "").rpartition(":")
    if place != _place() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


class TaskStore:
    """Create, claim, finish and recover task rows in the store's database (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time, owner: str | None = None) -> None:
        self.engine = engine
        self._reader = read_only(engine)
        self._clock = clock
        self.owner = owner or worker_identity()

    def create(
        self, tenant: str, script: str, payload: Any, *, source: Source, task_id: str | None = None
    ) -> TaskRecord:
        """Insert a ``queued`` row for a new task and return it (the caller then puts its id on the queue)."""
        now = self._clock()
        row = {
            "id": task_id or uuid.uuid4().hex,
            "tenant": tenant,
            "script": script,
            "payload": payload,
            "state": "queued",
            "attempts": 0,
            "lease_until": now + QUEUED_GRACE_SECONDS,
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

    def claim(self, task_id: str, *, lease_seconds: float) -> TaskRecord | None:
        """Take task *task_id* for this worker: ``queued``/``retrying`` -> ``running``, one more attempt.

        Returns:
            The claimed row, or ``None`` when it is not claimable (already running elsewhere, finished, unknown):
            the queue delivered a duplicate, and the caller must not run it.
        """
        now = self._clock()
        values = {
            "state": "running",
            "attempts": tasks.c.attempts + 1,
            "owner": self.owner,
            "lease_until": now + lease_seconds + LEASE_SLACK_SECONDS,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            claimed = conn.execute(
                tasks.update().where(tasks.c.id == task_id, tasks.c.state.in_(CLAIMABLE)).values(**values)
            ).rowcount
        return self.get(task_id) if claimed else None

    def finish(
        self,
        task_id: str,
        *,
        state: Literal["succeeded", "failed"],
        run_id: str | None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record the outcome of this worker's attempt; False if the claim was lost meanwhile (reaped)."""
        return self._move(task_id, state=state, run_id=run_id, error=error, lease_until=None)

    def retry_later(self, task_id: str, *, delay_seconds: float, run_id: str | None, error: dict[str, Any]) -> bool:
        """Mark this worker's attempt as a transient failure to be retried after *delay_seconds*."""
        lease = self._clock() + delay_seconds + QUEUED_GRACE_SECONDS
        return self._move(task_id, state="retrying", run_id=run_id, error=error, lease_until=lease)

    def release(self, task_id: str) -> bool:
        """Give an interrupted attempt back to the queue (``running`` -> ``queued``) on a worker shutdown."""
        lease = self._clock() + QUEUED_GRACE_SECONDS
        return self._move(task_id, state="queued", run_id=None, error=None, lease_until=lease, keep_run=True)

    def _move(
        self,
        task_id: str,
        *,
        state: State,
        run_id: str | None,
        error: dict[str, Any] | None,
        lease_until: float | None,
        keep_run: bool = False,
    ) -> bool:
        values: dict[str, Any] = {
            "state": state,
            "error": error,
            "lease_until": lease_until,
            "owner": None,
            "updated_at": self._clock(),
        }
        if not keep_run:
            values["run_id"] = run_id
        mine = (tasks.c.id == task_id) & (tasks.c.state == "running") & (tasks.c.owner == self.owner)
        with self.engine.begin() as conn:
            return bool(conn.execute(tasks.update().where(mine).values(**values)).rowcount)

    def reclaim(self, *, include_waiting: bool = True) -> list[TaskRecord]:
        """Find abandoned tasks and make them runnable again; return the ones the caller must put on the queue.

        A row is abandoned when its lease ran out, or when it is ``running`` under a worker of this machine
        whose process no longer exists (a SIGKILLed worker, seen at once by its restart). A row out of attempts
        is failed instead.

        Args:
            include_waiting: Also take back ``queued``/``retrying`` rows past their lease (their queue message
                may have been lost). Pass False while the queue still holds messages: the rows are just waiting.
        """
        now = self._clock()
        local = (tasks.c.state == "running") & tasks.c.owner.startswith(f"{_place()}:", autoescape=True)
        expired = tasks.c.lease_until < now
        if not include_waiting:
            expired &= tasks.c.state == "running"
        query = sa.select(tasks).where(tasks.c.state.in_(IN_FLIGHT), expired | local)
        with self._reader.connect() as conn:
            rows = conn.execute(query).all()
        stale = [
            _record(row._mapping)
            for row in rows
            if (row.lease_until is not None and row.lease_until < now)
            or (row.state == "running" and _is_dead_local_worker(row.owner))
        ]
        return [record for record in stale if self._reclaim_one(record, now)]

    def _reclaim_one(self, record: TaskRecord, now: float) -> bool:
        same = (tasks.c.id == record.id) & (tasks.c.state == record.state) & (tasks.c.updated_at == record.updated_at)
        if record.state == "running" and record.attempts >= MAX_ATTEMPTS:
            error = {"type": "WorkerLostError", "message": f"The worker running attempt {record.attempts} was lost."}
            values: dict[str, Any] = {"state": "failed", "error": error, "owner": None, "lease_until": None}
        else:
            values = {"state": "queued", "owner": None, "lease_until": now + QUEUED_GRACE_SECONDS}
        with self.engine.begin() as conn:
            moved = conn.execute(tasks.update().where(same).values(**values, updated_at=now)).rowcount
        return bool(moved) and values["state"] == "queued"

    def rerun(self, task_or_run_id: str) -> TaskRecord:
        """Queue a failed task again (same id, so sends it already made are not repeated); accepts a run id too.

        Raises:
            NotFoundError: No such task or task run.
            ValidationError: The task has not failed (``field="task"``).
        """
        task_id = self._task_id_of(task_or_run_id)
        now = self._clock()
        values = {
            "state": "queued",
            "attempts": 0,
            "error": None,
            "lease_until": now + QUEUED_GRACE_SECONDS,
            "source": "rerun",
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            moved = conn.execute(
                tasks.update().where(tasks.c.id == task_id, tasks.c.state == "failed").values(**values)
            ).rowcount
        record = self.get(task_id)
        if not moved:
            raise ValidationError(f"Task {task_id!r} is {record.state}; only failed tasks can be re-run.", field="task")
        return record

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
