"""Nothing hostile runs on the event loop: bodies are parsed and signatures checked in worker threads, signed hooks
have a body cap that fits Twilio, console compiles happen in another process at a per-tenant rate, deep or invalid
JSON is a recorded 400, and ``HEAD`` never runs a hook."""

from __future__ import annotations

import gc
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

import sandbox.compiler
from tests.hosts.live_console import OPERATOR_TOKEN, Console, csrf_of, live_console, sign_in
from tests.hosts.live_server import ACCOUNT_SID, AUTH_TOKEN, LiveServer, live_server, sign
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.hosts import signature, webhooks
from zingyconn.hosts.bodies import MAX_JSON_DEPTH
from zingyconn.hosts.composition import default_lifespan_hooks
from zingyconn.hosts.console import view
from zingyconn.hosts.console.runner import COMPILES_PER_MINUTE
from zingyconn.hosts.webhooks import SIGNED_MAX_BODY_BYTES
from zingyconn.runtime import Runtime
from zingyconn.schema import runs
from zingyconn.twilio.profile import TwilioProfile

DEEP_JSON = "[" * 100_000 + "]" * 100_000
LONE_SURROGATE = '{"Body": "\\ud800"}'


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A runtime whose tenant 'acme' has connection 'main' (Auth Token) and hooks 'signed' and 'open'."""
    data_dir: Path = tmp_path_factory.mktemp("event-loop")
    with Runtime(Settings.from_env({"ZINGYCONN_DATA_DIR": str(data_dir)})) as rt:
        rt.store.put("acme", "main", TwilioProfile(account_sid=ACCOUNT_SID, secret=AUTH_TOKEN))
        catalog = Catalog(rt.engine)
        catalog.put_hook("acme", "signed", "return (event['form'] or {}).get('Body')", verify_with="main")
        catalog.put_hook("acme", "open", "return {'json': event['json']}")
        yield rt


@pytest.fixture(scope="module")
def server(runtime: Runtime) -> Iterator[LiveServer]:
    with live_server(runtime) as live:
        yield live


class ThreadSpy:
    """Wraps a module function and records the name of each thread that called it."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.threads: list[str] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        return self.function(*args, **kwargs)


def _runs(runtime: Runtime, hook: str) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(runs).where(runs.c.tenant == "acme", runs.c.name == hook)))


def test_hostile_bodies_are_parsed_and_checked_off_the_event_loop(
    server: LiveServer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forged 60 KB forms to a signed hook are parsed and refused in worker threads, never on the loop's thread."""
    forms, checks = ThreadSpy(signature.parse_form), ThreadSpy(signature.verify)
    monkeypatch.setattr(webhooks, "parse_form", forms)
    monkeypatch.setattr(webhooks, "verify", checks)
    loop_thread = next(
        t.name for t in threading.enumerate() if t.name == f"zingyconn-{server.base_url.rsplit(':')[-1]}"
    )
    form = urlencode({"Body": "x" * 60_000, "From": "+15551234567"})
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "forged"}

    def post(_: int) -> int:
        return httpx.post(server.url("/hooks/acme/signed"), content=form, headers=headers, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=4) as clients:
        statuses = list(clients.map(post, range(24)))

    assert statuses == [403] * 24
    assert (len(forms.threads), len(checks.threads)) == (24, 24)
    assert loop_thread not in set(forms.threads) | set(checks.threads)
    assert _runs(runtime, "signed") == []


def test_serve_freezes_its_start_up_heap_so_collections_skip_it_and_thaws_it_at_shutdown(runtime: Runtime) -> None:
    """A full collection walking the start-up heap stalled the event loop for tens of ms under load: `serve`'s hooks
    move that heap into the permanent generation once started, and give it back to the collector at shutdown."""
    assert gc.get_freeze_count() == 0
    with live_server(runtime, lifespan_hooks=default_lifespan_hooks(runtime)) as server:
        frozen = gc.get_freeze_count()
        answer = httpx.post(f"{server.base_url}/hooks/acme/open", data={"Body": "hi"})
        assert answer.status_code == 200
        assert frozen > 1000  # the modules, the app and the runtime, not a handful
        assert gc.get_freeze_count() > frozen // 2  # a request's collections leave it frozen
    assert gc.get_freeze_count() == 0


def test_signed_hooks_take_twilios_largest_request_and_refuse_more_unread(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1,600-emoji SMS with ten media URLs fits the signed-hook cap; a body past the cap is 413, never parsed."""
    forms = ThreadSpy(signature.parse_form)
    monkeypatch.setattr(webhooks, "parse_form", forms)
    url = server.url("/hooks/acme/signed")
    sms = {
        "Body": "😀" * 1600,
        "From": "+15551234567",
        "To": "+15005550006",
        **{
            f"MediaUrl{n}": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Media/ME{n:032}"
            for n in range(10)
        },
        **{f"Field{n}": "x" * 64 for n in range(40)},
    }
    largest = httpx.post(url, data=sms, headers={"X-Twilio-Signature": sign(url, sms)}, timeout=60)
    oversized = httpx.post(
        url, content=b"Body=" + b"x" * SIGNED_MAX_BODY_BYTES, headers={"X-Twilio-Signature": "forged"}, timeout=60
    )

    assert len(urlencode(sms)) > 20_000  # 19.2 KB of percent-encoded emoji alone
    assert (largest.status_code, largest.text) == (200, "😀" * 1600)
    assert (oversized.status_code, oversized.json()["error"]["type"]) == (413, "PayloadTooLargeError")
    assert len(forms.threads) == 1  # the oversized body was refused before anything parsed it


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(DEEP_JSON, f"nested too deeply; at most {MAX_JSON_DEPTH} levels", id="100000-deep"),
        pytest.param("[" * 65 + "]" * 65, f"nested too deeply; at most {MAX_JSON_DEPTH} levels", id="65-deep"),
        pytest.param(LONE_SURROGATE, "lone surrogate (\\ud800)", id="lone-surrogate"),
        pytest.param('{"\\udfff": 1}', "lone surrogate (\\udfff)", id="surrogate-key"),
    ],
)
def test_deep_or_invalid_json_is_a_recorded_400(server: LiveServer, runtime: Runtime, body: str, message: str) -> None:
    """Deep nesting and invalid Unicode answer 400 with a clear message, recorded as a failed run of the hook."""
    response = httpx.post(server.url("/hooks/acme/open"), content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["field"]) == ("ValidationError", "body")
    assert message in error["message"]
    recorded = next(run for run in _runs(runtime, "open") if run.id == response.headers["x-zingy-run-id"])
    assert (recorded.status, recorded.error["type"], recorded.error["message"]) == (
        "failed",
        *(error["type"], error["message"]),
    )
    assert recorded.event["method"] == "POST"


def test_deep_or_invalid_json_to_the_command_api_is_400(server: LiveServer, runtime: Runtime) -> None:
    """The command API refuses the same bodies with 400 (its token is checked first)."""
    from zingyconn.secrets.tokens import TokenStore

    token = TokenStore(runtime.engine).create("acme")
    headers = {"Authorization": f"Bearer {token}", "X-Zingy-Flow": "cloud", "Content-Type": "application/json"}
    for body in (DEEP_JSON, LONE_SURROGATE):
        response = httpx.post(
            server.url("/api/v1/connections/main/commands/sendMessage"), content=body, headers=headers
        )
        assert (response.status_code, response.json()["error"]["type"]) == (400, "ValidationError")


def test_head_does_not_run_a_hook(server: LiveServer, runtime: Runtime) -> None:
    """HEAD is 405 (Allow: GET, POST) and runs nothing; GET still runs the hook."""
    before = len(_runs(runtime, "open"))
    head = httpx.head(server.url("/hooks/acme/open"))
    assert (head.status_code, head.headers["allow"], len(_runs(runtime, "open"))) == (405, "GET, POST", before)
    assert httpx.get(server.url("/hooks/acme/open")).json() == {"json": None}
    assert len(_runs(runtime, "open")) == before + 1


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with live_console(tmp_path) as live:
        yield live


def test_console_compiles_large_snippets_in_another_process_at_a_per_tenant_rate(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 150 KB snippet run in the runner is parsed in a worker thread and compiled by the pool's process (not this
    one); past the tenant's rate, 429."""
    compiled_here, forms = ThreadSpy(sandbox.compiler._compile), ThreadSpy(urllib.parse.parse_qsl)
    monkeypatch.setattr(sandbox.compiler, "_compile", compiled_here)
    monkeypatch.setattr(view, "parse_qsl", forms)
    large = "\n".join(f"v{n} = {n}" for n in range(15_000)) + "\nreturn v14999 + 1"
    assert 150_000 < len(large) < sandbox.compiler.MAX_SOURCE_BYTES
    with console.browser() as browser:
        sign_in(browser, OPERATOR_TOKEN)
        csrf = csrf_of(browser.get("/console/t/acme/runner").text)
        ran = browser.post("/console/t/acme/runner", data={"csrf_token": csrf, "source": large, "event": "{}"})
        assert (ran.status_code, "15000" in ran.text) == (200, True)
        assert compiled_here.threads == []  # compiled in the pool's process, adopted here from its bytes
        loop_thread = f"console-{console.base_url.rsplit(':')[-1]}"
        assert forms.threads
        assert loop_thread not in forms.threads

        save = {"csrf_token": csrf, "action": "save", "save_name": "", "source": "return 1"}
        statuses = [browser.post("/console/t/acme/runner", data=save).status_code for _ in range(COMPILES_PER_MINUTE)]
        assert statuses[:-1] == [200] * (COMPILES_PER_MINUTE - 1)  # 30 a minute: the large run took one
        assert statuses[-1] == 429
        other = browser.post("/console/t/globex/runner", data=save)
        assert other.status_code == 200  # another tenant's budget is its own
        console.clock.advance(2)
        assert browser.post("/console/t/acme/runner", data=save).status_code == 200
