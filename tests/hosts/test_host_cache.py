"""The webhook host serves hooks and Auth Tokens from its cache, and another process's changes reach it within the
change counter's bound (``zingyconn.changes``), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hosts.live_server import ACCOUNT_SID, AUTH_TOKEN, LiveServer, live_server, sign
from zingyconn.catalog import Catalog
from zingyconn.changes import CHECK_SECONDS
from zingyconn.config import Settings
from zingyconn.runtime import Runtime
from zingyconn.twilio.profile import TwilioProfile

NEW_AUTH_TOKEN = "fedcba9876543210" * 2

#: Another process: rotates connection 'main' to a new Auth Token, or deletes hook 'open'.
ELSEWHERE = """
import sys
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.secrets.store import ConnectionStore
from zingyconn.twilio.profile import TwilioProfile

store = ConnectionStore.from_settings(Settings.from_env())
if sys.argv[1] == "rotate":
    store.put("acme", "main", TwilioProfile(account_sid=sys.argv[2], secret=sys.argv[3]))
else:
    Catalog(store.engine).delete_hook("acme", "open")
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def environ(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {"ZINGYCONN_DATA_DIR": str(tmp_path)}
    if request.param == "postgresql":
        env["ZINGYCONN_DB_URL"] = request.getfixturevalue("postgres_url")
    return env


@pytest.fixture
def server(environ: dict[str, str]) -> Iterator[LiveServer]:
    with Runtime(Settings.from_env(environ)) as runtime:
        runtime.store.put("acme", "main", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))
        catalog = Catalog(runtime.engine)
        catalog.put_hook("acme", "signed", "return event['form']['Body']", verify_with="main")
        catalog.put_hook("acme", "open", "return 'open'")
        with live_server(runtime) as live:
            yield live


def _elsewhere(environ: dict[str, str], *arguments: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZINGYCONN_")}
    subprocess.run([sys.executable, "-c", ELSEWHERE, *arguments], env={**env, **environ}, check=True, timeout=60)


def _signed(server: LiveServer, token: str) -> int:
    url, form = server.url("/hooks/acme/signed"), {"Body": "hi"}
    return httpx.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form, token=token)}).status_code


def test_a_rotated_auth_token_and_a_deleted_hook_stop_working_within_the_bound(
    server: LiveServer, environ: dict[str, str]
) -> None:
    """Once cached, a hook and its Auth Token change in another process: within CHECK_SECONDS the host sees it."""
    assert (_signed(server, AUTH_TOKEN), httpx.post(server.url("/hooks/acme/open")).status_code) == (200, 200)

    _elsewhere(environ, "rotate", ACCOUNT_SID, NEW_AUTH_TOKEN)
    _elsewhere(environ, "delete")
    time.sleep(CHECK_SECONDS)  # the bound: no request starting later may see the old hook or token

    assert _signed(server, AUTH_TOKEN) == 403
    assert _signed(server, NEW_AUTH_TOKEN) == 200
    assert httpx.post(server.url("/hooks/acme/open")).status_code == 404
