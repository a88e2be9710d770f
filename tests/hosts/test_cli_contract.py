"""The command line as scripts use it: one exit-code table, --json, ids on stdout, one-line errors, light start-up.

Everything here goes through the real CLI: click's CliRunner, or a subprocess where a process boundary matters
(imports, ports, a second process holding the database).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from tests.servers import free_port, redis_server
from zingyconn.hosts.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
#: Modules ``zingyconn --help`` must not import: each costs milliseconds to hundreds of milliseconds of start-up.
HEAVY_MODULES = (
    "aiohttp", "huey", "redis", "sqlalchemy", "starlette", "uvicorn", "twilio", "httpx", "requests", "rich",
    "cryptography", "psycopg", "RestrictedPython", "zingyconn.hosts.demo", "zingyconn.twilio.emulator",
    "zingyconn.runtime", "logging", "zingyconn.hosts.logs",
)  # fmt: skip
#: Modules ``zingyconn run FILE`` must not import for a snippet that makes no Twilio call: what the host needs only
#: for a Twilio request (httpcore, the broker's transport), a connection's profile (loaded when a connection of its
#: type is opened), a connection command, purging, a snippet's import façades (the child builds them), an enqueue, a
#: server or another database (the child, not the host, imports twilio for the snippet), and ``cryptography`` while no
#: connection is opened (the store is empty). SQLAlchemy and the sandbox's host side are needed: the run opens the
#: store and compiles the snippet.
RUN_AVOIDS = (
    "aiohttp", "huey", "redis", "starlette", "uvicorn", "twilio", "httpx", "requests", "rich", "psycopg",
    "phonenumbers", "httpcore", "sqlalchemy.dialects.postgresql", "sqlalchemy.orm", "zingyconn.hosts.demo",
    "zingyconn.tasks", "zingyconn.twilio.emulator", "zingyconn.twilio.client", "zingyconn.twilio.commands",
    "zingyconn.twilio.verify", "zingyconn.snippet.environment", "zingyconn.twilio.profile", "zingyconn.http.profile",
    "zingyconn.purge", "sandbox.imports", "cryptography",
)  # fmt: skip


def _loaded_after(argv: list[str], avoid: tuple[str, ...], env: dict[str, str] | None = None) -> str:
    """Run ``zingyconn ARGV`` in a fresh interpreter; return its output and the modules of *avoid* it imported."""
    code = (
        "import sys; from zingyconn.hosts.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"avoid = {avoid!r}\n"
        "print('LOADED', sorted(m for m in sys.modules if any(m == a or m.startswith(a + '.') for a in avoid)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An empty data directory (store, key file, SQLite queue), nothing else configured."""
    return {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_DB_URL": "", "ZINGYCONN_QUEUE_URL": "",
            "ZINGYCONN_KEYS": "", "ZINGYCONN_TWILIO_BASE_URL": ""}  # fmt: skip


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


def _zingyconn(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zingyconn", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- start-up ------------------------------------------------------------------------------------------------------


def test_help_imports_no_heavy_module() -> None:
    """``zingyconn --help`` lists every command without importing the server, emulator, demo or database stack."""
    output = _loaded_after(["--help"], HEAVY_MODULES)

    assert "LOADED []" in output, output[-2000:]
    assert all(name in output for name in COMMANDS)


def test_run_imports_only_what_the_run_needs(env: dict[str, str], tmp_path: Path) -> None:
    """``zingyconn run FILE`` (a snippet without Twilio calls) imports no Twilio, queue, server or PostgreSQL code."""
    snippet = tmp_path / "one.py"
    snippet.write_text("print('ran')\nreturn 1\n")

    output = _loaded_after(["run", str(snippet)], RUN_AVOIDS, env)

    assert "ran" in output
    assert "LOADED []" in output, output[-2000:]


def test_every_command_is_listed_with_the_help_it_shows_when_loaded() -> None:
    """The one-line help in ``zingyconn --help`` is the loaded command's own short help."""
    context = click.Context(main)
    for name, (_, line) in COMMANDS.items():
        command = main.get_command(context, name)
        assert command is not None
        assert command.get_short_help_str(limit=200) == line


def test_every_list_show_and_add_command_has_json() -> None:
    """Every list/show/add (and create/enqueue) subcommand takes --json."""
    context = click.Context(main)
    missing = []
    for name in main.list_commands(context):
        group = main.get_command(context, name)
        if not isinstance(group, click.Group):
            continue
        for sub_name, sub in group.commands.items():
            if sub_name in {"list", "show", "add", "create", "enqueue"}:
                options = {opt for param in sub.params for opt in getattr(param, "opts", [])}
                if "--json" not in options:
                    missing.append(f"{name} {sub_name}")

    assert missing == []


# --- run ------------------------------------------------------------------------------------------------------------


def test_run_without_event_passes_an_empty_object(env: dict[str, str], tmp_path: Path) -> None:
    """--event defaults to {} (as the console and a task payload do), so `event.get(...)` works."""
    (tmp_path / "s.py").write_text("return {'event': event, 'name': event.get('name', 'nobody')}")

    result = _run(env, "run", str(tmp_path / "s.py"))

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"event": {}, "name": "nobody"}


def test_run_help_cites_an_example_that_exists() -> None:
    """Every examples/ file named in `run --help` exists."""
    help_text = CliRunner().invoke(main, ["run", "--help"]).stdout
    cited = re.findall(r"examples/\w+\.py", help_text)

    assert cited
    assert [path for path in cited if not (ROOT / path).is_file()] == []


def test_snippet_enqueue_works_under_run(env: dict[str, str], tmp_path: Path) -> None:
    """zingyConn.enqueue in `zingyconn run` queues a task in the configured queue; a worker would run it."""
    (tmp_path / "job.py").write_text("return event\n")
    (tmp_path / "s.py").write_text("return zingyConn.enqueue('job', {'n': 1})")
    assert _run(env, "scripts", "add", "job", "--file", str(tmp_path / "job.py")).exit_code == 0

    result = _run(env, "run", str(tmp_path / "s.py"))

    assert result.exit_code == 0, result.output
    task_id = json.loads(result.stdout)
    shown = json.loads(_run(env, "tasks", "show", task_id).stdout)
    assert (shown["state"], shown["payload"], shown["script"]) == ("queued", {"n": 1}, "job")


def test_deep_recursion_traceback_is_collapsed(env: dict[str, str], tmp_path: Path) -> None:
    """A RecursionError shows the repeated line three times, then a count, not a thousand copies."""
    (tmp_path / "s.py").write_text("def f(n):\n    return f(n + 1)\nreturn f(0)\n")

    result = _run(env, "run", str(tmp_path / "s.py"))

    assert result.exit_code == 1
    assert result.stderr.count("return f(n + 1)") == 3
    assert re.search(r"\[Previous line repeated \d+ more times\]", result.stderr)
    assert len(result.stderr) < 2000


@pytest.mark.parametrize(
    ("source", "options", "named"),
    [
        pytest.param("print('x' * 100000)", ["--limit", "output_bytes=1000"], "output_bytes=1000", id="output"),
        pytest.param("x = 'y' * (900 * 1024 * 1024)\nreturn len(x)", [], "memory_bytes=", id="memory"),
        pytest.param("while True:\n    pass", ["--limit", "wall_seconds=1"], "wall_seconds=1", id="time"),
    ],
)
def test_limit_errors_name_the_limit_and_how_to_raise_it(
    env: dict[str, str], tmp_path: Path, source: str, options: list[str], named: str
) -> None:
    """Hitting a limit says which limit, its value, and the option that raises it."""
    (tmp_path / "s.py").write_text(source)

    result = _run(env, "run", str(tmp_path / "s.py"), *options)

    assert result.exit_code == 1, result.stderr
    assert named in result.stderr
    assert f"--limit {named.split('=')[0]}=VALUE" in result.stderr


# --- ids on stdout, exit codes -----------------------------------------------------------------------------------


def test_tasks_enqueue_without_payload_queues_an_empty_object(env: dict[str, str], tmp_path: Path) -> None:
    """`tasks enqueue` with no --payload queues {} and prints the task id alone; --json prints the task."""
    (tmp_path / "job.py").write_text("return event\n")
    _run(env, "scripts", "add", "job", "--file", str(tmp_path / "job.py"))

    plain = _run(env, "tasks", "enqueue", "job")
    as_json = _run(env, "tasks", "enqueue", "job", "--json")

    assert re.fullmatch(r"[0-9a-f]{32}\n", plain.stdout), plain.output
    assert plain.stderr.startswith("Queued task ")
    assert json.loads(_run(env, "tasks", "show", plain.stdout.strip()).stdout)["payload"] == {}
    assert json.loads(as_json.stdout)["payload"] == {}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param(["hooks", "show", "nope"], 2, id="unknown-name"),
        pytest.param(["tasks", "enqueue", "nope"], 2, id="unknown-script"),
        pytest.param(["tasks", "enqueue", "job", "--payload", "{bad"], 2, id="bad-json"),
        pytest.param(["tasks", "enqueue", "job", "--payload", "@/nonexistent/p.json"], 2, id="unreadable-file"),
        pytest.param(["run", "/nonexistent.py"], 2, id="missing-file"),
        pytest.param(["hooks", "add", "x"], 2, id="missing-option"),
        pytest.param(["nosuchcommand"], 2, id="unknown-command"),
        pytest.param(["run", "FAILS"], 1, id="snippet-failed"),
    ],
)
def test_exit_codes_follow_the_table(env: dict[str, str], tmp_path: Path, args: list[str], code: int) -> None:
    """0 ok, 1 the run failed, 2 usage or input error; failures say `Error:`, never with a Python traceback."""
    (tmp_path / "job.py").write_text("return event\n")
    (tmp_path / "fails.py").write_text("return 1 / 0\n")
    _run(env, "scripts", "add", "job", "--file", str(tmp_path / "job.py"))
    args = [str(tmp_path / "fails.py") if arg == "FAILS" else arg for arg in args]

    result = _run(env, *args)

    assert result.exit_code == code, result.output
    assert "Error" in result.stderr
    assert 'File "' not in result.output  # a snippet's own traceback (its lines only) may show; ours never


# --- environmental faults --------------------------------------------------------------------------------------------


def test_data_dir_that_is_a_file_is_one_error_line(env: dict[str, str], tmp_path: Path) -> None:
    """A data directory path that is a file: one line naming it and what to do, exit 3."""
    (tmp_path / "file").write_text("not a directory")
    done = _zingyconn({**env, "ZINGYCONN_DATA_DIR": str(tmp_path / "file")}, "hooks", "list")

    assert done.returncode == 3
    line = _one_error_line(done.stderr)
    assert str(tmp_path / "file") in line
    assert "ZINGYCONN_DATA_DIR" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: the directory cannot be made unwritable")
def test_unwritable_data_dir_is_one_error_line(env: dict[str, str], tmp_path: Path) -> None:
    """A data directory that cannot be created: one line, exit 3."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = _zingyconn({**env, "ZINGYCONN_DATA_DIR": str(locked / "data")}, "hooks", "list")

    assert done.returncode == 3
    assert "Permission denied" in _one_error_line(done.stderr)


def test_postgresql_down_is_one_error_line(env: dict[str, str]) -> None:
    """A PostgreSQL that does not answer: one line naming the (password-masked) URL and what to check, exit 3."""
    url = f"postgresql+psycopg://app:s3cret@127.0.0.1:{free_port()}/zingyconn"
    done = _zingyconn({**env, "ZINGYCONN_DB_URL": url}, "hooks", "list")

    assert done.returncode == 3
    line = _one_error_line(done.stderr)
    assert "s3cret" not in line
    assert "ZINGYCONN_DB_URL" in line


@pytest.mark.redis
def test_redis_down_still_takes_the_task(env: dict[str, str], tmp_path: Path) -> None:
    """A Redis queue that went away: the task row is the queue of record, so enqueue stores it (exit 0, its id on
    stdout) and a consumer dispatches it once Redis is back."""
    (tmp_path / "job.py").write_text("return event\n")
    with redis_server() as url:
        queued = {**env, "ZINGYCONN_QUEUE_URL": url}
        assert _run(queued, "scripts", "add", "job", "--file", str(tmp_path / "job.py")).exit_code == 0
    done = _zingyconn(queued, "tasks", "enqueue", "job")

    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    shown = _zingyconn(queued, "tasks", "show", task_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "queued"


@pytest.mark.slow
def test_locked_database_is_one_error_line(env: dict[str, str], tmp_path: Path) -> None:
    """Another program holding the SQLite write lock past the busy timeout: one line, exit 3."""
    (tmp_path / "job.py").write_text("return event\n")
    assert _run(env, "hooks", "list").exit_code == 0  # creates the store
    holder = sqlite3.connect(tmp_path / "data" / "zingyconn.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        done = _zingyconn(env, "scripts", "add", "job", "--file", str(tmp_path / "job.py"), timeout=180)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert done.returncode == 3
    assert "locked" in _one_error_line(done.stderr)


# --- ports -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["serve", "--port", "PORT"], id="serve"),
        pytest.param(["serve", "--port", "PORT", "--workers", "2"], id="serve-workers"),
        pytest.param(["emulator", "--port", "PORT"], id="emulator"),
        pytest.param(["demo", "--port", "PORT", "--emulator-port", "0"], id="demo"),
    ],
)
def test_busy_port_is_reported_before_anything_starts(
    env: dict[str, str], tmp_path: Path, busy_port: int, args: list[str]
) -> None:
    """A busy port: no banner, no task run, one `Error:` line naming the port and the option, exit 3."""
    (tmp_path / "job.py").write_text("return event\n")
    assert _run(env, "scripts", "add", "job", "--file", str(tmp_path / "job.py")).exit_code == 0
    task_id = _run(env, "tasks", "enqueue", "job").stdout.strip()

    done = _zingyconn(env, *[str(busy_port) if arg == "PORT" else arg for arg in args])

    assert done.returncode == 3
    assert done.stdout == ""
    line = _one_error_line(done.stderr)
    assert f"127.0.0.1:{busy_port}" in line
    assert "--port" in line
    assert json.loads(_run(env, "tasks", "show", task_id).stdout)["state"] == "queued"  # no consumer ran it


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("ZINGYCONN_QUOTA_CALLS", "lots", "PER_SECOND/BURST"),
        ("ZINGYCONN_QUOTA_CALLS", "1/0", "PER_SECOND/BURST"),
        ("ZINGYCONN_QUOTA_FAXES", "1/20", "ZINGYCONN_QUOTA_VERIFICATIONS"),
        ("ZINGYCONN_QUOTA_HTTP", "20 per second", "PER_SECOND/BURST"),
    ],
)
def test_a_bad_quota_variable_is_one_error_line(
    env: dict[str, str], tmp_path: Path, name: str, value: str, said: str
) -> None:
    """A quota that is not PER_SECOND/BURST, or names no product, stops a run with one line naming the variable."""
    (tmp_path / "s.py").write_text("return 1")
    keys = "k1:" + base64.b64encode(bytes(32)).decode()  # a given key: no key-file notice on stderr
    done = _zingyconn({**env, "ZINGYCONN_KEYS": keys, name: value}, "run", str(tmp_path / "s.py"))

    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert name in line
    assert said in line
