"""One log stream: the worker's, Huey's and the access log's records in one format, JSON off a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from zingyconn.hosts.cli import main
from zingyconn.hosts.logs import ENV_LOG_FORMAT, configure_logging


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as it was (pytest's capture handlers included) after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _emit_samples() -> None:
    logging.getLogger("huey.consumer").info("Huey consumer started")
    fields = {"method": "POST", "path": "/hooks/acme/sms", "status": 200, "run_id": "r1"}
    logging.getLogger("zingyconn.access").info("POST /hooks/acme/sms 200", extra={"fields": fields})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("zingyconn.queue").exception("Task t1 could not run.")


def test_off_a_terminal_every_record_is_one_json_line(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Huey's, the access log's and our records are each one JSON object, fields and error included."""
    monkeypatch.delenv(ENV_LOG_FORMAT, raising=False)
    stream = io.StringIO()
    configure_logging(stream=stream)
    _emit_samples()

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]

    assert [(line["logger"], line["level"]) for line in lines] == [
        ("huey.consumer", "info"),
        ("zingyconn.access", "info"),
        ("zingyconn.queue", "error"),
    ]
    assert lines[1]["path"] == "/hooks/acme/sms"
    assert (lines[1]["status"], lines[1]["run_id"]) == (200, "r1")
    assert (lines[2]["error_type"], lines[2]["error"]) == ("ValueError", "boom")


def test_on_a_terminal_records_are_readable_lines(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the same records are `HH:MM:SS LEVEL logger: message key=value`, not JSON."""
    monkeypatch.delenv(ENV_LOG_FORMAT, raising=False)
    stream = _Terminal()
    configure_logging(stream=stream)
    _emit_samples()
    text = stream.getvalue()

    assert " INFO    huey.consumer: Huey consumer started" in text
    assert "zingyconn.access: POST /hooks/acme/sms 200  method=POST path=/hooks/acme/sms status=200" in text
    assert not text.lstrip().startswith("{")


def test_configuring_twice_adds_no_second_handler(restore_logging: None) -> None:
    """The server factory and the CLI may both configure: still one line per record."""
    stream = io.StringIO()
    configure_logging(stream=stream)
    configure_logging(stream=stream)
    logging.getLogger("zingyconn.test").info("once")

    assert stream.getvalue().count("once") == 1


@pytest.mark.slow
def test_worker_logs_a_failed_task_with_run_id_error_type_and_attempt(tmp_path: Path) -> None:
    """`zingyconn worker` (a real process): every stderr line is JSON, Huey's too; a failed task names its run."""
    env = {**os.environ, "ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_DB_URL": ""}
    env["ZINGYCONN_QUEUE_URL"] = ""
    env.pop(ENV_LOG_FORMAT, None)
    (tmp_path / "broken.py").write_text("return 1 / 0\n")
    runner = CliRunner()
    assert runner.invoke(main, ["keys", "new"], env=env).exit_code == 0  # the worker then has no key to announce
    added = runner.invoke(main, ["scripts", "add", "broken", "--file", str(tmp_path / "broken.py")], env=env)
    assert added.exit_code == 0, added.output
    task_id = runner.invoke(main, ["tasks", "enqueue", "broken"], env=env).stdout.strip()
    worker = subprocess.Popen(
        [sys.executable, "-m", "zingyconn", "worker", "--workers", "1"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while json.loads(runner.invoke(main, ["tasks", "show", task_id], env=env).stdout)["state"] != "failed":
            assert time.monotonic() < deadline, "the worker did not run the task"
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=90)
    shown = json.loads(runner.invoke(main, ["tasks", "show", task_id], env=env).stdout)

    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    failed = next(line for line in lines if line.get("task_id") == task_id and line["level"] == "error")
    assert (failed["run_id"], failed["error_type"], failed["attempt"]) == (shown["run_id"], "SnippetError", 1)
    assert any(line["logger"].startswith("huey") for line in lines)
