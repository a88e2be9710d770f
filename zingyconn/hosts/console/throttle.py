"""Sign-in throttling: per client address and for the console as a whole.

Threat: guessing the operator token (which an operator may have chosen weakly) or a tenant token by trying many at
speed. Each sign-in attempt takes one token from the client's bucket and one from the console-wide bucket; an empty
bucket answers 429 with ``Retry-After`` before the token is even looked at. The buckets live in the store's
``rate_buckets`` table, so every server process on one database shares them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from zingyconn.egress.ratelimit import Rate, RateLimiter

#: Bucket names in ``rate_buckets`` (the ``tenant`` column holds the client address or the console-wide key).
CLIENT_BUCKET: Final = "console-login"
GLOBAL_KEY: Final = "*console*"


@dataclass(frozen=True, slots=True)
class LoginRates:
    """How many sign-in attempts are allowed.

    Attributes:
        per_client_per_minute: From one client address (``ZINGYCONN_LOGINS_PER_MINUTE_PER_CLIENT``, 10); also
            the burst.
        total_per_minute: From all clients together (``ZINGYCONN_LOGINS_PER_MINUTE``, 100): caps a guesser that
            spreads over many addresses, at the price of refusing everyone for a while during such an attack.
    """

    per_client_per_minute: int = 10
    total_per_minute: int = 100


class LoginThrottle:
    """Admit or refuse a sign-in attempt."""

    def __init__(self, limiter: RateLimiter, rates: LoginRates | None = None) -> None:
        self._limiter = limiter
        self.rates = rates or LoginRates()
        self._client_rate = Rate(
            per_second=self.rates.per_client_per_minute / 60, burst=self.rates.per_client_per_minute
        )
        self._total_rate = Rate(per_second=self.rates.total_per_minute / 60, burst=self.rates.total_per_minute)

    def admit(self, client: str) -> int | None:
        """Take one attempt for *client*; return ``None`` when allowed, else the seconds to wait (``Retry-After``)."""
        if not self._limiter.acquire(client[:100], CLIENT_BUCKET, self._client_rate):
            return math.ceil(1 / self._client_rate.per_second)
        if not self._limiter.acquire(GLOBAL_KEY, CLIENT_BUCKET, self._total_rate):
            return math.ceil(1 / self._total_rate.per_second)
        return None
