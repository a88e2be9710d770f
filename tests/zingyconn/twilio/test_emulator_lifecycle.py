"""Status progression on the emulator's clock, signed status callbacks, scheduling, cancel and delete rules."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from tests.emulator import MAGIC_SENDER, RECIPIENT, START_TIME, Emulator, callback_receiver, running_emulator
from zingyconn.twilio.emulator import EmulatorState

SERVICE = "MG" + "a" * 32


def test_status_moves_from_queued_to_delivered_as_time_advances(emulator: Emulator) -> None:
    """queued -> sending -> sent -> delivered, one step per second; date_sent and price appear once sent."""
    client = emulator.client()
    sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="hi").sid
    seen = []
    for _ in range(4):
        emulator.state.advance(1)
        message = client.messages(sid).fetch()
        seen.append(message.status)

    assert seen == ["sending", "sent", "delivered", "delivered"]
    assert message.date_sent == datetime.fromtimestamp(START_TIME + 2, UTC)
    assert message.price == "-0.00790"
    assert message.error_code is None


def test_nothing_changes_while_the_clock_stands_still(emulator: Emulator) -> None:
    """With a frozen clock a message stays queued however often it is fetched."""
    client = emulator.client()
    sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="hi").sid

    assert {client.messages(sid).fetch().status for _ in range(3)} == {"queued"}


@pytest.mark.parametrize(
    ("to", "status", "code"),
    [
        pytest.param("+15005551001", "undelivered", 30003, id="unreachable"),
        pytest.param("+15005551003", "undelivered", 30007, id="filtered"),
        pytest.param("+15005551004", "failed", 30008, id="failed"),
    ],
)
def test_magic_recipients_end_undelivered_or_failed(emulator: Emulator, to: str, status: str, code: int) -> None:
    """The emulator's failure numbers end in undelivered/failed with Twilio's error code."""
    client = emulator.client()
    sid = client.messages.create(to=to, from_=MAGIC_SENDER, body="hi").sid
    emulator.state.advance(10)

    message = client.messages(sid).fetch()

    assert (message.status, message.error_code) == (status, code)
    assert message.error_message


def test_status_callbacks_are_signed_and_sent_for_each_transition_after_the_first(emulator: Emulator) -> None:
    """Each transition after the initial status POSTs a form signed with the account's Auth Token."""
    client = emulator.client(api_key=True)  # signed with the Auth Token even when the API key created it
    with callback_receiver() as (url, received):
        sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="hi", status_callback=url).sid
        emulator.state.advance(10)

    validator = RequestValidator(emulator.auth_token)
    assert [c.form["MessageStatus"] for c in received] == ["sending", "sent", "delivered"]
    for callback in received:
        assert validator.validate(callback.url, callback.form, callback.headers["X-Twilio-Signature"])
        assert callback.form["MessageSid"] == callback.form["SmsSid"] == sid
        assert callback.form["AccountSid"] == emulator.account_sid
    assert "RawDlrDoneDate" in received[-1].form
    assert not RequestValidator("another-token").validate(
        url, received[0].form, received[0].headers["X-Twilio-Signature"]
    )


def test_failed_delivery_callback_carries_the_error_code(emulator: Emulator) -> None:
    """The callback of an undelivered message has ErrorCode."""
    with callback_receiver() as (url, received):
        emulator.client().messages.create(to="+15005551002", from_=MAGIC_SENDER, body="x", status_callback=url)
        emulator.state.advance(10)

    assert received[-1].form["MessageStatus"] == "undelivered"
    assert received[-1].form["ErrorCode"] == "30005"


def test_callbacks_to_hosts_that_are_not_loopback_are_never_sent(emulator: Emulator) -> None:
    """A StatusCallback outside loopback is accepted but only recorded as skipped (no request leaves the machine)."""
    emulator.client().messages.create(
        to=RECIPIENT, from_=MAGIC_SENDER, body="x", status_callback="https://example.com/status"
    )
    attempts = emulator.state.advance(10)

    assert len(attempts) == 3
    assert all(a.status_code is None and (a.error or "").startswith("skipped") for a in attempts)


def test_messaging_service_message_is_accepted_then_gets_a_sender(emulator: Emulator) -> None:
    """With a Messaging Service the message starts accepted, without sender and with 0 segments."""
    client = emulator.client()
    created = client.messages.create(to=RECIPIENT, messaging_service_sid=SERVICE, body="hi")
    emulator.state.advance(1)
    queued = client.messages(created.sid).fetch()

    assert (created.status, created.from_, created.num_segments) == ("accepted", None, "0")
    assert (queued.status, queued.from_, queued.num_segments) == ("queued", MAGIC_SENDER, "1")
    assert created.messaging_service_sid == SERVICE


def test_scheduled_message_can_be_canceled_and_then_never_sends(emulator: Emulator) -> None:
    """ScheduleType=fixed + SendAt + Messaging Service -> scheduled; Status=canceled cancels it for good."""
    client = emulator.client()
    send_at = datetime.fromtimestamp(START_TIME, UTC) + timedelta(hours=1)
    created = client.messages.create(
        to=RECIPIENT, messaging_service_sid=SERVICE, body="later", schedule_type="fixed", send_at=send_at
    )

    canceled = client.messages(created.sid).update(status="canceled")
    emulator.state.advance(7200)

    assert created.status == "scheduled"
    assert canceled.status == "canceled"
    assert client.messages(created.sid).fetch().status == "canceled"


def test_scheduled_message_is_sent_at_its_time(emulator: Emulator) -> None:
    """A scheduled message stays scheduled until SendAt, then goes out."""
    client = emulator.client()
    send_at = datetime.fromtimestamp(START_TIME, UTC) + timedelta(minutes=30)
    sid = client.messages.create(
        to=RECIPIENT, messaging_service_sid=SERVICE, body="later", schedule_type="fixed", send_at=send_at
    ).sid

    emulator.state.advance(29 * 60)
    before = client.messages(sid).fetch().status
    emulator.state.advance(5 * 60)

    assert (before, client.messages(sid).fetch().status) == ("scheduled", "delivered")


def test_cancel_is_refused_unless_scheduled(emulator: Emulator) -> None:
    """Status=canceled on a message that is not scheduled is 30409."""
    client = emulator.client()
    sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="now").sid

    with pytest.raises(TwilioRestException) as caught:
        client.messages(sid).update(status="canceled")

    assert (caught.value.status, caught.value.code) == (400, 30409)


def test_delete_of_an_in_flight_message_is_refused(emulator: Emulator) -> None:
    """Deleting a queued message is 20009 and the message stays."""
    client = emulator.client()
    sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="now").sid

    with pytest.raises(TwilioRestException) as caught:
        client.messages(sid).delete()

    assert (caught.value.status, caught.value.code) == (400, 20009)
    assert client.messages(sid).fetch().sid == sid


@pytest.mark.parametrize(
    ("form", "code"),
    [
        pytest.param({"Body": "not empty"}, 20001, id="body-not-empty"),
        pytest.param({"Status": "sent"}, 20001, id="status-not-canceled"),
    ],
)
def test_update_accepts_only_redaction_and_cancel(emulator: Emulator, form: dict[str, str], code: int) -> None:
    """Update only redacts (Body="") or cancels (Status=canceled); anything else is a 400 error."""
    client = emulator.client()
    sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="x").sid

    with pytest.raises(TwilioRestException) as caught:
        client.messages(sid).update(**{k.lower(): v for k, v in form.items()})

    assert caught.value.code == code


def test_unknown_sid_is_20404_for_fetch_update_and_delete(emulator: Emulator) -> None:
    """An unknown SID is 404/20404 for every single-message operation."""
    message = emulator.client().messages("SM" + "0" * 32)
    calls = [message.fetch, lambda: message.update(body=""), message.delete]
    codes = []
    for call in calls:
        with pytest.raises(TwilioRestException) as caught:
            call()
        codes.append((caught.value.status, caught.value.code))

    assert codes == [(404, 20404)] * 3


def test_the_background_ticker_moves_messages_on_a_running_clock() -> None:
    """With a ticker (as `zingyconn emulator` runs), due transitions happen and callbacks go out without advance()."""
    now = [START_TIME]
    state = EmulatorState(clock=lambda: now[0])
    with running_emulator(state, tick_seconds=0.02) as running, callback_receiver() as (url, received):
        client = running.client()
        sid = client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="tick", status_callback=url).sid
        now[0] += 10  # the clock moves on by itself, as a wall clock would
        deadline = time.monotonic() + 10
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)

        assert client.messages(sid).fetch().status == "delivered"
    assert [c.form["MessageStatus"] for c in received] == ["sending", "sent", "delivered"]
