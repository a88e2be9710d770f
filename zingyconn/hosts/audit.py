"""The audit trail: who changed what through the console or the admin API, for which tenant, and when.

Every console action that changes something (a connection saved or deleted, a hook or script saved or deleted, a
command or snippet run, a task enqueued, a sign-in or sign-out) writes one row to ``audit_events``, and so does
every change through the admin API (actor ``admin-api``): a connection or variable, a hook saved or deleted, a hook
or script rolled back. Rows name things (connection,
hook, command, run id), never secrets: a connection's secret, a token, or a message body is never an argument here.
The console shows a tenant's rows; ``zingyconn audit list`` prints them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.database import read_only
from zingyconn.schema import audit_events

#: Most rows one listing returns.
MAX_LIST_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One recorded action.

    Attributes:
        id: Increasing number (the order of recording).
        at: Unix time.
        actor: ``"operator"`` or ``"token <id>"`` (the token id ``zingyconn tokens list`` shows); for a refused
            sign-in, ``"anonymous"``; ``"admin-api"`` for a change through the admin API.
        client: The client's address.
        tenant: The tenant acted on (``None`` for sign-in/out of the operator).
        action: What was done, ``noun.verb`` (``hook.save``, ``connection.delete``, ``session.start``...).
        target: What it was done to (a connection, hook or script name), if anything.
        detail: Non-secret particulars (the command, the run id, the task id...).
    """

    id: int
    at: float
    actor: str
    client: str | None
    tenant: str | None
    action: str
    target: str | None
    detail: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Return the event as JSON-ready data."""
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "client": self.client,
            "tenant": self.tenant,
            "action": self.action,
            "target": self.target,
            "detail": dict(self.detail),
        }


class AuditTrail:
    """Append to and read the ``audit_events`` table."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._clock = clock

    def record(
        self,
        *,
        actor: str,
        action: str,
        tenant: str | None = None,
        target: str | None = None,
        client: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one event (callers pass names and ids only, never a secret)."""
        with self._engine.begin() as conn:
            conn.execute(
                audit_events.insert().values(
                    at=self._clock(),
                    actor=actor,
                    client=client,
                    tenant=tenant,
                    action=action,
                    target=target,
                    detail=dict(detail or {}),
                )
            )

    def list(self, *, tenant: str | None = None, limit: int = 100) -> list[AuditEvent]:
        """Return the newest events first, all tenants' or *tenant*'s only, at most *limit* (capped)."""
        query = sa.select(audit_events).order_by(audit_events.c.id.desc()).limit(max(1, min(limit, MAX_LIST_LIMIT)))
        if tenant is not None:
            query = query.where(audit_events.c.tenant == tenant)
        with self._reader.connect() as conn:
            return [
                AuditEvent(
                    id=row.id,
                    at=row.at,
                    actor=row.actor,
                    client=row.client,
                    tenant=row.tenant,
                    action=row.action,
                    target=row.target,
                    detail=row.detail or {},
                )
                for row in conn.execute(query)
            ]
