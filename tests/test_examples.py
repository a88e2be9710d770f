"""Every example in examples/ runs through the real runtime (isolated sandbox, broker) against the Twilio emulator.

The store is seeded exactly as ``zingyconn demo`` seeds it (tenant ``demo``, connection ``main`` holding the
emulator's default account), so these are also the demo's hooks and scripts as a newcomer meets them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from twilio.rest import Client

from sandbox import compile_snippet
from sandbox.supervisor import Sandbox
from tests.emulator import MAGIC_SENDER, Emulator, check_response, running_emulator
from tests.servers import uvicorn_in_thread
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.hosts.demo import DEMO_NOTES_TOKEN, DEMO_TENANT, seed, seed_notes_connection
from zingyconn.http.echo import EchoRecorder
from zingyconn.http.echo import create_app as create_echo_app
from zingyconn.runtime import SNIPPET_ENVIRONMENT, MaskedRunResult, Runtime
from zingyconn.secrets.keyring import Keyring
from zingyconn.secrets.masking import MASK
from zingyconn.twilio.emulator import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    DEFAULT_AUTH_TOKEN,
    EmulatorState,
)
from zingyconn.twilio.profile import TwilioProfile

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.py"))
#: Every example this module runs; a new example without a test here fails test_every_example_is_exercised.
EXERCISED = {
    "auto_reply",
    "direct_client",
    "keyword_router",
    "nightly_digest",
    "post_note",
    "redact_old_messages",
    "status_callback_logger",
    "video_token",
}
CUSTOMER = "+15558675310"
#: An emulator recipient that is accepted, then ends "undelivered" with 30003.
UNDELIVERED = "+15005551001"
DAY = 86_400.0


def source(name: str) -> str:
    """Return the text of examples/NAME.py."""
    return (EXAMPLES / f"{name}.py").read_text(encoding="utf-8")


def header(path: Path) -> list[str]:
    """Return the example's leading comment block, without the '# ' markers."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return lines


def midnight_utc_today() -> float:
    """Unix time of today's 00:00 UTC (the examples compute 'yesterday' and cut-offs from the real clock)."""
    return dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(), tzinfo=dt.UTC).timestamp()


@dataclass(frozen=True)
class World:
    """The emulator, a runtime seeded like the demo, and a client to prepare messages."""

    emulator: Emulator
    runtime: Runtime

    def run(self, name: str, event: Any, *, kind: str = "task", **options: Any) -> MaskedRunResult:
        """Run examples/NAME.py as the demo tenant and return its (masked, recorded) result."""
        result = self.runtime.run(DEMO_TENANT, source(name), event=event, kind=kind, name=name, **options)
        assert result.ok, result.error
        return result

    def client(self) -> Client:
        """A client of the emulator's default account (the demo connection's account), outside any sandbox."""
        return self.emulator.client()

    def posts(self) -> list[str]:
        """Paths of every POST the emulator received (creates and updates)."""
        return [r.path for r in self.emulator.requests if r.method == "POST"]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One production sandbox for the module; each test gets its own emulator, store and runtime around it."""
    with Sandbox(environment=SNIPPET_ENVIRONMENT) as running:
        yield running


@pytest.fixture
def world(sandbox: Sandbox, tmp_path: Path) -> Iterator[World]:
    """The emulator, its clock 39 days before yesterday noon (UTC), and a store seeded as the demo seeds it."""
    start = midnight_utc_today() - DAY / 2 - 39 * DAY
    state = EmulatorState(clock=lambda: start)
    with running_emulator(state) as emulator:
        db_url = f"sqlite:///{tmp_path / 'zingyconn.db'}"
        settings = Settings(data_dir=tmp_path, db_url=db_url, twilio_base_url=emulator.base_url)
        engine = create_engine(settings.db_url)
        keyring = Keyring([("k1", bytes(range(32)))])
        with Runtime(settings, engine=engine, keyring=keyring, sandbox=sandbox) as runtime:
            seed(runtime.store, Catalog(engine), examples=EXAMPLES)
            yield World(emulator=emulator, runtime=runtime)
        engine.dispose()
    for response in emulator.responses:
        check_response(response)


# --- every example ---------------------------------------------------------------------------------------------


def test_every_example_is_exercised() -> None:
    """Each file in examples/ has a test here (a new example needs one)."""
    assert {path.stem for path in EXAMPLE_FILES} == EXERCISED


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_has_a_header_paragraph(path: Path) -> None:
    """An example opens with a title line, a blank comment line and a paragraph that says what it does."""
    lines = header(path)
    assert len(lines) >= 3, f"{path.name} has no header comment"
    title, blank, paragraph = lines[0], lines[1], " ".join(lines[2:])
    assert title, f"{path.name}: the first line is not a title"
    assert blank == "", f"{path.name}: no blank comment line after the title"
    assert len(paragraph.split()) >= 20, f"{path.name}: the header paragraph is too short to explain the example"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_compiles_under_the_snippet_policy(path: Path) -> None:
    """Every example is a valid snippet body (hooks and scripts refuse anything that is not)."""
    compile_snippet(path.read_text(encoding="utf-8"))


# --- webhooks --------------------------------------------------------------------------------------------------


def test_auto_reply_answers_with_twiml_and_calls_no_api(world: World) -> None:
    """auto_reply returns a <Response><Message> quoting the inbound SMS, logs it, and makes no Twilio request."""
    result = world.run("auto_reply", {"form": {"From": CUSTOMER, "Body": "  Is my order ready? "}}, kind="webhook")

    assert result.value == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
        f"Thanks {CUSTOMER}, we got your message: 'Is my order ready?'. We'll be in touch soon."
        "</Message></Response>"
    )
    assert list(result.logs) == [
        {"level": "info", "message": "inbound sms", "fields": {"sender": CUSTOMER, "length": 18}}
    ]
    assert (list(result.egress), world.emulator.requests) == ([], [])


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        pytest.param(
            "help me", "Reply INFO for opening hours, STOP to unsubscribe. Msg&amp;data rates may apply.", id="help"
        ),
        pytest.param("Info", "We are open Mon-Fri 9:00-17:00. Visit https://example.com for more.", id="info"),
        pytest.param("what?", "Sorry, I did not understand. Reply HELP or INFO.", id="menu"),
        pytest.param("", "Sorry, I did not understand. Reply HELP or INFO.", id="empty"),
    ],
)
def test_keyword_router_answers_by_first_word(world: World, body: str, reply: str) -> None:
    """keyword_router matches the first word case-insensitively and answers with TwiML."""
    result = world.run("keyword_router", {"form": {"From": CUSTOMER, "Body": body}}, kind="webhook")

    assert result.value == f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{reply}</Message></Response>'
    assert [log["message"] for log in result.logs] == ["keyword"]


def test_keyword_router_records_an_opt_out_without_replying(world: World) -> None:
    """STOP returns the opted-out number as JSON (Twilio sends the carrier's STOP reply) and logs a warning."""
    result = world.run("keyword_router", {"form": {"From": CUSTOMER, "Body": "stop"}}, kind="webhook")

    assert result.value == {"opted_out": CUSTOMER}
    assert list(result.logs) == [{"level": "warning", "message": "opt-out", "fields": {"sender": CUSTOMER}}]


@pytest.mark.parametrize(
    ("form", "level", "message"),
    [
        pytest.param({"MessageStatus": "delivered"}, "info", "delivery status", id="delivered"),
        pytest.param({"MessageStatus": "undelivered", "ErrorCode": "30003"}, "error", "delivery failed", id="failed"),
        pytest.param({"SmsStatus": "sent"}, "info", "delivery status", id="sms-status"),
    ],
)
def test_status_callback_logger_logs_each_transition(
    world: World, form: dict[str, str], level: str, message: str
) -> None:
    """status_callback_logger logs one record per callback (errors for failures) and returns nothing."""
    event = {"form": {"MessageSid": "SM" + "0" * 32, "To": CUSTOMER, **form}}
    result = world.run("status_callback_logger", event, kind="webhook")

    assert result.value is None
    [record] = result.logs
    assert (record["level"], record["message"]) == (level, message)
    assert record["fields"]["status"] == form.get("MessageStatus", form.get("SmsStatus"))
    stored = world.runtime.history.get(DEMO_TENANT, result.run_id)
    assert stored.logs == list(result.logs)


# --- tasks -----------------------------------------------------------------------------------------------------


def _send(client: Client, to: str, body: str) -> str:
    return str(client.messages.create(to=to, from_=MAGIC_SENDER, body=body).sid)


def test_nightly_digest_summarises_yesterday_and_texts_it_once(world: World) -> None:
    """The digest counts yesterday's messages (and failures), and a retry with the same run key sends nothing new."""
    client = world.client()
    _send(client, CUSTOMER, "39 days earlier: not in the digest")
    world.emulator.state.advance(39 * DAY)  # now: yesterday noon (UTC)
    for body in ("one", "two"):
        _send(client, CUSTOMER, body)
    _send(client, UNDELIVERED, "three")
    world.emulator.state.advance(60)  # every message reaches its final status
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    posts_before = len(world.posts())

    first = world.run("nightly_digest", {"to": CUSTOMER}, idempotency_key="task_digest_1")
    again = world.run("nightly_digest", {"to": CUSTOMER}, idempotency_key="task_digest_1")

    summary = f"Digest for {yesterday}: 3 messages, 0 in, 3 out, 1 failed."
    assert first.value == {"summary": summary, "sid": first.value["sid"]}
    assert again.value == first.value
    assert len(world.posts()) == posts_before + 1  # created once
    sent = client.messages(first.value["sid"]).fetch()
    assert (sent.to, sent.body) == (CUSTOMER, summary)
    assert list(first.logs) == [{"level": "info", "message": "digest", "fields": {"total": 3, "failed": 1}}]


def test_nightly_digest_from_cron_texts_the_default_recipient(world: World) -> None:
    """A cron run's event has no 'to': the summary goes to the example's DIGEST_TO."""
    result = world.run("nightly_digest", {"scheduled_for": "2026-11-26T07:00Z", "cron": "0 7 * * *"})

    assert world.client().messages(result.value["sid"]).fetch().to == CUSTOMER
    assert re.fullmatch(r"Digest for \d{4}-\d\d-\d\d: 0 messages, 0 in, 0 out, 0 failed\.", result.value["summary"])


def test_redact_old_messages_empties_old_bodies_only_and_is_harmless_to_rerun(world: World) -> None:
    """Messages older than N days lose their body; newer ones keep it; a second run redacts nothing."""
    client = world.client()
    old = [_send(client, CUSTOMER, f"PIN {n}") for n in range(3)]
    world.emulator.state.advance(39 * DAY)  # now: yesterday noon
    recent = _send(client, CUSTOMER, "still here")
    world.emulator.state.advance(60)

    first = world.run("redact_old_messages", {"days": 30})
    second = world.run("redact_old_messages", {"days": 30})

    assert sorted(first.value["redacted"]) == sorted(old)
    assert second.value["redacted"] == []
    assert [client.messages(sid).fetch().body for sid in old] == ["", "", ""]
    assert client.messages(recent).fetch().body == "still here"
    assert list(first.logs) == [{"level": "info", "message": "redacted", "fields": {"count": 3, "days": 30}}]


# --- direct client ---------------------------------------------------------------------------------------------


def test_direct_client_sends_with_its_own_credentials_and_masks_the_token(world: World) -> None:
    """twilio.Client(sid, token) sends through the broker as that account; the token never appears in output."""
    event = {"account_sid": DEFAULT_ACCOUNT_SID, "auth_token": DEFAULT_AUTH_TOKEN, "to": CUSTOMER}
    result = world.run("direct_client", event)

    assert result.stdout == f"token in use: {MASK}\n"
    assert result.value == {"sid": result.value["sid"], "status": "queued"}
    [request] = world.emulator.requests
    assert (request.method, request.username) == ("POST", DEFAULT_ACCOUNT_SID)
    stored = world.runtime.history.get(DEMO_TENANT, result.run_id)
    everything = json.dumps([result.to_json(), stored.to_json()])
    assert DEFAULT_AUTH_TOKEN not in everything


# --- video token -------------------------------------------------------------------------------------------------


def test_video_token_mints_a_room_token_from_tenant_variables(world: World) -> None:
    """The hook mints a 15-minute Video token for the room asked for (or VIDEO_ROOM), signed with the API key secret
    of the connection VIDEO_CONNECTION names; the secret is nowhere in what the run keeps."""
    profile = TwilioProfile(account_sid=DEFAULT_ACCOUNT_SID, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET)
    world.runtime.store.put(DEMO_TENANT, "frontdesk", profile)
    world.runtime.variables.set(DEMO_TENANT, "VIDEO_CONNECTION", "frontdesk")
    world.runtime.variables.set(DEMO_TENANT, "VIDEO_ROOM", "support-42")

    asked = world.run("video_token", {"query": {"identity": "alice", "room": "r1"}}, kind="webhook")
    default = world.run("video_token", {"query": {}}, kind="webhook")

    claims = jwt.decode(asked.value["token"], DEFAULT_API_SECRET, algorithms=["HS256"])
    assert (claims["iss"], claims["sub"]) == (DEFAULT_API_KEY, DEFAULT_ACCOUNT_SID)
    assert claims["grants"] == {"identity": "alice", "video": {"room": "r1"}}
    assert claims["exp"] - claims["nbf"] == 15 * 60
    assert (default.value["identity"], default.value["room"]) == ("guest", "support-42")
    stored = world.runtime.history.get(DEMO_TENANT, asked.run_id)
    assert DEFAULT_API_SECRET not in json.dumps([asked.to_json(), stored.to_json()])


# --- post note ---------------------------------------------------------------------------------------------------


def test_post_note_posts_json_to_the_echo_api_with_the_token_it_never_sees(world: World) -> None:
    """The demo's notes connection (the echo API, bearer token) receives the note and the token; the snippet sees
    the token only masked, and the run's history does not hold it."""
    recorder = EchoRecorder()
    with uvicorn_in_thread(create_echo_app(recorder), name="echo") as port:
        seed_notes_connection(world.runtime.store, f"http://127.0.0.1:{port}")
        result = world.run("post_note", {"text": "Refund approved", "customer": CUSTOMER})

    assert [(r.method, r.path, r.headers["authorization"]) for r in recorder.requests] == [
        ("POST", "/notes", f"Bearer {DEMO_NOTES_TOKEN}")
    ]
    assert json.loads(recorder.requests[0].body) == {"text": "Refund approved", "customer": CUSTOMER}
    assert result.value == {
        "posted": True,
        "status": 200,
        "note": {"text": "Refund approved", "customer": CUSTOMER},
        "auth": f"Bearer {MASK}",
    }
    stored = world.runtime.history.get(DEMO_TENANT, result.run_id)
    assert DEMO_NOTES_TOKEN not in json.dumps([result.to_json(), stored.to_json()])
