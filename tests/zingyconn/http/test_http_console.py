"""The console's connections page adds, lists, edits and deletes HTTP connections, with CSRF and the audit trail,
and never shows the secret back; a run's HTTP calls are on its run page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.hosts.live_console import ACCOUNT_SID, AUTH_TOKEN, OPERATOR_TOKEN, Console, csrf_of, live_console, sign_in
from tests.servers import uvicorn_in_thread
from tests.zingyconn.http.test_http_oauth2 import CLIENT_SECRET, AuthServer
from zingyconn.hosts.console.auth import CSRF_FIELD
from zingyconn.http.echo import EchoRecorder, create_app
from zingyconn.http.profile import HttpProfile
from zingyconn.twilio.profile import TwilioProfile

SECRET = "console-s3cret/token+1"
NEW_SECRET = "rotated-s3cret/token+2"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """A live server with the console."""
    with live_console(tmp_path) as live:
        yield live


def test_http_connections_are_added_listed_and_deleted(console: Console) -> None:
    """A post without its CSRF token changes nothing; a bad base URL is a 400 naming it; the saved connection is
    listed with its base URL and scheme but never its secret; save and delete are audited."""
    form = {
        "name": "crm",
        "base_url": "https://api.crm.example/v1",
        "auth": "header",
        "auth_name": "X-Api-Key",
        "methods": "get, post",
        "prefixes": "/contacts, /notes",
        "secret": SECRET,
    }
    with console.browser() as browser:
        sign_in(browser, OPERATOR_TOKEN)
        page = browser.get("/console/t/acme/connections")
        assert "Add an HTTP connection" in page.text
        forged = browser.post("/console/t/acme/connections/http/save", data=form)
        assert forged.status_code == 403
        csrf = {CSRF_FIELD: csrf_of(page.text)}
        bad = browser.post("/console/t/acme/connections/http/save", data={**form, **csrf, "base_url": "http://x"})
        assert bad.status_code == 400
        assert "base_url must be an https:// URL" in bad.text
        assert SECRET not in bad.text
        saved = browser.post("/console/t/acme/connections/http/save", data={**form, **csrf})
        assert saved.status_code == 303
        listed = browser.get("/console/t/acme/connections").text
        assert "https://api.crm.example/v1 (header:X-Api-Key; GET,POST under /contacts,/notes)" in listed
        assert SECRET not in listed
        gone = browser.post("/console/t/acme/connections/crm/delete", data=csrf)
        assert gone.status_code == 303
        assert "api.crm.example" not in browser.get("/console/t/acme/connections").text

    events = json.loads(console.cli("audit", "list", "--tenant", "acme", "--json"))
    actions = [(e["action"], e["target"]) for e in reversed(events) if e["action"].startswith("connection.")]
    assert actions == [("connection.save", "crm"), ("connection.delete", "crm")]
    assert SECRET not in json.dumps(events)


def test_a_runs_http_calls_are_listed_by_runs_show_and_the_run_page(console: Console) -> None:
    """An HTTP call of a stored run is in ``runs show --json``'s egress and on the console's run page (method, host,
    path, status), and neither holds the credential."""
    with uvicorn_in_thread(create_app(EchoRecorder()), name="echo") as port:
        profile = HttpProfile(base_url=f"http://127.0.0.1:{port}/api", auth="query:key", secret=SECRET,
                              local_test_target=True)  # fmt: skip
        console.runtime.store.put("acme", "crm", profile)
        result = console.runtime.run("acme", 'return zingyConn.http("crm").get("/notes").status_code')
    assert result.value == 200

    shown = json.loads(console.cli("runs", "show", result.run_id, "--tenant", "acme", "--json"))
    assert [(c["method"], c["host"], c["path"], c["status"]) for c in shown["egress"]] == [
        ("GET", f"127.0.0.1:{port}", "/api/notes", 200)]  # fmt: skip
    with console.browser() as browser:
        sign_in(browser, OPERATOR_TOKEN)
        page = browser.get(f"/console/t/acme/runs/{result.run_id}").text
    assert "Outgoing calls" in page
    assert "<code>/api/notes</code>" in page
    for text in (json.dumps(shown), page):
        assert all(form not in text for form in (SECRET, quote(SECRET, safe=""), quote(SECRET)))


def test_an_oauth2_connection_is_added_and_tested_from_the_console(console: Console) -> None:
    """The HTTP form takes OAuth 2 client credentials (token URL, client id, scope; the client secret write-only):
    a missing client id is a 400 naming it; the saved connection is listed with its token URL and client id, and its
    test fetches an access token with the client secret and calls the API with it; nothing shows the secret."""
    auth = AuthServer()
    with uvicorn_in_thread(auth.app(), name="oauth") as port, console.browser() as browser:
        base = f"http://127.0.0.1:{port}"
        form = {"name": "crm", "base_url": f"{base}/api", "auth": "oauth2", "token_url": f"{base}/oauth/token",
                "client_id": auth.client_id, "scope": "notes.write", "prefixes": "/notes", "local_test_target": "1",
                "secret": CLIENT_SECRET}  # fmt: skip
        sign_in(browser, OPERATOR_TOKEN)
        page = browser.get("/console/t/acme/connections")
        assert '<option value="oauth2"' in page.text
        csrf = {CSRF_FIELD: csrf_of(page.text)}
        bad = browser.post("/console/t/acme/connections/http/save", data={**form, **csrf, "client_id": ""})
        assert bad.status_code == 400
        assert "client_id is required" in bad.text
        saved = browser.post("/console/t/acme/connections/http/save", data={**form, **csrf})
        assert saved.status_code == 303
        listed = browser.get("/console/t/acme/connections").text
        assert f"{base}/api (oauth2 from {base}/oauth/token as {auth.client_id}; GET," in listed
        tested = browser.post("/console/t/acme/connections/crm/test", data=csrf)
        assert tested.status_code == 303
        shown = browser.get("/console/t/acme/connections").text
        assert "works:" in shown
        for text in (bad.text, listed, shown):
            assert CLIENT_SECRET not in text

    profile = console.runtime.store.get("acme", "crm")
    assert isinstance(profile, HttpProfile)
    assert (profile.token_url, profile.client_id, profile.scope) == (f"{base}/oauth/token", auth.client_id,
                                                                     "notes.write")  # fmt: skip
    assert auth.issued
    assert auth.seen == [f"Bearer {auth.issued[-1]}"]


def test_an_http_connection_is_edited_from_the_console(console: Console) -> None:
    """Edit pre-fills the HTTP form with the non-secret fields and an empty secret; saving without the secret is a
    400 naming it and changes nothing; a saved edit replaces the prefixes, is audited as an edit, and the Test button
    then calls the new prefix with the new secret."""
    recorder = EchoRecorder()
    with uvicorn_in_thread(create_app(recorder), name="echo") as port, console.browser() as browser:
        base = f"http://127.0.0.1:{port}/api"
        profile = HttpProfile(base_url=base, auth="header:X-Api-Key", secret=SECRET, allowed_methods=("GET",),
                              allowed_prefixes=("/old",), local_test_target=True)  # fmt: skip
        console.runtime.store.put("acme", "crm", profile)
        sign_in(browser, OPERATOR_TOKEN)
        listed = browser.get("/console/t/acme/connections").text
        assert ">Edit</a>" in listed
        assert "?edit=crm" in listed
        page = browser.get("/console/t/acme/connections", params={"edit": "crm"}).text
        assert "Edit HTTP connection crm" in page
        assert "Add a Twilio connection" not in page
        for prefilled in (f'value="{base}"', 'value="X-Api-Key"', 'value="GET"', 'value="/old"',
                          '<option value="header" selected>', 'value="1" checked'):  # fmt: skip
            assert prefilled in page
        assert SECRET not in page
        csrf = {CSRF_FIELD: csrf_of(page)}
        form = {"name": "crm", "existing": "1", "base_url": base, "auth": "header", "auth_name": "X-Api-Key",
                "methods": "GET", "prefixes": "/notes", "local_test_target": "1", **csrf}  # fmt: skip

        refused = browser.post("/console/t/acme/connections/http/save", data=form)
        assert refused.status_code == 400
        assert "secret is required to save connection &#39;crm&#39;" in refused.text
        assert 'value="/notes"' in refused.text
        assert "Edit HTTP connection crm" in refused.text
        unchanged = console.runtime.store.get("acme", "crm")
        assert isinstance(unchanged, HttpProfile)
        assert unchanged.allowed_prefixes == ("/old",)

        saved = browser.post("/console/t/acme/connections/http/save", data={**form, "secret": NEW_SECRET})
        assert saved.status_code == 303
        edited = console.runtime.store.get("acme", "crm")
        assert isinstance(edited, HttpProfile)
        assert (edited.allowed_prefixes, edited.secret) == (("/notes",), NEW_SECRET)
        assert "under /notes" in browser.get(saved.headers["location"]).text  # the redirect a browser follows
        tested = browser.post("/console/t/acme/connections/crm/test", data=csrf)
        assert tested.status_code == 303
        shown = browser.get("/console/t/acme/connections").text
        assert f"works: {base}/notes (HTTP 200" in shown
        for text in (page, refused.text, shown):
            assert SECRET not in text
            assert NEW_SECRET not in text

    assert [(r.path, r.headers["x-api-key"]) for r in recorder.requests] == [("/api/notes", NEW_SECRET)]
    events = json.loads(console.cli("audit", "list", "--tenant", "acme", "--json"))
    assert [(e["action"], e["target"], e["detail"]) for e in events if e["action"] == "connection.save"] == [
        ("connection.save", "crm", {"type": "http", "edited": True})]  # fmt: skip


def test_a_twilio_connection_keeps_its_own_edit_form(console: Console) -> None:
    """Editing a Twilio connection shows the Twilio form with its SID and no secret (not the HTTP form), and a blank
    secret there keeps the stored one: its calls only ever go to Twilio."""
    console.runtime.store.put("acme", "main", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))
    with console.browser() as browser:
        sign_in(browser, OPERATOR_TOKEN)
        page = browser.get("/console/t/acme/connections", params={"edit": "main"}).text
        assert "Edit main" in page
        assert f'value="{ACCOUNT_SID}"' in page
        assert "HTTP connection" not in page
        assert AUTH_TOKEN not in page
        form = {"name": "main", "existing": "1", "account_sid": ACCOUNT_SID, CSRF_FIELD: csrf_of(page)}
        saved = browser.post("/console/t/acme/connections/save", data=form)
    assert saved.status_code == 303
    kept = console.runtime.store.get("acme", "main")
    assert isinstance(kept, TwilioProfile)
    assert kept.secret == AUTH_TOKEN
