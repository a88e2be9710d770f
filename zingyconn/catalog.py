"""The catalog of a tenant's stored snippets: webhook hooks and background-task scripts.

A hook is a snippet behind ``/hooks/{tenant}/{name}``; a script is a snippet run as a background task, optionally
on a cron schedule. Both are compiled with the production policy *before* they are saved, so a snippet that
cannot run is never stored, and both may carry per-snippet overrides of the default limits of their run kind.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sandbox import compile_snippet
from sandbox.errors import CompileError
from sandbox.imports import STDLIB_MODULES, check_imports
from sandbox.limits import Limits
from zingyconn.changes import ChangeWatch, VersionedCache, bump
from zingyconn.connection_types import snippet_modules
from zingyconn.database import read_only
from zingyconn.errors import NotFoundError, ValidationError
from zingyconn.kinds import Kind, limits_for
from zingyconn.names import validate_name
from zingyconn.schema import hooks, scripts, snippet_versions
from zingyconn.tasks.schedule import DEFAULT_TIMEZONE, CronSchedule, parse_cron, parse_timezone

#: Names of tenants, hooks and scripts. They appear in URL paths (``/hooks/{tenant}/{hook}``) and log lines, so
#: they are restricted to characters that need no escaping there (no ``/``, ``..``, spaces or control characters).

#: Longest cron expression stored (the column width); its syntax is checked by the task host.
MAX_CRON_LENGTH: Final = 100
#: Longest version message stored (the column width).
MAX_MESSAGE_LENGTH: Final = 500
#: Longest author name stored (the column width).
MAX_AUTHOR_LENGTH: Final = 100
#: Who saved a version when the caller does not say (rows saved before versions existed, library calls).
UNKNOWN_AUTHOR: Final = "unknown"

#: How a hook's or script's runs are isolated from each other: ``"run"``, a fresh sandbox process per run (the
#: default), or ``"instance"``, a warm process kept for the hook's or script's current version and reused by its
#: next runs (fresh globals each run; see ``docs/security.md``).
Isolation = Literal["run", "instance"]
ISOLATIONS: Final[tuple[Isolation, ...]] = ("run", "instance")
DEFAULT_ISOLATION: Final[Isolation] = "run"

#: What is versioned: a hook or a script.
SnippetKind = Literal["hook", "script"]
SNIPPET_KINDS: Final[tuple[SnippetKind, ...]] = ("hook", "script")


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
        version: The saved version this is (:meth:`Catalog.versions`); runs record it.
        isolation: ``"run"`` (a fresh process per run) or ``"instance"`` (a warm process per version).
    """

    tenant: str
    name: str
    source: str
    verify_with: str | None = None
    limits: Mapping[str, float | int] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 1
    isolation: Isolation = DEFAULT_ISOLATION
    _run_limits: Limits | None = field(default=None, init=False, repr=False, compare=False)

    def run_limits(self) -> Limits:
        """Return the limits a run of this hook gets: the webhook defaults with this hook's overrides."""
        return _memo_limits(self, "webhook")

    def to_json(self) -> dict[str, Any]:
        """Return the hook as a JSON object (admin API, ``hooks show --json``)."""
        return {
            "tenant": self.tenant,
            "name": self.name,
            "source": self.source,
            "verify_with": self.verify_with,
            "limits": dict(self.limits),
            "isolation": self.isolation,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Script:
    """A background-task script.

    Attributes:
        tenant: Owning tenant.
        name: Script name (what ``tasks enqueue`` names).
        source: The snippet (a function body).
        cron: Cron expression for scheduled runs, or ``None``.
        timezone: The IANA zone the cron is read in (``"UTC"`` unless saved with another).
        limits: Overrides of the task defaults.
        created_at: Unix time of the first save.
        updated_at: Unix time of the last save.
        version: The saved version this is (:meth:`Catalog.versions`); runs record it.
        isolation: ``"run"`` (a fresh process per run) or ``"instance"`` (a warm process per version).
    """

    tenant: str
    name: str
    source: str
    cron: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    limits: Mapping[str, float | int] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 1
    isolation: Isolation = DEFAULT_ISOLATION
    _run_limits: Limits | None = field(default=None, init=False, repr=False, compare=False)

    def schedule(self) -> CronSchedule | None:
        """Return the script's cron schedule, or ``None`` when it runs on demand only.

        Raises:
            ValidationError: The stored schedule no longer parses (a zone removed from the tz database).
        """
        return None if self.cron is None else parse_cron(self.cron, self.timezone)

    def run_limits(self) -> Limits:
        """Return the limits a run of this script gets: the task defaults with this script's overrides."""
        return _memo_limits(self, "task")

    def to_json(self) -> dict[str, Any]:
        """Return the script as a JSON object."""
        return {
            "tenant": self.tenant,
            "name": self.name,
            "source": self.source,
            "cron": self.cron,
            "timezone": self.timezone,
            "limits": dict(self.limits),
            "isolation": self.isolation,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class SnippetVersion:
    """One saved version of a hook or script: a save or a rollback.

    Attributes:
        kind: ``"hook"`` or ``"script"``.
        tenant: Owning tenant.
        name: Hook or script name.
        version: Its number, from 1 per hook or script.
        source: The snippet saved.
        settings: The rest of the definition: ``verify_with``, ``limits`` and ``isolation`` of a hook; ``cron``,
            ``timezone``, ``limits`` and ``isolation`` of a script.
        author: Who saved it (``console:operator``, ``token:<id>``, ``cli:<user>``, ``unknown``).
        message: Why, if they said (a rollback says which version it restored).
        created_at: Unix time of the save.
    """

    kind: SnippetKind
    tenant: str
    name: str
    version: int
    source: str
    settings: Mapping[str, Any]
    author: str
    message: str | None
    created_at: float

    def to_json(self, *, with_source: bool = True) -> dict[str, Any]:
        """Return the version as a JSON object (the source left out of lists when *with_source* is false)."""
        document: dict[str, Any] = {
            "kind": self.kind,
            "tenant": self.tenant,
            "name": self.name,
            "version": self.version,
            "settings": dict(self.settings),
            "author": self.author,
            "message": self.message,
            "created_at": self.created_at,
        }
        if with_source:
            document["source"] = self.source
        return document

    def definition_text(self) -> str:
        """Return the version as the text a diff compares: its settings as comment lines, then the source."""
        header = [f"# {key}: {_setting_text(value)}" for key, value in sorted(self.settings.items())]
        body = self.source if self.source.endswith("\n") else self.source + "\n"
        return "\n".join(header) + "\n" + body


def _memo_limits(saved: Hook | Script, kind: Kind) -> Limits:
    """Return the limits of a run of *saved*, built on its first run and kept on the object.

    Safe to keep: a hook or script object is one saved version, immutable, and the catalog's cache hands the same
    object to every run of that version until a change is seen; a save (or the cache's refresh) makes a new object.
    """
    limits = saved._run_limits
    if limits is None:
        limits = limits_for(kind).replace(**saved.limits)
        object.__setattr__(saved, "_run_limits", limits)  # frozen: a memo, not a change of the value
    return limits


def _setting_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={item}" for key, item in sorted(value.items())) or "-"
    return "-" if value is None else str(value)


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


def parse_isolation(value: str | None) -> Isolation:
    """Return *value* as an :data:`Isolation` (``None`` is the default, ``"run"``).

    Raises:
        ValidationError: Neither ``"run"`` nor ``"instance"`` (``field="isolation"``).
    """
    if value is None:
        return DEFAULT_ISOLATION
    for isolation in ISOLATIONS:
        if value == isolation:
            return isolation
    raise ValidationError(
        f"Isolation {value!r} is not known; use 'run' (a fresh process per run) or 'instance' (a warm process kept "
        "for the snippet's version).",
        field="isolation",
    )


def check_source(source: str) -> None:
    """Compile *source* with the production policy and check its imports; raise CompileError (every ``Line N:``).

    Imports are checked against what a run can import (the standard-library allowlist and the modules of the
    registered connection types: twilio's),
    so ``import requests`` is refused when the hook is saved, not on the first request.
    """
    if not source.strip():
        raise ValidationError("The snippet source is empty; write at least one statement.", field="source")
    compile_snippet(source)
    errors = check_imports(source, [*STDLIB_MODULES, *snippet_modules()])
    if errors:
        raise CompileError(errors)


class Catalog:
    """Create, read, update and delete hooks and scripts, per tenant, in the store's database."""

    def __init__(
        self, engine: Engine, *, clock: Callable[[], float] = time.time, changes: ChangeWatch | None = None
    ) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._clock = clock
        self._changes = changes if changes is not None else ChangeWatch.of(engine)
        self._hooks: VersionedCache[tuple[str, str], Hook | None] = VersionedCache()

    # --- hooks -------------------------------------------------------------------------------------------------

    def put_hook(
        self,
        tenant: str,
        name: str,
        source: str,
        *,
        verify_with: str | None = None,
        limits: Mapping[str, object] | None = None,
        author: str = UNKNOWN_AUTHOR,
        message: str | None = None,
        isolation: str | None = None,
    ) -> Hook:
        """Create or replace hook *name*, as its next version; compiled first, so nothing is saved if it cannot run.

        *author* (who saves) and *message* (why) are kept with the version (:meth:`versions`). *isolation* is
        ``"run"`` (the default when ``None``) or ``"instance"``.

        Raises:
            ValidationError: A bad tenant, name, connection name, limit or isolation (named by ``field``).
            CompileError: The policy rejected the snippet.
        """
        validate_name(tenant, field="tenant")
        validate_name(name, field="name")
        if verify_with is not None:
            validate_name(verify_with, field="verify_with")
        values = {
            "source": source,
            "verify_with": verify_with,
            "limits": parse_limits(limits, kind="webhook"),
            "isolation": parse_isolation(isolation),
        }
        check_source(source)
        self._save("hook", tenant, name, values, author=author, message=message)
        return self.get_hook(tenant, name)

    def get_hook(self, tenant: str, name: str) -> Hook:
        """Return hook *name* of *tenant*; NotFoundError if there is none (also for another tenant's hook)."""
        with self._reader.connect() as conn:
            row = conn.execute(sa.select(hooks).where(hooks.c.tenant == tenant, hooks.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"Tenant {tenant!r} has no hook named {name!r}.")
        return _hook(row._mapping)

    def known_hook(self, tenant: str, name: str) -> Hook | None:
        """Return hook *name* of *tenant* from this catalog's cache without a query, or None if it must be read.

        The cache holds what :meth:`cached_hook` read while the change counter has not moved (see
        :mod:`zingyconn.changes` for the staleness bound): cheap enough to call on an event loop.

        Raises:
            NotFoundError: The cache knows there is no such hook.
        """
        found, hook = self._hooks.get((tenant, name), self._changes.known())
        if found and hook is None:
            raise NotFoundError(f"Tenant {tenant!r} has no hook named {name!r}.")
        return hook

    def cached_hook(self, tenant: str, name: str) -> Hook:
        """Return hook *name* of *tenant*, at most :data:`~zingyconn.changes.CHECK_SECONDS` stale (one query at most).

        Raises:
            NotFoundError: There is no such hook.
        """
        version = self._changes.current()
        hook = self.known_hook(tenant, name)
        if hook is not None:
            return hook
        try:
            hook = self.get_hook(tenant, name)
        except NotFoundError:
            self._hooks.put((tenant, name), version, None)
            raise
        self._hooks.put((tenant, name), version, hook)
        return hook

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
        author: str = UNKNOWN_AUTHOR,
        message: str | None = None,
        timezone: str | None = None,
        isolation: str | None = None,
    ) -> Script:
        """Create or replace script *name*, as its next version; compiled first, the cron syntax checked.

        *timezone* is the IANA zone the cron is read in (UTC when ``None``). *author* (who saves) and *message*
        (why) are kept with the version (:meth:`versions`). *isolation* is ``"run"`` (the default when ``None``)
        or ``"instance"``.

        Raises:
            ValidationError: A bad tenant, name, cron, limit or isolation (named by ``field``).
            CompileError: The policy rejected the snippet.
        """
        validate_name(tenant, field="tenant")
        validate_name(name, field="name")
        cron = (cron or "").strip() or None
        if cron is not None and len(cron) > MAX_CRON_LENGTH:
            raise ValidationError(f"The cron expression is longer than {MAX_CRON_LENGTH} characters.", field="cron")
        zone = parse_cron(cron, timezone).timezone if cron is not None else parse_timezone(timezone)
        # A schedule the task host cannot run is never saved (the error names the cron or timezone field).
        values = {
            "source": source,
            "cron": cron,
            "timezone": zone,
            "limits": parse_limits(limits, kind="task"),
            "isolation": parse_isolation(isolation),
        }
        check_source(source)
        self._save("script", tenant, name, values, author=author, message=message)
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

    # --- versions ----------------------------------------------------------------------------------------------

    def versions(self, kind: SnippetKind, tenant: str, name: str) -> list[SnippetVersion]:
        """Return every saved version of hook or script *name*, newest first.

        Raises:
            NotFoundError: The tenant has no such hook or script (nor versions of one).
        """
        query = (
            sa.select(snippet_versions)
            .where(*_version_key(kind, tenant, name))
            .order_by(snippet_versions.c.version.desc())
        )
        with self._reader.connect() as conn:
            found = [_version(row._mapping) for row in conn.execute(query)]
        if not found:
            raise NotFoundError(f"Tenant {tenant!r} has no {kind} named {name!r}.")
        return found

    def version(self, kind: SnippetKind, tenant: str, name: str, number: int) -> SnippetVersion:
        """Return version *number* of hook or script *name*.

        Raises:
            NotFoundError: No such hook or script, or no such version of it (the message names the versions kept).
        """
        query = sa.select(snippet_versions).where(
            *_version_key(kind, tenant, name), snippet_versions.c.version == number
        )
        with self._reader.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            latest = self.versions(kind, tenant, name)[0].version  # NotFoundError when the snippet itself is unknown
            raise NotFoundError(f"The {kind} {name!r} of tenant {tenant!r} has versions 1 to {latest}, not {number}.")
        return _version(row._mapping)

    def diff(self, kind: SnippetKind, tenant: str, name: str, old: int, new: int) -> str:
        """Return the unified diff from version *old* to version *new* (settings and source); empty when equal."""
        before, after = self.version(kind, tenant, name, old), self.version(kind, tenant, name, new)
        lines = difflib.unified_diff(
            before.definition_text().splitlines(keepends=True),
            after.definition_text().splitlines(keepends=True),
            fromfile=f"{name} v{old}",
            tofile=f"{name} v{new}",
            fromfiledate=_iso(before.created_at),
            tofiledate=_iso(after.created_at),
        )
        return "".join(lines)

    def rollback(self, kind: SnippetKind, tenant: str, name: str, *, to: int, author: str = UNKNOWN_AUTHOR) -> int:
        """Save version *to* of hook or script *name* again, as a new version; return the new version's number.

        The whole definition comes back (source and settings); a rollback is itself a version, so it can be undone
        by rolling back to the version before it.

        Raises:
            NotFoundError: No such hook or script, or no such version.
        """
        target = self.version(kind, tenant, name, to)
        message = f"rolled back to version {to}"
        settings = dict(target.settings)
        limits = settings.get("limits") or {}
        if kind == "hook":
            hook = self.put_hook(
                tenant, name, target.source, verify_with=settings.get("verify_with"), limits=limits,
                author=author, message=message, isolation=settings.get("isolation"),
            )  # fmt: skip
            return hook.version
        script = self.put_script(
            tenant, name, target.source, cron=settings.get("cron"), timezone=settings.get("timezone"), limits=limits,
            author=author, message=message, isolation=settings.get("isolation"),
        )  # fmt: skip
        return script.version

    # --- shared ------------------------------------------------------------------------------------------------

    def _save(
        self, kind: SnippetKind, tenant: str, name: str, values: dict[str, Any], *, author: str, message: str | None
    ) -> None:
        """Write *values* as the current definition and as the next version, in one transaction."""
        table = hooks if kind == "hook" else scripts
        settings = {key: value for key, value in values.items() if key != "source"}
        message = (message or "").strip()[:MAX_MESSAGE_LENGTH] or None
        now = self._clock()
        key = (table.c.tenant == tenant) & (table.c.name == name)
        for attempt in range(3):
            try:
                with self._engine.begin() as conn:
                    # Lock the current row first (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers):
                    # concurrent saves then take the next numbers in turn instead of colliding on one.
                    exists = (
                        conn.execute(sa.select(sa.literal(1)).select_from(table).where(key).with_for_update()).first()
                        is not None
                    )
                    latest = conn.execute(
                        sa.select(sa.func.max(snippet_versions.c.version)).where(*_version_key(kind, tenant, name))
                    ).scalar()
                    version = int(latest or 0) + 1
                    conn.execute(
                        snippet_versions.insert().values(
                            kind=kind, tenant=tenant, name=name, version=version, source=values["source"],
                            settings=settings, author=author[:MAX_AUTHOR_LENGTH], message=message, created_at=now,
                        )
                    )  # fmt: skip
                    if exists:
                        conn.execute(table.update().where(key).values(**values, updated_at=now, version=version))
                    else:
                        row = {"tenant": tenant, "name": name, "created_at": now, "updated_at": now}
                        conn.execute(table.insert().values(**row, **values, version=version))
                    bump(conn)
                self._changes.changed()
                self._hooks.drop((tenant, name))
                return
            except sa.exc.IntegrityError:
                # PostgreSQL: a concurrent first save of the same name won the insert; save over it instead.
                if attempt == 2:
                    raise

    def _delete(self, table: sa.Table, tenant: str, name: str, *, what: str) -> None:
        kind: SnippetKind = "hook" if table is hooks else "script"
        with self._engine.begin() as conn:
            deleted = conn.execute(table.delete().where(table.c.tenant == tenant, table.c.name == name)).rowcount
            # Its versions go with it: a hook saved again under the same name starts a new history at version 1.
            conn.execute(snippet_versions.delete().where(*_version_key(kind, tenant, name)))
            bump(conn)
        self._changes.changed()
        self._hooks.drop((tenant, name))
        if not deleted:
            raise NotFoundError(f"Tenant {tenant!r} has no {what} named {name!r}.")


def _version_key(kind: SnippetKind, tenant: str, name: str) -> tuple[sa.ColumnElement[bool], ...]:
    return (snippet_versions.c.kind == kind, snippet_versions.c.tenant == tenant, snippet_versions.c.name == name)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _version(row: sa.RowMapping) -> SnippetVersion:
    return SnippetVersion(
        kind=row["kind"],
        tenant=row["tenant"],
        name=row["name"],
        version=row["version"],
        source=row["source"],
        settings=dict(row["settings"] or {}),
        author=row["author"],
        message=row["message"],
        created_at=row["created_at"],
    )


def _hook(row: sa.RowMapping) -> Hook:
    return Hook(
        tenant=row["tenant"],
        name=row["name"],
        source=row["source"],
        verify_with=row["verify_with"],
        limits=dict(row["limits"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        isolation=parse_isolation(row["isolation"] or None),
    )


def _script(row: sa.RowMapping) -> Script:
    return Script(
        tenant=row["tenant"],
        name=row["name"],
        source=row["source"],
        cron=row["cron"],
        timezone=row["timezone"] or DEFAULT_TIMEZONE,
        limits=dict(row["limits"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        isolation=parse_isolation(row["isolation"] or None),
    )
