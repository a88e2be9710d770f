"""Create validation: Twilio's order and codes, magic numbers, and segment counting."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest

from tests.emulator import MAGIC_SENDER, RECIPIENT, START_TIME, Emulator, check_response, running_emulator
from zingyconn.twilio.emulator.segments import count_segments, encoding
from zingyconn.twilio.emulator.validation import is_sender

SERVICE = "MG" + "b" * 32


@pytest.fixture(scope="module")
def shared() -> Iterator[Emulator]:
    """One emulator for the whole module (these tests only create); every response is checked at the end."""
    with running_emulator() as running:
        yield running
    for response in running.responses:
        check_response(response)


def post(emulator: Emulator, form: list[tuple[str, str]]) -> httpx.Response:
    """POST a raw create form with the account's credentials."""
    return httpx.post(
        emulator.base_url + emulator.messages_path,
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(emulator.account_sid, emulator.auth_token),
    )


def iso(offset_seconds: float) -> str:
    """An ISO 8601 UTC timestamp *offset_seconds* after the test clock's start."""
    return datetime.fromtimestamp(START_TIME + offset_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


BASE = [("To", RECIPIENT), ("From", MAGIC_SENDER), ("Body", "hi")]


def replace(name: str, value: str | None) -> list[tuple[str, str]]:
    """BASE with *name* replaced (or removed when *value* is None)."""
    kept = [(k, v) for k, v in BASE if k != name]
    return kept if value is None else [*kept, (name, value)]


@pytest.mark.parametrize(
    ("form", "code"),
    [
        pytest.param([], 21604, id="nothing-at-all"),
        pytest.param(replace("To", None), 21604, id="no-to"),
        pytest.param(replace("To", ""), 21604, id="blank-to"),
        pytest.param([("To", "garbage")], 21603, id="to-checked-after-from-missing"),
        pytest.param(replace("From", None), 21603, id="no-from"),
        pytest.param(replace("Body", None), 21602, id="no-body"),
        pytest.param(replace("Body", ""), 21602, id="blank-body"),
        pytest.param([("To", "bad"), ("From", "bad"), ("Body", "x" * 1601)], 21617, id="too-long-before-format"),
        pytest.param(replace("To", "5551234567"), 21211, id="to-not-e164"),
        pytest.param(replace("To", "+15005550001"), 21211, id="magic-to-invalid"),
        pytest.param(replace("From", "+15005550001"), 21212, id="magic-from-invalid"),
        pytest.param(replace("From", "not a number!"), 21212, id="from-garbage"),
        pytest.param(replace("From", "+15005550007"), 21606, id="magic-from-not-owned"),
        pytest.param(replace("From", "+15005550008"), 21611, id="magic-from-queue-full"),
        pytest.param(replace("To", "+15005550002"), 21612, id="magic-to-unroutable"),
        pytest.param(replace("To", "+15005550003"), 21408, id="magic-to-no-permission"),
        pytest.param(replace("To", "+15005550004"), 21610, id="magic-to-unsubscribed"),
        pytest.param(replace("To", "+15005550009"), 21614, id="magic-to-cannot-receive"),
        pytest.param([*BASE, ("MediaUrl", "ftp://example.com/a.png")], 21620, id="media-not-http"),
        pytest.param([*BASE] + [("MediaUrl", "https://example.com/a.png")] * 11, 21623, id="too-much-media"),
        pytest.param([*BASE, ("StatusCallback", "not a url")], 21609, id="bad-status-callback"),
        pytest.param([*BASE, ("StatusCallback", "http://127.0.0.1:99999/")], 21609, id="status-callback-port"),
        pytest.param([*replace("From", None), ("MessagingServiceSid", "MG123")], 21705, id="bad-service-sid"),
        pytest.param([*BASE, ("ScheduleType", "fixed")], 35111, id="schedule-without-send-at"),
        pytest.param([*BASE, ("ScheduleType", "fixed"), ("SendAt", iso(3600))], 35118, id="schedule-without-service"),
        pytest.param(
            [*replace("From", None), ("MessagingServiceSid", SERVICE), ("ScheduleType", "fixed"), ("SendAt", iso(60))],
            35115,
            id="schedule-too-soon",
        ),
        pytest.param(
            [*replace("From", None), ("MessagingServiceSid", SERVICE), ("ScheduleType", "fixed"), ("SendAt", "soon")],
            35115,
            id="schedule-unparseable",
        ),
    ],
)
def test_create_errors_come_in_twilios_order_with_its_codes(
    shared: Emulator, form: list[tuple[str, str]], code: int
) -> None:
    """Each invalid create gets Twilio's 400 error code for the first problem, in Twilio's order."""
    response = post(shared, form)

    assert response.status_code == 400
    assert response.json()["code"] == code


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(BASE, id="plain"),
        pytest.param(replace("From", "12345"), id="short-code"),
        pytest.param(replace("From", "ZingyConn"), id="alphanumeric"),
        pytest.param([("To", "whatsapp:+15551234567"), ("From", "whatsapp:+15005550006"), ("Body", "x")], id="wa"),
        pytest.param([*replace("Body", None), ("ContentSid", "HX" + "0" * 32)], id="content-sid"),
        pytest.param([*BASE, ("ScheduleType", "weekly"), ("SendAt", iso(3600))], id="not-fixed-is-sent-now"),
        pytest.param([*BASE, ("MessageIntent", "marketing"), ("Unknown", "x")], id="unknown-params-ignored"),
        pytest.param(replace("Body", "x" * 1600), id="exactly-1600"),
    ],
)
def test_valid_creates_are_accepted(shared: Emulator, form: list[tuple[str, str]]) -> None:
    """Valid variants are created (201)."""
    response = post(shared, form)

    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "queued"


@pytest.mark.parametrize(
    ("body", "segments", "alphabet"),
    [
        pytest.param("", 1, "GSM-7", id="empty"),
        pytest.param("a" * 160, 1, "GSM-7", id="gsm-160"),
        pytest.param("a" * 161, 2, "GSM-7", id="gsm-161"),
        pytest.param("a" * 306, 2, "GSM-7", id="gsm-306"),
        pytest.param("a" * 307, 3, "GSM-7", id="gsm-307"),
        pytest.param("€" * 80, 1, "GSM-7", id="extension-counts-double"),
        pytest.param("€" * 81, 2, "GSM-7", id="extension-161-septets"),
        pytest.param("é" * 160, 1, "GSM-7", id="gsm-accents"),
        pytest.param("☃" * 70, 1, "UCS-2", id="ucs2-70"),
        pytest.param("☃" * 71, 2, "UCS-2", id="ucs2-71"),
        pytest.param("😀" * 35, 1, "UCS-2", id="emoji-are-two-units"),
        pytest.param("😀" * 36, 2, "UCS-2", id="emoji-72-units"),
    ],
)
def test_segments_follow_gsm7_and_ucs2_limits(body: str, segments: int, alphabet: str) -> None:
    """GSM-7 bodies fit 160 (153 per part), UCS-2 bodies 70 UTF-16 units (67 per part)."""
    assert (count_segments(body), encoding(body)) == (segments, alphabet)


def test_num_segments_of_a_created_message_follow_the_body(shared: Emulator) -> None:
    """The stored num_segments is the count for the body, as a string."""
    response = post(shared, replace("Body", "☃" * 71))

    assert response.json()["num_segments"] == "2"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("ZingyConn", True), ("12345", True), ("123456789012", False), ("Twelve chars", False), ("1234567", False)],
)
def test_sender_formats(value: str, expected: bool) -> None:
    """Senders are E.164 numbers, 5-6 digit short codes or 1-11 character alphanumeric IDs with a letter."""
    assert is_sender(value) is expected
