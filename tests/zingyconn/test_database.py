"""SQLite engines from ``zingyconn.database.create_engine``: WAL mode on a new file that another process writes."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from zingyconn.database import create_engine

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
