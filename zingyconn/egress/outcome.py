"""How one brokered request ended, as a type: retry decisions and run records read it, never an error's text.

Every request a run makes through the broker ends in exactly one :class:`Outcome`. ``answered`` carries the HTTP
status on the record (``status=…``); the others have no status. The transport's failures say which one they are
(:class:`RequestFailedError` carries its outcome), so that whether a task retries does not depend on how a message
is worded. An answer is an :class:`HttpAnswer`. They live here, not beside the transport that raises them, so that
the broker names them without importing ``httpcore``, which loads only when a run sends its first request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sandbox.errors import EgressDeniedError


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


class RequestFailedError(EgressDeniedError):
    """Raised when an allowed request got no answer: the connection failed or timed out (a retry may succeed).

    Raised as is when the request never left (no connection could be made, or none in time), so a retry cannot
    duplicate it.

    Attributes:
        outcome: :attr:`Outcome.NO_ANSWER` or :attr:`Outcome.TIMED_OUT`: what the run's record says.
    """

    def __init__(self, message: str, *, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class OutcomeUnknownError(RequestFailedError):
    """Raised when a request may have reached the server but no answer came back (dropped, timed out mid-read).

    The server may have acted on it (created a message), which the send ledger resolves before sending again.
    """


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What came back from one HTTP exchange (body already capped and decoded)."""

    status: int
    text: str
    headers: dict[str, str]
