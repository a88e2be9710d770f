"""Engines from ``zingyconn.database.create_engine`` (WAL mode on a new SQLite file that another process writes), and
statements compiled once for one (``DriverStatement``) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from zingyconn.database import DriverStatement, EncodedJSON, create_engine
from zingyconn.schema import runs

#: How long the other process holds its write lock in the tests.
HOLD_SECONDS = 0.3


def _hold_write_lock(path: Path) -> threading.Timer:
    """Take a write lock on *path* (a new file, still in rollback-journal mode) and release it after HOLD_SECONDS."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other_process (x)")
    holder.execute("BEGIN IMMEDIATE")

    def commit() -> None:
        holder.execute("COMMIT")
        holder.close()

    release = threading.Timer(HOLD_SECONDS, commit)
    release.start()
    return release


def test_opening_a_new_file_another_process_is_writing_waits_and_gets_wal_mode(tmp_path: Path) -> None:
    """Converting the journal while another process holds the write lock fails at once in SQLite, whatever the busy
    timeout (processes opening one new file together: ``serve --workers``, a worker, the CLI). The engine waits."""
    path = tmp_path / "store.db"
    release = _hold_write_lock(path)
    engine = create_engine(f"sqlite:///{path}", migrate_schema=False)
    try:
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    finally:
        release.join()
        engine.dispose()

    assert mode == "wal"


def _run_row(run_id: str) -> dict[str, Any]:
    return {
        "id": run_id, "tenant": "acme", "kind": "webhook", "name": "sms", "status": "ok", "started_at": 1.5,
        "event": {"form": {"Body": "héllo ☃"}, "json": None}, "result": "<Response/>", "logs": [], "error": None,
        "stdout": "", "egress": [{"op": "messages.create"}], "attempt": 1, "stored_bytes": 7,
    }  # fmt: skip


def _stored(engine: sa.Engine, run_id: str) -> dict[str, Any]:
    """The row as the database holds it: JSON columns as their text, not decoded."""
    columns = [sa.cast(column, sa.Text) if isinstance(column.type, sa.JSON) else column for column in runs.c]
    with engine.connect() as conn:
        row = conn.execute(sa.select(*columns).where(runs.c.id == run_id)).one()
    return {key: value for key, value in row._mapping.items() if key != "id"}


def test_a_driver_statement_stores_what_sqlalchemy_stores(store_engine: sa.Engine) -> None:
    """Rows written through a DriverStatement, one or many at once, or with JSON given encoded, equal those of
    conn.execute, JSON text included; a literal value in the statement is written too, and a row's extra keys are
    ignored."""

    def row(run_id: str) -> dict[str, Any]:
        return {key: value for key, value in _run_row(run_id).items() if key != "kind"}

    bound = {name: sa.bindparam(name, type_=runs.c[name].type) for name in row("x")}
    statement = runs.insert().values({**bound, "kind": "task"})
    driver = DriverStatement(store_engine, statement)
    with store_engine.begin() as conn:
        conn.execute(statement, row("by-sqlalchemy"))
        driver.execute(conn, [{**row("by-driver"), "unused": 1}])
        driver.execute(conn, [row("many-1"), row("many-2")])
        encoded = {name: EncodedJSON(json.dumps(row("x")[name])) for name in ("event", "logs", "error", "egress")}
        driver.execute(conn, [{**row("encoded"), **encoded}])

    expected = _stored(store_engine, "by-sqlalchemy")
    assert expected["kind"] == "task"
    assert expected["error"] is not None  # None is stored as JSON null, both ways
    for run_id in ("by-driver", "many-1", "many-2", "encoded"):
        assert _stored(store_engine, run_id) == expected


def test_a_driver_statement_raises_what_sqlalchemy_raises(store_engine: sa.Engine) -> None:
    """A duplicate key is SQLAlchemy's IntegrityError; a row without a parameter the statement needs, a KeyError."""
    driver = DriverStatement(store_engine, runs.insert().values({name: sa.bindparam(name) for name in _run_row("x")}))
    with store_engine.begin() as conn:
        driver.execute(conn, [_run_row("taken")])
    with pytest.raises(sa.exc.IntegrityError), store_engine.begin() as conn:
        driver.execute(conn, [_run_row("new"), _run_row("taken")])
    with pytest.raises(KeyError, match="tenant"), store_engine.begin() as conn:
        driver.execute(conn, [{key: value for key, value in _run_row("new").items() if key != "tenant"}])
    with pytest.raises(ValueError, match="per execution"):
        DriverStatement(store_engine, runs.delete().where(runs.c.id.in_(["a", "b"])))
