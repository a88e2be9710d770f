"""Cron schedules of scripts: five-field cron expressions in an IANA time zone, checked on save, read by croniter.

The syntax is standard cron as croniter reads it: ``*``, ``*/n``, ``m-n``, ``m-n/s``, lists, month and day names
(``JAN``, ``MON-FRI``) and the ``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly`` shorthands. When both
day-of-month and day-of-week are restricted, a day matching *either* fires (Vixie cron's rule: ``0 0 13 * FRI`` is
every 13th and every Friday). Times are wall-clock times in the schedule's zone (UTC unless one is given); across
a daylight-saving change they follow croniter: a time skipped by the spring-forward gap fires at the first minute
after it, and a time repeated by the fall-back hour fires in both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from zingyconn.errors import ValidationError

#: The zone of a schedule saved without one.
DEFAULT_TIMEZONE: Final = "UTC"
#: Longest time-zone name stored (the column width; IANA names are at most about 30 characters).
MAX_TIMEZONE_LENGTH: Final = 64
#: Most next runs one call lists (the console and ``schedules list --count``).
MAX_NEXT_RUNS: Final = 50

#: Shorthands, written out so the stored expression is always five fields.
ALIASES: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

_FIVE_FIELDS: Final = (
    "write five fields: minute hour day-of-month month day-of-week (e.g. '0 7 * * MON-FRI'), or "
    "@hourly/@daily/@weekly/@monthly/@yearly"
)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A checked cron expression in a time zone.

    Attributes:
        expression: The expression as stored (shorthands written out as five fields).
        timezone: The IANA name of the zone its times are read in (``"UTC"``, ``"Europe/Paris"``).
    """

    expression: str
    timezone: str = DEFAULT_TIMEZONE

    @property
    def zone(self) -> ZoneInfo:
        """The time zone itself."""
        return ZoneInfo(self.timezone)

    def fire_times(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        """Return the minutes in [*start*, *end*] (aware datetimes) at which the schedule fires, in UTC."""
        cursor = croniter(self.expression, (start - dt.timedelta(seconds=1)).astimezone(self.zone))
        fired = []
        while (moment := cursor.get_next(dt.datetime).astimezone(dt.UTC)) <= end:
            fired.append(moment)
        return fired

    def next_runs(self, after: dt.datetime, count: int = 5) -> list[dt.datetime]:
        """Return the next *count* (at most :data:`MAX_NEXT_RUNS`) fire times after *after*, in the schedule's zone."""
        cursor = croniter(self.expression, after.astimezone(self.zone))
        return [cursor.get_next(dt.datetime).astimezone(self.zone) for _ in range(max(0, min(count, MAX_NEXT_RUNS)))]


def parse_timezone(name: str | None) -> str:
    """Return the IANA time-zone name *name* (``"UTC"`` when empty) once checked.

    Raises:
        ValidationError: ``field="timezone"``: not a zone this machine's tz database knows.
    """
    name = (name or "").strip() or DEFAULT_TIMEZONE
    if len(name) > MAX_TIMEZONE_LENGTH or name.startswith(("/", ".")) or ".." in name:
        raise ValidationError(f"Time zone {name[:80]!r} is not an IANA name like 'Europe/Paris'.", field="timezone")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"Time zone {name!r} is unknown; give an IANA name such as 'UTC', 'Europe/Paris' or 'America/New_York'.",
            field="timezone",
        ) from None
    return name


def parse_cron(expression: str, timezone: str | None = None) -> CronSchedule:
    """Check a five-field cron expression (``"*/15 8-18 * * MON-FRI"``) or a shorthand in *timezone*.

    Raises:
        ValidationError: ``field="cron"`` (the message says why and what to write) or ``field="timezone"``.
    """
    zone = parse_timezone(timezone)
    text = " ".join(ALIASES.get(expression.strip().lower(), expression.strip()).split())
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise ValidationError(f"Cron expression {expression!r} has {len(fields)} fields; {_FIVE_FIELDS}.", field="cron")
    try:
        croniter(text, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)).get_next(dt.datetime)
    except (CroniterError, ValueError) as exc:
        raise ValidationError(
            f"Cron expression {expression!r} is not valid ({exc}); {_FIVE_FIELDS}.", field="cron"
        ) from None
    return CronSchedule(expression=text, timezone=zone)
