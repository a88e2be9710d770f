"""The console's versions pages: history per hook, a diff of two versions, and an audited, CSRF-checked rollback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts.live_console import OPERATOR_TOKEN, Console, csrf_of, live_console, sign_in
from zingyconn.hosts.console.auth import CSRF_FIELD


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """A live console on a fresh store."""
    with live_console(tmp_path) as live:
        yield live


def test_save_twice_then_history_diff_and_rollback(console: Console) -> None:
    """Two saves from the runner make v1 and v2 by the operator; the diff shows the change; rollback makes v3."""
    with console.browser() as browser:
        assert sign_in(browser, OPERATOR_TOKEN).status_code == 303
        for body, message in (("return 'one'", "first"), ("return 'two'", "")):
            page = browser.get("/console/t/acme/runner").text
            form = {CSRF_FIELD: csrf_of(page), "action": "save", "save_kind": "hook", "save_name": "sms"}
            saved = browser.post("/console/t/acme/runner", data={**form, "source": body, "message": message})
            assert saved.status_code == 303, saved.text

        history = browser.get("/console/t/acme/hook/sms/versions")
        listed = browser.get("/console/t/acme/hooks").text
        forged = browser.post("/console/t/acme/hook/sms/rollback", data={"to": "1", CSRF_FIELD: "forged"})
        rolled = browser.post("/console/t/acme/hook/sms/rollback", data={"to": "1", CSRF_FIELD: csrf_of(history.text)})
        after = browser.get("/console/t/acme/hook/sms/versions?from=2&to=3").text
        audit = browser.get("/console/t/acme/audit").text

    assert history.status_code == 200
    assert re.search(r"v2 \(current\).*console:operator", history.text, re.S)
    assert "first" in history.text
    assert '<span class="del">-return &#39;one&#39;</span>' in history.text
    assert '<span class="add">+return &#39;two&#39;</span>' in history.text
    assert "v2 · history" in listed
    assert forged.status_code == 403
    assert rolled.status_code == 303
    assert "v3 (current)" in after
    assert "rolled back to version 1" in after
    assert '<span class="add">+return &#39;one&#39;</span>' in after
    assert "hook.rollback" in audit


def test_versions_of_an_unknown_hook_go_back_to_the_list(console: Console) -> None:
    """The history of a hook that does not exist redirects to the hooks page with the reason; a connection has none."""
    with console.browser() as browser:
        sign_in(browser, OPERATOR_TOKEN)
        response = browser.get("/console/t/acme/hook/nope/versions", follow_redirects=True)
        other_kind = browser.get("/console/t/acme/connection/main/versions")

    assert response.url.path == "/console/t/acme/hooks"
    assert "has no hook named &#39;nope&#39;" in response.text
    assert other_kind.status_code == 404
