"""Persistence across restarts (JSON and SQLite state files) and the ``zingyconn emulator`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from twilio.rest import Client

from tests.emulator import MAGIC_SENDER, RECIPIENT, frozen_state, running_emulator
from tests.servers import free_port, wait_for_port
from zingyconn.hosts.cli import main
from zingyconn.hosts.cli.emulator import banner, build_state
from zingyconn.twilio.emulator import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_API_KEY,
    DEFAULT_AUTH_TOKEN,
    EmulatorHttpClient,
    open_state_file,
)


@pytest.mark.parametrize("name", ["state.json", "state.db"])
def test_messages_survive_a_restart(tmp_path: Path, name: str) -> None:
    """A second emulator on the same state file serves the first one's messages, status and all."""
    with running_emulator(frozen_state(persistence=open_state_file(tmp_path / name))) as first:
        client = first.client()
        sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="keep me").sid
        first.state.advance(10)
        client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="newer")

    with running_emulator(frozen_state(persistence=open_state_file(tmp_path / name))) as second:
        client = second.client()
        kept = client.messages(sid).fetch()
        newest = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="newest")

        assert (kept.body, kept.status) == ("keep me", "delivered")
        assert [m.body for m in client.messages.list()] == ["newest", "newer", "keep me"]
        assert newest.sid != sid


def test_deleted_messages_stay_deleted_after_a_restart(tmp_path: Path) -> None:
    """Deletion is persisted too."""
    path = tmp_path / "state.json"
    with running_emulator(frozen_state(persistence=open_state_file(path))) as first:
        client = first.client()
        sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="gone").sid
        first.state.advance(10)
        client.messages(sid).delete()

    assert open_state_file(path).load() == []


def test_cli_state_uses_documented_defaults() -> None:
    """Without options the command serves the documented demo account and API key, and prints them."""
    state = build_state((), (), None)
    text = banner(state, "http://127.0.0.1:8765")

    assert list(state.directory.accounts) == [DEFAULT_ACCOUNT_SID]
    assert list(state.directory.api_keys) == [DEFAULT_API_KEY]
    assert DEFAULT_AUTH_TOKEN in text
    assert "http://127.0.0.1:8765/2010-04-01/Accounts/" in text


def test_cli_state_takes_accounts_and_keys() -> None:
    """--account SID:TOKEN and --api-key SK:SECRET:SID replace the defaults."""
    account, key = "AC" + "e" * 32, "SK" + "e" * 32
    state = build_state((f"{account}:tok",), (f"{key}:sec:{account}",), None)

    assert state.directory.accounts[account].auth_token == "tok"
    assert state.directory.api_keys[key].account_sid == account


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(["--account", "nocolon"], id="account-format"),
        pytest.param(["--account", "ACnothex:tok"], id="account-sid"),
        pytest.param(["--api-key", "SK" + "e" * 32 + ":sec"], id="key-format"),
        pytest.param(["--api-key", "SK" + "e" * 32 + ":sec:AC" + "f" * 32], id="key-of-unknown-account"),
    ],
)
def test_cli_rejects_bad_credentials_options(arguments: list[str]) -> None:
    """Malformed --account/--api-key values are configuration errors (exit 2) before anything is served."""
    result = CliRunner().invoke(main, ["emulator", *arguments])

    assert result.exit_code == 2
    assert "Error:" in result.output


@pytest.mark.slow
def test_cli_serves_the_emulator(tmp_path: Path) -> None:
    """``zingyconn emulator --port P --state F`` prints its URL and credentials and answers the twilio library."""
    port = free_port()
    command = [sys.executable, "-c", "from zingyconn.hosts.cli import main; main()", "emulator", "--port", str(port)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [*command, "--state", str(tmp_path / "state.db")], stdout=subprocess.PIPE, text=True, env=environment
    ) as process:
        try:
            wait_for_port(port)
            http_client = EmulatorHttpClient(f"http://127.0.0.1:{port}")
            client = Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=http_client)
            message = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="from the CLI")
        finally:
            process.terminate()
        output = process.communicate(timeout=10)[0]

    assert message.status == "queued"
    assert f"http://127.0.0.1:{port}" in output
    assert DEFAULT_AUTH_TOKEN in output
    assert [m["body"] for m in open_state_file(tmp_path / "state.db").load()] == ["from the CLI"]
