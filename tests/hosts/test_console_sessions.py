"""Console sessions live in the database: sign-out, token revocation and timeouts end them; sign-in is throttled;
every change made through the console is in the audit trail (console page and ``zingyconn audit list --json``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.hosts.live_console import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OPERATOR_TOKEN,
    Console,
    csrf_of,
    live_console,
    sign_in,
)
from zingyconn.catalog import Catalog
from zingyconn.database import create_engine
from zingyconn.hosts.console.auth import CSRF_FIELD
from zingyconn.secrets.tokens import TokenStore


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """The server with a small sign-in budget: 3 attempts a minute per client, 5 in total."""
    with live_console(tmp_path, ZINGYCONN_LOGINS_PER_MINUTE_PER_CLIENT="3", ZINGYCONN_LOGINS_PER_MINUTE="5") as live:
        yield live


def _signed_in(browser: httpx.Client, path: str = "/console/t/acme/hooks") -> bool:
    response = browser.get(path)
    assert response.status_code in (200, 303), response.text
    return response.status_code == 200


def _copy(browser: httpx.Client, console: Console) -> httpx.Client:
    """Return a second client holding a copy of *browser*'s cookies (a stolen cookie)."""
    thief = console.browser("203.0.113.9")
    thief.cookies.update(browser.cookies)
    return thief


def test_revoking_the_token_ends_a_live_session_and_its_copied_cookie(console: Console) -> None:
    """After `zingyconn tokens revoke`, the session made with the token (and a copy of its cookie) is signed out."""
    token = TokenStore(console.runtime.engine).create("acme", label="console")
    with console.browser() as browser:
        assert sign_in(browser, token).status_code == 303
        thief = _copy(browser, console)
        runner = thief.get("/console/t/acme/runner")
        assert (_signed_in(browser), runner.status_code) == (True, 200)

        token_id = TokenStore(console.runtime.engine).list("acme")[0].token_id
        console.cli("tokens", "revoke", token_id, "--tenant", "acme")

        save = {CSRF_FIELD: csrf_of(runner.text), "action": "save", "save_name": "late", "source": "return 1"}
        refused = thief.post("/console/t/acme/runner", data=save)
        assert (_signed_in(browser), _signed_in(thief), refused.status_code) == (False, False, 303)
        assert "/console/login" in refused.headers["location"]
        assert Catalog(console.runtime.engine).list_hooks("acme") == []
        thief.close()


def test_signing_out_ends_every_copy_of_the_cookie(console: Console) -> None:
    """Sign-out deletes the server-side session: a cookie copied before it no longer works."""
    with console.browser() as browser:
        sign_in(browser, OPERATOR_TOKEN)
        thief = _copy(browser, console)
        assert _signed_in(thief)

        page = browser.get("/console/t/acme/hooks").text
        assert browser.post("/console/logout", data={CSRF_FIELD: csrf_of(page)}).status_code == 303

        assert (_signed_in(browser), _signed_in(thief)) == (False, False)
        thief.close()


def test_idle_and_absolute_timeouts_end_sessions(console: Console) -> None:
    """30 minutes without a request ends a session; 8 hours after sign-in it ends however active it was."""
    with console.browser() as idle, console.browser() as busy:
        sign_in(idle, OPERATOR_TOKEN)
        console.clock.advance(29 * 60)
        assert _signed_in(idle)  # activity resets the idle timer
        console.clock.advance(29 * 60)
        assert _signed_in(idle)
        console.clock.advance(30 * 60)
        assert not _signed_in(idle)

        sign_in(busy, OPERATOR_TOKEN)
        for _ in range(23):  # a request every 20 minutes: never idle
            console.clock.advance(20 * 60)
            assert _signed_in(busy)
        console.clock.advance(20 * 60)  # 8 h since sign-in
        assert not _signed_in(busy)


def test_sign_in_is_throttled_per_client_and_in_total(console: Console) -> None:
    """Past the per-client budget, even the right token gets 429 with Retry-After; other clients share a total."""
    with console.browser("198.51.100.1") as guesser, console.browser("198.51.100.2") as other:
        answers = [sign_in(guesser, f"guess-{n}").status_code for n in range(3)]
        throttled = sign_in(guesser, OPERATOR_TOKEN)
        assert (answers, throttled.status_code) == ([401, 401, 401], 429)
        assert int(throttled.headers["retry-after"]) == 20  # 3 a minute: one more every 20 s
        assert "Too many sign-in attempts" in throttled.text
        assert not _signed_in(guesser)

        assert [sign_in(other, f"guess-{n}").status_code for n in range(2)] == [401, 401]
        assert sign_in(other, OPERATOR_TOKEN).status_code == 429  # the console-wide 5 a minute are spent

        console.clock.advance(60)
        assert sign_in(guesser, OPERATOR_TOKEN).status_code == 303
        assert _signed_in(guesser)


def test_console_changes_are_audited_without_secrets(console: Console) -> None:
    """Connection and hook changes and sign-in/out are audit rows (who, tenant, what, when) in the console and CLI."""
    token = TokenStore(console.runtime.engine).create("acme", label="auditor")
    token_id = TokenStore(console.runtime.engine).list("acme")[0].token_id
    with console.browser() as browser:
        sign_in(browser, token)
        page = browser.get("/console/t/acme/connections").text
        connection = {CSRF_FIELD: csrf_of(page), "name": "main", "account_sid": ACCOUNT_SID, "secret": AUTH_TOKEN}
        assert browser.post("/console/t/acme/connections/save", data=connection).status_code == 303
        save = {
            CSRF_FIELD: csrf_of(page),
            "action": "save",
            "save_kind": "hook",
            "save_name": "sms",
            "source": "return 1",
        }
        assert browser.post("/console/t/acme/runner", data=save).status_code == 303
        console.clock.advance(5)
        assert browser.post("/console/t/acme/hook/sms/delete", data={CSRF_FIELD: csrf_of(page)}).status_code == 303
        audit_page = browser.get("/console/t/acme/audit").text
        browser.post("/console/logout", data={CSRF_FIELD: csrf_of(page)})

    events = json.loads(console.cli("audit", "list", "--tenant", "acme", "--json"))
    actions = [(e["action"], e["target"]) for e in reversed(events)]
    assert actions == [
        ("session.start", None),
        ("connection.save", "main"),
        ("hook.save", "sms"),
        ("hook.delete", "sms"),
        ("session.end", None),
    ]
    assert {e["actor"] for e in events} == {f"token {token_id}"}
    assert {e["client"] for e in events} == {"198.51.100.7"}
    assert events[1]["at"] == console.clock.now  # the delete came 5 s after the saves
    for secret in (AUTH_TOKEN, token):
        assert secret not in json.dumps(events)
        assert secret not in audit_page
    assert re.findall(r"connection\.save|hook\.save|hook\.delete", audit_page) == [
        "hook.delete",
        "hook.save",
        "connection.save",
    ]
    assert "connection.save" in console.cli("audit", "list")


def test_a_store_made_before_sessions_gains_their_tables(tmp_path: Path) -> None:
    """A store made before sessions (no console_sessions, no audit_events) gains them when it is next opened."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE console_sessions"))
        conn.execute(sa.text("DROP TABLE audit_events"))
        conn.execute(sa.text("DELETE FROM schema_version WHERE version > 1"))
    engine.dispose()

    engine = create_engine(url)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()

    assert {"console_sessions", "audit_events"} <= tables
