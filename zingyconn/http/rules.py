"""The write rules and the per-tenant quota of HTTP connections (plain Python: registering the type loads no client).

An HTTP connection's own allowed methods and prefixes decide what a request may do (checked per request by
:mod:`zingyconn.http.broker`); there is no product deny list as Twilio has. Every request spends one token of the
tenant's :data:`HTTP_BUCKET`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from zingyconn.egress.ratelimit import Rate
from zingyconn.errors import ConfigurationError

#: The per-tenant bucket of HTTP connection requests, and its default rate. Threat: one tenant's runaway loop
#: hammering a third-party API from the platform's addresses (and getting them blocked for every tenant).
HTTP_BUCKET: Final = "http"
DEFAULT_HTTP_RATE: Final = Rate(per_second=20.0, burst=100)

#: The setting of the bucket's rate, ``PER_SECOND/BURST`` like the Twilio products' ``ZINGYCONN_QUOTA_<PRODUCT>``.
QUOTA_VARIABLE: Final = "ZINGYCONN_QUOTA_HTTP"


class HttpWrites:
    """Write rules of HTTP connections: nothing is refused by product (each connection's lists decide)."""

    def refuse(self, method: str, host: str, path: str) -> None:
        """Refuse nothing: :func:`zingyconn.http.broker.check_path` applies the connection's own lists."""

    def product(self, method: str, host: str, path: str) -> str | None:
        """Every request spends the tenant's :data:`HTTP_BUCKET`."""
        return HTTP_BUCKET


HTTP_WRITES: Final = HttpWrites()


def quota_rates(overrides: Mapping[str, tuple[float, int]]) -> dict[str, Rate]:
    """Return the HTTP bucket's rate with the operator's ``{bucket: (per_second, burst)}`` (:data:`QUOTA_VARIABLE`)
    applied.

    Raises:
        ConfigurationError: An override names a bucket other than :data:`HTTP_BUCKET`.
    """
    rates = {HTTP_BUCKET: DEFAULT_HTTP_RATE}
    for bucket, (per_second, burst) in overrides.items():
        if bucket not in rates:
            raise ConfigurationError(
                f"HTTP connections have no quota {bucket!r}; their one quota is {QUOTA_VARIABLE}=PER_SECOND/BURST."
            )
        rates[bucket] = Rate(per_second=per_second, burst=burst)
    return rates


def quota_variable(bucket: str) -> str:
    """Return the environment variable that sets *bucket*'s rate (:data:`QUOTA_VARIABLE`, the only bucket's)."""
    del bucket
    return QUOTA_VARIABLE
