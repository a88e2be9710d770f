"""The Message resource: its stored fields, its JSON shape (OpenAPI ``api.v2010.account.message``), its lifecycle."""

from __future__ import annotations

import email.utils
import hashlib
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

API_VERSION: Final = "2010-04-01"
#: Price per segment once sent (string like Twilio's, negative = charged).
PRICE_PER_SEGMENT: Final = 0.0079
#: Seconds between two steps of the outbound lifecycle (accepted -> queued -> sending -> sent -> final).
STEP_SECONDS: Final = 1.0
#: Statuses a message can still leave; deleting a message in one of them is refused (20009).
IN_FLIGHT: Final = frozenset({"accepted", "queued", "sending", "scheduled"})
TERMINAL: Final = frozenset({"delivered", "undelivered", "failed", "received", "read", "canceled"})


def new_sid(prefix: str) -> str:
    """Return a fresh SID: *prefix* + 32 lowercase hex digits, like Twilio's."""
    return prefix + secrets.token_hex(16)


def default_service_sid(account_sid: str) -> str:
    """Return the account's stable default Messaging Service SID (``MG`` + 32 hex derived from the account SID)."""
    return "MG" + hashlib.sha256(account_sid.encode()).hexdigest()[:32]


def rfc2822(timestamp: float | None) -> str | None:
    """Format a UTC epoch time as Twilio does: ``Thu, 24 Aug 2023 05:01:45 +0000``."""
    if timestamp is None:
        return None
    return email.utils.format_datetime(datetime.fromtimestamp(int(timestamp), UTC))


@dataclass(slots=True)
class Transition:
    """A planned status change: at epoch ``at`` the message becomes ``status`` (with an error code if it fails)."""

    at: float
    status: str
    error_code: int | None = None
    error_message: str | None = None


@dataclass(slots=True)
class Message:
    """One stored message; ``plan`` holds the transitions still to come, oldest first."""

    sid: str
    account_sid: str
    seq: int
    to: str
    from_: str | None
    body: str
    status: str
    date_created: float
    date_updated: float
    num_segments: int
    media_urls: list[str] = field(default_factory=list)
    messaging_service_sid: str | None = None
    status_callback: str | None = None
    date_sent: float | None = None
    error_code: int | None = None
    error_message: str | None = None
    price: str | None = None
    sender: str | None = None
    plan: list[Transition] = field(default_factory=list)

    @property
    def uri(self) -> str:
        """The resource's URI relative to ``https://api.twilio.com``."""
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"

    def apply(self, transition: Transition) -> None:
        """Move to the transition's status; the sender is assigned on queueing and the price on sending."""
        self.status = transition.status
        self.date_updated = transition.at
        if transition.status == "queued" and self.from_ is None:
            self.from_ = self.sender
        if transition.status == "sent" and self.date_sent is None:
            self.date_sent = transition.at
        if transition.status == "sent":
            self.price = f"{-PRICE_PER_SEGMENT * max(self.num_segments, 1):.5f}"
        if transition.error_code is not None:
            self.error_code, self.error_message = transition.error_code, transition.error_message

    def to_resource(self) -> dict[str, Any]:
        """Return the JSON body Twilio answers for this message."""
        base = self.uri.removesuffix(".json")
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": rfc2822(self.date_created),
            "date_sent": rfc2822(self.date_sent),
            "date_updated": rfc2822(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            # Twilio assigns every account a default Messaging Service when the request names none.
            "messaging_service_sid": self.messaging_service_sid or default_service_sid(self.account_sid),
            "num_media": str(len(self.media_urls)),
            # Twilio reports "0" segments until a Messaging Service has picked the sender.
            "num_segments": str(self.num_segments if self.from_ is not None else 0),
            "price": self.price,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{base}/Media.json", "feedback": f"{base}/Feedback.json"},
            "to": self.to,
            "uri": self.uri,
        }

    def to_record(self) -> dict[str, Any]:
        """Return everything needed to restore this message (persistence)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Message:
        """Rebuild a message saved by :meth:`to_record`."""
        plan = [Transition(**step) for step in record.get("plan", [])]
        return cls(**{**record, "plan": plan})
