"""``zingyconn connections add --type http`` and ``connections test`` on an HTTP connection, through CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.servers import uvicorn_in_thread
from zingyconn.config import Settings
from zingyconn.hosts.cli import main
from zingyconn.http.echo import EchoRecorder, create_app
from zingyconn.http.profile import HttpProfile
from zingyconn.secrets.store import ConnectionStore

SECRET = "cli-s3cret/token+value"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose data directory (store and key file) is empty."""
    return {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_KEYS": "", "ZINGYCONN_DB_URL": ""}


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)


def test_add_list_show_and_test_an_http_connection(env: dict[str, str]) -> None:
    """The secret is read from stdin and sealed; list and show never print it; test GETs the first allowed prefix
    of the echo API with the credential."""
    recorder = EchoRecorder()
    with uvicorn_in_thread(create_app(recorder), name="echo") as port:
        base_url = f"http://127.0.0.1:{port}"
        added = _run(
            env, "connections", "add", "crm", "--type", "http", "--base-url", base_url, "--auth", "header:X-Api-Key",
            "--allow-method", "GET", "--allow-method", "post", "--allow-prefix", "/notes", "--local-test-target",
            stdin=SECRET + "\n",
        )  # fmt: skip
        listed = _run(env, "connections", "list")
        shown = _run(env, "connections", "show", "crm")
        tested = _run(env, "connections", "test", "crm")

    assert added.exit_code == 0, added.output
    assert listed.stdout.startswith("crm  http  updated")
    assert "base_url:    " + base_url in shown.stdout
    assert "secret:      ********" in shown.stdout
    assert tested.exit_code == 0, tested.output
    assert f"OK: connection 'crm' answered from {base_url}/notes (HTTP 200" in tested.stdout
    assert [(r.method, r.path, r.headers["x-api-key"]) for r in recorder.requests] == [("GET", "/notes", SECRET)]
    for result in (added, listed, shown, tested):
        assert SECRET not in result.output
    profile = ConnectionStore.from_settings(Settings.from_env(env)).get("default", "crm")
    assert profile == HttpProfile(
        base_url=base_url,
        auth="header:X-Api-Key",
        secret=SECRET,
        allowed_methods=("GET", "POST"),
        allowed_prefixes=("/notes",),
        local_test_target=True,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-url", "http://api.example", "--auth", "bearer"], "base_url must be an https:// URL"),
        (["--base-url", "https://127.0.0.1", "--auth", "bearer"], "only a connection marked --local-test-target"),
        (["--base-url", "https://api.example", "--auth", "cookie"], "auth must be one of bearer, basic"),
        (["--base-url", "https://api.example", "--auth", "header:Host"], "set by the host itself"),
        (["--base-url", "https://api.example", "--auth", "bearer", "--allow-method", "TRACE"], "allowed_methods"),
        (["--base-url", "https://api.example", "--auth", "bearer", "--allow-prefix", "/a/../b"], "allowed prefix"),
        (["--auth", "bearer"], "--type http takes --base-url and --auth"),
    ],
)
def test_bad_options_are_refused_before_the_secret_is_read(env: dict[str, str], args: list[str], message: str) -> None:
    """Each mistake is a one-line error naming the option, with no traceback; nothing is stored."""
    result = _run(env, "connections", "add", "crm", "--type", "http", *args, stdin=SECRET + "\n")
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert ConnectionStore.from_settings(Settings.from_env(env)).list("default") == []


def test_testing_an_unreachable_api_fails_with_one_line(env: dict[str, str]) -> None:
    """A closed port: exit non-zero with what failed, never the secret (here carried in the query string)."""
    _run(
        env, "connections", "add", "down", "--type", "http", "--base-url", "http://127.0.0.1:9", "--auth",
        "query:key", "--local-test-target", stdin=SECRET + "\n",
    )  # fmt: skip
    result = _run(env, "connections", "test", "down")
    assert result.exit_code != 0
    assert result.output.startswith("Error: ")
    assert SECRET not in result.output
