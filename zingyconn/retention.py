"""Retention: how long each kind of stored record is kept, read from ``ZINGYCONN_RETAIN_*`` variables.

The store holds personal data (phone numbers, message bodies in events, results and the send ledger), so nothing
is kept for ever: run history per kind, webhook replay records, send-ledger keys and finished task rows each have
a retention, and :mod:`zingyconn.purge` deletes what is older. Two records are correctness state, not history, and
get a floor: a webhook replay record must outlive Twilio's retries of the same request, and a send-ledger key must
outlive the idempotency window in which a retry of the same key may still come.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from zingyconn.errors import ConfigurationError, ValidationError
from zingyconn.history import DEFAULT_QUOTA_BYTES

#: Kinds of run in the history, each with its own retention.
RUN_KINDS: Final = ("webhook", "task", "console", "command")

DAY_SECONDS: Final = 24 * 3600
#: Default retention of run history: a month, long enough to debug last week's incident, short enough that a
#: privacy-conscious platform does not keep every caller's phone number and message for ever.
DEFAULT_RUNS_SECONDS: Final = 30 * DAY_SECONDS
#: Finished (succeeded/failed) task rows: as long as the runs that explain them.
DEFAULT_TASKS_SECONDS: Final = 30 * DAY_SECONDS
#: Twilio retries a webhook for minutes to hours; a replay record kept a day covers every retry of it.
DEFAULT_REPLAYS_SECONDS: Final = DAY_SECONDS
#: Shortest replay retention accepted: below Twilio's retry horizon a retried webhook would run twice.
MIN_REPLAYS_SECONDS: Final = 4 * 3600
#: The send ledger's idempotency window: a retry of the same key may come this long after the first send, so its
#: key must still be there (retention cannot be shorter).
MIN_SENDS_SECONDS: Final = DAY_SECONDS
DEFAULT_SENDS_SECONDS: Final = MIN_SENDS_SECONDS
#: How often each ``serve``/``worker`` process offers to purge (one of them, holding the lease, does it).
DEFAULT_PURGE_INTERVAL_SECONDS: Final = 600.0

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": DAY_SECONDS, "w": 7 * DAY_SECONDS}
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)


def parse_duration(text: str, *, what: str) -> float:
    """Return *text* (``90s``, ``30m``, ``12h``, ``7d``, ``2w``) in seconds; *what* names it in the error.

    Raises:
        ValidationError: Not a positive number followed by one of s, m, h, d, w.
    """
    match = _DURATION.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValidationError(
            f"{what} must be a positive duration such as 30m, 12h, 7d or 2w (got {text!r}).", field=what
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of record is kept, in seconds (see the module docstring).

    Attributes:
        runs_seconds: Run history by kind (``webhook``, ``task``, ``console``, ``command``).
        replays_seconds: Webhook replay records (``I-Twilio-Idempotency-Token``).
        sends_seconds: Send-ledger keys (idempotency of sends).
        tasks_seconds: Finished task rows.
        history_quota_bytes: Per-tenant cap on stored run history.
        purge_interval_seconds: How often ``serve``/``worker`` purge (0: never on their own).
    """

    runs_seconds: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(RUN_KINDS, DEFAULT_RUNS_SECONDS))
    replays_seconds: float = DEFAULT_REPLAYS_SECONDS
    sends_seconds: float = DEFAULT_SENDS_SECONDS
    tasks_seconds: float = DEFAULT_TASKS_SECONDS
    history_quota_bytes: int = DEFAULT_QUOTA_BYTES
    purge_interval_seconds: float = DEFAULT_PURGE_INTERVAL_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetentionPolicy:
        """Read the ``ZINGYCONN_RETAIN_*``, ``ZINGYCONN_HISTORY_QUOTA_MB`` and ``ZINGYCONN_PURGE_EVERY`` variables.

        Raises:
            ConfigurationError: A value is not a duration (or number), or is below its floor.
        """

        def seconds(name: str, default: float, floor: float = 0.0) -> float:
            text = env.get(name) or ""
            if not text:
                return default
            try:
                value = parse_duration(text, what=name)
            except ValidationError as exc:
                raise ConfigurationError(str(exc)) from None
            if value < floor:
                raise ConfigurationError(
                    f"{name}={text} is shorter than {floor / 3600:g} h; records younger than that are still needed "
                    "to stop duplicate sends and webhook runs. Set a longer duration."
                )
            return value

        runs = seconds("ZINGYCONN_RETAIN_RUNS", DEFAULT_RUNS_SECONDS)
        quota_text = env.get("ZINGYCONN_HISTORY_QUOTA_MB") or ""
        try:
            quota_mb = float(quota_text) if quota_text else DEFAULT_QUOTA_BYTES / 2**20
        except ValueError:
            quota_mb = -1.0
        if quota_mb <= 0:
            raise ConfigurationError(
                f"ZINGYCONN_HISTORY_QUOTA_MB must be a positive number of MiB (got {quota_text!r})."
            )
        interval_text = env.get("ZINGYCONN_PURGE_EVERY") or ""
        return cls(
            runs_seconds={kind: seconds(f"ZINGYCONN_RETAIN_{kind.upper()}_RUNS", runs) for kind in RUN_KINDS},
            replays_seconds=seconds("ZINGYCONN_RETAIN_REPLAYS", DEFAULT_REPLAYS_SECONDS, MIN_REPLAYS_SECONDS),
            sends_seconds=seconds("ZINGYCONN_RETAIN_SENDS", DEFAULT_SENDS_SECONDS, MIN_SENDS_SECONDS),
            tasks_seconds=seconds("ZINGYCONN_RETAIN_TASKS", DEFAULT_TASKS_SECONDS),
            history_quota_bytes=int(quota_mb * 2**20),
            purge_interval_seconds=0.0
            if interval_text == "0"
            else seconds("ZINGYCONN_PURGE_EVERY", DEFAULT_PURGE_INTERVAL_SECONDS),
        )
