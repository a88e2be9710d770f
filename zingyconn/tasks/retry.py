"""Which failed task runs are worth retrying, and when.

Retry by cause: Twilio said "too many requests" (HTTP 429, error 20429), Twilio failed (5xx), or the connection to
Twilio failed: the same run later may well succeed, so it is retried with exponential backoff and jitter, a bounded
number of times. Everything else is the snippet's own doing (an exception, a compile error, a limit it broke, an
egress the broker refused) and would fail the same way again: it is recorded as failed, never retried.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sandbox.errors import EgressDeniedError, SnippetError, WorkerCrashedError

#: Run errors caused by our infrastructure rather than the snippet: retried.
INFRASTRUCTURE_ERRORS: Final = frozenset({WorkerCrashedError.__name__})
#: HTTP statuses of a Twilio answer that a later retry may turn into a success.
TRANSIENT_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


def is_transient(error: Mapping[str, Any] | None, egress: Sequence[Mapping[str, Any]]) -> bool:
    """Return True when a failed run (its ``error`` object and ``egress`` records) should be retried.

    The run must have ended on its last Twilio request: an uncaught ``TwilioRestException`` after a 429 or 5xx
    answer (a ``SnippetError``), or an uncaught ``EgressDeniedError`` because the request got no answer (in time)
    or the platform's store failed around a send: the broker records those with ``retryable: true`` (their
    ``outcome`` is ``no_answer``, ``timed_out`` or ``platform_fault``). Refusals by the broker (allowlist,
    quotas; ``outcome: refused``) are not transient. Only these typed fields are read, never an error's text.
    """
    if error is None:
        return False
    if error.get("type") in INFRASTRUCTURE_ERRORS:
        return True
    if error.get("type") not in (SnippetError.__name__, EgressDeniedError.__name__) or not egress:
        return False
    last = egress[-1]
    if last.get("retryable") is True:
        return True
    status = last.get("status")
    return status is not None and error.get("type") == SnippetError.__name__ and int(status) in TRANSIENT_STATUSES


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt *n* waits ``base * factor**(n-1)`` capped, times a random 0.5-1.

    Jitter spreads the retries of many tasks that hit one rate limit together, so they do not return together.

    Attributes:
        base_seconds: Delay before the second attempt (before jitter).
        factor: Growth per attempt.
        cap_seconds: Longest delay.
    """

    base_seconds: float = 2.0
    factor: float = 4.0
    cap_seconds: float = 300.0

    def delay(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Return how long to wait after failed attempt *attempt* (1-based) before the next one."""
        ceiling = min(self.cap_seconds, self.base_seconds * self.factor ** max(0, attempt - 1))
        return ceiling * (0.5 + 0.5 * rand())
