"""Cron schedules of scripts: standard cron (names, the day OR rule) in IANA zones, across DST, checked on save."""

from __future__ import annotations

import datetime as dt

import pytest

from zingyconn.errors import ValidationError
from zingyconn.tasks.schedule import parse_cron

UTC = dt.UTC


def _utc(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "minute", "fires"),
    [
        pytest.param("*/15 8-18 * * 1-5", _utc(2026, 11, 26, 8, 45), True, id="weekday-quarter"),
        pytest.param("*/15 8-18 * * 1-5", _utc(2026, 11, 29, 8, 45), False, id="sunday"),
        pytest.param("0 9 * * MON-FRI", _utc(2026, 11, 27, 9, 0), True, id="day-names-friday"),
        pytest.param("0 9 * * MON-FRI", _utc(2026, 11, 28, 9, 0), False, id="day-names-saturday"),
        pytest.param("0 0 1 JAN *", _utc(2027, 1, 1, 0, 0), True, id="month-name"),
        pytest.param("0 0 13 * FRI", _utc(2026, 11, 13, 0, 0), True, id="or-rule-the-13th"),
        pytest.param("0 0 13 * FRI", _utc(2026, 11, 20, 0, 0), True, id="or-rule-a-friday"),
        pytest.param("0 0 13 * FRI", _utc(2026, 11, 19, 0, 0), False, id="or-rule-neither"),
        pytest.param("@daily", _utc(2026, 1, 1, 0, 0), True, id="alias"),
        pytest.param("@hourly", _utc(2026, 1, 1, 5, 1), False, id="alias-other-minute"),
    ],
)
def test_schedule_fires_in_the_minutes_it_names(expression: str, minute: dt.datetime, fires: bool) -> None:
    """A schedule fires exactly in the minutes standard cron names (names, and day-of-month OR day-of-week)."""
    assert (parse_cron(expression).fire_times(minute, minute) == [minute]) is fires


def test_a_time_zone_moves_the_fire_time() -> None:
    """'0 9 * * *' in Europe/Paris fires at 08:00 UTC in winter and 07:00 UTC in summer."""
    schedule = parse_cron("0 9 * * *", "Europe/Paris")

    assert schedule.fire_times(_utc(2026, 1, 15, 0, 0), _utc(2026, 1, 15, 23, 59)) == [_utc(2026, 1, 15, 8, 0)]
    assert schedule.fire_times(_utc(2026, 7, 15, 0, 0), _utc(2026, 7, 15, 23, 59)) == [_utc(2026, 7, 15, 7, 0)]


def test_spring_forward_runs_a_skipped_time_once_just_after_the_gap() -> None:
    """On 29 March 2026 Paris skips 02:00-03:00: '30 2 * * *' runs once that day, at 03:00 local (01:00 UTC)."""
    schedule = parse_cron("30 2 * * *", "Europe/Paris")

    fired = schedule.fire_times(_utc(2026, 3, 28, 22, 0), _utc(2026, 3, 29, 21, 59))

    assert fired == [_utc(2026, 3, 29, 1, 0)]


def test_fall_back_runs_a_repeated_time_in_both_hours() -> None:
    """On 25 October 2026 Paris lives 02:00-03:00 twice: '30 2 * * *' runs at 00:30 and 01:30 UTC (croniter's rule)."""
    schedule = parse_cron("30 2 * * *", "Europe/Paris")

    fired = schedule.fire_times(_utc(2026, 10, 24, 22, 0), _utc(2026, 10, 25, 22, 59))

    assert fired == [_utc(2026, 10, 25, 0, 30), _utc(2026, 10, 25, 1, 30)]


def test_next_runs_are_given_in_the_schedule_zone() -> None:
    """The next runs of a weekday schedule skip the weekend and carry the zone's offset."""
    schedule = parse_cron("0 9 * * MON-FRI", "America/New_York")

    runs = schedule.next_runs(_utc(2026, 11, 27, 15, 0), 3)  # a Friday, 10:00 in New York

    assert [run.isoformat() for run in runs] == [
        "2026-11-30T09:00:00-05:00",
        "2026-12-01T09:00:00-05:00",
        "2026-12-02T09:00:00-05:00",
    ]


def test_without_a_zone_a_schedule_is_utc() -> None:
    """Schedules saved before zones existed (and new ones without one) are read in UTC."""
    assert parse_cron("0 7 * * *").timezone == "UTC"
    assert parse_cron("0 7 * * *", "").fire_times(_utc(2026, 1, 1, 7, 0), _utc(2026, 1, 1, 7, 0)) == [
        _utc(2026, 1, 1, 7, 0)
    ]


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        pytest.param("61 * * * *", "not valid", id="minute-range"),
        pytest.param("0 24 * * *", "not valid", id="hour-range"),
        pytest.param("0 0 0 * *", "not valid", id="day-zero"),
        pytest.param("0 0 * 13 *", "not valid", id="month-range"),
        pytest.param("0 0 * * FUNDAY", "not valid", id="day-name"),
        pytest.param("* * * *", "has 4 fields", id="four-fields"),
        pytest.param("0 0 0 * * *", "has 6 fields", id="seconds-field"),
    ],
)
def test_invalid_cron_expression_is_refused(expression: str, named: str) -> None:
    """A bad expression is refused with a ValidationError (field "cron") that says what to write."""
    with pytest.raises(ValidationError, match=named) as caught:
        parse_cron(expression)
    assert caught.value.field == "cron"
    assert "minute hour day-of-month month day-of-week" in str(caught.value)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "Europe/Paris/"])
def test_unknown_time_zone_is_refused(zone: str) -> None:
    """A zone the tz database does not have is refused with field "timezone"."""
    with pytest.raises(ValidationError, match="IANA") as caught:
        parse_cron("0 7 * * *", zone)
    assert caught.value.field == "timezone"
