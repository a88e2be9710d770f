"""Connection commands in the run history: who, what (masked), outcome, duration, Twilio request ids.

Through the CLI (``zingyconn command``, then ``zingyconn runs list|show``) and the HTTP command API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator
from tests.hosts.live_server import LiveServer, live_server
from zingyconn.config import Settings
from zingyconn.hosts.cli import main
from zingyconn.runtime import Runtime
from zingyconn.secrets.tokens import TokenStore, token_id
from zingyconn.twilio.profile import TwilioProfile


@pytest.fixture
def env(tmp_path: Path, emulator: Emulator) -> dict[str, str]:
    """A store in a temporary directory whose tenant 'acme' has connection 'main' on the emulator."""
    environ = {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_TWILIO_BASE_URL": emulator.base_url}
    with Runtime(Settings.from_env(environ)) as runtime:
        profile = TwilioProfile(account_sid=emulator.account_sid, api_key=emulator.api_key, secret=emulator.api_secret)
        runtime.store.put("acme", "main", profile)
    return environ


def _cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def _runs(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = _cli(env, "runs", "list", "--tenant", "acme", *args, "--json")
    assert result.exit_code == 0, result.output
    runs: list[dict[str, Any]] = json.loads(result.stdout)
    return runs


def test_a_cli_send_is_a_command_run_with_actor_inputs_outcome_and_request_id(
    env: dict[str, str], emulator: Emulator
) -> None:
    """`zingyconn command ... sendMessage` is listed as a command run: cli actor, inputs, result, Twilio request id."""
    inputs = {"toPhone": RECIPIENT, "fromPhone": MAGIC_SENDER, "msg": "hello audit"}
    sent = _cli(env, "command", "main", "sendMessage", "--tenant", "acme", "--input", json.dumps(inputs))
    assert sent.exit_code == 0, sent.output
    sid = json.loads(sent.stdout)["sid"]

    (run,) = _runs(env, "--kind", "command")
    assert run["kind"] == "command"
    assert run["name"] == "sendMessage"
    assert run["status"] == "ok"
    assert run["tenant"] == "acme"
    assert run["event"]["actor"].startswith("cli:")
    assert run["event"]["connection"] == "main"
    assert run["event"]["inputs"] == inputs
    assert run["result"]["sid"] == sid
    assert run["duration_ms"] > 0
    (call,) = run["egress"]
    assert call["status"] == 201
    assert call["request_id"].startswith("RQ")
    shown = _cli(env, "runs", "show", run["id"], "--json")
    assert json.loads(shown.stdout) == run
    assert _cli(env, "runs", "list", "--tenant", "acme").stdout.split()[0] == run["id"]
    assert _runs(env, "--kind", "webhook") == []


def test_a_refused_command_is_recorded_as_failed(env: dict[str, str]) -> None:
    """A command that fails (bad input: nothing was sent) is still in the history, failed, with the error."""
    failed = _cli(env, "command", "main", "sendMessage", "--tenant", "acme", "--input", '{"toPhone": "nope"}')
    assert failed.exit_code == 2

    (run,) = _runs(env, "--kind", "command", "--status", "failed")
    assert run["error"]["type"] == "InvalidCommandError"
    assert run["egress"] == []


def test_runs_list_since_and_unknown_ids_have_clear_errors(env: dict[str, str]) -> None:
    """--since takes durations or ISO times; a bad one, or an unknown run id, is a one-line error with exit 2/1."""
    _cli(env, "command", "main", "listMessages", "--tenant", "acme")
    assert len(_runs(env, "--since", "1h")) == 1
    assert _runs(env, "--since", "2999-01-01T00:00") == []
    bad = _cli(env, "runs", "list", "--tenant", "acme", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "--since must be a duration" in bad.stderr
    missing = _cli(env, "runs", "show", "run_nope")
    assert missing.exit_code != 0
    assert "No run has id 'run_nope'" in missing.stderr
    assert "Traceback" not in bad.output + missing.output


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[LiveServer]:
    """A live server on the env's store."""
    with Runtime(Settings.from_env(env)) as runtime, live_server(runtime) as live:
        yield live


def test_an_api_send_names_the_token_and_masks_the_connection_secret(server: LiveServer, emulator: Emulator) -> None:
    """The HTTP command API records the token's id (never the token); secrets in inputs are masked."""
    token = TokenStore(server.runtime.engine).create("acme")
    body = {"fromPhone": MAGIC_SENDER, "toPhone": RECIPIENT, "msg": f"leak {emulator.api_secret}"}
    response = httpx.post(
        server.url("/api/v1/connections/main/commands/sendMessage"),
        json=body,
        headers={"Authorization": f"Bearer {token}", "X-Zingy-Flow": "cloud", "Idempotency-Key": "order-7"},
    )
    assert response.status_code == 200, response.text

    (run,) = server.runtime.history.list("acme", kind="command")
    assert run.event["actor"] == f"token:{token_id(token)}"
    assert run.event["idempotency_key"] == "order-7"
    assert run.event["inputs"]["msg"] == "leak ****"
    stored = json.dumps(run.to_json())
    assert token not in stored
    assert emulator.api_secret not in stored
    assert run.egress[0]["request_id"].startswith("RQ")


def test_the_console_lists_and_shows_command_runs(env: dict[str, str], emulator: Emulator) -> None:
    """The console's run history, filtered on kind `command`, lists a command run from its own runner, by operator."""
    from zingyconn.hosts.composition import default_mounts  # the console as `serve` mounts it

    with (
        Runtime(Settings.from_env(env)) as runtime,
        live_server(runtime, mounts=default_mounts(runtime, admin_token="operator-token")) as live,
        httpx.Client(base_url=live.base_url) as browser,
    ):
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/console/login").text)
        assert csrf is not None
        browser.post("/console/login", data={"token": "operator-token", "csrf_token": csrf.group(1)})
        page = browser.get("/console/t/acme/commands?command=listMessages")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        ran = browser.post(
            "/console/t/acme/commands",
            data={"csrf_token": csrf.group(1), "command": "listMessages", "connection": "main", "limit": "5"},
        )
        assert ran.status_code == 200, ran.text

        (run,) = runtime.history.list("acme", kind="command")
        assert run.event["actor"] == "console:operator"
        listed = browser.get("/console/t/acme/runs?kind=command")
        assert run.id in listed.text
        assert "No runs match" not in listed.text
        shown = browser.get(f"/console/t/acme/runs/{run.id}")
        assert shown.status_code == 200
        assert "listMessages" in shown.text
        assert 'id="replay"' not in shown.text
