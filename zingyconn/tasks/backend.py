"""The Huey side of background tasks: which storage, how messages are serialized, how consumers run.

SQLite next to the store is the embedded default; ``ZINGYCONN_QUEUE_URL=redis://...`` selects Redis, shared by
workers on many machines. Messages carry task ids only and are serialized as JSON, never pickle.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Final

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer
from huey.registry import Message
from huey.serializer import Serializer

from zingyconn.config import Settings
from zingyconn.database import create_private_file
from zingyconn.extras import require_extra

#: The Huey queue name (the Redis keys are ``huey.*.zingyconn``; the SQLite queue is ``queue.db`` in the data dir).
QUEUE_NAME: Final = "zingyconn"
_DATETIME_TAG: Final = "$datetime"


class JsonSerializer(Serializer):  # type: ignore[misc]  # huey is untyped
    """Serialize Huey messages as JSON instead of pickle.

    Threat: a pickle from the queue is code. With Redis shared by many machines, anyone able to ``LPUSH`` to it
    could run code in every worker; a JSON message can only name a registered task and give it JSON arguments.
    """

    def _serialize(self, data: Any) -> bytes:
        if isinstance(data, Message):
            if data.on_complete is not None or data.on_error is not None or data.chord_config is not None:
                raise TypeError("zingyconn tasks do not use Huey pipelines, error handlers or chords.")
            data = {"message": {name: _encode(value) for name, value in data._asdict().items()}}
        return json.dumps(data, separators=(",", ":")).encode()

    def _deserialize(self, data: bytes) -> Any:
        decoded = json.loads(data)
        if isinstance(decoded, dict) and "message" in decoded:
            fields = {name: _decode(value) for name, value in decoded["message"].items()}
            fields["args"] = tuple(fields.get("args") or ())
            return Message(**fields)
        return decoded


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {_DATETIME_TAG: value.isoformat()}
    if isinstance(value, tuple):
        return list(value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {_DATETIME_TAG}:
        return dt.datetime.fromisoformat(value[_DATETIME_TAG])
    return value


def create_huey(settings: Settings, *, immediate: bool = False) -> Huey:
    """Return the Huey instance *settings* call for: ``RedisHuey`` for ``ZINGYCONN_QUEUE_URL``, else ``SqliteHuey``.

    Results are not stored in Huey: the outcome of every attempt is in the run history and the ``tasks`` table.
    """
    options: dict[str, Any] = {"results": False, "utc": True, "serializer": JsonSerializer(), "immediate": immediate}
    if settings.queue_url is not None:
        require_extra("redis", needed_for="The Redis task queue (ZINGYCONN_QUEUE_URL)")
        return RedisHuey(QUEUE_NAME, url=settings.queue_url, **options)
    create_private_file(settings.data_dir / "queue.db")  # task payloads are tenant data: not world-readable
    # timeout: SQLite's busy timeout, so many worker threads and processes share the file without "locked" errors.
    return SqliteHuey(QUEUE_NAME, filename=str(settings.data_dir / "queue.db"), timeout=30, **options)


def describe(settings: Settings) -> str:
    """Return where the queue lives, for start-up banners (a Redis password is never shown)."""
    if settings.queue_url is not None:
        return "Redis " + settings.queue_url.rsplit("@", 1)[-1]
    return f"SQLite {settings.data_dir / 'queue.db'}"


class EmbeddedConsumer(Consumer):  # type: ignore[misc]  # huey is untyped
    """A consumer that runs inside another host (``zingyconn serve``) and leaves the process's signals alone."""

    def _set_signal_handlers(self) -> None:
        """Leave signals to the host (uvicorn); it calls :meth:`TaskQueue.stop` on shutdown."""


def consumer_options(workers: int) -> dict[str, Any]:
    """Return the Huey consumer options of *workers* task threads with the cron scheduler on."""
    # Threads, not processes: a task thread mostly waits for its sandbox child (a process of its own), and
    # threads share one Runtime (one zygote). max_delay bounds how long an idle SQLite poller sleeps.
    return {
        "workers": workers,
        "worker_type": "thread",
        "periodic": True,
        "max_delay": 1.0,
        "check_worker_health": True,
    }
