"""One log stream for every process: server, worker, Huey, uvicorn and the access log, through one formatter.

:func:`configure_logging` puts a single handler on the root logger, so every library's records (``huey``,
``uvicorn.error``, ``zingyconn.*``) come out the same way, one line each, on stderr:

- **JSON** (one object per line: ``ts``, ``level``, ``logger``, ``message``, the record's ``fields``, and
  ``error_type``/``error`` for an exception) when stderr is not a terminal: what log collectors read;
- **human-readable** (``HH:MM:SS LEVEL logger: message key=value ...``) on a terminal.

Code adds structured fields with ``logger.info("...", extra={"fields": {...}})``; the access log and the task
outcome logs do. ``ZINGYCONN_LOG_FORMAT=json|text`` overrides the choice.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Final

#: ``ZINGYCONN_LOG_FORMAT``: ``json`` or ``text``; unset chooses by whether stderr is a terminal.
ENV_LOG_FORMAT: Final = "ZINGYCONN_LOG_FORMAT"
#: Marks the handler this module installed, so configuring twice (server factory, then CLI) adds nothing.
_HANDLER_NAME: Final = "zingyconn-log-stream"


def record_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    """Return the structured fields a record carries (``extra={"fields": {...}}``), or an empty mapping."""
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``, its fields, and the error if any."""

    def format(self, record: logging.LogRecord) -> str:
        """Return *record* as one line of JSON (tracebacks become the ``traceback`` field, never extra lines)."""
        document: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info and record.exc_info[1] is not None:
            document["error_type"] = type(record.exc_info[1]).__name__
            document["error"] = str(record.exc_info[1])
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, separators=(",", ":"), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Return *record* as one readable line, followed by its traceback if it has one."""
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{key}={value}" for key, value in record_fields(record).items() if value is not None)
        line = f"{clock} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def wants_json(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """Return whether logs on *stream* should be JSON: ``ZINGYCONN_LOG_FORMAT`` if set, else not a terminal."""
    chosen = (os.environ if environ is None else environ).get(ENV_LOG_FORMAT, "").strip().lower()
    if chosen in {"json", "text"}:
        return chosen == "json"
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


class _StderrHandler(logging.StreamHandler[IO[str]]):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes (as :data:`logging.lastResort` does),
    so a host that swaps stderr (click's test runner, a daemon that redirects it) never gets a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        """Ignore the stream ``StreamHandler.__init__`` sets: the handler always writes to the current stderr."""


def configure_logging(*, stream: IO[str] | None = None, level: int = logging.INFO, access_log: bool = True) -> None:
    """Send every logger's records to *stream* (stderr) through one formatter; safe to call more than once.

    Args:
        stream: Where lines go (default ``sys.stderr``).
        level: The root level (INFO: start-up, task outcomes, requests).
        access_log: Whether ``zingyconn.access`` logs one line per request.
    """
    target = sys.stderr if stream is None else stream
    root = logging.getLogger()
    for installed in list(root.handlers):
        if installed.get_name() == _HANDLER_NAME:
            root.removeHandler(installed)
    handler: logging.StreamHandler[IO[str]] = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if wants_json(target) else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that bring their own handlers would print a second, differently formatted line: route them here.
    for name in ("huey", "huey.consumer", "uvicorn", "uvicorn.error", "zingyconn.access"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    logging.getLogger("zingyconn.access").setLevel(logging.INFO if access_log else logging.WARNING)
