"""Red-team corpus: a hostile tenant attacking the integrated system end to end, through ``Runtime.run``.

Snippets run in the real isolated sandbox (zygote, child, language wall) against the Twilio emulator (or a fake
Twilio on loopback), with the production broker, masking and history. Each case names the specific error that must
stop it. Cases marked "broken wall" use ``tests.escapes.redteam_env``, which hands the snippet powers an escaped
child would have (raw channel writes, file reads), to show the host and the OS wall still hold.
Nothing here leaves the machine: every server binds 127.0.0.1, and the real-Twilio broker is given a resolver.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from huey import MemoryHuey

from sandbox.environment import Environment
from sandbox.errors import EgressDeniedError, QuotaExceededError
from sandbox.executor import run_source
from sandbox.limits import Limits
from sandbox.supervisor import Sandbox
from tests.zingyconn.capability import (
    ACCOUNT_SID,
    API_SECRET,
    AUTH_TOKEN,
    OTHER_SID,
    OTHER_TOKEN,
    RECIPIENT,
    SENDER,
    World,
    twilio_world,
)
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.egress.broker import EgressBroker
from zingyconn.egress.policy import SCRUBBED, UrlPolicy
from zingyconn.egress.protocol import OP_ENQUEUE, OP_HTTP
from zingyconn.egress.ratelimit import Rate, SqlRateLimiter
from zingyconn.runtime import MaskedRunResult, Runtime
from zingyconn.secrets.masking import Masker
from zingyconn.tasks.queue import TaskQueue
from zingyconn.twilio.billing import TWILIO_WRITES

SECRETS = (AUTH_TOKEN, API_SECRET, OTHER_TOKEN)
LIMITS = Limits(wall_seconds=10, cpu_seconds=10)
CLIENT = 'c = zingyConn.twilio("main")\n'
SEND = f"to='{RECIPIENT}', from_='{SENDER}', body='hi'"
BROKEN_WALL = "tests.escapes.redteam_env:environment"
#: A snippet holding the class of a real EgressDeniedError (buying a number is refused).
BUY_CAUGHT = (
    CLIENT + "try:\n    c.incoming_phone_numbers.create(phone_number='+15005550006')\nexcept Exception as e:\n"
    "    E = type(e)\n"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The emulator and a store with tenants acme (main, keyed) and globex (theirs)."""
    with twilio_world(tmp_path_factory.mktemp("redteam")) as running:
        yield running


@pytest.fixture(scope="module")
def runtime(world: World) -> Iterator[Runtime]:
    """The production runtime (real sandbox, broker in emulator mode, masking, history)."""
    with Runtime(world.settings, engine=world.engine, keyring=world.keyring) as running:
        yield running


@pytest.fixture(scope="module")
def broken_wall() -> Iterator[Sandbox]:
    """A sandbox whose snippets have an escaped child's powers (raw channel, files, signals)."""
    with Sandbox(environment=BROKEN_WALL) as running:
        yield running


def run(runtime: Runtime, source: str, **kwargs: Any) -> MaskedRunResult:
    """Run *source* as tenant acme and check no secret shows up, not even masked-out in a transformed form."""
    result = runtime.run("acme", source, limits=kwargs.pop("limits", LIMITS), **kwargs)
    text = json.dumps(result.to_json())
    for secret in SECRETS:
        assert secret not in text, text[:500]
        assert secret[::-1] not in text, text[:500]
    return result


def error_of(result: MaskedRunResult) -> tuple[str, str | None, str]:
    assert result.error is not None, f"expected a failure, got {result.value!r}"
    return result.error.type, result.error.exception, result.error.message


# --- holes found by this corpus (each failed before its fix) ------------------------------------------------------

PATH_REFUSED = ("EgressDeniedError", None, "its path has '.' or '..' segments")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            CLIENT + f"return c.api.v2010.accounts(c.account_sid + '/Messages%2Ejson?x=').messages.create({SEND}).sid",
            PATH_REFUSED,
            id="create-escaped-dot-skips-rate-limit",
        ),
        pytest.param(
            CLIENT + f"return c.api.v2010.accounts(c.account_sid + '/%4Dessages.json?').messages.create({SEND}).sid",
            PATH_REFUSED,
            id="create-escaped-letter",
        ),
        pytest.param(
            CLIENT + f"return c.api.v2010.accounts(c.account_sid + '/.').messages.create({SEND}).sid",
            PATH_REFUSED,
            id="create-dot-segment",
        ),
        pytest.param(
            CLIENT + f"return c.api.v2010.accounts('x/../' + c.account_sid).messages.create({SEND}).sid",
            PATH_REFUSED,
            id="create-dotdot-segment",
        ),
        pytest.param(
            CLIENT + f"return c.api.v2010.accounts(c.account_sid + '/').messages.create({SEND}).sid",
            PATH_REFUSED,
            id="create-double-slash",
        ),
        pytest.param(
            CLIENT + "return c.messages('%2e%2e/%2e%2e/x').fetch()",
            PATH_REFUSED,
            id="message-sid-escaped-traversal",
        ),
    ],
)
def test_ambiguous_paths_are_refused(world: World, runtime: Runtime, source: str, expected: tuple[str, ...]) -> None:
    """A path a server could route as another resource (escaped, dot segments, ``//``) never leaves the broker."""
    before = len(world.emulator.requests)
    error_type, exception, message = error_of(run(runtime, source))
    assert (error_type, exception) == expected[:2]
    assert expected[2] in message
    assert len(world.emulator.requests) == before


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("/Messages?", id="no-extension"),
        pytest.param("/Messages.xml?", id="xml-extension"),
        pytest.param("/messages.json?", id="lower-case"),
        pytest.param("/SMS/Messages.json?", id="legacy-sms"),
        pytest.param("/Messages.json;v=1?", id="path-parameter"),
        pytest.param("/Messages.json.json?", id="repeated-suffix"),
    ],
)
def test_every_create_spelling_takes_a_rate_limit_token(world: World, spelling: str) -> None:
    """Creates spelled another way (Twilio answers XML without ``.json``) are rate limited like the usual one."""
    tenant = f"spell{abs(hash(spelling)) % 10_000}"
    world.store.put(tenant, "main", world.store.get("acme", "main"))
    limiter = SqlRateLimiter(world.engine, clock=lambda: 0.0)
    broker = EgressBroker(world.store, base_url=world.emulator.base_url, rate_limiter=limiter, message_rate=Rate(1, 1))
    session = broker.session(tenant)
    client = broker.client(tenant, "main", session=session)
    client.messages.create(to=RECIPIENT, from_=SENDER, body="the one allowed")
    before = len(world.emulator.requests)
    with pytest.raises(QuotaExceededError, match="rate limited"):
        client.api.v2010.accounts(ACCOUNT_SID + spelling).messages.create(to=RECIPIENT, from_=SENDER, body="x")
    assert len(world.emulator.requests) == before
    broker.close()


def test_long_registered_token_is_refused_and_the_run_is_recorded(runtime: Runtime) -> None:
    """A 3000-character ``Client`` token crashed the host's masker (RecursionError, run unrecorded); now refused."""
    source = (
        f"import twilio\ntry:\n    twilio.Client('{ACCOUNT_SID}', 'x' * 3000)\n"
        "except Exception as exc:\n    return ['refused', str(exc)]\nreturn 'kept'"
    )
    result = run(runtime, source)
    assert result.ok, result.error
    assert result.value[0] == "refused"
    assert "at most 256 characters" in result.value[1]
    assert runtime.history.get("acme", result.run_id) is not None


def test_masker_survives_long_secrets_and_deep_values() -> None:
    """The masker never recurses: a 5000-character secret and 5000-deep JSON are masked, not a RecursionError."""
    masker = Masker(["s" * 5000, AUTH_TOKEN])
    deep: Any = AUTH_TOKEN
    for level in range(5000):
        deep = [deep] if level % 2 else {"k": deep}
    masked = masker.mask(deep)
    for level in reversed(range(5000)):
        masked = masked[0] if level % 2 else masked["k"]
    assert masked == "****"
    assert masker.mask_text("s" * 5000 + "!") == "****!"


def test_deep_event_runs_and_is_recorded(runtime: Runtime) -> None:
    """A 600-deep event (a webhook body) made masking raise RecursionError in the host; now the run is stored."""
    event: Any = AUTH_TOKEN
    for _ in range(600):
        event = [event]
    result = run(runtime, "return 'ran'", event=event)
    assert result.value == "ran", result.error
    assert runtime.history.get("acme", result.run_id) is not None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            "got = []\nclass C:\n    def __enter__(self):\n        return self\n"
            "    def __exit__(self, t, e, tb):\n        got.append(tb)\n        return True\n"
            "with C():\n    1/0\nreturn got[0] is None",
            True,
            id="exit-gets-no-traceback",
        ),
        pytest.param(
            "got = []\nclass C:\n    def __enter__(self):\n        return self\n"
            "    def __exit__(self, t, e, tb):\n        got.append(t)\n        return True\n"
            "def g():\n    with C():\n        yield 1\nx = g()\nnext(x)\nx.close()\nreturn got",
            [None],
            id="exit-never-sees-generator-exit",
        ),
        pytest.param(
            "class S(str):\n    def startswith(self, *a):\n        return False\n"
            "def f(**kw):\n    return 1\ntry:\n    f(**{S('_x'): 1})\nexcept TypeError as exc:\n    return str(exc)",
            "Keyword argument '_x' is not allowed in snippets because it starts with '_'.",
            id="kwargs-str-subclass-key",
        ),
    ],
)
def test_objects_the_interpreter_hands_in(runtime: Runtime, source: str, expected: object) -> None:
    """What CPython passes to snippet dunders and ``**kwargs`` goes through the same policy as everything else."""
    result = run(runtime, source)
    assert result.ok, result.error
    assert result.value == expected


def test_exit_must_be_a_plain_method(runtime: Runtime) -> None:
    """An ``__exit__`` that is not a ``def`` cannot dodge the traceback filter."""
    source = "class C:\n    @staticmethod\n    def __exit__(t, e, tb):\n        return tb\nreturn 1"
    error_type, exception, message = error_of(run(runtime, source))
    assert (error_type, exception) == ("SnippetError", "TypeError")
    assert "__exit__ must be a plain method" in message


class _FakeTwilio(BaseHTTPRequestHandler):
    """Answers like Twilio's Account and Keys resources, which hand out credentials."""

    def _answer(self, status: int, body: str, content_type: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.partition("?")[0].endswith(".json"):
            account = {"sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "friendly_name": "acme", "status": "active"}
            self._answer(200, json.dumps(account), "application/json")
        else:
            self._answer(200, f"<TwilioResponse><AuthToken>{AUTH_TOKEN}</AuthToken></TwilioResponse>", "text/xml")

    def do_POST(self) -> None:
        # A TURN token (POST /Tokens.json) carries a password; a minted key (refused by the broker) a secret.
        token = {"username": "u", "password": "minted" + OTHER_TOKEN[::-1], "secret": "minted" + OTHER_TOKEN[::-1]}
        self._answer(201, json.dumps(token), "application/json")

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        del format, args


@pytest.fixture(scope="module")
def fake_twilio_runtime(world: World) -> Iterator[Runtime]:
    """A runtime whose broker talks to :class:`_FakeTwilio` on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeTwilio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = dataclasses.replace(world.settings, twilio_base_url=f"http://127.0.0.1:{server.server_port}")
    with Runtime(settings, engine=world.engine, keyring=world.keyring) as running:
        yield running
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            CLIENT + "return c.api.v2010.account.fetch().auth_token[::-1]", SCRUBBED[::-1], id="account-token"
        ),
        pytest.param(
            CLIENT + "return c.api.v2010.account.fetch().friendly_name", "acme", id="account-other-fields-kept"
        ),
        pytest.param(
            CLIENT + "return c.api.v2010.account.tokens.create().password[::-1]",
            SCRUBBED[::-1],
            id="turn-token-password",
        ),
        pytest.param(
            CLIENT + "try:\n    c.api.v2010.accounts(c.account_sid + '.xml?').fetch()\n"
            "except Exception as exc:\n    return [isinstance(exc, ValueError), exc.doc[::-1]]",
            [True, ""],
            id="account-token-as-xml",
        ),
    ],
)
def test_the_api_hands_no_credential_to_the_child(fake_twilio_runtime: Runtime, source: str, expected: object) -> None:
    """Twilio answers that carry credentials (Account, new Keys, XML forms) reach the child scrubbed.

    The snippet reverses what it got, so the host's output masking cannot hide a leak from this test.
    """
    result = run(fake_twilio_runtime, source)
    assert result.ok, result.error
    assert result.value == expected


def test_minting_an_api_key_is_refused_before_it_reaches_twilio(fake_twilio_runtime: Runtime) -> None:
    """Account management (here: minting an API key with the connection's power) never leaves the host."""
    result = run(fake_twilio_runtime, CLIENT + "return c.api.v2010.account.new_keys.create(friendly_name='x').sid")
    assert result.error is not None
    assert (result.error.type, "not manage it" in result.error.message) == ("EgressDeniedError", True)
    assert [call["status"] for call in result.egress] == [None]


def _raw(text: str) -> str:
    """Source of a broken-wall snippet that writes *text* to the host as one frame, then exits."""
    return f"send_raw({text!r})"


def _result(result: dict[str, Any]) -> str:
    return _raw(json.dumps({"t": "result", "result": result}))


FRAME_CASES = {
    "deep-result": _raw('{"t": "result", "result": ' + "[" * 5000 + "]" * 5000 + "}"),
    "deep-request": _raw('{"t": "request", "op": "x", "payload": ' + "[" * 5000 + "]" * 5000 + "}"),
    "deep-value": _raw('{"t": "result", "result": {"ok": true, "result": ' + "[" * 900 + "]" * 900 + "}}"),
    "error-without-message": _result({"ok": False, "error": {"type": "X"}}),
    "error-lines-not-text": _result({"ok": False, "error": {"type": "X", "message": "m", "errors": [1]}}),
    "error-line-not-int": _result({"ok": False, "error": {"type": "X", "message": "m", "line": {}}}),
    "ok-with-error": _result({"ok": True, "error": {"type": "X", "message": "m"}}),
    "failed-without-error": _result({"ok": False}),
}


@pytest.mark.parametrize("source", FRAME_CASES.values(), ids=FRAME_CASES.keys())
def test_malformed_frames_from_an_escaped_child_are_a_crash_not_a_host_exception(
    broken_wall: Sandbox, source: str
) -> None:
    """Broken wall: frames that raised RecursionError/KeyError in the host (or lied) end as WorkerCrashedError."""
    result = broken_wall.run(source, limits=LIMITS, on_request=lambda op, payload: {"answered": op})
    assert result.error is not None
    assert result.error.type == "WorkerCrashedError", result


def test_request_flood_over_the_cap_ends_the_run(broken_wall: Sandbox) -> None:
    """Broken wall: requests past the cap kept a host thread answering refusals until the deadline; now the run ends."""
    answered: list[str] = []
    limits = LIMITS.replace(egress_requests=5)
    result = broken_wall.run("return flood(100000)", limits=limits, on_request=lambda op, _: answered.append(op))
    assert result.error is not None
    assert result.error.type == "QuotaExceededError", result.error
    assert "more than 5 requests; the run was stopped" in result.error.message
    assert len(answered) == 5


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory any user can traverse (as a deployment's working directory would be)."""
    path = Path(tempfile.mkdtemp(prefix="redteam-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_escaped_child_cannot_read_the_embedded_store(broken_wall: Sandbox, public_dir: Path) -> None:
    """Broken wall: the store (every tenant's history) and queue are private to the host's user, not world-readable."""
    if broken_wall.hardening.get("unprivileged_uid") != "active" or os.geteuid() != 0:
        pytest.skip("needs root, so that children run unprivileged")
    settings = Settings.from_env({"ZINGYCONN_DATA_DIR": str(public_dir / "data")})
    create_engine(settings.db_url).dispose()
    database = settings.data_dir / "zingyconn.db"
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    result = broken_wall.run(f"return read_file({str(database)!r})", limits=LIMITS)
    assert result.value == "PermissionError", result


@pytest.mark.parametrize(
    "source",
    [
        pytest.param('x = f"' + "{a:{b}}" * 30_000 + '"', id="fstring-nested-specs"),
        pytest.param('x = f"' + "{a}" * 80_000 + '"', id="fstring-many-fields"),
    ],
)
def test_quadratic_fstring_parse_is_refused_before_parsing(runtime: Runtime, source: str) -> None:
    """An f-string with tens of thousands of fields took the host seconds of CPU to parse; now refused unparsed."""
    error_type, _, message = error_of(run(runtime, source))
    assert error_type == "CompileError"
    assert "'{' characters; the limit is 10000" in message


def test_escaped_child_cannot_signal_the_zygote_or_a_sibling(broken_wall: Sandbox) -> None:
    """Broken wall: SIGSTOP to the zygote would hang every tenant's runs; each child now has a uid of its own."""
    if os.geteuid() != 0:
        pytest.skip("needs root, so that children run under their own uids")
    zygote = broken_wall.zygote_pid
    first = broken_wall.run("return identity()", limits=LIMITS)
    source = f"return [signal_pid({zygote}, 0), signal_pid({first.value[0]} + 1, 0), identity()]"
    second = broken_wall.run(source, limits=LIMITS)
    assert second.ok, second.error
    to_zygote, to_neighbour, (pid, uid, parent) = second.value
    assert parent == zygote
    assert to_zygote == "PermissionError"
    assert to_neighbour in ("PermissionError", "ProcessLookupError") or pid == first.value[0] + 1
    assert uid not in (0, first.value[1])


# --- attempts that were already stopped (pinned) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param('return zingyConn.twilio("theirs")', ("SnippetError", "LookupError"), id="other-tenant-name"),
        pytest.param('return zingyConn.twilio("THEIRS ")', ("SnippetError", "LookupError"), id="other-tenant-variant"),
        pytest.param(
            CLIENT + f"return c.api.v2010.accounts('{OTHER_SID}').messages.list(limit=1)",
            ("SnippetError", "TwilioException"),
            id="other-account-path",
        ),
        pytest.param(
            f"import twilio\nc = twilio.Client('{OTHER_SID}', 'f' * 32)\nreturn c.messages.list(limit=1)",
            ("SnippetError", "TwilioException"),
            id="other-account-guessed-token",
        ),
        pytest.param(
            CLIENT + "p = c.messages.page(page_size=1)\nreturn p.next_page_url",
            None,
            id="page-next-url-from-emulator",
        ),
        pytest.param(
            CLIENT + "try:\n    c.messages('SMnope').fetch()\nexcept Exception as exc:\n    return exc.obj",
            ("SnippetError", "AttributeError"),
            id="exception-obj",
        ),
        pytest.param(
            CLIENT + "try:\n    c.messages('SMnope').fetch()\nexcept Exception as exc:\n    return exc.__traceback__",
            ("CompileError", None),
            id="exception-traceback",
        ),
        pytest.param(
            "try:\n    1/0\nexcept Exception as exc:\n    return exc.with_traceback(None).__traceback__",
            ("CompileError", None),
            id="exception-context",
        ),
        pytest.param(
            CLIENT + "return c.messages.page(page_size=1).get_instance({'sid': 'SM1'}).fetch",
            ("SnippetError", "TypeError"),
            id="forged-instance-bound-method-result",
        ),
        pytest.param("return log", ("SnippetError", "TypeError"), id="return-log-object"),
        pytest.param("return log.info", ("SnippetError", "TypeError"), id="return-bound-method"),
        pytest.param(
            CLIENT + "log.info('x', client=c)\nreturn 1", ("SnippetError", "TypeError"), id="log-field-client"
        ),
        pytest.param(CLIENT + "return {'k': c.messages}", ("SnippetError", "TypeError"), id="return-list-resource"),
        pytest.param(
            "import json\nreturn json.loads('{}', cls=json.JSONDecoder, object_hook=lambda d: d.keys)",
            ("SnippetError", "TypeError"),
            id="json-object-hook-method",
        ),
        pytest.param(
            "import collections\nd = collections.defaultdict(list)\nd.default_factory = getattr\nreturn d['__code__']",
            ("SnippetError", "TypeError"),
            id="defaultdict-factory-getattr",
        ),
        pytest.param(
            "import string\nreturn string.Template('${a}').substitute(a=string.Template).__class__.__base__",
            ("CompileError", None),
            id="template-class-walk",
        ),
        pytest.param(
            "import datetime\nreturn datetime.date(2020, 1, 1).strftime('%Y {0.__class__} %%s')",
            None,
            id="strftime-is-not-format",
        ),
        pytest.param(
            "import decimal\nc = decimal.getcontext()\nc.prec = 1\nreturn 1",
            None,
            id="decimal-context-write",
        ),
        pytest.param(
            "import re\nreturn re.sub('a', lambda m: m.re.pattern.__class__.__mro__, 'a')",
            ("CompileError", None),
            id="re-callback-walk",
        ),
        pytest.param(
            "import hashlib\nh = hashlib.sha256(b'x')\nh.name = 'x'\nreturn 1",
            ("SnippetError", "TypeError"),
            id="hashlib-write",
        ),
        pytest.param(
            "def g():\n    yield 1\nx = g()\nreturn '{0.gi_frame}'.format(x)",
            ("SnippetError", "AttributeError"),
            id="format-gi-frame",
        ),
        pytest.param(
            "return 'gi_' + 'frame' in ['gi_frame'] and '{0.gi_code.co_consts}'.format((lambda: (yield))())",
            ("SnippetError", "AttributeError"),
            id="format-gi-code",
        ),
        pytest.param(
            "return '{0.f\\u0062ack}'.format(1)",
            ("SnippetError", "AttributeError"),
            id="format-escaped-name",
        ),
        pytest.param(
            "import unicodedata\nreturn 1",
            ("SnippetError", "ImportError"),
            id="import-unicodedata",
        ),
        pytest.param(
            CLIENT + "return c.ｐａｓｓｗｏｒｄ",
            ("SnippetError", "AttributeError"),
            id="fullwidth-attribute-nfkc",
        ),
        pytest.param(
            CLIENT + "return c.api.v2010.account.messages.create(to=[1] * 200000, from_='x', body='y')",
            ("EgressDeniedError", None),
            id="oversized-form",
        ),
        pytest.param(
            "import twilio\nfor i in range(25):\n    twilio.Client('" + ACCOUNT_SID + "', 'x' * 32)\nreturn 1",
            ("QuotaExceededError", None),
            id="credential-registration-flood",
        ),
        pytest.param(
            "zingyConn.enqueue('other-tenant-script', {})\nreturn 1",
            ("EgressDeniedError", None),
            id="enqueue-without-task-queue",
        ),
        pytest.param("return [*range(10**9)]", ("MemoryLimitExceededError", None), id="star-range-memory"),
        # Typed outcomes: a run's error type is the sandbox's, never a name the snippet picks, so a snippet cannot
        # make its task look like the platform's crash (retried) or a refusal of another kind.
        pytest.param(
            BUY_CAUGHT + "class WorkerCrashedError(E):\n    pass\nraise WorkerCrashedError('x')",
            ("SnippetError", "TypeError"),
            id="subclass-a-caught-egress-error",
        ),
        pytest.param(BUY_CAUGHT + "raise E('made up')", ("SnippetError", "TypeError"), id="instantiate-egress-error"),
        pytest.param(
            "class WorkerCrashedError(Exception):\n    pass\nraise WorkerCrashedError('x')",
            ("SnippetError", "WorkerCrashedError"),
            id="own-class-named-like-a-crash",
        ),
        pytest.param(
            "raise type('RequestFailedError', (Exception,), {})('x')",
            ("SnippetError", "TypeError"),
            id="three-argument-type",
        ),
        pytest.param(
            CLIENT + f"return len(c.api.v2010.accounts('{ACCOUNT_SID}/Calls.json?_method=POST&To=x&').calls.list())",
            ("EgressDeniedError", None),
            id="method-override-query",
        ),
        # Tenant variables are the host's read-only copy.
        pytest.param("zingyConn.vars['A'] = 'b'\nreturn 1", ("SnippetError", "TypeError"), id="vars-item-write"),
        pytest.param("return zingyConn.vars._values", ("SnippetError", "AttributeError"), id="vars-private-read"),
        pytest.param("zingyConn.vars._values = {}\nreturn 1", ("SnippetError", "TypeError"), id="vars-private-write"),
    ],
)
def test_attempt_already_stopped(runtime: Runtime, source: str, expected: tuple[str, str | None] | None) -> None:
    """Each attempt ends in its specific error (or, for ``None``, harmlessly succeeds) and leaks nothing."""
    result = run(runtime, source)
    if expected is None:
        assert result.ok, result.error
        return
    error_type, exception, _ = error_of(result)
    assert error_type == expected[0], result.error
    if expected[1] is not None:
        assert exception == expected[1], result.error


def test_a_module_in_a_careless_container_is_still_inert() -> None:
    """Item guards are not a boundary (``dict.get``, ``list.pop`` hand items out); module attributes stay refused."""
    environment = Environment(names={"table": {"m": json}})
    result = run_source(
        "import itertools\nm = next(itertools.chain([table.get('m')]))\nreturn m.dumps", environment=environment
    )
    assert result.error is not None
    assert result.error.message == "Reading attributes of module 'json' is not allowed in snippets."


def test_enqueue_reaches_only_the_runs_own_tenant(world: World) -> None:
    """``zingyConn.enqueue`` names scripts of the run's tenant only: another tenant's script is simply not found."""
    with Runtime(world.settings, engine=world.engine, keyring=world.keyring) as runtime:
        queue = TaskQueue(MemoryHuey("redteam"), world.engine, runner=runtime)
        runtime.register_op(OP_ENQUEUE, queue.enqueue_from_snippet)
        queue.catalog.put_script("globex", "payroll", "return event")
        queue.catalog.put_script("acme", "digest", "return event")
        deep: Any = "x"
        for _ in range(600):
            deep = [deep]
        source = (
            "out = []\nfor name in ['payroll', 'Payroll', 'globex/payroll', '../globex/payroll']:\n"
            "    try:\n        out.append(zingyConn.enqueue(name, {}))\n"
            "    except Exception as exc:\n        out.append(str(exc)[:40])\n"
            "out.append(len(zingyConn.enqueue('digest', event)) > 0)\nreturn out"
        )
        result = run(runtime, source, event=deep)
    assert result.ok, result.error
    assert result.value[-1] is True
    assert all(answer.startswith("Tenant 'acme' has no script named") for answer in result.value[:4]), result.value
    assert [task.script for task in queue.store.recent("acme")] == ["digest"]
    assert queue.store.recent("globex") == []


@pytest.mark.parametrize(
    "url",
    [
        "https://api.twilio.com@evil.example/x",
        "https://evil.example\\@api.twilio.com/x",
        "https://api.twilio.com.evil.example/x",
        "https://api.twilio.com:8443/x",
        "https://[::1]/x",
        "http://127.1/x",
        "https://2130706433/x",
        "https://0x7f000001/x",
        "http://api.twilio.com/x",
        "https://api.twilio.com#@evil.example/x",
        "https://api.twilio.com./x",
        "https://api%2Etwilio.com/x",
        "https://xn--twilio-.com/x",
        "https://api.twilio.com\u3002evil.example/x",
        "https://api.twilio.com\uff0fx",
        "//api.twilio.com/x",
        "https:///api.twilio.com/x",
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages%2Ejson",
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Calls.json?_method=POST",
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Calls.json?To=x&%5FMETHOD=POST",
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Calls.json?X-HTTP-Method-Override=POST",
    ],
)
def test_url_differentials_are_refused_before_any_lookup(url: str) -> None:
    """Real-Twilio mode: URL-parser confusion and IP literals are refused by the policy, before DNS or a socket."""
    with pytest.raises(EgressDeniedError):
        UrlPolicy(None, writes=TWILIO_WRITES).target(url)


def test_twilio_name_resolving_to_loopback_is_refused_without_connecting(world: World) -> None:
    """Real-Twilio mode: a ``*.twilio.com`` name that resolves to a private address is refused before connecting."""
    looked_up: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1", "8.8.8.8"] if host.startswith("mixed") else ["169.254.169.254"]

    broker = EgressBroker(world.store, resolver=resolver)
    session = broker.session("acme")
    for host in ("metadata.twilio.com", "mixed.twilio.com"):
        payload = {"method": "GET", "url": f"https://{host}/x", "connection": "main"}
        with pytest.raises(EgressDeniedError, match="non-public"):
            session.request(OP_HTTP, payload)
    broker.close()
    assert looked_up == ["metadata.twilio.com", "mixed.twilio.com"]


def test_emulator_mode_reaches_nothing_but_the_emulator(world: World) -> None:
    """Emulator mode: every other origin, even loopback on another port, is refused by the policy."""
    broker = EgressBroker(world.store, base_url=world.emulator.base_url)
    session = broker.session("acme")
    port = int(world.emulator.base_url.rsplit(":", 1)[1])
    for url in (f"http://127.0.0.1:{port + 1}/x", f"http://localhost:{port}/x", "http://[::1]/x", "file:///etc/passwd"):
        with pytest.raises(EgressDeniedError):
            session.request(OP_HTTP, {"method": "GET", "url": url, "connection": "main"})
    broker.close()


@pytest.mark.postgres
def test_a_nul_in_printed_output_is_recorded_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """A snippet printing NUL made recording fail on PostgreSQL (the run unrecorded, its task retried as our fault)."""
    env = {
        "ZINGYCONN_DATA_DIR": str(tmp_path),
        "ZINGYCONN_DB_URL": postgres_url,
        "ZINGYCONN_QUEUE_URL": "",
        "ZINGYCONN_TWILIO_BASE_URL": "",
        "ZINGYCONN_KEYS": "k1:" + base64.b64encode(bytes(32)).decode(),
    }
    with Runtime(Settings.from_env(env)) as runtime:
        result = runtime.run("acme", "print('a\\x00b')\nreturn 'printed'", kind="task")
        assert result.value == "printed"
        assert runtime.history.get("acme", result.run_id).stdout == "a\ufffdb\n"
