"""List Messages: filters (To, From, DateSent, DateSent<, DateSent>), newest first, Twilio's paging envelope.

The envelope holds only the library's paging keys plus ``messages``: any other top-level key makes
``twilio.base.page.Page`` fail with "Page Records can not be deserialized".
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from urllib.parse import urlencode

from zingyconn.twilio.emulator.errors import ApiError
from zingyconn.twilio.emulator.message import Message
from zingyconn.twilio.emulator.validation import parse_timestamp

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
FILTERS: Final = ("To", "From", "DateSent", "DateSent<", "DateSent>")
DAY_SECONDS: Final = 86400
#: US zone abbreviations Twilio accepts in ``MM/DD/YYYY HH:MM:SS ZONE`` dates (hours from UTC).
ZONE_HOURS: Final = {
    "UTC": 0,
    "GMT": 0,
    "EST": -5,
    "EDT": -4,
    "CST": -6,
    "CDT": -5,
    "MST": -7,
    "MDT": -6,
    "PST": -8,
    "PDT": -7,
}


def parse_date_filter(value: str) -> float | None:
    """Parse a DateSent value in any form Twilio's examples use; None if unparseable.

    ISO 8601 (``2019-06-11``, ``2019-06-11T22:05:25Z``, ``2019-06-11 22:05:25.000``), RFC 2822
    (``Wed, 19 Jun 2019 22:04:00 -0000``) and ``06/11/2019 22:05:25 MST``.
    """
    moment = parse_timestamp(value)
    if moment is not None:
        return moment
    with contextlib.suppress(TypeError, ValueError, IndexError):
        parsed = email.utils.parsedate_to_datetime(value)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    stamp, _, zone = value.strip().rpartition(" ")
    hours = ZONE_HOURS.get(zone.upper())
    if hours is None:
        stamp, hours = value.strip(), 0
    try:
        naive = datetime.strptime(stamp, "%m/%d/%Y %H:%M:%S")  # the zone is applied just below
    except ValueError:
        return None
    return naive.replace(tzinfo=timezone(timedelta(hours=hours))).timestamp()


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A parsed list query: filters (in Twilio's order), page size, page number and token."""

    filters: tuple[tuple[str, str], ...]
    page_size: int
    page: int
    page_token: str | None


def parse_query(pairs: list[tuple[str, str]]) -> ListQuery:
    """Parse the query string; bad numbers or dates are 400 errors like Twilio's, never 5xx."""
    values = dict(pairs)
    page_size = _integer(values, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = _integer(values, "Page", 0, 0, 10**9)
    filters = tuple((name, values[name]) for name in FILTERS if values.get(name))
    for name, value in filters:
        if name.startswith("DateSent") and parse_date_filter(value) is None:
            raise ApiError(20001, f"Invalid {name} {value!r}: use YYYY-MM-DD or an ISO 8601 timestamp.")
    return ListQuery(filters, page_size, page, values.get("PageToken") or None)


def _integer(values: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = values.get(name)
    if raw is None or raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ApiError(20001, f"Invalid {name} {raw!r}: it must be an integer from {low} to {high}.")
    return number


def matches(message: Message, filters: tuple[tuple[str, str], ...]) -> bool:
    """True when *message* passes every filter (a DateSent filter excludes messages not yet sent)."""
    for name, value in filters:
        if name == "To" and message.to != value:
            return False
        if name == "From" and message.from_ != value:
            return False
        if name.startswith("DateSent") and not _date_matches(message.date_sent, name, value):
            return False
    return True


def _date_matches(date_sent: float | None, name: str, value: str) -> bool:
    if date_sent is None:
        return False
    moment = parse_date_filter(value)
    assert moment is not None  # checked by parse_query
    if name == "DateSent":  # the whole UTC day of the given date
        day = datetime.fromtimestamp(moment, UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        return day <= date_sent < day + DAY_SECONDS
    if name == "DateSent<":  # on or before
        return date_sent <= moment
    return date_sent >= moment  # DateSent>: on or after


def build_page(
    messages: list[Message], query: ListQuery, *, path: str, seq_of: Callable[[str], int | None]
) -> dict[str, Any]:
    """Return the list envelope for one page of *messages* (already filtered, newest first)."""
    size = query.page_size
    if query.page_token is None:
        records = messages[query.page * size : (query.page + 1) * size]
    else:
        records = _after_token(messages, query.page_token, size, seq_of)
    start = query.page * size

    def uri(page: int, token: str | None) -> str:
        params = [*query.filters, ("PageSize", str(size)), ("Page", str(page))]
        if token is not None:
            params.append(("PageToken", token))
        return f"{path}?{urlencode(params)}"

    has_more = bool(records) and records[-1].seq > min((m.seq for m in messages), default=0)
    return {
        "end": start + len(records) - 1 if records else 0,
        "first_page_uri": uri(0, None),
        "next_page_uri": uri(query.page + 1, "PA" + records[-1].sid) if has_more else None,
        "page": query.page,
        "page_size": size,
        "previous_page_uri": uri(query.page - 1, "PB" + records[0].sid) if query.page > 0 and records else None,
        "start": start,
        "uri": uri(query.page, query.page_token),
        "messages": [message.to_resource() for message in records],
    }


def _after_token(messages: list[Message], token: str, size: int, seq_of: Callable[[str], int | None]) -> list[Message]:
    """``PA<sid>``: the records after (older than) *sid*; ``PB<sid>``: the *size* records just before (newer)."""
    direction, sid = token[:2], token[2:]
    cursor = seq_of(sid)
    if direction not in {"PA", "PB"} or cursor is None:
        raise ApiError(21481, f"Invalid PageToken {token!r}.")
    if direction == "PA":
        return [m for m in messages if m.seq < cursor][:size]
    return [m for m in messages if m.seq > cursor][-size:]
