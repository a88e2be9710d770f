"""The console's workbench in a real browser: the code editor, runs that answer in place, sample events, the
form without JavaScript, and the friendly root page and 404s (Playwright driving Debian's Chromium against a real
``zingyconn serve``, set up as in ``test_console.py``).

``test_editor_screenshots_for_the_docs`` saves the runner, the editor and an in-place result under
``test-artifacts/console/``; with ``ZINGYCONN_DOCS_SCREENSHOTS=1`` it refreshes the docs' copies in ``docs/img/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_console import ADMIN_TOKEN, ARTIFACTS, RECIPIENT, SENDER, Console, _sign_in, browser, console

__all__ = ["browser", "console"]  # fixtures shared with test_console.py (one server per module)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
#: Where the screenshots go: the docs' pictures only when asked, so a test run leaves the source tree as it was.
SHOTS = DOCS_IMG if os.environ.get("ZINGYCONN_DOCS_SCREENSHOTS") == "1" else ARTIFACTS
RUNNER = "/console/t/acme/runner"
TWIML_SNIPPET = (
    "from twilio.twiml.messaging_response import MessagingResponse\n"
    "reply = MessagingResponse()\n"
    "reply.message('Thanks!')\n"
    "return reply"
)


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh browser context and page; collects the page's console errors in ``page.errors``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()


def _open_runner(page: object, console: Console) -> None:
    _sign_in(page, console)
    page.goto(console.url(RUNNER))  # type: ignore[attr-defined]
    page.wait_for_selector(".cm-editor .cm-content")  # type: ignore[attr-defined]


def _type_source(page: object, text: str) -> None:
    """Replace the editor's text with *text*, inserted as a paste (no auto-indent or bracket closing)."""
    page.click(".cm-content")  # type: ignore[attr-defined]
    page.keyboard.press("Control+a")  # type: ignore[attr-defined]
    page.keyboard.press("Delete")  # type: ignore[attr-defined]
    page.keyboard.insert_text(text)  # type: ignore[attr-defined]


def _run_in_place(page: object) -> None:
    """Press Ctrl+Enter in the editor and wait for the in-place outcome (removing the previous one first)."""
    page.evaluate("document.getElementById('result-slot').replaceChildren()")  # type: ignore[attr-defined]
    page.click(".cm-content")  # type: ignore[attr-defined]
    page.keyboard.press("Control+Enter")  # type: ignore[attr-defined]
    page.wait_for_selector("#outcome[data-in-place]", timeout=30_000)  # type: ignore[attr-defined]


def test_editor_replaces_the_textarea_and_indents_with_tab(page: object, console: Console) -> None:
    """The runner's textarea becomes a CodeMirror editor (under the strict CSP); Tab and Shift-Tab indent, and
    completion offers the snippet's names and the Twilio client's calls; the form's textarea follows the text."""
    _open_runner(page, console)
    assert not page.is_visible("#source")  # type: ignore[attr-defined]
    _type_source(page, "x = 1")
    page.keyboard.press("Home")  # type: ignore[attr-defined]
    page.keyboard.press("Tab")  # type: ignore[attr-defined]
    assert page.input_value("#source") == "    x = 1"  # type: ignore[attr-defined]
    assert page.evaluate("document.activeElement.classList.contains('cm-content')")  # type: ignore[attr-defined]
    page.keyboard.press("Shift+Tab")  # type: ignore[attr-defined]
    assert page.input_value("#source") == "x = 1"  # type: ignore[attr-defined]

    page.keyboard.press("End")  # type: ignore[attr-defined]
    page.keyboard.type("\nzingyC")  # type: ignore[attr-defined]
    completions = page.wait_for_selector(".cm-tooltip-autocomplete")  # type: ignore[attr-defined]
    assert "zingyConn" in completions.inner_text()
    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    page.keyboard.type('\nclient = zingyConn.twilio("main")\nclient.mess')  # type: ignore[attr-defined]
    page.wait_for_selector(".cm-tooltip-autocomplete")  # type: ignore[attr-defined]
    labels = page.locator(".cm-tooltip-autocomplete .cm-completionLabel").all_inner_texts()  # type: ignore[attr-defined]
    assert {"messages.create", "messages.list"} <= set(labels)
    # The editor's theme is injected <style> carrying the response's nonce: nothing was refused by the CSP.
    assert page.evaluate("getComputedStyle(document.querySelector('.cm-editor')).display") == "flex"  # type: ignore[attr-defined]
    assert not [error for error in page.errors if "Content Security Policy" in error]  # type: ignore[attr-defined]


def test_ctrl_enter_runs_in_place_and_shows_the_result_by_type(page: object, console: Console) -> None:
    """Ctrl+Enter runs without leaving the page; TwiML is shown as indented XML, JSON as a tree, text as is, with
    stdout and logs beside it."""
    _open_runner(page, console)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))  # type: ignore[attr-defined]

    _type_source(page, TWIML_SNIPPET)
    _run_in_place(page)
    value = page.locator("#result-value")  # type: ignore[attr-defined]
    assert value.get_attribute("data-kind") == "twiml"
    assert value.inner_text() == "<Response>\n  <Message>Thanks!</Message>\n</Response>"

    _type_source(page, "print('hello')\nlog.info('greeted', who='ada')\nreturn {'n': 42, 'items': [1, 2]}")
    _run_in_place(page)
    assert page.get_attribute("#result-value", "data-kind") == "json"  # type: ignore[attr-defined]
    assert page.locator("#result-value details").count() == 2  # type: ignore[attr-defined]
    assert '"n": 42' in page.inner_text("#result-value")  # type: ignore[attr-defined]
    assert page.inner_text("#stdout").strip() == "hello"  # type: ignore[attr-defined]
    assert "greeted" in page.inner_text("#logs")  # type: ignore[attr-defined]

    _type_source(page, "return 'plain words'")
    _run_in_place(page)
    assert page.get_attribute("#result-value", "data-kind") == "text"  # type: ignore[attr-defined]
    assert page.inner_text("#result-value") == "plain words"  # type: ignore[attr-defined]
    assert navigations == []


def test_a_run_in_place_lists_its_twilio_calls(page: object, console: Console) -> None:
    """A run that calls Twilio lists the calls it made (method, host, path, status) in place."""
    _sign_in(page, console)
    page.goto(console.url("/console/t/acme/connections"))  # type: ignore[attr-defined]
    page.fill("input[name=name]", "main")  # type: ignore[attr-defined]
    page.fill("input[name=account_sid]", console.emulator.account_sid)  # type: ignore[attr-defined]
    page.fill("input[name=secret]", console.emulator.auth_token)  # type: ignore[attr-defined]
    page.click("text=Save")  # type: ignore[attr-defined]
    page.goto(console.url(RUNNER))  # type: ignore[attr-defined]
    page.wait_for_selector(".cm-content")  # type: ignore[attr-defined]
    _type_source(
        page,
        f"client = zingyConn.twilio('main')\n"
        f"m = client.messages.create(to='{RECIPIENT}', from_='{SENDER}', body='from the editor')\nreturn m.sid",
    )
    _run_in_place(page)
    calls = page.inner_text("#egress")  # type: ignore[attr-defined]
    assert "POST" in calls
    assert "Messages.json" in calls
    assert "201" in calls
    assert page.inner_text("#result-value").startswith("SM")  # type: ignore[attr-defined]


def test_a_compile_error_is_marked_on_its_line(page: object, console: Console) -> None:
    """A snippet that does not compile, run in place, gets an error marker on the line the compiler named."""
    _open_runner(page, console)
    _type_source(page, "x = 1\ny = x.__dict__\nreturn x")
    _run_in_place(page)
    assert "line 2" in page.inner_text("#error")  # type: ignore[attr-defined]
    marker = page.wait_for_selector(".cm-lint-marker-error")  # type: ignore[attr-defined]
    gutter_line = page.evaluate(  # type: ignore[attr-defined]
        "m => [...m.closest('.cm-gutter').children].filter(e => e.classList.contains('cm-gutterElement'))"
        ".findIndex(e => e.contains(m))",
        marker,
    )
    line_tops = page.evaluate(  # type: ignore[attr-defined]
        "[...document.querySelectorAll('.cm-line')].map(l => Math.round(l.getBoundingClientRect().top))"
    )
    marker_top = round(marker.bounding_box()["y"])
    assert gutter_line >= 0
    assert min(line_tops, key=lambda top: abs(top - marker_top)) == line_tops[1]
    assert page.locator(".cm-lintRange-error").count() == 1  # type: ignore[attr-defined]
    # Editing the text clears the stale marker.
    page.keyboard.type(" ")  # type: ignore[attr-defined]
    page.wait_for_selector(".cm-lint-marker-error", state="detached")  # type: ignore[attr-defined]


def test_a_sample_event_fills_the_event_box(page: object, console: Console) -> None:
    """The sample menu fills the event box; the filled event runs as a webhook's would."""
    _open_runner(page, console)
    page.select_option("#sample-event", label="Inbound SMS (webhook)")  # type: ignore[attr-defined]
    assert '"Body": "Hello"' in page.input_value("#event")  # type: ignore[attr-defined]
    _type_source(page, "return event['form']['Body']")
    _run_in_place(page)
    assert page.inner_text("#result-value") == "Hello"  # type: ignore[attr-defined]
    # Ctrl+Enter in the event box runs too.
    page.fill("#event", '{"form": {"Body": "typed"}}')  # type: ignore[attr-defined]
    page.evaluate("document.getElementById('result-slot').replaceChildren()")  # type: ignore[attr-defined]
    page.press("#event", "Control+Enter")  # type: ignore[attr-defined]
    page.wait_for_selector("#outcome[data-in-place]")  # type: ignore[attr-defined]
    assert page.inner_text("#result-value") == "typed"  # type: ignore[attr-defined]
    page.select_option("#sample-event", label="Empty")  # type: ignore[attr-defined]
    assert page.input_value("#event") == "{}"  # type: ignore[attr-defined]


def test_a_validation_error_keeps_the_form(page: object, console: Console) -> None:
    """Saving with a name the catalog refuses shows why and keeps every field, the name included."""
    _open_runner(page, console)
    _type_source(page, "return 1")
    page.evaluate("document.querySelector('input[name=save_name]').removeAttribute('pattern')")  # type: ignore[attr-defined]
    page.fill("input[name=save_name]", "bad name!")  # type: ignore[attr-defined]
    page.fill("input[name=cron]", "0 8 * * *")  # type: ignore[attr-defined]
    page.click("button[value=save]")  # type: ignore[attr-defined]
    assert page.locator(".flash.error").count() == 1  # type: ignore[attr-defined]
    assert page.input_value("input[name=save_name]") == "bad name!"  # type: ignore[attr-defined]
    assert page.input_value("input[name=cron]") == "0 8 * * *"  # type: ignore[attr-defined]
    assert page.input_value("#source") == "return 1"  # type: ignore[attr-defined]


def test_the_runner_works_without_javascript(browser: object, console: Console) -> None:
    """With JavaScript off the runner is today's form: the textarea posts, the page answers with the outcome."""
    context = browser.new_context(java_script_enabled=False)  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        _sign_in(page, console)
        page.goto(console.url(RUNNER))
        assert page.is_visible("#source")
        assert not page.is_visible("#sample-event")
        page.fill("#source", TWIML_SNIPPET)
        page.click("button[value=run]")
        assert page.get_attribute("#result-value", "data-kind") == "twiml"
        assert "<Message>Thanks!</Message>" in page.inner_text("#result-value")
    finally:
        context.close()


def test_root_page_and_404s(page: object, console: Console) -> None:
    """``/`` is a small page linking the console; unknown console pages and tenants get the console's 404 page;
    webhook and API paths keep their JSON answers."""
    root = httpx.get(console.url("/"), timeout=10)
    assert root.status_code == 200
    assert root.headers["content-type"].startswith("text/html")
    assert 'href="/console/"' in root.text
    assert 'href="/healthz"' in root.text

    _sign_in(page, console)
    for path in ("/console/no-such-page", "/console/t/bad%20name/runner", "/console/t/acme/runs/no-such-run"):
        response = page.goto(console.url(path))  # type: ignore[attr-defined]
        assert response.status == 404, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert page.is_visible("header.top .brand"), path  # type: ignore[attr-defined]
        assert "Not found" in page.inner_text("#not-found"), path  # type: ignore[attr-defined]
    assert page.is_visible("text=Sign out")  # type: ignore[attr-defined]

    for path in ("/no-such-path", "/hooks/acme/no-such-hook"):
        answer = httpx.post(console.url(path), data={"Body": "hi"}, timeout=30)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("application/json"), path
    assert httpx.get(console.url("/console/no-such-page"), timeout=10).status_code == 404
    assert ADMIN_TOKEN not in root.text


def test_editor_screenshots_for_the_docs(page: object, console: Console) -> None:
    """The docs' pictures of the editor and of a result shown in place come from this run."""
    _open_runner(page, console)
    page.select_option("#sample-event", label="Inbound SMS (webhook)")  # type: ignore[attr-defined]
    _type_source(
        page,
        "from twilio.twiml.messaging_response import MessagingResponse\n\n"
        'body = (event.get("form") or {}).get("Body", "")\n'
        'log.info("inbound", body=body)\n'
        "reply = MessagingResponse()\n"
        'reply.message(f"You said: {body}")\n'
        "return reply\n",
    )
    page.keyboard.type("log.")  # type: ignore[attr-defined]
    page.wait_for_selector(".cm-tooltip-autocomplete")  # type: ignore[attr-defined]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("form.runner").screenshot(path=str(SHOTS / "console-editor.png"))  # type: ignore[attr-defined]
    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    page.keyboard.press("Backspace")  # type: ignore[attr-defined]
    for _ in "log":
        page.keyboard.press("Backspace")  # type: ignore[attr-defined]
    _run_in_place(page)
    assert page.get_attribute("#result-value", "data-kind") == "twiml"  # type: ignore[attr-defined]
    page.locator("#outcome").screenshot(path=str(SHOTS / "console-result.png"))  # type: ignore[attr-defined]
    page.screenshot(path=str(SHOTS / "console-runner.png"), full_page=True)  # type: ignore[attr-defined]
    assert (SHOTS / "console-result.png").stat().st_size > 0
