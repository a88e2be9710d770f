"""Run history: every run of every kind, stored with its output already masked.

The :class:`~zingyconn.runtime.Runtime` records each run once it has finished (and masked it); the console lists
and shows them, and replays a stored event. Reads are always scoped to one tenant: another tenant's run id is
simply not found.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from zingyconn.database import read_only
from zingyconn.errors import NotFoundError
from zingyconn.schema import runs

#: Status of a run that returned normally / failed (webhook and task hosts may add "running", "retrying").
OK: Final = "ok"
FAILED: Final = "failed"
#: Most rows one ``list`` call returns.
MAX_LIST: Final = 1000


#: The columns :meth:`RunHistory.record` writes.
_RECORDED_COLUMNS: Final = (
    "id", "tenant", "kind", "name", "status", "attempt", "task_id", "replay_of", "started_at", "duration_ms", "event",
    "result", "stdout", "logs", "error", "egress", "source",
)  # fmt: skip


def new_run_id() -> str:
    """Return a new, unguessable run id (``run_`` + 32 hex digits)."""
    return f"run_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One stored run (every text field already masked).

    Attributes:
        id: Run id (``run_...``).
        tenant: The tenant the run belonged to.
        kind: ``webhook``, ``task`` or ``console``.
        name: Hook or script name, if any.
        status: ``ok`` or ``failed``.
        started_at: Unix time the run started.
        duration_ms: How long it took.
        event: The event it was given.
        result: What it returned (``None`` when it failed).
        stdout: Captured ``print`` output.
        logs: Captured ``log.*`` records.
        error: The error object (``type``, ``message``, ``line``, ...) or ``None``.
        egress: The Twilio calls it made.
        attempt: Attempt number (tasks retry).
        task_id: The task this run belonged to, if any.
        replay_of: The run this one replayed, if any.
        source: The snippet that ran.
    """

    id: str
    tenant: str
    kind: str
    name: str | None
    status: str
    started_at: float
    duration_ms: float | None
    event: Any
    result: Any
    stdout: str
    logs: list[dict[str, Any]]
    error: dict[str, Any] | None
    egress: list[dict[str, Any]]
    attempt: int
    task_id: str | None
    replay_of: str | None
    source: str | None

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON object."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
            "event": self.event,
            "result": self.result,
            "stdout": self.stdout,
            "logs": self.logs,
            "error": self.error,
            "egress": self.egress,
            "attempt": self.attempt,
            "task_id": self.task_id,
            "replay_of": self.replay_of,
        }


class RunHistory:
    """The ``runs`` table."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._clock = clock
        # One upsert, built once with bound parameters so SQLAlchemy reuses its compiled SQL (building the
        # statement per run cost more than running it).
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        columns = [runs.c[name] for name in _RECORDED_COLUMNS]  # not runs.c: later columns keep their defaults
        statement = insert(runs).values(
            {column.name: sa.bindparam(column.name, type_=column.type) for column in columns}
        )
        self._upsert = statement.on_conflict_do_update(
            index_elements=[runs.c.id],
            set_={column.name: statement.excluded[column.name] for column in columns if column.name != "id"},
        )

    def record(
        self,
        *,
        run_id: str,
        tenant: str,
        kind: str,
        status: str,
        started_at: float,
        duration_ms: float | None = None,
        name: str | None = None,
        event: Any = None,
        result: Any = None,
        stdout: str = "",
        logs: Sequence[dict[str, Any]] = (),
        error: dict[str, Any] | None = None,
        egress: Sequence[dict[str, Any]] = (),
        attempt: int = 1,
        task_id: str | None = None,
        replay_of: str | None = None,
        source: str | None = None,
    ) -> None:
        """Store one run (insert, or replace the row of the same id: one upsert). Callers pass masked values."""
        values = {
            "tenant": tenant,
            "kind": kind,
            "name": name,
            "status": status,
            "attempt": attempt,
            "task_id": task_id,
            "replay_of": replay_of,
            "started_at": started_at,
            "duration_ms": duration_ms,
            "event": event,
            "result": result,
            "stdout": stdout,
            "logs": list(logs),
            "error": error,
            "egress": list(egress),
            "source": source,
        }
        with self._engine.begin() as conn:
            conn.execute(self._upsert, {"id": run_id, **values})

    def get(self, tenant: str, run_id: str) -> RunRecord:
        """Return run *run_id* of *tenant*.

        Raises:
            NotFoundError: No such run in this tenant (another tenant's run is not found either).
        """
        with self._reader.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.tenant == tenant, runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"Tenant {tenant!r} has no run {run_id!r}.")
        return _record(row)

    def list(
        self,
        tenant: str,
        *,
        kind: str | None = None,
        name: str | None = None,
        status: str | None = None,
        task_id: str | None = None,
        before: float | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Return *tenant*'s runs, newest first, filtered by kind, name, status, task, and start time."""
        query = sa.select(runs).where(runs.c.tenant == tenant)
        for column, value in (
            (runs.c.kind, kind),
            (runs.c.name, name),
            (runs.c.status, status),
            (runs.c.task_id, task_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if before is not None:
            query = query.where(runs.c.started_at < before)
        query = query.order_by(runs.c.started_at.desc(), runs.c.id).limit(max(1, min(limit, MAX_LIST)))
        with self._reader.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def purge(self, *, older_than_seconds: float) -> int:
        """Delete runs that started more than *older_than_seconds* ago; return how many."""
        cutoff = self._clock() - older_than_seconds
        with self._engine.begin() as conn:
            return int(conn.execute(runs.delete().where(runs.c.started_at < cutoff)).rowcount)


def _record(row: sa.Row[Any]) -> RunRecord:
    return RunRecord(
        id=row.id,
        tenant=row.tenant,
        kind=row.kind,
        name=row.name,
        status=row.status,
        started_at=row.started_at,
        duration_ms=row.duration_ms,
        event=row.event,
        result=row.result,
        stdout=row.stdout or "",
        logs=list(row.logs or []),
        error=row.error,
        egress=list(row.egress or []),
        attempt=row.attempt,
        task_id=row.task_id,
        replay_of=row.replay_of,
        source=row.source,
    )
