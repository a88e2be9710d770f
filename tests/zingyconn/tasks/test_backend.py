"""The Huey side: JSON messages (never pickle), and the backend chosen by ZINGYCONN_QUEUE_URL."""

from __future__ import annotations

import datetime as dt
import json
import pickle
from pathlib import Path

import pytest
from huey import RedisHuey, SqliteHuey
from huey.registry import Message

from zingyconn.config import Settings
from zingyconn.tasks.backend import JsonSerializer, create_huey, describe


def test_messages_round_trip_as_json() -> None:
    """A task message with an ETA survives serialization, and the bytes on the queue are plain JSON."""
    message = Message(
        id="t1",
        name="zingyconn.tasks.queue.run_task",
        eta=dt.datetime(2026, 1, 1, 7, 0, 5),
        retries=1,
        args=("abc",),
        kwargs={},
    )
    data = JsonSerializer().serialize(message)
    assert json.loads(data)["message"]["args"] == ["abc"]
    assert JsonSerializer().deserialize(data) == message


def test_a_pickle_on_the_queue_is_not_unpickled() -> None:
    """Bytes someone pushed onto the queue are parsed as JSON only: a pickle fails to parse instead of running."""
    with pytest.raises(UnicodeDecodeError, match="invalid start byte"):
        JsonSerializer().deserialize(pickle.dumps(Message(id="x")))


def test_queue_url_selects_the_backend(tmp_path: Path) -> None:
    """No queue URL: SQLite in the data dir; a redis:// URL: Redis, described without its password."""
    embedded = Settings.from_env({"ZINGYCONN_DATA_DIR": str(tmp_path)})
    assert isinstance(create_huey(embedded), SqliteHuey)
    assert describe(embedded) == f"SQLite {tmp_path / 'queue.db'}"
    shared = Settings.from_env({"ZINGYCONN_DATA_DIR": str(tmp_path), "ZINGYCONN_QUEUE_URL": "redis://:pw@h:6379/0"})
    assert isinstance(create_huey(shared), RedisHuey)
    assert describe(shared) == "Redis h:6379/0"
