"""Tests of ``zingyconn scripts ...`` and ``zingyconn tasks ...`` through click's CliRunner (no worker runs here)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from zingyconn.config import Settings
from zingyconn.hosts.cli import main
from zingyconn.tasks.queue import TaskQueue


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with an empty data directory (store and SQLite queue)."""
    return {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_DB_URL": "", "ZINGYCONN_QUEUE_URL": ""}


@pytest.fixture
def snippet(tmp_path: Path) -> Path:
    """A script file."""
    path = tmp_path / "digest.py"
    path.write_text("log.info('digest', n=event.get('n'))\nreturn event\n")
    return path


def _run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_scripts_add_list_show_delete(env: dict[str, str], snippet: Path) -> None:
    """A script with a cron schedule is saved, listed, shown (as text and JSON) and deleted."""
    added = _run(env, "scripts", "add", "digest", "--file", str(snippet), "--cron", "0 7 * * 1-5")
    assert added.exit_code == 0, added.output
    assert added.stdout == "digest\n"
    assert (
        added.stderr == "Saved script 'digest' in tenant 'default' as version 1; it runs on cron '0 7 * * 1-5' (UTC).\n"
    )
    assert _run(env, "scripts", "list").stdout.startswith("digest                         0 7 * * 1-5")
    shown = json.loads(_run(env, "scripts", "show", "digest", "--json").stdout)
    assert (shown["cron"], shown["source"]) == ("0 7 * * 1-5", snippet.read_text())
    assert "return event" in _run(env, "scripts", "show", "digest").stdout
    assert _run(env, "scripts", "delete", "digest").exit_code == 0
    assert "has no scripts" in _run(env, "scripts", "list").stderr


def test_the_hints_of_scripts_are_commands_that_work_as_printed(env: dict[str, str], snippet: Path) -> None:
    """``scripts add`` of an on-demand script names the enqueue command for its tenant; run as printed, it queues a
    task of that script in that tenant. An empty ``scripts list`` names the add command for its tenant."""
    empty = _run(env, "scripts", "list", "--tenant", "acme")
    assert "zingyconn scripts add NAME --file F --tenant acme" in empty.stderr
    added = _run(env, "scripts", "add", "digest", "--file", str(snippet), "--tenant", "acme")
    hint = re.search(r"on demand: (zingyconn [^.]+)\.", added.stderr)
    assert hint is not None, added.stderr

    queued = _run(env, *shlex.split(hint.group(1))[1:])

    assert queued.exit_code == 0, queued.output
    record = TaskQueue.from_settings(Settings.from_env(env)).store.get(queued.stdout.strip())
    assert (record.tenant, record.script) == ("acme", "digest")


def test_scripts_add_refuses_a_bad_cron_naming_the_field(env: dict[str, str], snippet: Path) -> None:
    """A cron expression with an hour of 25 is refused (exit 2) with the field named, and nothing is saved."""
    result = _run(env, "scripts", "add", "digest", "--file", str(snippet), "--cron", "0 25 * * *")
    assert result.exit_code == 2
    assert "Cron expression '0 25 * * *' is not valid" in result.stderr
    assert "has no scripts" in _run(env, "scripts", "list").stderr


def test_schedules_list_shows_the_zone_and_next_runs(env: dict[str, str], snippet: Path) -> None:
    """A script saved with --tz is shown by `scripts show` and `schedules list` with its zone and next runs."""
    added = _run(
        env, "scripts", "add", "digest", "--file", str(snippet), "--cron", "0 9 * * MON-FRI", "--tz", "Asia/Tokyo"
    )
    bad = _run(env, "scripts", "add", "other", "--file", str(snippet), "--cron", "@daily", "--tz", "Mars/Olympus")
    _run(env, "scripts", "add", "on-demand", "--file", str(snippet))

    listed = json.loads(_run(env, "schedules", "list", "--count", "2", "--json").stdout)
    text = _run(env, "schedules", "list").stdout
    shown = _run(env, "scripts", "show", "digest").stdout

    assert "(Asia/Tokyo)" in added.stderr
    assert (bad.exit_code, "Time zone 'Mars/Olympus' is unknown" in bad.stderr) == (2, True)
    [schedule] = listed
    assert (schedule["name"], schedule["cron"], schedule["timezone"]) == ("digest", "0 9 * * MON-FRI", "Asia/Tokyo")
    assert len(schedule["next_runs"]) == 2
    assert all(run.endswith("T09:00:00+09:00") for run in schedule["next_runs"])
    assert text.startswith("digest ")
    assert "JST" in text
    assert "cron:    0 9 * * MON-FRI (Asia/Tokyo)" in shown
    assert "next:    " in shown


def test_tasks_enqueue_records_a_queued_task(env: dict[str, str], snippet: Path) -> None:
    """enqueue prints the task id; list and show find it queued with its payload."""
    _run(env, "scripts", "add", "digest", "--file", str(snippet))
    result = _run(env, "tasks", "enqueue", "digest", "--payload", '{"n": 3}')
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    assert result.stdout == f"{task_id}\n"  # the id alone, for `id=$(zingyconn tasks enqueue ...)`
    assert result.stderr.startswith(f"Queued task {task_id} (script 'digest', tenant 'default') on SQLite ")
    assert task_id in _run(env, "tasks", "list", "--state", "queued").stdout
    shown = json.loads(_run(env, "tasks", "show", task_id).stdout)
    assert (shown["state"], shown["payload"], shown["source"], shown["runs"]) == ("queued", {"n": 3}, "cli", [])
    queue = TaskQueue.from_settings(Settings.from_env(env))
    assert queue.store.get(task_id).dispatched_at is None  # a worker's dispatcher puts it on the queue
    assert queue.huey.pending_count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["tasks", "enqueue", "nope"], "Tenant 'default' has no script named 'nope'.", id="no-script"),
        pytest.param(["tasks", "enqueue", "digest", "--payload", "{"], "--payload is not valid JSON", id="bad-json"),
        pytest.param(["tasks", "rerun", "run_unknown"], "There is no task or task run with id", id="no-run"),
    ],
)
def test_tasks_errors_are_one_line(env: dict[str, str], snippet: Path, args: list[str], message: str) -> None:
    """Bad task commands end in one `Error: ...` line, not a traceback."""
    _run(env, "scripts", "add", "digest", "--file", str(snippet))
    result = _run(env, *args)
    assert result.exit_code in (1, 2)
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr


def test_tasks_rerun_refuses_a_task_that_has_not_failed(env: dict[str, str], snippet: Path) -> None:
    """Only failed tasks can be re-run."""
    _run(env, "scripts", "add", "digest", "--file", str(snippet))
    task_id = _run(env, "tasks", "enqueue", "digest").stdout.strip()
    result = _run(env, "tasks", "rerun", task_id)
    assert result.exit_code == 2
    assert f"Task {task_id!r} is queued; only failed or cancelled tasks can be re-run." in result.stderr


def test_tasks_cancel_then_rerun(env: dict[str, str], snippet: Path) -> None:
    """A queued task is cancelled (listed as cancelled), cannot be cancelled twice, and can be queued again."""
    _run(env, "scripts", "add", "digest", "--file", str(snippet))
    task_id = _run(env, "tasks", "enqueue", "digest").stdout.strip()

    cancelled = _run(env, "tasks", "cancel", task_id)
    listed = json.loads(_run(env, "tasks", "list", "--state", "cancelled", "--json").stdout)
    twice = _run(env, "tasks", "cancel", task_id)
    rerun = _run(env, "tasks", "rerun", task_id)

    assert cancelled.exit_code == 0, cancelled.output
    assert [task["id"] for task in listed] == [task_id]
    assert (twice.exit_code, "is cancelled; only queued or retrying tasks can be cancelled" in twice.stderr) == (
        2,
        True,
    )
    assert rerun.exit_code == 0, rerun.output


@pytest.mark.parametrize("family", ["scripts", "hooks"])
def test_a_limit_without_a_value_is_refused_before_saving(env: dict[str, str], snippet: Path, family: str) -> None:
    """``--limit NAME`` without ``=VALUE`` is a usage error naming the option, as for ``zingyconn run``."""
    result = _run(env, family, "add", "digest", "--file", str(snippet), "--limit", "wall_seconds")
    assert result.exit_code == 2
    assert "'wall_seconds' is not NAME=VALUE" in result.output
    assert "digest" not in _run(env, family, "list").output
