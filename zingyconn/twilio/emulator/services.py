"""Messaging Services and their sender pools, as far as sending a message needs them.

A create request may name a Messaging Service (``MessagingServiceSid``), a sender (``From``) or both. With both,
Twilio sends from ``From``, which must be in the service's sender pool, and applies the service's features
(scheduling, link shortening). A sender outside the pool is refused with error 21711 ("not associated to the
specified Messaging Service").

Services the emulator was told about (``--service SID:NUMBER[,NUMBER...]``) have exactly those senders. Any other
well-formed service SID stands for a service whose pool holds the one number the emulator assigns as a service's
sender (``+15005550006``, Twilio's test "valid sender"), so requests written for Twilio's test credentials work as
they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from zingyconn.twilio.emulator.errors import ApiError

#: The number a Messaging Service assigns as sender when none is named (Twilio's magic "valid sender").
SERVICE_SENDER: Final = "+15005550006"
SERVICE_SID_PATTERN: Final = re.compile(r"MG[0-9a-fA-F]{32}")
_CHANNEL: Final = re.compile(r"[a-z]+:")


@dataclass(frozen=True, slots=True)
class MessagingService:
    """A Messaging Service: its SID and the senders in its pool (E.164 numbers, short codes, sender IDs)."""

    sid: str
    senders: tuple[str, ...]

    def __post_init__(self) -> None:
        if not SERVICE_SID_PATTERN.fullmatch(self.sid):
            raise ValueError(f"Messaging Service SID {self.sid!r} is not 'MG' followed by 32 hex digits.")
        if not self.senders:
            raise ValueError(f"Messaging Service {self.sid!r} needs at least one sender in its pool.")

    def first_sender(self) -> str:
        """Return the sender the service picks when the request names none."""
        return self.senders[0]

    def check_sender(self, sender: str) -> None:
        """Raise Twilio's 21711 unless *sender* (channel prefix such as ``whatsapp:`` ignored) is in the pool."""
        if _CHANNEL.sub("", sender, count=1) not in self.senders:
            raise ApiError(
                21711,
                f"Phone Number, Shortcode, or AlphaSender {sender} is not associated to the specified Messaging "
                f"Service {self.sid}.",
            )


class Services:
    """The Messaging Services the emulator knows by SID; unknown SIDs have the default one-number pool."""

    def __init__(self, services: Iterable[MessagingService] = ()) -> None:
        self._by_sid: Mapping[str, MessagingService] = {service.sid: service for service in services}

    def get(self, sid: str) -> MessagingService:
        """Return the service *sid* (a default-pool service when it was not configured)."""
        return self._by_sid.get(sid) or MessagingService(sid, (SERVICE_SENDER,))

    def configured(self) -> list[MessagingService]:
        """Return the services given at start (for the banner)."""
        return list(self._by_sid.values())


def parse_service(value: str) -> MessagingService:
    """Parse ``MG…:+15551230001,+15551230002`` into a service; raise ``ValueError`` saying what is wrong."""
    sid, colon, senders = value.partition(":")
    numbers = tuple(number.strip() for number in senders.split(",") if number.strip())
    if not colon or not numbers:
        raise ValueError(f"{value!r} is not SID:NUMBER[,NUMBER...] (a Messaging Service SID and its senders).")
    return MessagingService(sid, numbers)
