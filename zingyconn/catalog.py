"""The catalog of a tenant's stored snippets: webhook hooks and background-task scripts.

A hook is a snippet behind ``/hooks/{tenant}/{name}``; a script is a snippet run as a background task, optionally
on a cron schedule. Both are compiled with the production policy *before* they are saved, so a snippet that
cannot run is never stored, and both may carry per-snippet overrides of the default limits of their run kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sandbox import compile_snippet
from sandbox.errors import CompileError
from sandbox.imports import STDLIB_MODULES, check_imports
from sandbox.limits import Limits
from zingyconn.database import read_only
from zingyconn.errors import NotFoundError, ValidationError
from zingyconn.kinds import Kind, limits_for
from zingyconn.names import validate_name
from zingyconn.schema import hooks, scripts
from zingyconn.tasks.schedule import parse_cron
from zingyconn.twilio import SNIPPET_MODULES

#: Names of tenants, hooks and scripts. They appear in URL paths (``/hooks/{tenant}/{hook}``) and log lines, so
#: they are restricted to characters that need no escaping there (no ``/``, ``..``, spaces or control characters).

#: Longest cron expression stored (the column width); its syntax is checked by the task host.
MAX_CRON_LENGTH: Final = 100


@dataclass(frozen=True, slots=True)
class Hook:
    """A webhook handler.

    Attributes:
        tenant: Owning tenant.
        name: The ``{hook}`` of ``/hooks/{tenant}/{hook}``.
        source: The snippet (a function body).
        verify_with: Connection whose Auth Token checks ``X-Twilio-Signature``; ``None`` means no check.
        limits: Overrides of the webhook defaults (``{"wall_seconds": 2.0}``).
        created_at: Unix time of the first save.
        updated_at: Unix time of the last save.
    """

    tenant: str
    name: str
    source: str
    verify_with: str | None = None
    limits: Mapping[str, float | int] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    def run_limits(self) -> Limits:
        """Return the limits a run of this hook gets: the webhook defaults with this hook's overrides."""
        return limits_for("webhook").replace(**self.limits)

    def to_json(self) -> dict[str, Any]:
        """Return the hook as a JSON object (admin API, ``hooks show --json``)."""
        return {
            "tenant": self.tenant,
            "name": self.name,
            "source": self.source,
            "verify_with": self.verify_with,
            "limits": dict(self.limits),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Script:
    """A background-task script.

    Attributes:
        tenant: Owning tenant.
        name: Script name (what ``tasks enqueue`` names).
        source: The snippet (a function body).
        cron: Cron expression for scheduled runs, or ``None``.
        limits: Overrides of the task defaults.
        created_at: Unix time of the first save.
        updated_at: Unix time of the last save.
    """

    tenant: str
    name: str
    source: str
    cron: str | None = None
    limits: Mapping[str, float | int] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    def run_limits(self) -> Limits:
        """Return the limits a run of this script gets: the task defaults with this script's overrides."""
        return limits_for("task").replace(**self.limits)

    def to_json(self) -> dict[str, Any]:
        """Return the script as a JSON object."""
        return {
            "tenant": self.tenant,
            "name": self.name,
            "source": self.source,
            "cron": self.cron,
            "limits": dict(self.limits),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def parse_limits(overrides: Mapping[str, object] | None, *, kind: Kind) -> dict[str, float | int]:
    """Validate limit overrides (``{"wall_seconds": "2"}`` or numbers) and return them as numbers.

    Raises:
        ValidationError: Unknown limit name or a value that is not a positive number (``field="limits"``).
    """
    if not overrides:
        return {}
    try:
        limits = limits_for(kind).with_overrides({str(k): str(v) for k, v in overrides.items()})
    except ValueError as exc:
        raise ValidationError(str(exc), field="limits") from None
    return {str(name): getattr(limits, str(name)) for name in overrides}


def check_source(source: str) -> None:
    """Compile *source* with the production policy and check its imports; raise CompileError (every ``Line N:``).

    Imports are checked against what a run can import (the standard-library allowlist and the twilio modules),
    so ``import requests`` is refused when the hook is saved, not on the first request.
    """
    if not source.strip():
        raise ValidationError("The snippet source is empty; write at least one statement.", field="source")
    compile_snippet(source)
    errors = check_imports(source, [*STDLIB_MODULES, *SNIPPET_MODULES])
    if errors:
        raise CompileError(errors)


class Catalog:
    """Create, read, update and delete hooks and scripts, per tenant, in the store's database."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._clock = clock

    # --- hooks -------------------------------------------------------------------------------------------------

    def put_hook(
        self,
        tenant: str,
        name: str,
        source: str,
        *,
        verify_with: str | None = None,
        limits: Mapping[str, object] | None = None,
    ) -> Hook:
        """Create or replace hook *name*; the snippet is compiled first, so nothing is saved if it cannot run.

        Raises:
            ValidationError: A bad tenant, name, connection name or limit (named by ``field``).
            CompileError: The policy rejected the snippet.
        """
        validate_name(tenant, field="tenant")
        validate_name(name, field="name")
        if verify_with is not None:
            validate_name(verify_with, field="verify_with")
        values = {"source": source, "verify_with": verify_with, "limits": parse_limits(limits, kind="webhook")}
        check_source(source)
        self._upsert(hooks, tenant, name, values)
        return self.get_hook(tenant, name)

    def get_hook(self, tenant: str, name: str) -> Hook:
        """Return hook *name* of *tenant*; NotFoundError if there is none (also for another tenant's hook)."""
        with self._reader.connect() as conn:
            row = conn.execute(sa.select(hooks).where(hooks.c.tenant == tenant, hooks.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"Tenant {tenant!r} has no hook named {name!r}.")
        return _hook(row._mapping)

    def list_hooks(self, tenant: str) -> list[Hook]:
        """Return the hooks of *tenant*, by name."""
        with self._reader.connect() as conn:
            rows = conn.execute(sa.select(hooks).where(hooks.c.tenant == tenant).order_by(hooks.c.name))
            return [_hook(row._mapping) for row in rows]

    def delete_hook(self, tenant: str, name: str) -> None:
        """Delete hook *name* of *tenant*; NotFoundError if there is none."""
        self._delete(hooks, tenant, name, what="hook")

    # --- scripts -----------------------------------------------------------------------------------------------

    def put_script(
        self,
        tenant: str,
        name: str,
        source: str,
        *,
        cron: str | None = None,
        limits: Mapping[str, object] | None = None,
    ) -> Script:
        """Create or replace script *name*; compiled first. The cron syntax is checked by the task host.

        Raises:
            ValidationError: A bad tenant, name, cron or limit (named by ``field``).
            CompileError: The policy rejected the snippet.
        """
        validate_name(tenant, field="tenant")
        validate_name(name, field="name")
        cron = (cron or "").strip() or None
        if cron is not None and len(cron) > MAX_CRON_LENGTH:
            raise ValidationError(f"The cron expression is longer than {MAX_CRON_LENGTH} characters.", field="cron")
        if cron is not None:
            parse_cron(cron)  # a schedule the task host cannot run is never saved (the error names the cron field)
        values = {"source": source, "cron": cron, "limits": parse_limits(limits, kind="task")}
        check_source(source)
        self._upsert(scripts, tenant, name, values)
        return self.get_script(tenant, name)

    def get_script(self, tenant: str, name: str) -> Script:
        """Return script *name* of *tenant*; NotFoundError if there is none."""
        with self._reader.connect() as conn:
            row = conn.execute(sa.select(scripts).where(scripts.c.tenant == tenant, scripts.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"Tenant {tenant!r} has no script named {name!r}.")
        return _script(row._mapping)

    def list_scripts(self, tenant: str | None = None, *, scheduled_only: bool = False) -> list[Script]:
        """Return the scripts of *tenant* (every tenant when ``None``), by tenant and name.

        Args:
            tenant: Only this tenant's scripts; ``None`` for all (what the cron scheduler needs).
            scheduled_only: Only scripts that have a cron expression.
        """
        query = sa.select(scripts).order_by(scripts.c.tenant, scripts.c.name)
        if tenant is not None:
            query = query.where(scripts.c.tenant == tenant)
        if scheduled_only:
            query = query.where(scripts.c.cron.is_not(None))
        with self._reader.connect() as conn:
            return [_script(row._mapping) for row in conn.execute(query)]

    def delete_script(self, tenant: str, name: str) -> None:
        """Delete script *name* of *tenant*; NotFoundError if there is none."""
        self._delete(scripts, tenant, name, what="script")

    # --- shared ------------------------------------------------------------------------------------------------

    def _upsert(self, table: sa.Table, tenant: str, name: str, values: dict[str, Any]) -> None:
        now = self._clock()
        key = (table.c.tenant == tenant) & (table.c.name == name)
        for attempt in range(2):
            try:
                with self._engine.begin() as conn:
                    if _exists(conn, table, key):
                        conn.execute(table.update().where(key).values(**values, updated_at=now))
                    else:
                        row = {"tenant": tenant, "name": name, "created_at": now, "updated_at": now}
                        conn.execute(table.insert().values(**row, **values))
                return
            except sa.exc.IntegrityError:
                # PostgreSQL: a concurrent first save of the same name won the insert; update it instead.
                if attempt:
                    raise

    def _delete(self, table: sa.Table, tenant: str, name: str, *, what: str) -> None:
        with self._engine.begin() as conn:
            deleted = conn.execute(table.delete().where(table.c.tenant == tenant, table.c.name == name)).rowcount
        if not deleted:
            raise NotFoundError(f"Tenant {tenant!r} has no {what} named {name!r}.")


def _exists(conn: Connection, table: sa.Table, key: sa.ColumnElement[bool]) -> bool:
    return conn.execute(sa.select(sa.literal(1)).select_from(table).where(key)).first() is not None


def _hook(row: sa.RowMapping) -> Hook:
    return Hook(
        tenant=row["tenant"],
        name=row["name"],
        source=row["source"],
        verify_with=row["verify_with"],
        limits=dict(row["limits"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _script(row: sa.RowMapping) -> Script:
    return Script(
        tenant=row["tenant"],
        name=row["name"],
        source=row["source"],
        cron=row["cron"],
        limits=dict(row["limits"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
