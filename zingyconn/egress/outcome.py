"""How one brokered request ended, as a type: retry decisions and run records read it, never an error's text.

Every request a run makes through the broker ends in exactly one :class:`Outcome`. ``answered`` carries the HTTP
status on the record (``status=…``); the others have no status. The transport's failures say which one they are
(:class:`~zingyconn.egress.transport.RequestFailedError` carries its outcome), so that whether a task retries does
not depend on how a message is worded.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Outcome(StrEnum):
    """How one request ended (the ``outcome`` of an egress record)."""

    #: The server answered; the record's ``status`` is its HTTP status.
    ANSWERED = "answered"
    #: The broker refused it (allowlist, address, quota, idempotency conflict): it was never sent.
    REFUSED = "refused"
    #: No answer: no connection could be made, or the connection dropped before the answer.
    NO_ANSWER = "no_answer"
    #: No (whole) answer in time: connecting or reading ran into the request's timeout.
    TIMED_OUT = "timed_out"
    #: The platform's own store failed around a send; nothing was sent.
    PLATFORM_FAULT = "platform_fault"

    @property
    def retryable(self) -> bool:
        """True when the cause lies outside the snippet and the same request later may succeed."""
        return self in RETRYABLE_OUTCOMES


#: Outcomes a later attempt of the same run may not meet: Twilio unreachable or slow, or our store down.
RETRYABLE_OUTCOMES: Final = frozenset({Outcome.NO_ANSWER, Outcome.TIMED_OUT, Outcome.PLATFORM_FAULT})
