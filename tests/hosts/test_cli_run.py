"""``zingyconn run FILE``: output formats and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from zingyconn.hosts.cli import main


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own data directory (store, key file), never the working directory's."""
    monkeypatch.setenv("ZINGYCONN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ZINGYCONN_DB_URL", raising=False)
    monkeypatch.delenv("ZINGYCONN_KEYS", raising=False)


def _snippet(tmp_path: Path, source: str) -> str:
    path = tmp_path / "snippet.py"
    path.write_text(source)
    return str(path)


def test_json_output_is_the_run_result(tmp_path: Path) -> None:
    """--json prints exactly one RunResult object."""
    file = _snippet(tmp_path, "print('hi')\nreturn {'x': event['x'] * 2}")
    result = CliRunner().invoke(main, ["run", file, "--event", '{"x": 21}', "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("ok", "result", "stdout", "error")} == {
        "ok": True,
        "result": {"x": 42},
        "stdout": "hi\n",
        "error": None,
    }


def test_plain_output_prints_stdout_then_the_value(tmp_path: Path) -> None:
    """Without --json the snippet's stdout comes first, then the value as JSON."""
    file = _snippet(tmp_path, "print('hi')\nreturn [1]")
    result = CliRunner().invoke(main, ["run", file])
    assert (result.exit_code, result.stdout) == (0, "hi\n[\n  1\n]\n")


def test_event_from_file_and_failed_run_exit_1(tmp_path: Path) -> None:
    """@FILE reads the event; a failing snippet exits 1 and shows the error with its line."""
    (tmp_path / "event.json").write_text('{"x": 0}')
    file = _snippet(tmp_path, "return 1 / event['x']")
    result = CliRunner().invoke(main, ["run", file, "--event", f"@{tmp_path / 'event.json'}"])
    assert result.exit_code == 1
    assert "Error: ZeroDivisionError: division by zero (line 1)" in result.stderr


def test_compile_error_lists_every_line(tmp_path: Path) -> None:
    """A snippet that does not compile exits 1 and lists each policy error."""
    file = _snippet(tmp_path, "a = _b_\nc = d.__e__")
    result = CliRunner().invoke(main, ["run", file])
    assert result.exit_code == 1
    assert result.stderr.count("  Line ") == 2


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    """Bad JSON, an unknown limit or a missing file is a usage error."""
    file = _snippet(tmp_path, "return 1")
    runner = CliRunner()
    assert runner.invoke(main, ["run", file, "--event", "{"]).exit_code == 2
    assert runner.invoke(main, ["run", file, "--limit", "nope=1"]).exit_code == 2
    assert runner.invoke(main, ["run", str(tmp_path / "missing.py")]).exit_code == 2


def test_limit_override_applies(tmp_path: Path) -> None:
    """--limit output_bytes=... caps the output of this run."""
    file = _snippet(tmp_path, "print('x' * 100)")
    result = CliRunner().invoke(main, ["run", file, "--limit", "output_bytes=10", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["type"] == "OutputLimitExceededError"
