"""Validation of connection-command inputs: every rule runs before any I/O and names the offending field.

The platform's "Execute Connection Command" block sends camelCase inputs (``toPhone``, ``customProps.mediaUrl``);
this module turns them into the keyword arguments of the ``twilio`` library, or raises
:class:`~zingyconn.errors.InvalidCommandError` with ``field`` set. The twilio library validates nothing itself
(it would happily send an empty body or a malformed number), so a careful check here saves the tenant a paid,
failed API call and gives a message that says what to change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

import phonenumbers

from zingyconn.errors import InvalidCommandError

#: Twilio's limit on a message body (error 21617 "The concatenated message body exceeds the 1600 character limit").
MAX_BODY_CHARS: Final = 1600
#: Twilio accepts at most 10 ``MediaUrl`` values per message.
MAX_MEDIA_URLS: Final = 10
#: ``listMessages`` limit range; Twilio's own PageSize range is the same (OAI ListMessage ``PageSize``).
MIN_LIMIT: Final = 1
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 50
#: An idempotency key is a short opaque string; stored with a prefix in ``sent_messages.key`` (200 characters).
MAX_IDEMPOTENCY_KEY_CHARS: Final = 180

#: Twilio's channel prefix for WhatsApp senders and recipients.
WHATSAPP: Final = "whatsapp:"
_MESSAGE_SID: Final = re.compile(r"(SM|MM)[0-9a-fA-F]{32}")
_SERVICE_SID: Final = re.compile(r"MG[0-9a-fA-F]{32}")
_APPLICATION_SID: Final = re.compile(r"AP[0-9a-fA-F]{32}")
_CONTENT_SID: Final = re.compile(r"HX[0-9a-fA-F]{32}")

Converter = Callable[[object, str], object]


def _fail(field_name: str, message: str) -> InvalidCommandError:
    return InvalidCommandError(message, field=field_name)


def _string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise _fail(name, f"{name} must be a string, not {type(value).__name__}.")
    return value


def phone_number(value: object, name: str) -> str:
    """Return *value* as a canonical E.164 number (``+`` and digits), or raise naming *name*.

    Spaces, dots, dashes and brackets are accepted and removed. A number without ``+`` gets a hint, because the
    usual mistake is a national number (``5551234567``, ``07700 900123``) that Twilio would reject with 21211.
    A WhatsApp address (``whatsapp:+14155552671``) is checked the same way and keeps its prefix.
    """
    text = _string(value, name).strip()
    if text.startswith(WHATSAPP):
        return WHATSAPP + phone_number(text.removeprefix(WHATSAPP), name)
    if not text.startswith("+"):
        raise _fail(name, f"{name} {text!r} is not an E.164 phone number: {_national_hint(text)}")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_possible_number(parsed) or re.search(r"[^\d\s().+-]", text):
        raise _fail(
            name,
            f"{name} {text!r} is not an E.164 phone number: write '+', the country code and the subscriber "
            "number, e.g. '+14155552671'.",
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _national_hint(text: str) -> str:
    digits = re.sub(r"[\s().-]", "", text)
    if digits.isdigit():
        try:
            as_us = phonenumbers.parse(digits, "US")
        except phonenumbers.NumberParseException:
            as_us = None
        if as_us is not None and phonenumbers.is_possible_number(as_us) and not digits.startswith("0"):
            e164 = phonenumbers.format_number(as_us, phonenumbers.PhoneNumberFormat.E164)
            return f"it looks like a national number. Add '+' and the country code, e.g. {e164!r} if it is a US number."
        return (
            "it looks like a national number. Add '+' and the country code (dropping a leading 0), "
            "e.g. '+447700900123' for the UK number '07700 900123'."
        )
    return "it must start with '+' and the country code, e.g. '+14155552671'."


def _sid(pattern: re.Pattern[str], prefix: str) -> Callable[[object, str], str]:
    def convert(value: object, name: str) -> str:
        text = _string(value, name)
        if not pattern.fullmatch(text):
            raise _fail(name, f"{name} {text!r} is not a valid SID: expected {prefix} followed by 32 hex digits.")
        return text

    return convert


message_sid: Final = _sid(_MESSAGE_SID, "'SM' or 'MM'")
_service_sid: Final = _sid(_SERVICE_SID, "'MG'")


def _url(value: object, name: str) -> str:
    text = _string(value, name)
    if not re.fullmatch(r"https?://[^\s/]+\S*", text):
        raise _fail(name, f"{name} {text!r} is not an http:// or https:// URL.")
    return text


def _media_urls(value: object, name: str) -> list[str]:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls:
        raise _fail(name, f"{name} must be a URL or a non-empty list of URLs.")
    if len(urls) > MAX_MEDIA_URLS:
        raise _fail(name, f"{name} has {len(urls)} URLs; Twilio accepts at most {MAX_MEDIA_URLS} per message.")
    return [_url(url, f"{name}[{index}]") for index, url in enumerate(urls)]


def _boolean(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, f"{name} must be true or false, not {value!r}.")
    return value


def _integer(low: int, high: int) -> Callable[[object, str], int]:
    def convert(value: object, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _fail(name, f"{name} must be a whole number from {low} to {high}, not {value!r}.")
        return value

    return convert


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _fail(name, f"{name} must be a non-negative number, not {value!r}.")
    return float(value)


def _choice(*choices: str) -> Converter:
    def convert(value: object, name: str) -> str:
        if value not in choices:
            raise _fail(name, f"{name} must be one of {list(choices)!r}, not {value!r}.")
        return str(value)

    return convert


def _strings(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _fail(name, f"{name} must be a non-empty list of strings.")
    return [_string(item, f"{name}[{index}]") for index, item in enumerate(value)]


def _json_text(value: object, name: str) -> str:
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return _string(value, name)


def _datetime(value: object, name: str) -> datetime:
    text = _string(value, name)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _fail(
            name, f"{name} {text!r} is not an ISO 8601 date-time with a time zone, e.g. '2031-01-02T03:04:05Z'."
        )
    return moment.astimezone(UTC)


def date_filter(value: object, name: str) -> str:
    """Return a ``DateSent`` filter: ``YYYY-MM-DD``, or a date-time (naive means UTC) normalised to UTC ``...Z``."""
    text = _string(value, name)
    try:
        if len(text) == len("YYYY-MM-DD"):
            return date.fromisoformat(text).isoformat()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(name, f"{name} {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 date-time.") from None
    return _utc(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: sendMessage ``customProps``: camelCase key -> (twilio ``messages.create`` keyword, converter). Everything the
#: Message create endpoint takes except what the fixed inputs already carry (To, From, MessagingServiceSid, Body).
SEND_PROPS: Final[Mapping[str, tuple[str, Converter]]] = {
    "mediaUrl": ("media_url", _media_urls),
    "statusCallback": ("status_callback", _url),
    "applicationSid": ("application_sid", _sid(_APPLICATION_SID, "'AP'")),
    "maxPrice": ("max_price", _number),
    "provideFeedback": ("provide_feedback", _boolean),
    "attempt": ("attempt", _integer(1, 1_000_000)),
    "validityPeriod": ("validity_period", _integer(1, 36_000)),
    "forceDelivery": ("force_delivery", _boolean),
    "contentRetention": ("content_retention", _choice("retain", "discard")),
    "addressRetention": ("address_retention", _choice("retain", "obfuscate")),
    "smartEncoded": ("smart_encoded", _boolean),
    "persistentAction": ("persistent_action", _strings),
    "trafficType": ("traffic_type", _choice("free")),
    "shortenUrls": ("shorten_urls", _boolean),
    "scheduleType": ("schedule_type", _choice("fixed")),
    "sendAt": ("send_at", _datetime),
    "sendAsMms": ("send_as_mms", _boolean),
    "contentSid": ("content_sid", _sid(_CONTENT_SID, "'HX'")),
    "contentVariables": ("content_variables", _json_text),
    "messageIntent": ("message_intent", _string),
    "riskCheck": ("risk_check", _choice("enable", "disable")),
    "fallbackFrom": ("fallback_from", phone_number),
}
#: Keys people reach for that the fixed inputs already cover: the error points at the right input.
_SEND_PROP_ALIASES: Final = {
    "to": "toPhone",
    "from": "fromPhone",
    "messagingServiceSid": "fromService",
    "body": "msg",
}
SEND_INPUTS: Final = ("toPhone", "fromPhone", "fromService", "msg", "customProps", "idempotencyKey")
LIST_INPUTS: Final = ("criteria", "limit")
#: listMessages ``criteria``: camelCase key -> twilio ``messages.stream`` keyword.
CRITERIA: Final = {"to": "to", "from": "from_", "dateSent": "date_sent", "dateSentBefore": "date_sent_before",
                   "dateSentAfter": "date_sent_after"}  # fmt: skip
UPDATE_PROPS: Final = ("body", "status")


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A validated sendMessage: the keyword arguments of ``client.messages.create`` and the idempotency key."""

    kwargs: dict[str, Any]
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A validated listMessages: the filters of ``client.messages.stream`` and how many messages to return."""

    filters: dict[str, str] = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """A validated updateMessage: the message SID and the keyword arguments of ``update``."""

    sid: str
    kwargs: dict[str, str]


def _object(value: object, name: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _fail(name, f"{name} must be a JSON object, not {type(value).__name__}.")
    return value


def _known_keys(inputs: Mapping[str, object], known: tuple[str, ...] | Mapping[str, object], where: str) -> None:
    for key in inputs:
        if key not in known:
            prefix = f"{where}." if where != "inputs" else ""
            raise _fail(f"{prefix}{key}", f"{where} key {key!r} is not supported; valid keys are {sorted(known)!r}.")


def _required(inputs: Mapping[str, object], name: str) -> object:
    value = inputs.get(name)
    if value is None or value == "":
        raise _fail(name, f"{name} is required.")
    return value


def _send_props(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    props = _object(value, "customProps")
    kwargs: dict[str, Any] = {}
    for key, raw in props.items():
        if raw is None:  # platforms send null for a property left empty: treat it as absent
            continue
        name = f"customProps.{key}"
        if key in _SEND_PROP_ALIASES:
            raise _fail(name, f"{name} is not supported: use the {_SEND_PROP_ALIASES[key]!r} input instead.")
        if key not in SEND_PROPS:
            raise _fail(name, f"{name} is not a Twilio message parameter; valid keys are {sorted(SEND_PROPS)!r}.")
        keyword, convert = SEND_PROPS[key]
        kwargs[keyword] = convert(raw, name)
    return kwargs


def _sender(inputs: Mapping[str, object]) -> dict[str, str]:
    """Return ``from_`` and/or ``messaging_service_sid``: either input alone, or both.

    With both, Twilio sends from that number and applies the service's features (scheduling, link shortening);
    the number must be in the service's sender pool, which only Twilio can check (error 21711 otherwise).
    """
    phone, service = inputs.get("fromPhone"), inputs.get("fromService")
    sender: dict[str, str] = {}
    if service not in (None, ""):
        sender["messaging_service_sid"] = _service_sid(service, "fromService")
    if phone not in (None, ""):
        sender["from_"] = phone_number(phone, "fromPhone")
    if not sender:
        raise _fail("fromPhone", "fromPhone (an E.164 number) or fromService (a Messaging Service SID) is required.")
    return sender


def _schedule(kwargs: dict[str, Any]) -> None:
    if "send_at" in kwargs:
        kwargs.setdefault("schedule_type", "fixed")  # the only schedule type Twilio has; saves the tenant a step
        if "messaging_service_sid" not in kwargs:
            raise _fail(
                "customProps.sendAt",
                "customProps.sendAt schedules the message, and Twilio only schedules messages sent through a "
                "Messaging Service: give fromService as well (fromPhone then picks the sender from its pool).",
            )
    elif "schedule_type" in kwargs:
        raise _fail("customProps.scheduleType", "customProps.scheduleType needs customProps.sendAt (when to send).")


def idempotency_key(value: object, name: str = "idempotencyKey") -> str | None:
    """Return a valid idempotency key, or ``None`` when *value* is absent."""
    if value is None:
        return None
    text = _string(value, name)
    if not 1 <= len(text) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise _fail(name, f"{name} must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters long.")
    return text


def parse_send(inputs: object) -> SendRequest:
    """Validate sendMessage inputs (``toPhone``, ``fromPhone`` and/or ``fromService``, ``msg``, ``customProps``)."""
    given = _object(inputs, "inputs")
    _known_keys(given, SEND_INPUTS, "inputs")
    kwargs: dict[str, Any] = {"to": phone_number(_required(given, "toPhone"), "toPhone")}
    kwargs.update(_sender(given))
    if kwargs["to"] == kwargs.get("from_"):
        raise _fail(
            "toPhone", "toPhone and fromPhone are the same number; Twilio does not send a message to its sender."
        )
    kwargs.update(_send_props(given.get("customProps")))
    message = given.get("msg")
    if message is None or message == "":
        if "media_url" not in kwargs and "content_sid" not in kwargs:
            raise _fail("msg", "msg is required (it may be left out only when customProps.mediaUrl is given).")
    else:
        body = _string(message, "msg")
        if len(body) > MAX_BODY_CHARS:
            raise _fail("msg", f"msg is {len(body)} characters long; Twilio accepts at most {MAX_BODY_CHARS}.")
        kwargs["body"] = body
    _schedule(kwargs)
    return SendRequest(kwargs=kwargs, idempotency_key=idempotency_key(given.get("idempotencyKey")))


def parse_list(inputs: object) -> ListRequest:
    """Validate listMessages inputs (``criteria`` with ``to``/``from``/``dateSent*``, ``limit``)."""
    given = _object(inputs, "inputs")
    _known_keys(given, LIST_INPUTS, "inputs")
    filters: dict[str, str] = {}
    if given.get("criteria") is not None:
        criteria = _object(given["criteria"], "criteria")
        _known_keys(criteria, CRITERIA, "criteria")
        for key, raw in criteria.items():
            if raw is None or raw == "":
                continue
            name = f"criteria.{key}"
            filters[CRITERIA[key]] = phone_number(raw, name) if key in ("to", "from") else date_filter(raw, name)
    limit = given.get("limit")
    if limit is None:
        return ListRequest(filters=filters)
    return ListRequest(filters=filters, limit=_integer(MIN_LIMIT, MAX_LIMIT)(limit, "limit"))


def parse_sid(inputs: object) -> str:
    """Validate readMessage / deleteMessage inputs: ``sid`` (``SM``/``MM`` + 32 hex digits)."""
    given = _object(inputs, "inputs")
    _known_keys(given, ("sid",), "inputs")
    return message_sid(_required(given, "sid"), "sid")


def parse_update(inputs: object) -> UpdateRequest:
    """Validate updateMessage inputs: ``sid`` and ``customProps`` (``body: ""`` to redact, ``status: "canceled"``)."""
    given = _object(inputs, "inputs")
    _known_keys(given, ("sid", "customProps"), "inputs")
    sid = message_sid(_required(given, "sid"), "sid")
    props = _object(_required(given, "customProps"), "customProps")
    _known_keys(props, UPDATE_PROPS, "customProps")
    kwargs: dict[str, str] = {}
    if "body" in props:
        if props["body"] != "":
            raise _fail(
                "customProps.body",
                'customProps.body can only be "" (redact the text): Twilio does not let a sent message be edited.',
            )
        kwargs["body"] = ""
    if "status" in props:
        if props["status"] != "canceled":
            raise _fail(
                "customProps.status",
                f"customProps.status can only be 'canceled' (cancel a scheduled message), not {props['status']!r}.",
            )
        kwargs["status"] = "canceled"
    if not kwargs:
        raise _fail("customProps", 'customProps needs body: "" (to redact) or status: "canceled" (to cancel).')
    return UpdateRequest(sid=sid, kwargs=kwargs)
