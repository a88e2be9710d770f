"""Redacting a message (updateMessage with body "") also redacts its body in the run history and the send ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator
from zingyconn.config import Settings
from zingyconn.redaction import REDACTED, redact_record
from zingyconn.runtime import Runtime
from zingyconn.schema import runs, sent_messages
from zingyconn.twilio.profile import TwilioProfile

SECRET_TEXT = "meet me at the old mill at nine"
OTHER_TEXT = "this one stays as it was"


@pytest.fixture
def runtime(tmp_path: Path, emulator: Emulator) -> Iterator[Runtime]:
    """A runtime whose tenant 'acme' has connection 'main' on the emulator."""
    env = {"ZINGYCONN_DATA_DIR": str(tmp_path), "ZINGYCONN_TWILIO_BASE_URL": emulator.base_url}
    with Runtime(Settings.from_env(env)) as rt:
        profile = TwilioProfile(account_sid=emulator.account_sid, api_key=emulator.api_key, secret=emulator.api_secret)
        rt.store.put("acme", "main", profile)
        yield rt


def _stored_text(runtime: Runtime) -> str:
    with runtime.engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(sa.select(runs))]
        rows += [dict(row._mapping) for row in conn.execute(sa.select(sent_messages))]
    return json.dumps(rows, default=str)


def test_redacting_a_message_redacts_its_copies_in_history_events_and_ledger(runtime: Runtime) -> None:
    """After updateMessage body "", no stored run, event or ledger key holds the body; other messages keep theirs."""
    send = {"toPhone": RECIPIENT, "fromPhone": MAGIC_SENDER, "msg": SECRET_TEXT}
    sent = runtime.command("acme", "main", "sendMessage", send, idempotency_key="k1", actor="test")
    kept = runtime.command("acme", "main", "sendMessage", {**send, "msg": OTHER_TEXT}, actor="test")
    assert isinstance(sent, dict)
    assert isinstance(kept, dict)
    sid, other = sent["sid"], kept["sid"]
    # An inbound-SMS webhook run that printed the text, and its raw form body, as stored before bodies were dropped.
    runtime.history.record(
        run_id="run_inbound",
        tenant="acme",
        kind="webhook",
        status="ok",
        started_at=1.0,
        event={
            "form": {"MessageSid": sid, "Body": SECRET_TEXT},
            "body": f"MessageSid={sid}&Body=meet+me+at+the+old+mill+at+nine",
        },
        stdout=f"got: {SECRET_TEXT}\n",
    )
    runtime.history.record(
        run_id="run_globex", tenant="globex", kind="webhook", status="ok", started_at=1.0,
        event={"form": {"MessageSid": sid, "Body": SECRET_TEXT}},
    )  # fmt: skip
    assert SECRET_TEXT in _stored_text(runtime)

    redacted = runtime.command("acme", "main", "updateMessage", {"sid": sid, "customProps": {"body": ""}}, actor="t")

    assert isinstance(redacted, dict)
    assert redacted["body"] == ""
    stored = _stored_text(runtime)
    assert stored.count(SECRET_TEXT) == 1  # in another tenant's record only: a tenant redacts its own
    assert "meet+me+at" not in stored
    assert OTHER_TEXT in stored
    inbound = runtime.history.get("acme", "run_inbound")
    assert inbound.event["form"] == {"MessageSid": sid, "Body": ""}
    assert inbound.stdout == f"got: {REDACTED}\n"
    (send_run,) = [
        run for run in runtime.history.list("acme", name="sendMessage") if run.result and run.result["sid"] == sid
    ]
    assert send_run.result["body"] == ""
    assert send_run.event["inputs"]["msg"] == REDACTED
    assert runtime.history.get("globex", "run_globex").event["form"]["Body"] == SECRET_TEXT
    assert other != sid


def test_short_bodies_are_emptied_but_not_searched_for() -> None:
    """A body of a few characters is emptied where it is named, and ordinary text that contains it is left alone."""
    record = {"event": {"form": {"MessageSid": "SM1", "Body": "ok"}}, "stdout": "ok, looks fine"}

    assert redact_record(record, "SM1") == {
        "event": {"form": {"MessageSid": "SM1", "Body": ""}},
        "stdout": "ok, looks fine",
    }
