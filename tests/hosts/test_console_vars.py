"""The console's variables page: list, set and unset tenant variables, with CSRF and the audit trail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts.live_console import OPERATOR_TOKEN, Console, csrf_of, live_console, sign_in
from zingyconn.hosts.console.auth import CSRF_FIELD


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """A live server with the console."""
    with live_console(tmp_path) as live:
        yield live


def test_variables_are_set_listed_and_unset_with_csrf_and_audit(console: Console) -> None:
    """The page sets and unsets variables; a post without its CSRF token changes nothing; changes are audited."""
    with console.browser() as browser:
        sign_in(browser, OPERATOR_TOKEN)
        page = browser.get("/console/t/acme/vars")
        assert page.status_code == 200
        assert "No variables yet." in page.text
        forged = browser.post("/console/t/acme/vars/save", data={"name": "A", "value": "1"})
        assert forged.status_code == 403
        saved = browser.post(
            "/console/t/acme/vars/save",
            data={CSRF_FIELD: csrf_of(page.text), "name": "SUPPORT_NUMBER", "value": "+1555"},
        )
        assert saved.status_code == 303
        assert "+1555" in browser.get("/console/t/acme/vars").text
        bad = browser.post("/console/t/acme/vars/save", data={CSRF_FIELD: csrf_of(page.text), "name": "9", "value": ""})
        assert bad.status_code == 400
        assert "is not valid" in bad.text
        gone = browser.post("/console/t/acme/vars/SUPPORT_NUMBER/delete", data={CSRF_FIELD: csrf_of(page.text)})
        assert gone.status_code == 303
        assert "No variables yet." in browser.get("/console/t/acme/vars").text

    events = json.loads(console.cli("audit", "list", "--tenant", "acme", "--json"))
    actions = [(e["action"], e["target"]) for e in reversed(events) if e["action"].startswith("variable.")]
    assert actions == [("variable.set", "SUPPORT_NUMBER"), ("variable.unset", "SUPPORT_NUMBER")]
    assert "+1555" not in json.dumps(events)
