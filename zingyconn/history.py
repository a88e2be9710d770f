"""Run history: every run of every kind, stored with its output already masked, bounded in size.

The :class:`~zingyconn.runtime.Runtime` records each run once it has finished (and masked it); the console lists
and shows them, and replays a stored event. Reads are always scoped to one tenant: another tenant's run id is
simply not found (the operator's CLI alone looks a run up by id across tenants).

Storage is bounded, because events come from the internet: every stored string is cut at
:data:`MAX_STRING_CHARS` and every stored field at :data:`MAX_FIELD_CHARS`, each cut marked in the stored text
(``…[truncated: N more characters]``); and a tenant whose stored history reached its quota gets only the run's
outline (kind, name, status, duration, error type) stored, with a message saying so in place of the output, until
the purge (:mod:`zingyconn.purge`) frees room.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.database import DriverStatement, EncodedJSON, read_only, upsert_insert
from zingyconn.errors import NotFoundError
from zingyconn.group_commit import GroupWriter
from zingyconn.schema import runs

#: Status of a run that returned normally / failed (webhook and task hosts may add "running", "retrying").
OK: Final = "ok"
FAILED: Final = "failed"
#: Most rows one ``list`` call returns.
MAX_LIST: Final = 1000


#: Longest string kept inside a stored field (an SMS body is at most 1600 characters; a form field of a megabyte is
#: not a message). Threat: unauthenticated posts to an unsigned hook filling the store.
MAX_STRING_CHARS: Final = 8 * 1024
#: Longest stored field (event, result, stdout, logs, error, egress, source), as JSON text.
MAX_FIELD_CHARS: Final = 64 * 1024
#: How long a process trusts its count of a tenant's stored bytes before summing them again in the database.
USAGE_MAX_AGE_SECONDS: Final = 10.0
#: The log says a tenant is over its quota at most this often (not once per run).
QUOTA_WARNING_SECONDS: Final = 300.0
#: Per-tenant history quota when none is given (``ZINGYCONN_HISTORY_QUOTA_MB``).
DEFAULT_QUOTA_BYTES: Final = 512 * 1024 * 1024

#: The columns :meth:`RunHistory.record` writes.
_RECORDED_COLUMNS: Final = (
    "id", "tenant", "kind", "name", "status", "attempt", "task_id", "replay_of", "started_at", "duration_ms", "event",
    "result", "stdout", "logs", "error", "egress", "source", "stored_bytes", "version",
)  # fmt: skip
#: The fields whose size counts, and is capped.
#: What a NUL character in a text column is stored as. Threat: PostgreSQL text cannot hold NUL, so a snippet that
#: printed ``"\x00"`` made recording its run fail: the run went unrecorded and its task was retried as the platform's
#: fault, running the snippet again.
NUL_REPLACEMENT: Final = "\ufffd"
_PAYLOAD_FIELDS: Final = ("event", "result", "stdout", "logs", "error", "egress", "source")

_LOGGER: Final = logging.getLogger(__name__)


#: What a field nested too deep to serialise is stored as.
TOO_DEEP_MARKER: Final = "…[not stored: nested deeper than the run history keeps]"


def truncation_marker(dropped_chars: int) -> str:
    """Return the visible mark left where *dropped_chars* characters were cut off."""
    return f"…[truncated: {dropped_chars} more characters]"


def cap_text(text: str, max_chars: int = MAX_STRING_CHARS) -> str:
    """Return *text*, cut to *max_chars* with a :func:`truncation_marker` if it is longer."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + truncation_marker(len(text) - max_chars)


def cap_value(value: Any) -> Any:
    """Return JSON *value* with every string capped (:func:`cap_text`) and at most :data:`MAX_FIELD_CHARS` of JSON.

    A value still too long once its strings are capped (thousands of fields) is replaced by an object that says so
    and keeps the start of its JSON text: ``{"truncated": "…[truncated: N more characters]", "preview": "..."}``.
    """
    return _bounded(value)[0]


#: The JSON text a stored field is measured (and capped) by. One encoder for every run: ``json.dumps`` with options
#: builds a new one per call, and a run measures up to six fields. (An encoder keeps no state between calls.)
_MEASURE: Final = json.JSONEncoder(ensure_ascii=False, default=str)


def _bounded(value: Any) -> tuple[Any, int]:
    """Return :func:`cap_value` of *value* and the length of its JSON text (what it takes in the store)."""
    capped, length, _ = _bounded_json(value)
    return capped, length


def _bounded_json(value: Any) -> tuple[Any, int, str | None]:
    """Return :func:`_bounded` of *value* and the JSON text of what it returns (None when a marker replaced it)."""
    try:
        text = _MEASURE.encode(value)
        if len(text) <= MAX_STRING_CHARS:  # no string inside can be longer: nothing to cap (the common case)
            return value, len(text), text
        capped = _cap_strings(value)
        text = _MEASURE.encode(capped)
    except RecursionError:  # nested deeper than Python's stack: the run is still recorded, without this field
        return {"truncated": TOO_DEEP_MARKER}, len(TOO_DEEP_MARKER) + 20, None
    if len(text) <= MAX_FIELD_CHARS:
        return capped, len(text), text
    preview = {"truncated": truncation_marker(len(text) - MAX_FIELD_CHARS), "preview": text[:MAX_FIELD_CHARS]}
    return preview, MAX_FIELD_CHARS + 100, None


def _cap_strings(value: Any) -> Any:
    if isinstance(value, str):
        return cap_text(value)
    if isinstance(value, dict):
        return {cap_text(str(key), 200): _cap_strings(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_cap_strings(item) for item in value]
    return value


def new_run_id() -> str:
    """Return a new, unguessable run id (``run_`` + 32 hex digits)."""
    return "run_" + secrets.token_hex(16)  # 128 random bits, as uuid4 has 122 (without its object: one per run)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One stored run (every text field already masked).

    Attributes:
        id: Run id (``run_...``).
        tenant: The tenant the run belonged to.
        kind: ``webhook``, ``task``, ``console`` or ``command`` (a connection command; its event names the actor).
        name: Hook or script name, if any.
        status: ``ok`` or ``failed``.
        started_at: Unix time the run started.
        duration_ms: How long it took.
        event: The event it was given.
        result: What it returned (``None`` when it failed).
        stdout: Captured ``print`` output.
        logs: Captured ``log.*`` records.
        error: The error object (``type``, ``message``, ``line``, ...) or ``None``.
        egress: The Twilio and HTTP connection calls it made.
        attempt: Attempt number (tasks retry).
        task_id: The task this run belonged to, if any.
        replay_of: The run this one replayed, if any.
        source: The snippet that ran.
        version: The version of the hook or script that ran (``None`` for console drafts and commands).
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
    version: int | None = None

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON object."""
        return {
            "id": self.id,
            "tenant": self.tenant,
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
            "version": self.version,
        }


class RunHistory:
    """The ``runs`` table."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        writer: GroupWriter | None = None,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._reader = read_only(engine)
        self._clock = clock
        self.quota_bytes = quota_bytes
        self._usage: dict[str, tuple[float, int]] = {}  # tenant -> (measured at, stored bytes)
        self._usage_lock = threading.Lock()
        self._quota_warned: dict[str, float] = {}  # tenant -> when the log last said it is over its quota
        # One upsert, built and compiled once (building the statement per run cost more than running it, and
        # SQLAlchemy's per-row work as much as SQLite's).
        insert = upsert_insert(engine)
        columns = [runs.c[name] for name in _RECORDED_COLUMNS]  # not runs.c: later columns keep their defaults
        statement = insert(runs).values(
            {column.name: sa.bindparam(column.name, type_=column.type) for column in columns}
        )
        self._upsert = DriverStatement(
            engine,
            statement.on_conflict_do_update(
                index_elements=[runs.c.id],
                set_={column.name: statement.excluded[column.name] for column in columns if column.name != "id"},
            ),
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
        version: int | None = None,
    ) -> None:
        """Store one run (insert, or replace the row of the same id: one upsert). Callers pass masked values.

        Every field is capped (see the module docstring); past the tenant's quota only the run's outline is kept.
        With a *writer*, the row is written in its next batch (:mod:`zingyconn.group_commit`), and this returns once
        that batch committed.
        """
        values: dict[str, Any] = {
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
            "stdout": stdout.replace("\x00", NUL_REPLACEMENT),
            "logs": list(logs),
            "error": error,
            "egress": list(egress),
            "source": None if source is None else source.replace("\x00", NUL_REPLACEMENT),
            "version": version,
        }
        size, encoded = self._bound(values)
        if self._usage_of(tenant) + size > self.quota_bytes:
            values.update(self._outline(tenant, values))
            size, encoded = self._bound(values)
        row = {"id": run_id, **values, **encoded, "stored_bytes": size}
        if self._writer is not None:
            self._writer.write((self._upsert, row))
        else:
            with self._engine.begin() as conn:
                self._upsert.execute(conn, [row])
        with self._usage_lock:
            measured_at, used = self._usage.get(tenant, (self._clock(), 0))
            self._usage[tenant] = (measured_at, used + size)

    @staticmethod
    def _bound(values: dict[str, Any]) -> tuple[int, dict[str, EncodedJSON]]:
        """Cap the payload fields of *values* in place; return how many bytes they take in the store, and the
        fields whose JSON text, from measuring them, is what the store writes (so it is not encoded a second time).

        Those are the fields measured as JSON whose text is ASCII: the store writes ``json.dumps`` of a value, which
        escapes every other character, where ``_MEASURE`` keeps them; an ASCII text is the same either way. (A
        value ``json.dumps`` cannot encode is stored as ``_MEASURE`` gives it, ``str`` of it, instead of failing.)
        """
        size = 0
        encoded: dict[str, EncodedJSON] = {}
        for name in _PAYLOAD_FIELDS:
            value = values[name]
            if isinstance(value, str):
                values[name] = cap_text(value, MAX_FIELD_CHARS)
                size += len(values[name])
            elif value is not None:
                values[name], length, text = _bounded_json(value)
                if text is not None and text.isascii():
                    encoded[name] = EncodedJSON(text)
                size += length
        return size, encoded

    def usage_bytes(self, tenant: str) -> int:
        """Return how many bytes *tenant*'s stored runs take (summed in the database now)."""
        with self._reader.connect() as conn:
            used = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(runs.c.stored_bytes), 0)).where(runs.c.tenant == tenant)
            ).scalar()
        return int(used or 0)

    def _usage_of(self, tenant: str) -> int:
        """*tenant*'s stored bytes as this process last counted them (summed again every few seconds)."""
        now = self._clock()
        with self._usage_lock:
            cached = self._usage.get(tenant)
        if cached is not None and now - cached[0] < USAGE_MAX_AGE_SECONDS:
            return cached[1]
        used = self.usage_bytes(tenant)
        with self._usage_lock:
            self._usage[tenant] = (now, used)
        return used

    def _outline(self, tenant: str, values: dict[str, Any]) -> dict[str, Any]:
        """The payload kept of a run past the quota: no event, result, output or calls; the error type only."""
        message = (
            f"[not stored: tenant {tenant!r} has used its run-history quota of {self.quota_bytes / 2**20:g} MiB "
            "(ZINGYCONN_HISTORY_QUOTA_MB). Runs older than the retention are purged on their own; free room now "
            f"with `zingyconn purge --tenant {tenant} --older-than 7d`.]"
        )
        now = self._clock()
        if now - self._quota_warned.get(tenant, 0.0) >= QUOTA_WARNING_SECONDS:
            self._quota_warned[tenant] = now
            _LOGGER.warning("Run history of tenant %r is over its quota; runs are stored without payload.", tenant)
        error = values.get("error")
        kept_error = {"type": error.get("type")} if isinstance(error, dict) else None
        return {"event": None, "result": None, "stdout": message, "logs": [], "error": kept_error, "egress": []}

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

    def find(self, run_id: str) -> RunRecord:
        """Return run *run_id* of whichever tenant it belongs to (operator tools only: the CLI, not tenants).

        Raises:
            NotFoundError: No run has this id.
        """
        with self._reader.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"No run has id {run_id!r}; `zingyconn runs list --tenant T` lists a tenant's runs.")
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
        since: float | None = None,
        limit: int = 50,
        error_text: str | None = None,
        after: tuple[float, str] | None = None,
    ) -> list[RunRecord]:
        """Return *tenant*'s runs, newest first, filtered by kind, name, status, task, and start time.

        *before* and *since* are Unix times: runs that started before *before* and at or after *since*.
        *error_text* keeps runs whose stored error contains it (case-insensitive). *after* is the keyset cursor of
        the next page: the ``(started_at, id)`` of the last run of the previous one (an index range, not OFFSET).
        """
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
        if since is not None:
            query = query.where(runs.c.started_at >= since)
        if error_text:
            escaped = error_text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(sa.cast(runs.c.error, sa.Text).ilike(f"%{escaped}%", escape="\\"))
        if after is not None:
            started_at, run_id = after
            # The first bound alone is what the (tenant, started_at) index can seek to; the second breaks the ties.
            query = query.where(
                runs.c.started_at <= started_at, (runs.c.started_at < started_at) | (runs.c.id > run_id)
            )
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
        version=row.version,
    )
