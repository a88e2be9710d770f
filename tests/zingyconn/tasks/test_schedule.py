"""Cron expressions of scripts: parsed strictly on save, with errors that name the field."""

from __future__ import annotations

import datetime as dt

import pytest

from zingyconn.errors import ValidationError
from zingyconn.tasks.schedule import parse_cron


@pytest.mark.parametrize(
    ("expression", "when", "fires"),
    [
        pytest.param("*/15 8-18 * * 1-5", dt.datetime(2026, 11, 26, 8, 45), True, id="weekday-quarter"),
        pytest.param("*/15 8-18 * * 1-5", dt.datetime(2026, 11, 29, 8, 45), False, id="sunday"),
        pytest.param("0 7 * * *", dt.datetime(2026, 1, 1, 7, 0, 59), True, id="seconds-ignored"),
        pytest.param("@daily", dt.datetime(2026, 1, 1, 0, 0), True, id="alias"),
        pytest.param("@hourly", dt.datetime(2026, 1, 1, 5, 1), False, id="alias-other-minute"),
    ],
)
def test_cron_schedule_matches_minutes(expression: str, when: dt.datetime, fires: bool) -> None:
    """A schedule fires exactly in the minutes its five fields name."""
    assert parse_cron(expression).matches(when) is fires


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        pytest.param("61 * * * *", "field 'minute'", id="minute-range"),
        pytest.param("0 24 * * *", "field 'hour'", id="hour-range"),
        pytest.param("0 0 0 * *", "field 'day'", id="day-zero"),
        pytest.param("0 0 * 13 *", "field 'month'", id="month-range"),
        pytest.param("0 0 * * mon", "field 'day_of_week'", id="day-name"),
        pytest.param("*/0 * * * *", "field 'minute'", id="zero-step"),
        pytest.param("* * * *", "has 4 fields", id="four-fields"),
    ],
)
def test_invalid_cron_expression_names_the_field(expression: str, named: str) -> None:
    """A bad expression is refused with a ValidationError (field "cron") whose message names the bad part."""
    with pytest.raises(ValidationError, match=named) as caught:
        parse_cron(expression)
    assert caught.value.field == "cron"
