"""Create-message validation in Twilio's order, with Twilio's error codes and its test "magic numbers".

Order (as observed and documented by Twilio): To (21604) -> From/MessagingServiceSid
(21603) -> Body/MediaUrl/ContentSid (21602) -> body length (21617) -> To format (21211) -> From format (21212) ->
Messaging Service (21705) -> From owned (21606) / queue (21611) -> To reachable (21612, 21408, 21614, 21610) ->
media (21623, 21620) -> StatusCallback (21609) -> schedule (35111, 35118, 35115). Only ``ScheduleType=fixed``
schedules a message; any other value (or ``SendAt`` alone) sends it now, as Twilio treats such requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from zingyconn.twilio.emulator.errors import ApiError

MAX_BODY_CHARS: Final = 1600
MAX_MEDIA: Final = 10
#: A scheduled message must be sent between 5 minutes and 35 days from now (Twilio error 35115).
SCHEDULE_MIN_SECONDS: Final = 5 * 60
SCHEDULE_MAX_SECONDS: Final = 35 * 24 * 3600

#: Twilio's test-credential "magic" From numbers: https://www.twilio.com/docs/iam/test-credentials
MAGIC_FROM: Final = {
    "+15005550001": (
        21212,
        "The 'From' number +15005550001 is not a valid phone number, shortcode, or alphanumeric sender ID.",
    ),
    "+15005550007": (
        21606,
        "The 'From' phone number provided (+15005550007) is not a valid message-capable Twilio phone number "
        "for this destination/account.",
    ),
    "+15005550008": (21611, "This 'From' number has exceeded the maximum number of queued messages."),
}
#: Twilio's magic To numbers (synchronous refusals).
MAGIC_TO: Final = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (
        21612,
        "The 'To' phone number: +15005550002, is not currently reachable using the 'From' phone number via SMS.",
    ),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: +15005550003.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
#: Emulator-only To numbers whose message is accepted, then ends undelivered/failed (Twilio has no magic for this).
MAGIC_OUTCOMES: Final = {
    "+15005551001": ("undelivered", 30003, "Unreachable destination handset"),
    "+15005551002": ("undelivered", 30005, "Unknown destination handset"),
    "+15005551003": ("undelivered", 30007, "Message filtered"),
    "+15005551004": ("failed", 30008, "Unknown error"),
}

_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
_CHANNEL: Final = re.compile(r"(whatsapp|messenger|rcs):(.+)")
_SHORT_CODE: Final = re.compile(r"[0-9]{5,6}")
_ALPHANUMERIC: Final = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_SERVICE_SID: Final = re.compile(r"MG[0-9a-fA-F]{32}")


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A create request that passed validation."""

    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    media_urls: tuple[str, ...]
    status_callback: str | None
    send_at: float | None


def _first(form: list[tuple[str, str]], name: str) -> str:
    return next((value for key, value in form if key == name), "")


def is_phone_number(value: str) -> bool:
    """True for an E.164 number, optionally behind a channel prefix such as ``whatsapp:``."""
    channel = _CHANNEL.fullmatch(value)
    return bool(_E164.fullmatch(channel.group(2) if channel else value))


def is_sender(value: str) -> bool:
    """True for a phone number, a short code or an alphanumeric sender ID (at most 11 characters, one letter)."""
    return is_phone_number(value) or bool(_SHORT_CODE.fullmatch(value) or _ALPHANUMERIC.fullmatch(value))


def is_http_url(value: str) -> bool:
    """True for an absolute ``http(s)://`` URL with a host."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # raises ValueError for a port out of range
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname) and not any(c.isspace() for c in value)


def validate_create(form: list[tuple[str, str]], *, now: float) -> CreateRequest:
    """Check a create form in Twilio's order; raise the first :class:`ApiError` Twilio would answer."""
    to, from_, service = _first(form, "To"), _first(form, "From"), _first(form, "MessagingServiceSid")
    body = _first(form, "Body")
    media = tuple(value for key, value in form if key == "MediaUrl")
    if not to:
        raise ApiError(21604, "A 'To' phone number is required.")
    if not from_ and not service:
        raise ApiError(21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message.")
    if not body and not media and not _first(form, "ContentSid"):
        raise ApiError(21602, "Message body is required.")
    if len(body) > MAX_BODY_CHARS:
        raise ApiError(21617, "The concatenated message body exceeds the 1600 character limit.")
    _check_addresses(to, from_, service)
    _check_media(media)
    callback = _first(form, "StatusCallback") or None
    if callback is not None and not is_http_url(callback):
        raise ApiError(21609, f"The StatusCallback URL {callback} is not a valid URL.")
    send_at = _check_schedule(form, service=service, now=now)
    return CreateRequest(to, from_ or None, service or None, body, media, callback, send_at)


def _check_addresses(to: str, from_: str, service: str) -> None:
    if (to in MAGIC_TO and MAGIC_TO[to][0] == 21211) or not is_phone_number(to):
        raise ApiError(21211, f"The 'To' number {to} is not a valid phone number.")
    if from_ and ((from_ in MAGIC_FROM and MAGIC_FROM[from_][0] == 21212) or not is_sender(from_)):
        raise ApiError(
            21212, f"The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID."
        )
    if service and not _SERVICE_SID.fullmatch(service):
        raise ApiError(21705, f"The Messaging Service Sid {service} is invalid.")
    if from_ in MAGIC_FROM:
        raise ApiError(*MAGIC_FROM[from_])
    if to in MAGIC_TO:
        raise ApiError(*MAGIC_TO[to])


def _check_media(media: tuple[str, ...]) -> None:
    if len(media) > MAX_MEDIA:
        raise ApiError(21623, f"Too many media URLs: at most {MAX_MEDIA} are allowed.")
    for url in media:
        if not is_http_url(url):
            raise ApiError(21620, f"Invalid media URL(s): {url}")


def _check_schedule(form: list[tuple[str, str]], *, service: str, now: float) -> float | None:
    schedule_type, send_at = _first(form, "ScheduleType"), _first(form, "SendAt")
    if schedule_type != "fixed":
        return None
    if not send_at:
        raise ApiError(35111, "SendAt timestamp is missing.")
    if not service:
        raise ApiError(35118, "MessagingServiceSid is required to schedule a message.")
    moment = parse_timestamp(send_at)
    if moment is None or not SCHEDULE_MIN_SECONDS <= moment - now <= SCHEDULE_MAX_SECONDS:
        raise ApiError(35115, "Scheduling does not support this timestamp: SendAt must be 5 minutes to 35 days ahead.")
    return moment


def parse_timestamp(value: str) -> float | None:
    """Parse an ISO 8601 timestamp (``Z``, offset or naive = UTC) or a ``YYYY-MM-DD`` date; None if unparseable."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
