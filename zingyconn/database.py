"""One SQLAlchemy engine per store URL, configured so that concurrent writers never lose updates."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from zingyconn.errors import ConfigurationError, StorageUnavailableError
from zingyconn.extras import require_extra
from zingyconn.schema import migrate

# How long a SQLite writer waits for another process's write lock before failing ("database is locked").
SQLITE_BUSY_MILLISECONDS = 30_000

#: How long a writer polls for the write lock (see _begin_immediate_now) before falling back to SQLite's busy wait.
WRITE_POLL_SECONDS = 5.0
#: Poll interval while another process holds the write lock (this process's own writers wake the waiters at once).
_WRITE_RETRY_SECONDS = 0.002

#: Pooled connections kept open: at least the server's concurrent runs (each reads its hook and connections and
#: writes its history row). Connections beyond the pool are opened and closed per use, and opening one costs
#: more than a run's own queries (a SQLite open plus its PRAGMAs, a PostgreSQL log-in).
POOL_SIZE = 20
POOL_OVERFLOW = 20

#: First and longest delay between attempts to open a store that is down (see ``create_engine(wait_seconds=)``).
OPEN_RETRY_FIRST_SECONDS = 0.5
OPEN_RETRY_MAX_SECONDS = 5.0

_LOGGER = logging.getLogger(__name__)

#: How a full disk is told from other faults (see is_disk_full).
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_DISK_FULL_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_SHMSIZE})
_POSTGRES_DISK_FULL_SQLSTATE = "53100"
#: PostgreSQL's SQLSTATEs for a transaction that lost a race with another (deadlock_detected,
#: serialization_failure): nothing is wrong with the store, and the same work in a smaller transaction succeeds.
_POSTGRES_CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})

#: Execution option marking an engine (see :func:`read_only`) whose transactions only read.
_READ_ONLY_OPTION = "zingyconn_read_only"


def read_only(engine: Engine) -> Engine:
    """Return *engine* for transactions that only read (``with read_only(engine).connect() as conn``).

    On SQLite their transactions begin with a plain (deferred) ``BEGIN``: in WAL mode they read a snapshot beside
    the one writer instead of queueing for its lock, as every ``BEGIN IMMEDIATE`` does. Writes must use *engine*
    itself (``engine.begin()``), whose read-modify-write transactions take the write lock first.
    """
    return engine.execution_options(**{_READ_ONLY_OPTION: True})


def upsert_insert(engine: Engine) -> Any:
    """Return the ``insert`` of *engine*'s dialect, the one with ``on_conflict_do_update`` (SQLite or PostgreSQL).

    Each dialect is imported when its engine asks: a process on SQLite never loads SQLAlchemy's PostgreSQL dialect
    (about 25 ms of ``zingyconn run``'s start-up).

    Raises:
        ValueError: The engine is neither SQLite nor PostgreSQL.
    """
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert
    raise ValueError(f"zingyconn stores data in SQLite or PostgreSQL, not {engine.dialect.name!r}.")


class DriverStatement:
    """A statement built once with bound parameters, compiled once for *engine*'s dialect and run by its driver.

    ``conn.execute(statement, rows)`` looks the statement up in SQLAlchemy's compiled cache and builds each row's
    parameters in general-purpose code: for a group-commit batch of history rows on SQLite, half of the writer's time
    per row (about 27 of 53 µs; storing the row and its JSON take the rest). Here the SQL text, the order of the
    parameters and their types' conversions (JSON to text, ...) are worked out once; a row costs one pass over them,
    and ``exec_driver_sql`` runs them as one ``executemany``. What is stored is what ``conn.execute`` would store (the
    same conversions), and a failure raises the same ``sqlalchemy.exc`` error (``exec_driver_sql`` wraps the driver's).

    Every parameter without a value in the statement (``sa.bindparam("name")``) must be in each row; a row's other
    keys are ignored. A JSON parameter may be given as :class:`EncodedJSON` (its text is written as it is). The row
    count (``rowcount``) of every execution is kept, an INSERT's too.

    Raises:
        ValueError: The statement has parameters SQLAlchemy renders per execution (an expanding ``IN``), which a
            statement compiled once cannot hold.
    """

    def __init__(self, engine: Engine, statement: ClauseElement) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)  # a statement (not DDL) compiles to SQL
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError(f"{statement} has parameters rendered per execution; execute it with conn.execute().")
        #: The statement's SQL in the driver's parameter style.
        self.sql: str = compiled.string
        values = compiled.params  # the statement's own values (None for each parameter a row gives)
        names = list(compiled.positiontup) if compiled.positional and compiled.positiontup else list(values)
        binds = compiled.binds  # by the name in the SQL
        self._names = tuple(names)
        self._positional = compiled.positional
        self._defaults = {name: values[name] for name in names if not binds[name].required}
        self._plan = tuple((name, _bind_processor(binds[name].type, dialect)) for name in names)

    def parameters(self, row: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """Return *row* as the driver takes it: in the statement's order (or by name), each value converted.

        Raises:
            KeyError: *row* lacks a parameter the statement has no value for.
        """
        given = {**self._defaults, **row} if self._defaults else row
        values = [given[name] if process is None else process(given[name]) for name, process in self._plan]
        return tuple(values) if self._positional else dict(zip(self._names, values, strict=True))

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> CursorResult[Any]:
        """Execute the statement once per row of *rows* on *conn* (one ``executemany`` for several)."""
        parameters = [self.parameters(row) for row in rows]
        return conn.exec_driver_sql(
            self.sql, parameters if len(parameters) > 1 else parameters[0], execution_options=_KEEP_ROWCOUNT
        )


@dataclass(frozen=True, slots=True)
class EncodedJSON:
    """A JSON column's value already encoded, as SQLAlchemy would encode it (``json.dumps``): a
    :class:`DriverStatement` writes the text as it is instead of encoding the value a second time.

    Attributes:
        text: The JSON text.
    """

    text: str


def _bind_processor(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy converts a value of *type_* with for *dialect*'s driver; a JSON type's passes
    :class:`EncodedJSON` through as its text."""
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    if process is None or not isinstance(type_, sa.JSON):
        return process
    encode = process

    def encoded_or_encode(value: Any) -> Any:
        return value.text if isinstance(value, EncodedJSON) else encode(value)

    return encoded_or_encode


#: SQLAlchemy reads an INSERT's row count only when asked to (whether ON CONFLICT DO NOTHING inserted is one).
_KEEP_ROWCOUNT: Final = {"preserve_rowcount": True}


def create_engine(url: str, *, migrate_schema: bool = True, wait_seconds: float = 0.0) -> Engine:
    """Create an engine for *url* (``sqlite:///PATH`` or ``postgresql+psycopg://...``) and migrate its schema.

    SQLite gets WAL (readers never block the writer), a busy timeout, and ``BEGIN IMMEDIATE`` for every
    transaction, so a read-modify-write takes the write lock first and two processes cannot interleave.

    Args:
        wait_seconds: How long to keep retrying while the database cannot be opened (a server restarting): a
            long-running process started during an outage waits it out instead of exiting. ``0``: fail at once.

    Raises:
        StorageUnavailableError: The database could not be opened (within *wait_seconds*).
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"Database URL {url!r} is not a valid SQLAlchemy URL: {exc}.") from None
    if parsed.get_backend_name() == "sqlite":
        engine = _create_sqlite_engine(parsed)
    else:
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
            require_extra("postgres", needed_for=f"The PostgreSQL store {parsed.render_as_string(hide_password=True)}")
        engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    if migrate_schema:
        _migrate_when_reachable(engine, parsed.render_as_string(hide_password=True), wait_seconds)
    return engine


def _migrate_when_reachable(engine: Engine, shown: str, wait_seconds: float) -> None:
    """Migrate *engine*'s schema, retrying with a growing delay for *wait_seconds* while the database is down."""
    deadline = time.monotonic() + wait_seconds
    delay_seconds = OPEN_RETRY_FIRST_SECONDS
    while True:
        try:
            migrate(engine, clock=time.time)
            return
        except sa.exc.OperationalError as exc:
            cause = " ".join(str(exc.orig).split()).rstrip(".")  # one line: drivers add hints on lines of their own
            if is_disk_full(exc):
                raise StorageUnavailableError(
                    f"Could not open the store at {shown}: the disk is full ({cause}). Free some disk space, "
                    "then retry."
                ) from None
            if time.monotonic() + delay_seconds > deadline:
                raise StorageUnavailableError(
                    f"Could not open the store at {shown}: {cause}. Check that the database is running and "
                    "reachable (ZINGYCONN_DB_URL), then retry."
                ) from None
            _LOGGER.warning("Could not open the store at %s (%s); retrying in %.1f s.", shown, cause, delay_seconds)
        time.sleep(delay_seconds)
        delay_seconds = min(2 * delay_seconds, OPEN_RETRY_MAX_SECONDS)


def is_disk_full(exc: BaseException) -> bool:
    """Return True when *exc* says the disk (or disk quota) holding a database or file is full.

    Told by codes, never by message text: an ``OSError``'s errno, SQLite's result code (``SQLITE_FULL`` for a write
    that found no room; ``SQLITE_IOERR_SHMSIZE`` for a WAL index that could not grow, which is how opening a WAL
    database on a full disk fails), PostgreSQL's SQLSTATE ``53100`` (disk_full).
    """
    error = _driver_error(exc)
    if isinstance(error, OSError):
        return error.errno in _DISK_FULL_ERRNOS
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) in _SQLITE_DISK_FULL_CODES
    return getattr(error, "sqlstate", None) == _POSTGRES_DISK_FULL_SQLSTATE


def is_conflict(exc: BaseException) -> bool:
    """Return True when *exc* ended a transaction that lost a race with another one (a deadlock, a serialization
    failure): the store is up, and the same statements succeed when written again, alone or in another order.

    Told by SQLSTATE (``40P01``, ``40001``), never by message text. SQLite never raises these: its one write lock
    admits no cycle.
    """
    error = _driver_error(exc)
    return getattr(error, "sqlstate", None) in _POSTGRES_CONFLICT_SQLSTATES


def _driver_error(exc: BaseException) -> BaseException | None:
    """Return the driver's own error that SQLAlchemy wrapped in *exc* (the codes are there), or *exc* itself."""
    return exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc


def is_storage_fault(exc: BaseException) -> bool:
    """Return True when *exc* is the store or Redis failing (down, locked, disk full), not a bug or bad input."""
    if isinstance(exc, sa.exc.DBAPIError | sqlite3.Error | OSError):
        return not isinstance(exc, sa.exc.IntegrityError | sqlite3.IntegrityError)
    redis = sys.modules.get("redis")  # never imported here: without the client loaded, no Redis error exists
    return redis is not None and isinstance(exc, redis.exceptions.RedisError)


def create_private_file(path: Path) -> None:
    """Create *path* (and missing parent directories) readable by this user only, if it does not exist yet.

    Threat: the store holds every tenant's run history, events and hooks; an escaped sandbox child runs as an
    unprivileged uid and reads whatever is world-readable. SQLite's ``-wal``/``-shm`` files copy the database's mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # an existing store keeps the mode its owner gave it
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _create_sqlite_engine(url: sa.engine.URL) -> Engine:
    pool: dict[str, int] = {}
    database = url.database or ""
    in_file = database not in ("", ":memory:")
    if in_file and not database.startswith("file:"):
        create_private_file(Path(database))
        pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}  # an in-memory database has one connection
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_MILLISECONDS / 1000, "check_same_thread": False},
        **pool,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (the documented pysqlite recipe).
        dbapi_connection.isolation_level = None
        if in_file:
            _enable_wal(dbapi_connection)
        cursor = dbapi_connection.cursor()
        # WAL + NORMAL: a commit no longer waits for an fsync (1.5 ms here; every run writes its history row and
        # every send takes a rate-limit token). The database stays consistent on a crash; only the last commits
        # before a power loss may be lost (SQLite's documented trade-off for WAL).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MILLISECONDS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    # Woken by every commit and rollback of this engine: the writers of this process wait for the write lock here,
    # in turn, instead of in SQLite's busy handler, which sleeps 1, 2, 5, 10... 100 ms between attempts (16
    # concurrent webhook runs each writing a history row queued for hundreds of milliseconds behind it).
    lock_released = threading.Condition()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.engine.Connection) -> None:
        if conn.get_execution_options().get(_READ_ONLY_OPTION):
            conn.exec_driver_sql("BEGIN")
        elif not _begin_immediate_now(conn, lock_released):
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's own busy wait, then its error if still locked

    @sa.event.listens_for(engine, "commit")
    @sa.event.listens_for(engine, "rollback")
    def _on_end(conn: sa.engine.Connection) -> None:
        del conn
        with lock_released:
            lock_released.notify_all()

    return engine


def _is_locked(error: sqlite3.OperationalError) -> bool:
    """Whether *error* is SQLite's "database is locked" (or "busy"): another connection holds the lock."""
    # The primary result code is the low byte of the (possibly extended) code SQLite reports.
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _enable_wal(dbapi_connection: sqlite3.Connection) -> None:
    """Put the database file in WAL mode (once per file: the mode is stored in it), waiting for other processes.

    Converting the journal takes an exclusive lock, and SQLite does not run its busy handler for it: processes (or
    threads) opening one new file at once get "database is locked" at once, whatever the busy timeout. So the mode
    is read first (no lock once the file is in WAL mode), and a locked conversion is retried, within the busy timeout,
    until it succeeds or another connection has converted the file.

    Raises:
        sqlite3.OperationalError: The file stayed locked for the whole busy timeout, or another error.
    """
    deadline = time.monotonic() + SQLITE_BUSY_MILLISECONDS / 1000
    delay_seconds = 0.001
    while True:
        try:
            if str(dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc):
                raise
            if time.monotonic() >= deadline:
                raise sqlite3.OperationalError(
                    f"database is locked: could not switch it to WAL mode within {SQLITE_BUSY_MILLISECONDS} ms"
                ) from exc
        time.sleep(delay_seconds)
        delay_seconds = min(2 * delay_seconds, 0.05)


def _begin_immediate_now(conn: sa.engine.Connection, lock_released: threading.Condition) -> bool:
    """Try ``BEGIN IMMEDIATE`` without SQLite's busy handler until :data:`WRITE_POLL_SECONDS` pass.

    Between attempts, wait for a commit or rollback in this process (or :data:`_WRITE_RETRY_SECONDS`, for a writer
    in another process). Returns False if the lock is still busy; other errors propagate.
    """
    dbapi_connection: Any = conn.connection.dbapi_connection
    deadline = time.monotonic() + WRITE_POLL_SECONDS
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    try:
        while time.monotonic() < deadline:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
            with lock_released:
                lock_released.wait(_WRITE_RETRY_SECONDS)
        return False
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MILLISECONDS}")
