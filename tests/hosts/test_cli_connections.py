"""Tests of ``zingyconn connections ...`` and ``zingyconn keys ...`` through click's CliRunner."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.emulator import Emulator, frozen_state, running_emulator
from zingyconn.config import Settings
from zingyconn.hosts.cli import main
from zingyconn.secrets.keyring import Keyring, encode_key
from zingyconn.secrets.store import ConnectionStore
from zingyconn.twilio.emulator import Account, ApiKey
from zingyconn.twilio.profile import TwilioProfile

SID = "AC" + "12" * 16
TOKEN = "0badc0de" * 4
API_KEY = "SK" + "56" * 16
API_SECRET = "ApiKeySecret" * 2 + "12345678"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose data directory (store and key file) is empty."""
    return {"ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_KEYS": "", "ZINGYCONN_DB_URL": ""}


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)


def _add(env: dict[str, str], name: str = "primary", *extra: str, secret: str = TOKEN) -> Result:
    return _run(env, "connections", "add", name, "--account-sid", SID, *extra, stdin=secret + "\n")


def _store(env: dict[str, str]) -> ConnectionStore:
    return ConnectionStore.from_settings(Settings.from_env(env))


def test_add_reads_the_secret_from_stdin_and_never_prints_it(env: dict[str, str]) -> None:
    """add/list/show work end to end and no output contains the secret; show masks it."""
    added = _add(env)
    assert added.exit_code == 0, added.output
    assert added.stdout == "primary\n"  # the id alone on stdout; the sentence on stderr
    assert "Saved connection 'primary' in tenant 'default' (sealed with key 'k1')" in added.stderr
    assert "zingyconn connections test primary" in added.stderr
    listed = _run(env, "connections", "list")
    shown = _run(env, "connections", "show", "primary")
    assert listed.stdout.startswith("primary  twilio  AC12…1212")
    assert "secret:      ********" in shown.stdout
    assert "sealed with: key 'k1' (revision 1)" in shown.stdout
    for result in (added, listed, shown):
        assert TOKEN not in result.output
        assert SID not in result.output
    assert _store(env).get("default", "primary") == TwilioProfile(SID, None, TOKEN)


def test_first_use_says_where_the_key_file_was_created(env: dict[str, str], tmp_path: Path) -> None:
    """The embedded default key file is announced in the log stream the first time only, and is private."""
    first, second = _add(env, "a"), _add(env, "b")
    path = tmp_path / "data" / "keys"
    # stderr is not a terminal here, so the log stream is JSON: the notice is one of its lines, not a bare print.
    notices = [json.loads(line) for line in first.stderr.splitlines() if "created a master key" in line]
    assert [(notice["logger"], notice["level"]) for notice in notices] == [("zingyconn.secrets.keyring", "warning")]
    assert f"created a master key in {path} (mode 0600)" in notices[0]["message"]
    assert "created a master key" not in second.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_key_file_notice_is_readable_on_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    """On a terminal the same notice is a readable log line (``ZINGYCONN_LOG_FORMAT=text`` stands in for one)."""
    first = _add({**env, "ZINGYCONN_LOG_FORMAT": "text"}, "a")
    path = tmp_path / "data" / "keys"
    assert f"WARNING zingyconn.secrets.keyring: created a master key in {path} (mode 0600)" in first.stderr


def test_the_secret_cannot_be_given_on_the_command_line(env: dict[str, str]) -> None:
    """There is no option that takes the secret from argv."""
    result = _run(env, "connections", "add", "x", "--account-sid", SID, "--secret", TOKEN)
    assert result.exit_code == 2
    assert "No such option '--secret'" in result.output


def test_add_with_an_api_key_stores_the_key_secret(env: dict[str, str]) -> None:
    """--api-key makes the piped secret the API Key Secret."""
    api_key, secret = "SK" + "34" * 16, "AbCdEfGh" * 4
    result = _add(env, "keyed", "--api-key", api_key, secret=secret)
    assert result.exit_code == 0, result.output
    assert _store(env).get("default", "keyed") == TwilioProfile(SID, api_key, secret)
    assert "api_key:     SK34…3434" in _run(env, "connections", "show", "keyed").stdout


def test_add_reports_a_bad_sid_by_field_with_exit_code_2(env: dict[str, str]) -> None:
    """A malformed Account SID is refused (exit 2) with the field and where to find the right value."""
    result = _run(env, "connections", "add", "x", "--account-sid", "AC123", stdin=TOKEN + "\n")
    assert result.exit_code == 2
    assert "Error: account_sid must be 'AC' followed by 32 hex digits (5 characters given)." in result.stderr


def test_add_reports_a_bad_secret_without_echoing_it(env: dict[str, str]) -> None:
    """A malformed secret is refused (exit 2) by field and length, never echoed."""
    result = _add(env, secret="my-password-123")
    assert result.exit_code == 2
    assert "secret must be the Auth Token: 32 hex digits (15 characters given)" in result.stderr
    assert "my-password-123" not in result.output


def test_add_refuses_to_overwrite_without_replace(env: dict[str, str]) -> None:
    """Adding an existing name needs --replace, which then bumps the revision."""
    _add(env)
    refused = _add(env, secret="f" * 32)
    assert refused.exit_code == 2
    assert "already exists in tenant 'default'; pass --replace" in refused.output
    replaced = _add(env, "primary", "--replace", secret="f" * 32)
    assert "Replaced connection 'primary'" in replaced.stderr
    assert _store(env).get("default", "primary").to_json()["secret"] == "f" * 32


def test_tenants_are_separate_on_the_command_line(env: dict[str, str]) -> None:
    """--tenant selects whose connections are listed, shown and deleted."""
    _add(env, "primary", "--tenant", "acme")
    assert "has no connections" in _run(env, "connections", "list").stderr
    missing = _run(env, "connections", "show", "primary")
    assert missing.exit_code == 2
    assert "Error: Tenant 'default' has no connection named 'primary'." in missing.stderr
    deleted = _run(env, "connections", "delete", "primary", "--tenant", "acme")
    assert deleted.stderr == "Deleted connection 'primary' from tenant 'acme'.\n"
    assert _run(env, "connections", "show", "primary", "--tenant", "acme").exit_code == 2


def test_show_with_the_wrong_keys_fails_opaquely(env: dict[str, str]) -> None:
    """A store read with keys that did not seal it gives one opaque error (exit 1)."""
    _add(env)
    wrong = {**env, "ZINGYCONN_KEYS": encode_key("k1", bytes(32))}
    result = _run(wrong, "connections", "show", "primary")
    assert result.exit_code == 1
    assert "Error: Could not decrypt connection 'primary' (tenant 'default')" in result.stderr


def test_bad_zingyconn_keys_is_a_configuration_error(env: dict[str, str]) -> None:
    """A short key in ZINGYCONN_KEYS stops the command with exit 2 naming the key id."""
    bad = {**env, "ZINGYCONN_KEYS": "k5:" + base64.b64encode(b"x" * 16).decode()}
    result = _run(bad, "connections", "list")
    assert result.exit_code == 2
    assert "Master key 'k5' in ZINGYCONN_KEYS decodes to 16 bytes" in result.stderr


@pytest.fixture
def twilio(env: dict[str, str]) -> Iterator[tuple[Emulator, dict[str, str]]]:
    """The emulator with an account whose Auth Token is real-looking (32 hex), and env pointing at it."""
    state = frozen_state(accounts=[Account(SID, TOKEN)], api_keys=[ApiKey(API_KEY, API_SECRET, SID)])
    with running_emulator(state) as emulator:
        yield emulator, {**env, "ZINGYCONN_TWILIO_BASE_URL": emulator.base_url}


def test_connection_test_authenticates_against_the_emulator(twilio: tuple[Emulator, dict[str, str]]) -> None:
    """`connections test` makes one authenticated GET of the Messages list and reports success."""
    emulator, env = twilio
    _add(env, "live")
    result = _run(env, "connections", "test", "live")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"OK: connection 'live' authenticated to {emulator.base_url} as account AC12…1212 (Auth Token).\n"
    )
    assert [(r.method, r.path) for r in emulator.requests] == [("GET", f"/2010-04-01/Accounts/{SID}/Messages.json")]


def test_connection_test_works_with_an_api_key(twilio: tuple[Emulator, dict[str, str]]) -> None:
    """An API key connection authenticates as the key."""
    _, env = twilio
    _add(env, "keyed", "--api-key", API_KEY, secret=API_SECRET)
    result = _run(env, "connections", "test", "keyed")
    assert result.exit_code == 0, result.output
    assert "as API key SK56…5656 on account AC12…1212" in result.stdout


def test_connection_test_reports_rejected_credentials(twilio: tuple[Emulator, dict[str, str]]) -> None:
    """Wrong credentials make `connections test` fail with Twilio's status and what to do."""
    _, env = twilio
    _add(env, "live", secret="e" * 32)
    result = _run(env, "connections", "test", "live")
    assert result.exit_code == 1
    assert "Error: Twilio rejected connection 'live' (HTTP 401, code 20003)" in result.stderr
    assert "Check the secret" in result.stderr
    assert "e" * 32 not in result.output


def test_key_rotation_end_to_end_with_the_key_file(env: dict[str, str], tmp_path: Path) -> None:
    """keys new, keys rotate (with a progress bar) and keys retire leave every connection readable."""
    store = _store(env)
    for number in range(30):
        store.put("default", f"c{number:02}", TwilioProfile(SID, None, f"{number:032x}"))
    created = _run(env, "keys", "new")
    assert created.stdout == "k2\n"
    assert "Added key 'k2' as the primary key" in created.stderr
    assert "then run `zingyconn keys rotate`" in created.stderr
    path = tmp_path / "data" / "keys"
    assert Keyring.from_file(path).key_ids == ("k2", "k1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    early = _run(env, "keys", "retire", "k1")
    assert early.exit_code == 2
    assert "Key 'k1' still seals 30 connection record(s); run `zingyconn keys rotate` first." in early.stderr

    rotated = _run(env, "keys", "rotate")
    assert rotated.exit_code == 0, rotated.output
    assert "Re-sealing records" in rotated.stderr
    assert "30/30" in rotated.stderr
    assert "Re-sealed 30 record(s) under key 'k2'; 30 record(s) verified." in rotated.stdout
    assert "zingyconn keys retire k1" in rotated.stdout

    retired = _run(env, "keys", "retire", "k1")
    assert retired.stdout.startswith(f"Retired key 'k1': removed it from {path}.")
    assert Keyring.from_file(path).key_ids == ("k2",)
    assert _store(env).get("default", "c29").to_json()["secret"] == f"{29:032x}"
    assert "k2  primary  30 record(s)" in _run(env, "keys", "list").stdout


def test_keys_new_with_zingyconn_keys_prints_the_key_to_prepend(env: dict[str, str], tmp_path: Path) -> None:
    """With ZINGYCONN_KEYS the new key is printed (stdout) with instructions (stderr), and no file is written."""
    env = {**env, "ZINGYCONN_KEYS": encode_key("k1", bytes(range(32)))}
    result = _run(env, "keys", "new")
    key_id, _, encoded = result.stdout.strip().partition(":")
    assert key_id == "k2"
    assert len(base64.b64decode(encoded)) == 32
    assert "Prepend it to ZINGYCONN_KEYS on every machine" in result.stderr
    assert not (tmp_path / "data" / "keys").exists()


def test_keys_new_creates_the_key_file_when_there_is_none(env: dict[str, str], tmp_path: Path) -> None:
    """On a fresh data directory `keys new ID` creates the key file holding just that key."""
    result = _run(env, "keys", "new", "prod-2026")
    assert result.exit_code == 0, result.output
    assert Keyring.from_file(tmp_path / "data" / "keys").key_ids == ("prod-2026",)


def test_retire_with_zingyconn_keys_says_which_entry_to_remove(env: dict[str, str]) -> None:
    """With ZINGYCONN_KEYS, retire checks the store and tells the operator to edit the variable."""
    keys = f"{encode_key('k2', bytes(range(32)))},{encode_key('k1', bytes(range(1, 33)))}"
    result = _run({**env, "ZINGYCONN_KEYS": keys}, "keys", "retire", "k1")
    assert result.exit_code == 0, result.output
    assert "Remove the k1:... entry from ZINGYCONN_KEYS on every machine" in result.stdout


def test_rotate_names_records_it_cannot_decrypt_and_fails(env: dict[str, str]) -> None:
    """A record sealed with a key that is no longer configured is named, left alone, and rotate exits 1."""
    lost = {**env, "ZINGYCONN_KEYS": encode_key("k0", bytes(32))}
    _add(lost, "orphan")
    current = {**env, "ZINGYCONN_KEYS": encode_key("k1", bytes(range(32)))}
    _add(current, "fine")
    result = _run(current, "keys", "rotate")
    assert result.exit_code == 1
    assert "1 record(s) could not be decrypted and were left as they are: 'orphan' (tenant 'default')" in result.stderr
    assert "k0  MISSING from the keyring  1 record(s)" in _run(current, "keys", "list").stdout
