"""One SQLAlchemy engine per store URL, configured so that concurrent writers never lose updates."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.errors import ConfigurationError
from zingyconn.schema import migrate

# How long a SQLite writer waits for another process's write lock before failing ("database is locked").
SQLITE_BUSY_MILLISECONDS = 30_000


def create_engine(url: str, *, migrate_schema: bool = True) -> Engine:
    """Create an engine for *url* (``sqlite:///PATH`` or ``postgresql+psycopg://...``) and migrate its schema.

    SQLite gets WAL (readers never block the writer), a busy timeout, and ``BEGIN IMMEDIATE`` for every
    transaction, so a read-modify-write takes the write lock first and two processes cannot interleave.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"Database URL {url!r} is not a valid SQLAlchemy URL: {exc}.") from None
    if parsed.get_backend_name() == "sqlite":
        engine = _create_sqlite_engine(parsed)
    else:
        engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)
    if migrate_schema:
        try:
            migrate(engine, clock=time.time)
        except sa.exc.OperationalError as exc:
            raise ConfigurationError(
                f"Could not open the store at {parsed.render_as_string(hide_password=True)}: {exc.orig}"
            ) from None
    return engine


def create_private_file(path: Path) -> None:
    """Create *path* (and missing parent directories) readable by this user only, if it does not exist yet.

    Threat: the store holds every tenant's run history, events and hooks; an escaped sandbox child runs as an
    unprivileged uid and reads whatever is world-readable. SQLite's ``-wal``/``-shm`` files copy the database's mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # an existing store keeps the mode its owner gave it
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _create_sqlite_engine(url: sa.engine.URL) -> Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        create_private_file(Path(url.database))
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_MILLISECONDS / 1000, "check_same_thread": False},
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (the documented pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit no longer waits for an fsync (1.5 ms here; every run writes its history row and
        # every send takes a rate-limit token). The database stays consistent on a crash; only the last commits
        # before a power loss may be lost (SQLite's documented trade-off for WAL).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MILLISECONDS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.engine.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
