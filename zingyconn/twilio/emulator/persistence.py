"""Optional persistence of the emulator's messages, so a demo keeps them across restarts.

``*.json`` files hold one JSON document (rewritten atomically); any other name is a SQLite database with one table.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol


class Persistence(Protocol):
    """Where the emulator keeps its messages between runs."""

    def load(self) -> list[dict[str, Any]]:
        """Return the saved message records (empty when nothing was saved yet)."""
        ...

    def save(self, records: list[dict[str, Any]]) -> None:
        """Replace the saved records with *records*."""
        ...


class JsonFile:
    """Messages in one JSON file: ``{"messages": [...]}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[dict[str, Any]]:
        """Return the saved records."""
        if not self.path.exists():
            return []
        document = json.loads(self.path.read_text(encoding="utf-8"))
        return list(document.get("messages", []))

    def save(self, records: list[dict[str, Any]]) -> None:
        """Write the records to a temporary file, then rename it over the old one (never a half-written file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump({"messages": records}, stream)
        os.replace(temporary, self.path)


class SqliteFile:
    """Messages in a SQLite database, one row per message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path)) as connection, connection:
            connection.execute("CREATE TABLE IF NOT EXISTS emulator_messages (seq INTEGER PRIMARY KEY, record TEXT)")

    def load(self) -> list[dict[str, Any]]:
        """Return the saved records, oldest first."""
        with closing(sqlite3.connect(self.path)) as connection:
            rows = connection.execute("SELECT record FROM emulator_messages ORDER BY seq").fetchall()
        return [json.loads(row[0]) for row in rows]

    def save(self, records: list[dict[str, Any]]) -> None:
        """Replace all rows in one transaction."""
        with closing(sqlite3.connect(self.path)) as connection, connection:
            connection.execute("DELETE FROM emulator_messages")
            connection.executemany(
                "INSERT INTO emulator_messages (seq, record) VALUES (?, ?)",
                [(record["seq"], json.dumps(record)) for record in records],
            )


def open_state_file(path: str | Path) -> Persistence:
    """Return the persistence for *path*: JSON for ``*.json``, SQLite otherwise."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return JsonFile(path)
    return SqliteFile(path)
