"""The runner's in-place Run (``POST /console/t/TENANT/runner/run``) keeps the form's rules: sign-in, tenant access,
CSRF and the per-tenant compile rate; and answers the outcome as JSON, the result described by type."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hosts.live_console import OPERATOR_TOKEN, Console, csrf_of, live_console, sign_in
from zingyconn.hosts.console.runner import COMPILES_PER_MINUTE
from zingyconn.secrets.tokens import TokenStore

RUN = "/console/t/acme/runner/run"
TWIML = (
    "from twilio.twiml.messaging_response import MessagingResponse\n"
    "reply = MessagingResponse()\nreply.message('hi')\nreturn reply"
)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with live_console(tmp_path) as live:
        yield live


def _signed_in(console: Console) -> tuple[httpx.Client, str]:
    browser = console.browser()
    sign_in(browser, OPERATOR_TOKEN)
    return browser, csrf_of(browser.get("/console/t/acme/runner").text)


def test_a_run_in_place_answers_the_outcome_with_its_kind(console: Console) -> None:
    """TwiML comes back indented and marked twiml; a dict as JSON; a string as text; stdout, logs and the run id too."""
    browser, csrf = _signed_in(console)
    answers = {
        source: browser.post(RUN, data={"csrf_token": csrf, "source": source, "event": "{}"}).json()
        for source in (TWIML, "print('out')\nlog.info('hi', n=1)\nreturn {'a': [1]}", "return 'words'")
    }
    twiml, data, text = answers.values()
    assert (twiml["value_kind"], twiml["value_text"]) == ("twiml", "<Response>\n  <Message>hi</Message>\n</Response>")
    assert (data["value_kind"], data["value"], data["stdout"]) == ("json", {"a": [1]}, "out\n")
    assert [entry["message"] for entry in data["logs"]] == ["hi"]
    assert data["run_url"].endswith(f"/console/t/acme/runs/{data['run_id']}")
    assert (text["value_kind"], text["value_text"]) == ("text", "words")


def test_a_compile_error_in_place_names_its_line(console: Console) -> None:
    """A snippet that does not compile answers ok false with the error's line, for the editor's marker."""
    browser, csrf = _signed_in(console)
    answer = browser.post(RUN, data={"csrf_token": csrf, "source": "x = 1\ny = x.__dict__\nreturn y"}).json()
    assert (answer["ok"], answer["error_line"]) == (False, 2)


def test_a_run_in_place_keeps_the_forms_rules(console: Console) -> None:
    """Signed out: redirected to sign-in; no CSRF token: 403; another tenant's token: 404; past the rate: 429 JSON."""
    anonymous = console.browser()
    assert anonymous.post(RUN, data={"source": "return 1"}).status_code == 303

    browser, csrf = _signed_in(console)
    assert browser.post(RUN, data={"source": "return 1"}).status_code == 403

    token = TokenStore(console.runtime.engine).create("globex", label="in-place test")
    other = console.browser(client="198.51.100.8")
    sign_in(other, token)
    other_csrf = csrf_of(other.get("/console/t/globex/runner").text)
    refused = other.post(RUN, data={"csrf_token": other_csrf, "source": "return 1"})
    assert refused.status_code == 404

    statuses = [
        browser.post(RUN, data={"csrf_token": csrf, "source": "return 1"}).status_code
        for _ in range(COMPILES_PER_MINUTE + 1)
    ]
    assert statuses[:-1] == [200] * COMPILES_PER_MINUTE
    limited = browser.post(RUN, data={"csrf_token": csrf, "source": "return 1"})
    assert statuses[-1] == limited.status_code == 429
    assert limited.json()["error"]["message"].startswith("Tenant 'acme' ran or saved more than")
    assert int(limited.headers["retry-after"]) > 0


def test_the_editor_bundle_is_revalidated_not_refetched(console: Console) -> None:
    """The console's static files may be kept by the browser and revalidated (304); its pages are never stored."""
    browser = console.browser()
    bundle = browser.get("/console/static/editor.js")
    assert (bundle.status_code, bundle.headers["cache-control"]) == (200, "no-cache")
    assert "style-src 'self' 'nonce-" in bundle.headers["content-security-policy"]
    again = browser.get("/console/static/editor.js", headers={"If-None-Match": bundle.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    assert browser.get("/console/login").headers["cache-control"] == "no-store"
