"""Cron expressions of scheduled scripts: five fields, checked on save, matched in UTC minute by minute.

The syntax is Huey's ``crontab`` (``*``, ``*/n``, ``m-n``, ``m-n/s``, ``a,b``) in strict mode, so what is saved is
exactly what the consumer can run. Unlike Vixie cron, day-of-month and day-of-week are combined with AND when both
are restricted (Huey's rule), which the README states.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from huey import crontab

from zingyconn.errors import ValidationError

#: The five fields, in the order they are written, with the values each accepts (for error messages).
FIELDS: Final = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day", "1-31"),
    ("month", "1-12"),
    ("day_of_week", "0-6, 0 = Sunday"),
)

#: Shorthands people type out of habit.
ALIASES: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
}


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron expression.

    Attributes:
        expression: The expression as written (aliases expanded).
    """

    expression: str
    _matches: Callable[[dt.datetime], bool] = field(repr=False, compare=False)

    def matches(self, minute: dt.datetime) -> bool:
        """Return True when the schedule fires in the (UTC) minute that contains *minute*."""
        return bool(self._matches(minute.replace(second=0, microsecond=0)))


def parse_cron(expression: str) -> CronSchedule:
    """Parse a five-field cron expression (``"*/15 8-18 * * 1-5"``) or an alias (``"@daily"``).

    Raises:
        ValidationError: ``field="cron"``; the message names the cron field that is wrong and what it accepts.
    """
    text = ALIASES.get(expression.strip(), expression.strip())
    parts = text.split()
    if len(parts) != len(FIELDS):
        raise ValidationError(
            f"Cron expression {expression!r} has {len(parts)} fields; write five: minute hour day month day_of_week "
            "(e.g. '0 7 * * 1-5'), or @hourly/@daily/@weekly/@monthly.",
            field="cron",
        )
    for (name, accepted), value in zip(FIELDS, parts, strict=True):
        _check_field(expression, name, value, accepted)
    minute, hour, day, month, day_of_week = parts
    matcher = crontab(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week, strict=True)
    return CronSchedule(expression=text, _matches=matcher)


def _check_field(expression: str, name: str, value: str, accepted: str) -> None:
    # Check one field on its own, with every other field "*", so the error can say which field is wrong.
    try:
        crontab(**{name: value}, strict=True)
    except ValueError as exc:
        raise ValidationError(
            f"Cron expression {expression!r}: field {name!r} is {value!r}, which is not valid ({exc}); "
            f"it accepts {accepted} as '*', 'N', 'N-M', '*/S', 'N-M/S' or a comma-separated list.",
            field="cron",
        ) from None
