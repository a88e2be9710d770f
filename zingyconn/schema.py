"""The database schema of the store, and the migration step that creates or upgrades it.

Why not Alembic: the schema is small, owned by one package and has to migrate *itself* safely when several
``serve``/``worker`` processes start at once against one database. A numbered list of idempotent steps, applied
under a database-wide lock (PostgreSQL ``pg_advisory_xact_lock``; SQLite ``BEGIN IMMEDIATE``) and recorded in
``schema_version``, does that in ~60 lines with no second migration tree to keep in sync.
While the project is unreleased, version 1 is the whole schema; later changes append steps to ``MIGRATIONS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

metadata: Final = sa.MetaData()

schema_version: Final = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

#: Connections: one sealed record per (tenant, name); ``record`` is the AES-GCM envelope, never plaintext.
connections: Final = sa.Table(
    "connections",
    metadata,
    sa.Column("tenant", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("record", sa.LargeBinary, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False, server_default="1"),
    # How ``record`` is bound (zingyconn.secrets.store): 2 = its AAD includes ``revision`` (a record restored over a
    # newer revision does not open); 1 = sealed before that, opened once and re-sealed as 2 (rows of older stores).
    sa.Column("seal_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Masked, non-secret display fields ({"account_sid": "AC12…cdef", "api_key": ...}) so that listing
    # connections never needs a key.
    sa.Column("summary", sa.JSON, nullable=True),
    sa.Index("ix_connections_key_id", "key_id"),
)

#: Webhook hooks: a snippet behind ``/hooks/{tenant}/{name}``.
hooks: Final = sa.Table(
    "hooks",
    metadata,
    sa.Column("tenant", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("verify_with", sa.String(100), nullable=True),
    sa.Column("limits", sa.JSON, nullable=False, default=dict),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),  # the current row of ``snippet_versions``
    # How its runs are isolated: "run" (a fresh process each) or "instance" (a warm process kept per version).
    sa.Column("isolation", sa.String(16), nullable=False, server_default="run"),
)

#: Background-task scripts, optionally on a cron schedule.
scripts: Final = sa.Table(
    "scripts",
    metadata,
    sa.Column("tenant", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("cron", sa.String(100), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=True),  # the cron's IANA zone; NULL: UTC
    sa.Column("limits", sa.JSON, nullable=False, default=dict),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),  # the current row of ``snippet_versions``
    sa.Column("isolation", sa.String(16), nullable=False, server_default="run"),  # as for hooks
)

#: Every saved version of every hook and script (a save, a rollback): who, when, why, and what was saved. Versions
#: are numbered from 1 per (kind, tenant, name); the primary key makes two concurrent saves take different numbers.
snippet_versions: Final = sa.Table(
    "snippet_versions",
    metadata,
    sa.Column("kind", sa.String(10), primary_key=True),  # "hook" | "script"
    sa.Column("tenant", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    # The rest of the saved definition: {"verify_with", "limits"} of a hook, {"cron", "timezone", "limits"} of a script.
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("author", sa.String(100), nullable=False),  # "console:operator", "token:<id>", "cli:<user>", ...
    sa.Column("message", sa.String(500), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: Run history: every run of every kind, with masked output.
runs: Final = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("name", sa.String(100), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("task_id", sa.String(64), nullable=True),
    sa.Column("replay_of", sa.String(40), nullable=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=True),
    sa.Column("event", sa.JSON, nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("stdout", sa.Text, nullable=True),
    sa.Column("logs", sa.JSON, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("egress", sa.JSON, nullable=True),
    sa.Column("source", sa.Text, nullable=True),
    # Size of the stored fields, summed per tenant for the history quota (NULL in rows from before it existed).
    sa.Column("stored_bytes", sa.Integer, nullable=True),
    sa.Column("version", sa.Integer, nullable=True),  # the hook's or script's version that ran (NULL: none/older)
    sa.Index("ix_runs_tenant_started", "tenant", "started_at"),
    sa.Index("ix_runs_started", "started_at"),  # the purge: oldest first, every tenant
)

#: Webhook de-duplication on ``I-Twilio-Idempotency-Token``: the stored response is replayed.
webhook_responses: Final = sa.Table(
    "webhook_responses",
    metadata,
    sa.Column("tenant", sa.String(100), primary_key=True),
    sa.Column("hook", sa.String(100), primary_key=True),
    sa.Column("token", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),  # "running" while the first request runs, then "done"
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("media_type", sa.String(100), nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("run_id", sa.String(40), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("owner", sa.String(200), nullable=True),  # the process running the first request (zingyconn.leases)
    sa.Column("lease_until", sa.Float, nullable=True),  # renewed while it runs; past it, a retry takes over
    sa.Index("ix_webhook_responses_created", "created_at"),  # the purge
)

#: Send de-duplication: the same idempotency key within 24 h returns the first message instead of a second SMS.
sent_messages: Final = sa.Table(
    "sent_messages",
    metadata,
    sa.Column("tenant", sa.String(100), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    # claimed -> sending -> sent | unknown (zingyconn.egress.ledger); a refused or unsent request frees the key
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("message", sa.JSON, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # SHA-256 of the request the key was first used with: reusing a key for a different message is an error,
    # not a silent replay of the wrong message.
    sa.Column("request_sha256", sa.String(64), nullable=True),
    sa.Column("owner", sa.String(200), nullable=True),  # the process holding a claimed/sending key (its lease)
    sa.Column("lease_until", sa.Float, nullable=True),  # renewed while the owner lives; past it, the claim is stale
    sa.Column("sending_at", sa.Float, nullable=True),  # when the request left: where reconciliation looks from
    sa.Column("sid", sa.String(64), nullable=True),  # the message's SID once known (reconciliation skips these)
    sa.Index("ix_sent_messages_tenant_sid", "tenant", "sid"),
    sa.Index("ix_sent_messages_created", "created_at"),  # the purge
)

#: Per-tenant API tokens for ``/api/v1`` (only a SHA-256 of the token is stored).
api_tokens: Final = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("label", sa.String(100), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: Token buckets for per-tenant rate limits when no Redis is configured (shared by every process on the DB).
rate_buckets: Final = sa.Table(
    "rate_buckets",
    metadata,
    sa.Column("tenant", sa.String(100), primary_key=True),
    sa.Column("bucket", sa.String(60), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


#: Background tasks: the durable record of every enqueued task. The queue (Huey) only carries the id;
#: this row is the truth (a transactional outbox: a dispatcher moves ready rows onto the queue), so a task survives
#: a worker killed mid-run or a lost queue, and the id doubles as the run-level idempotency key of its sends.
tasks: Final = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("script", sa.String(100), nullable=False),
    sa.Column("payload", sa.JSON, nullable=True),
    sa.Column("state", sa.String(20), nullable=False),  # queued | running | retrying | succeeded | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("owner", sa.String(200), nullable=True),  # the process running it (zingyconn.leases.process_owner)
    sa.Column("lease_until", sa.Float, nullable=True),  # renewed while its worker lives; past it, abandoned
    sa.Column("dispatched_at", sa.Float, nullable=True),  # put on the Huey queue then; NULL: waits for dispatch
    sa.Column("run_after", sa.Float, nullable=True),  # a retry's backoff: not dispatched before this time
    sa.Column("run_id", sa.String(40), nullable=True),  # the latest attempt's run in ``runs``
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("source", sa.String(20), nullable=False, server_default="api"),  # who enqueued it (TaskRecord.source)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_tasks_state_lease", "state", "lease_until"),
    sa.Index("ix_tasks_state_dispatched", "state", "dispatched_at"),
    sa.Index("ix_tasks_tenant_created", "tenant", "created_at"),
)


#: Console sessions, kept server-side so that sign-out, revoking the token that made one, and the idle and absolute
#: timeouts end it everywhere, even for a copied cookie. Only digests are stored: a stolen database opens nothing.
console_sessions: Final = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id_sha256", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=True),  # None: the operator (every tenant)
    # SHA-256 of the token that signed in: a tenant API token (must still exist) or the operator token (must still
    # be the configured one).
    sa.Column("credential_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.Index("ix_console_sessions_credential", "credential_sha256"),
)

#: Who changed what through the console, and when (never a secret: names, types, ids only).
audit_events: Final = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),  # "operator" or "token <id>"
    sa.Column("client", sa.String(64), nullable=True),  # the client address
    sa.Column("tenant", sa.String(100), nullable=True),
    sa.Column("action", sa.String(60), nullable=False),  # "hook.save", "connection.delete", ...
    sa.Column("target", sa.String(200), nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
    sa.Index("ix_audit_events_tenant_at", "tenant", "at"),
)

#: Job leases (``zingyconn.purge.JobLeases``): which process does a job that must run once across all of them.
job_leases: Final = sa.Table(
    "job_leases",
    metadata,
    sa.Column("name", sa.String(60), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

#: Tenant variables (``zingyconn.variables``): plain, non-secret configuration values a snippet reads as
#: ``zingyConn.vars``. Never a secret: they are stored and shown in the clear.
tenant_vars: Final = sa.Table(
    "tenant_vars",
    metadata,
    sa.Column("tenant", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

#: The change counter (``zingyconn.changes``): one row whose ``version`` every hook, script and connection change
#: bumps in its own transaction, so that another process's cache sees, in one read, that it may be stale.
store_changes: Final = sa.Table(
    "store_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)
#: The id of the counter's one row.
CHANGE_COUNTER_ID: Final = 1


def _create_v1(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


def _add_seal_version(conn: Connection) -> None:
    """Add ``connections.seal_version`` to stores made before records were bound to their revision.

    Existing rows get 1 (the old binding); :class:`zingyconn.secrets.store.ConnectionStore` re-seals each as 2 when
    it is next read or written, or by ``zingyconn keys rotate`` (the schema step itself holds no key).
    """
    if "seal_version" not in {column["name"] for column in sa.inspect(conn).get_columns("connections")}:
        conn.execute(sa.text("ALTER TABLE connections ADD COLUMN seal_version INTEGER NOT NULL DEFAULT 1"))


def _add_console_sessions_and_audit(conn: Connection) -> None:
    console_sessions.create(conn, checkfirst=True)
    audit_events.create(conn, checkfirst=True)


def _add_lifecycle(conn: Connection) -> None:
    """``runs.stored_bytes`` (the per-tenant history quota), the ``job_leases`` table and the purge's indexes."""
    if "stored_bytes" not in {column["name"] for column in sa.inspect(conn).get_columns("runs")}:
        conn.execute(sa.text("ALTER TABLE runs ADD COLUMN stored_bytes INTEGER"))
    job_leases.create(conn, checkfirst=True)
    for table, name in (
        (runs, "ix_runs_started"),
        (webhook_responses, "ix_webhook_responses_created"),
        (sent_messages, "ix_sent_messages_created"),
    ):
        next(index for index in table.indexes if index.name == name).create(conn, checkfirst=True)


def _add_tenant_vars(conn: Connection) -> None:
    tenant_vars.create(conn, checkfirst=True)


def _add_versions(conn: Connection) -> None:
    """``snippet_versions``, ``hooks.version``, ``scripts.version`` and ``runs.version``.

    Every hook and script saved before versions existed becomes its version 1 (author ``"unknown"``).
    """
    for table_name in ("hooks", "scripts", "runs"):
        if "version" not in {column["name"] for column in sa.inspect(conn).get_columns(table_name)}:
            default = "" if table_name == "runs" else " NOT NULL DEFAULT 1"
            conn.execute(sa.text(f"ALTER TABLE {table_name} ADD COLUMN version INTEGER{default}"))
    snippet_versions.create(conn, checkfirst=True)
    for kind, table, settings in (("hook", hooks, ("verify_with", "limits")), ("script", scripts, ("cron", "limits"))):
        kept = sa.select(snippet_versions.c.tenant, snippet_versions.c.name).where(snippet_versions.c.kind == kind)
        versioned = {(row.tenant, row.name) for row in conn.execute(kept)}
        # Only the columns this step knows: later steps add more (scripts.timezone, isolation) that a store
        # migrated from before this step does not have yet.
        columns = (table.c.tenant, table.c.name, table.c.source, table.c.updated_at, *(table.c[n] for n in settings))
        for row in conn.execute(sa.select(*columns)).all():
            if (row.tenant, row.name) in versioned:
                continue
            conn.execute(
                snippet_versions.insert().values(
                    kind=kind,
                    tenant=row.tenant,
                    name=row.name,
                    version=1,
                    source=row.source,
                    settings={name: row._mapping[name] for name in settings},
                    author="unknown",
                    message="saved before versions were kept",
                    created_at=row.updated_at,
                )
            )


def _add_script_timezone(conn: Connection) -> None:
    """``scripts.timezone``: the IANA zone a script's cron is read in (NULL, as for every existing script, is UTC)."""
    if "timezone" not in {column["name"] for column in sa.inspect(conn).get_columns("scripts")}:
        conn.execute(sa.text("ALTER TABLE scripts ADD COLUMN timezone VARCHAR(64)"))


def _add_change_counter(conn: Connection) -> None:
    """``store_changes`` and its one row, at 0."""
    store_changes.create(conn, checkfirst=True)
    if conn.execute(sa.select(store_changes.c.id).where(store_changes.c.id == CHANGE_COUNTER_ID)).first() is None:
        conn.execute(store_changes.insert().values(id=CHANGE_COUNTER_ID, version=0))


def _add_isolation(conn: Connection) -> None:
    """``hooks.isolation`` and ``scripts.isolation``: every existing hook and script keeps a fresh process per run."""
    for table_name in ("hooks", "scripts"):
        if "isolation" not in {column["name"] for column in sa.inspect(conn).get_columns(table_name)}:
            conn.execute(sa.text(f"ALTER TABLE {table_name} ADD COLUMN isolation VARCHAR(16) NOT NULL DEFAULT 'run'"))


#: Ordered migration steps; step ``i`` brings the schema to version ``i + 1``. Each must be idempotent.
MIGRATIONS: Final[tuple[Callable[[Connection], None], ...]] = (
    _create_v1,
    _add_seal_version,
    _add_console_sessions_and_audit,
    _add_lifecycle,
    _add_tenant_vars,
    _add_versions,
    _add_script_timezone,
    _add_change_counter,
    _add_isolation,
)
LATEST_VERSION: Final = len(MIGRATIONS)

# An arbitrary constant that identifies "zingyconn schema migration" among PostgreSQL advisory locks.
_ADVISORY_LOCK_ID: Final = 0x7A696E6779


def migrate(engine: Engine, *, clock: Callable[[], float]) -> int:
    """Bring the schema to :data:`LATEST_VERSION`; safe when many processes call it at once.

    Returns:
        The schema version after migrating.
    """
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        # SQLite: engines made by ``zingyconn.database.create_engine`` open every transaction with
        # BEGIN IMMEDIATE, so the first write lock is already held here and a second process waits.
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
        for version in range(current + 1, LATEST_VERSION + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(schema_version.insert().values(version=version, applied_at=clock()))
        return max(current, LATEST_VERSION)
