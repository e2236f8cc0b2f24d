"""The market's calendar (alpaca_stream/calendar.py): NYSE's holidays and half days as it
published them, 2016 to 2027, and beyond them every weekday; regular and extended hours; the
next open and close, as the trading API's clock says them."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from alpaca_stream.calendar import (
    HALF_DAYS,
    HOLIDAYS,
    NEW_YORK,
    closed_because,
    hours_of,
    market_open,
    next_close,
    next_open,
)

pytestmark = pytest.mark.timeout(10)


def new_york(day: str, hour: int, minute: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=NEW_YORK)


@pytest.mark.parametrize(("day", "closes"), [
    ("2022-06-20", None),  # Juneteenth, observed on the Monday: a holiday from 2022
    ("2021-06-18", 16),  # not before
    ("2027-06-18", None),  # on a Saturday in 2027: observed on the Friday
    ("2018-12-05", None),  # the day of mourning for President Bush
    ("2025-01-09", None),  # and for President Carter
    ("2021-12-31", 16),  # New Year's Day 2022 was a Saturday: not observed
    ("2026-07-03", None),  # Independence Day on a Saturday: observed on the Friday, no half day
    ("2017-07-03", 13),  # July 3 a Monday: a half day
    ("2026-11-27", 13),  # the day after Thanksgiving
    ("2026-12-24", 13),  # Christmas Eve on a weekday
    ("2027-12-24", None),  # Christmas on a Saturday: observed on the Friday
    ("2026-12-26", None),  # a Saturday
    ("2015-12-25", 16),  # beyond the table's years: every weekday, full hours
])
def test_a_days_regular_hours_by_nyses_calendar(day, closes):
    assert hours_of(date.fromisoformat(day)) == (None if closes is None else (time(9, 30), time(closes)))


def test_the_table_holds_weekdays_each_once_and_every_year_its_holidays_and_half_days():
    assert all(day.weekday() < 5 for day in HOLIDAYS | HALF_DAYS) and not HOLIDAYS & HALF_DAYS
    for year in range(2016, 2028):
        assert 9 <= sum(day.year == year for day in HOLIDAYS) <= 11, year
        assert 1 <= sum(day.year == year for day in HALF_DAYS) <= 3, year


def test_each_holiday_is_named_and_each_year_has_each_name_once_as_nyse_closes_for_it():
    every_year = ["Martin Luther King Jr. Day", "Washington's Birthday", "Good Friday", "Memorial Day",
                  "Independence Day", "Labor Day", "Thanksgiving", "Christmas"]
    for year in range(2016, 2028):
        named = sorted(closed_because(day) or "" for day in HOLIDAYS if day.year == year)
        expected = every_year + ["New Year's Day"] * (year != 2022) + ["Juneteenth"] * (year >= 2022) + \
            ["a day of mourning for President Bush"] * (year == 2018) + \
            ["a day of mourning for President Carter"] * (year == 2025)
        assert named == sorted(expected), year
    assert closed_because(date(2026, 11, 26)) == "Thanksgiving"
    assert closed_because(date(2027, 1, 1)) == "New Year's Day" and closed_because(date(2023, 1, 2)) == "New Year's Day"
    assert (closed_because(date(2026, 11, 28)), closed_because(date(2026, 11, 29))) == ("a Saturday", "a Sunday")
    assert closed_because(date(2026, 11, 27)) is None  # a half day opens


def test_the_market_is_closed_on_a_holiday_and_from_13_on_a_half_day():
    assert market_open(new_york("2026-11-27", 12, 59)) and not market_open(new_york("2026-11-27", 13))
    assert not market_open(new_york("2026-12-25", 10)) and not market_open(new_york("2026-12-25", 10), extended=True)


def test_extended_hours_are_4_to_20_and_to_17_on_a_half_day():
    assert hours_of(date(2026, 12, 2), extended=True) == (time(4), time(20))
    assert hours_of(date(2026, 11, 27), extended=True) == (time(4), time(17))
    assert market_open(new_york("2026-12-02", 5), extended=True) and not market_open(new_york("2026-12-02", 5))
    assert not market_open(new_york("2026-12-02", 3), extended=True)
    assert not market_open(new_york("2026-12-02", 20), extended=True)


def test_the_next_open_and_close_skip_weekends_and_holidays_and_keep_new_yorks_summer_time():
    assert next_open(new_york("2026-12-24", 10)) == new_york("2026-12-28", 9, 30)  # past Christmas
    assert next_close(new_york("2026-12-24", 10)) == new_york("2026-12-24", 13)  # a half day
    assert next_close(new_york("2026-12-24", 13)) == new_york("2026-12-28", 16)
    assert next_close(new_york("2026-12-24", 13), extended=True) == new_york("2026-12-24", 17)
    # 2026-03-08, a Sunday, begins summer time: 9:30 in New York is 13:30 UTC from then on.
    assert next_open(new_york("2026-03-06", 17)).isoformat() == "2026-03-09T09:30:00-04:00"
