"""The admin console in a real browser (Playwright driving Debian's Chromium) against a real ``zingyconn serve``.

Screenshots of the main pages are saved under ``test-artifacts/console/`` as test artifacts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.emulator import Emulator, running_emulator
from tests.servers import free_port, missing, wait_for_port
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.secrets.tokens import TokenStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "console"
ADMIN_TOKEN = "console-test-operator-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Flags for headless Chromium as root on a machine without network (no background traffic to Google).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SENDER, RECIPIENT = "+15005550006", "+15558675310"


class Console:
    """A running ``zingyconn serve`` with the emulator behind it."""

    def __init__(self, base_url: str, data_dir: Path, emulator: Emulator) -> None:
        self.base_url = base_url
        self.data_dir = data_dir
        self.emulator = emulator

    def url(self, path: str) -> str:
        """Return the absolute URL of *path*."""
        return self.base_url + path


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """``zingyconn serve`` as a subprocess on a free loopback port, using the emulator as Twilio."""
    if not Path(CHROMIUM).exists():
        missing("chromium")
    data_dir = tmp_path_factory.mktemp("console")
    port = free_port()
    with running_emulator(tick_seconds=0.2) as emulator:
        env = {
            **os.environ,
            "ZINGYCONN_DATA_DIR": str(data_dir),
            "ZINGYCONN_ADMIN_TOKEN": ADMIN_TOKEN,
            "ZINGYCONN_TWILIO_BASE_URL": emulator.base_url,
        }
        env.pop("ZINGYCONN_DB_URL", None)
        env.pop("ZINGYCONN_QUEUE_URL", None)
        env.pop("ZINGYCONN_KEYS", None)
        log = (data_dir / "serve.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "zingyconn", "serve", "--port", str(port), "--no-access-log"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
        )
        try:
            wait_for_port(port, timeout_seconds=60)
            yield Console(f"http://127.0.0.1:{port}", data_dir, emulator)
        finally:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
            if process.poll() is None:
                process.kill()
            log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium shared by the module's tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh browser context (no cookies) and page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def no_script_page(browser: object) -> Iterator[object]:
    """A fresh page with JavaScript off: the console's forms as they work without its scripts."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)  # type: ignore[attr-defined]
    page = context.new_page()
    yield page
    context.close()


def _shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def _sign_in(page: object, console: Console, token: str = ADMIN_TOKEN) -> None:
    page.goto(console.url("/console/login"))  # type: ignore[attr-defined]
    page.fill("input[name=token]", token)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]


def test_console_round_trip(no_script_page: object, console: Console) -> None:
    """Sign in, add a connection, send through the command runner, run snippets, replay a webhook; no secret leaks.

    With JavaScript off: every form posts and the server renders the outcome (test_console_editor.py drives the
    editor and the runs that answer in place)."""
    p: object = no_script_page
    html_seen: list[str] = []

    def visit(path: str) -> None:
        p.goto(console.url(path))  # type: ignore[attr-defined]
        html_seen.append(p.content())  # type: ignore[attr-defined]

    # Anonymous: redirected to the sign-in page.
    visit("/console/t/acme/connections")
    assert "/console/login" in p.url  # type: ignore[attr-defined]
    _shot(p, "login")

    _sign_in(p, console)
    visit("/console/t/acme/connections")
    p.fill("input[name=name]", "main")  # type: ignore[attr-defined]
    p.fill("input[name=account_sid]", console.emulator.account_sid)  # type: ignore[attr-defined]
    p.fill("input[name=secret]", console.emulator.auth_token)  # type: ignore[attr-defined]
    p.click("text=Save")  # type: ignore[attr-defined]
    html_seen.append(p.content())  # type: ignore[attr-defined]
    assert "Saved connection 'main'" in p.content()  # type: ignore[attr-defined]
    p.click("button:has-text('Test')")  # type: ignore[attr-defined]
    html_seen.append(p.content())  # type: ignore[attr-defined]
    assert "works" in p.content()  # type: ignore[attr-defined]
    # Editing shows the identifiers but never the secret; a blank secret keeps the stored one.
    visit("/console/t/acme/connections?edit=main")
    p.click("text=Save")  # type: ignore[attr-defined]
    assert "Saved connection 'main'" in p.content()  # type: ignore[attr-defined]
    _shot(p, "connections")

    # Command runner: sendMessage against the emulator shows the new message's SID.
    visit("/console/t/acme/commands?command=sendMessage")
    p.fill("input[name=fromPhone]", SENDER)  # type: ignore[attr-defined]
    p.fill("input[name=toPhone]", RECIPIENT)  # type: ignore[attr-defined]
    p.fill("input[name=msg]", "Hello from the console")  # type: ignore[attr-defined]
    p.click("text=Run sendMessage")  # type: ignore[attr-defined]
    result = p.inner_text("#result-value")  # type: ignore[attr-defined]
    html_seen.append(p.content())  # type: ignore[attr-defined]
    assert '"sid": "SM' in result
    assert [m.body for m in console.emulator.state.messages(console.emulator.account_sid)] == ["Hello from the console"]
    _shot(p, "commands")

    # Snippet runner: prints, logs and returns; the token the snippet reads is masked in the output.
    visit("/console/t/acme/runner")
    p.fill("#source", "print('hello', event['who'])\nlog.info('greeted', who=event['who'])\nreturn {'n': 42}")  # type: ignore[attr-defined]
    p.fill("textarea[name=event]", '{"who": "ada"}')  # type: ignore[attr-defined]
    p.click("button[value=run]")  # type: ignore[attr-defined]
    assert "hello ada" in p.inner_text("#stdout")  # type: ignore[attr-defined]
    assert '"n": 42' in p.inner_text("#result-value")  # type: ignore[attr-defined]
    assert "greeted" in p.inner_text("#logs")  # type: ignore[attr-defined]
    html_seen.append(p.content())  # type: ignore[attr-defined]
    _shot(p, "runner")

    # A compile error is shown with its line, and the line is highlighted; nothing is saved.
    p.fill("#source", "x = 1\ny = x.__dict__\nreturn x")  # type: ignore[attr-defined]
    p.fill("input[name=save_name]", "broken")  # type: ignore[attr-defined]
    p.click("button[value=save]")  # type: ignore[attr-defined]
    assert "Line 2" in p.inner_text("#compile-errors")  # type: ignore[attr-defined]
    assert p.inner_text("#error-line") == "2"  # type: ignore[attr-defined]
    _shot(p, "compile-error")

    # A time-limit error (the wall limit lowered to 1 s for the test).
    p.fill("#source", "while True:\n    pass")  # type: ignore[attr-defined]
    p.fill("input[name=wall_seconds]", "1")  # type: ignore[attr-defined]
    p.click("button[value=run]")  # type: ignore[attr-defined]
    assert "TimeLimitExceededError" in p.inner_text("#error")  # type: ignore[attr-defined]

    # Save a hook from the runner, call it over HTTP, and replay the stored webhook run in the runner.
    p.fill("#source", "return {'echo': event['json']}")  # type: ignore[attr-defined]
    p.fill("input[name=wall_seconds]", "")  # type: ignore[attr-defined]
    p.fill("input[name=save_name]", "echo")  # type: ignore[attr-defined]
    p.click("button[value=save]")  # type: ignore[attr-defined]
    assert "Saved hook 'echo'" in p.content()  # type: ignore[attr-defined]
    hook = httpx.post(console.url("/hooks/acme/echo"), json={"ping": 1}, timeout=30)
    assert hook.json() == {"echo": {"ping": 1}}
    visit("/console/t/acme/runs?kind=webhook")
    _shot(p, "runs")
    p.click("#runs tbody a")  # type: ignore[attr-defined]
    p.click("#replay")  # type: ignore[attr-defined]
    assert '"ping": 1' in p.input_value("textarea[name=event]")  # type: ignore[attr-defined]
    p.click("button[value=run]")  # type: ignore[attr-defined]
    assert '"ping": 1' in p.inner_text("#result-value")  # type: ignore[attr-defined]

    for path in ("/console/", "/console/t/acme/hooks", "/console/t/acme/scripts", "/console/t/acme/runs"):
        visit(path)
    assert all(console.emulator.auth_token not in html for html in html_seen)

    # A POST without the CSRF token is refused even with a valid session cookie.
    refused = p.request.post(console.url("/console/t/acme/connections/main/delete"), form={})  # type: ignore[attr-defined]
    assert refused.status == 403

    # Signing out ends the session: pages redirect to the sign-in form again.
    p.click("text=Sign out")  # type: ignore[attr-defined]
    visit("/console/t/acme/runner")
    assert "/console/login" in p.url  # type: ignore[attr-defined]


def test_tenant_admin_sees_only_their_tenant(page: object, console: Console) -> None:
    """A tenant API token signs in to that tenant only; another tenant's pages answer 404."""
    engine = create_engine(Settings.from_env({"ZINGYCONN_DATA_DIR": str(console.data_dir)}).db_url)
    token = TokenStore(engine).create("globex", label="console test")
    engine.dispose()

    _sign_in(page, console, token)
    assert page.url.endswith("/console/t/globex/connections")  # type: ignore[attr-defined]
    response = page.goto(console.url("/console/t/acme/connections"))  # type: ignore[attr-defined]
    assert response.status == 404
    assert "main" not in page.inner_text("main")  # type: ignore[attr-defined]


def test_wrong_token_is_refused(page: object, console: Console) -> None:
    """A wrong token stays on the sign-in page with an error and no session."""
    _sign_in(page, console, "not-a-token")
    assert "not valid" in page.content()  # type: ignore[attr-defined]
    page.goto(console.url("/console/"))  # type: ignore[attr-defined]
    assert "/console/login" in page.url  # type: ignore[attr-defined]


#: What a hostile tenant's hook returns: a document whose script, if it ran in the console's origin, would read the
#: console's CSRF token and save a hook into another tenant. It marks the document first, so a run is visible.
_ATTACK_SCRIPT = """
document.documentElement.setAttribute('data-ran', '1');
fetch('/console/t/victim/runner').then(function (r) { return r.text(); }).then(function (html) {
  var token = html.match(/name="csrf_token" value="([^"]+)"/)[1];
  var form = new URLSearchParams({csrf_token: token, action: 'save', save_kind: 'hook', save_name: 'planted',
                                  source: 'return 1', kind: 'webhook'});
  return fetch('/console/t/victim/runner', {method: 'POST', body: form});
});
"""
ATTACKS = {
    "xhtml": (
        '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body><p>hi</p>'
        f"<script>//<![CDATA[\n{_ATTACK_SCRIPT}//]]></script></body></html>"
    ),
    "twiml-with-xhtml-namespace": (
        '<Response xmlns:h="http://www.w3.org/1999/xhtml"><Message>hi</Message>'
        f"<h:script>//<![CDATA[\n{_ATTACK_SCRIPT}//]]></h:script></Response>"
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_hooks_active_content_never_runs_with_the_console_session(
    page: object, console: Console, attack: str
) -> None:
    """A tenant's hook returning XHTML with a script, opened in a signed-in console, runs nothing and saves nothing."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    engine = create_engine(Settings.from_env({"ZINGYCONN_DATA_DIR": str(console.data_dir)}).db_url)
    catalog = Catalog(engine)
    catalog.put_hook("mallory", f"page-{attack}", f"return {ATTACKS[attack]!r}")
    _sign_in(page, console)
    assert "/console/" in page.url  # type: ignore[attr-defined]

    response = page.goto(console.url(f"/hooks/mallory/page-{attack}"))  # type: ignore[attr-defined]
    # Give a script that did run the time to finish its requests (it would keep the network busy meanwhile).
    with contextlib.suppress(PlaywrightTimeoutError):
        page.wait_for_load_state("networkidle", timeout=10_000)  # type: ignore[attr-defined]

    saved = [hook.name for hook in catalog.list_hooks("victim")]
    ran = page.evaluate("document.documentElement.getAttribute('data-ran')")  # type: ignore[attr-defined]
    assert (saved, ran) == ([], None)
    assert response.headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    engine.dispose()


def test_console_pages_carry_a_strict_policy_and_run_their_own_script(page: object, console: Console) -> None:
    """Console pages send the strict CSP; the console's own script (from /console/static) still works under it."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)  # type: ignore[attr-defined]
    _sign_in(page, console)
    response = page.goto(console.url("/console/t/acme/runner"))  # type: ignore[attr-defined]

    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    # The editor (static/editor.js) ran under the policy: it replaced the textarea and keeps it in step.
    page.click(".cm-content")  # type: ignore[attr-defined]
    page.keyboard.press("Control+a")  # type: ignore[attr-defined]
    page.keyboard.press("Delete")  # type: ignore[attr-defined]
    page.keyboard.type("a = 1\nreturn a")  # type: ignore[attr-defined]
    assert page.input_value("#source") == "a = 1\nreturn a"  # type: ignore[attr-defined]
    # Its injected styles carry this response's nonce, the only inline style the policy admits; each response has
    # its own.
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    styles = page.evaluate("[...document.querySelectorAll('style')].map(s => s.nonce)")  # type: ignore[attr-defined]
    assert styles
    assert set(styles) == {nonce}
    again = page.request.get(console.url("/console/t/acme/runner"))  # type: ignore[attr-defined]
    assert f"'nonce-{nonce}'" not in again.headers["content-security-policy"]
    assert not [error for error in errors if "Content Security Policy" in error]
