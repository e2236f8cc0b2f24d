"""The US stock market's calendar, as a table: no network needed (Alpaca's /v2/calendar is not
in reach of every machine that replays a recording). A trading day's regular hours are 9:30 to
16:00 New York time, to 13:00 on a half day; its extended hours, Alpaca's, 4:00 to 20:00, to
17:00 on a half day (NYSE Arca's late session closes then). The holidays and half days are
NYSE's, as it published them, from 2016 to 2027; before and after those years, every weekday is
a trading day of full hours."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")  # the market's clock

# (open, close, close on a half day), New York time
REGULAR_HOURS = (time(9, 30), time(16), time(13))
# Where Alpaca's historical data begins (../shared/alpaca-historical-data.md: "7+ years"; option
# trades and bars from February 2024): --history refuses a span that starts earlier, and the
# local server makes no day before them. This table begins there too.
HISTORY_FROM = date(2016, 1, 1)
OPTIONS_FROM = date(2024, 2, 1)
EXTENDED_HOURS = (time(4), time(20), time(17))


def days(by_year: dict[int, str]) -> frozenset[date]:
    """The dates of a table: each year's days as "MM-DD"."""
    return frozenset(date.fromisoformat(f"{year}-{day}") for year, listed in by_year.items() for day in listed.split())


# NYSE's full-day closings, each on the day observed (a holiday on a Saturday is observed the
# Friday before, on a Sunday the Monday after; New Year's Day on a Saturday, as in 2022, is not
# observed): New Year's Day, Martin Luther King Jr. Day, Washington's Birthday, Good Friday,
# Memorial Day, Juneteenth (from 2022), Independence Day, Labor Day, Thanksgiving, Christmas; and
# the national days of mourning for Presidents Bush (2018-12-05) and Carter (2025-01-09).
HOLIDAYS = days({
    2016: "01-01 01-18 02-15 03-25 05-30 07-04 09-05 11-24 12-26",
    2017: "01-02 01-16 02-20 04-14 05-29 07-04 09-04 11-23 12-25",
    2018: "01-01 01-15 02-19 03-30 05-28 07-04 09-03 11-22 12-05 12-25",
    2019: "01-01 01-21 02-18 04-19 05-27 07-04 09-02 11-28 12-25",
    2020: "01-01 01-20 02-17 04-10 05-25 07-03 09-07 11-26 12-25",
    2021: "01-01 01-18 02-15 04-02 05-31 07-05 09-06 11-25 12-24",
    2022: "01-17 02-21 04-15 05-30 06-20 07-04 09-05 11-24 12-26",
    2023: "01-02 01-16 02-20 04-07 05-29 06-19 07-04 09-04 11-23 12-25",
    2024: "01-01 01-15 02-19 03-29 05-27 06-19 07-04 09-02 11-28 12-25",
    2025: "01-01 01-09 01-20 02-17 04-18 05-26 06-19 07-04 09-01 11-27 12-25",
    2026: "01-01 01-19 02-16 04-03 05-25 06-19 07-03 09-07 11-26 12-25",
    2027: "01-01 01-18 02-15 03-26 05-31 06-18 07-05 09-06 11-25 12-24",
})

# NYSE's half days, closed at 13:00: July 3 when a trading day before Independence Day, the day
# after Thanksgiving, and Christmas Eve when a trading day.
HALF_DAYS = days({
    2016: "11-25",
    2017: "07-03 11-24",
    2018: "07-03 11-23 12-24",
    2019: "07-03 11-29 12-24",
    2020: "11-27 12-24",
    2021: "11-26",
    2022: "11-25",
    2023: "07-03 11-24",
    2024: "07-03 11-29 12-24",
    2025: "07-03 11-28 12-24",
    2026: "11-27 12-24",
    2027: "11-26",
})


# Each holiday's name, by its month (New Year's Day in January too, on the 1st or the 2nd); the
# days of mourning by their date.
HOLIDAY_OF_MONTH = {1: "Martin Luther King Jr. Day", 2: "Washington's Birthday", 3: "Good Friday", 4: "Good Friday",
                    5: "Memorial Day", 6: "Juneteenth", 7: "Independence Day", 9: "Labor Day", 11: "Thanksgiving",
                    12: "Christmas"}
MOURNING = {date(2018, 12, 5): "a day of mourning for President Bush",
            date(2025, 1, 9): "a day of mourning for President Carter"}


def closed_because(day: date) -> str | None:
    """Why the market is closed all day, in words ("a Saturday", "Thanksgiving"); None if it opens."""
    if day.weekday() >= 5:
        return ("a Saturday", "a Sunday")[day.weekday() - 5]
    if day not in HOLIDAYS:
        return None
    if day in MOURNING:
        return MOURNING[day]
    return "New Year's Day" if day.month == 1 and day.day <= 2 else HOLIDAY_OF_MONTH[day.month]


def hours_of(day: date, extended: bool = False) -> tuple[time, time] | None:
    """The day's open and close (of extended hours if asked), New York time; None if the market
    is closed all day."""
    if day.weekday() >= 5 or day in HOLIDAYS:
        return None
    opens, closes, closes_early = EXTENDED_HOURS if extended else REGULAR_HOURS
    return opens, closes_early if day in HALF_DAYS else closes


def market_open(now: datetime | None = None, extended: bool = False) -> bool:
    """Whether the market is open at this time (now, if not given): in regular hours, or in
    extended hours if asked. (Compared as New York's times of day, not as datetimes made for the
    day: a backtest asks it for each message of a symbol with an open order, and those took
    twice as long.)"""
    there = (now or datetime.now(timezone.utc)).astimezone(NEW_YORK)
    hours = hours_of(there.date(), extended)
    return hours is not None and hours[0] <= there.time() < hours[1]


def trading_days_from(moment: datetime, extended: bool = False) -> Iterator[tuple[datetime, datetime]]:
    """The open and close of each trading day from the moment's own day on (New York's)."""
    day = moment.astimezone(NEW_YORK).date()
    while True:
        hours = hours_of(day, extended)
        if hours is not None:
            yield datetime.combine(day, hours[0], NEW_YORK), datetime.combine(day, hours[1], NEW_YORK)
        day += timedelta(days=1)


def next_open(after: datetime, extended: bool = False) -> datetime:
    """The first open later than this moment (of extended hours if asked), of regular hours as
    the trading API's clock says it."""
    return next(opens for opens, _ in trading_days_from(after, extended) if opens > after)


def next_close(after: datetime, extended: bool = False) -> datetime:
    """The first close later than this moment (of extended hours if asked): when a day order
    placed then expires."""
    return next(closes for _, closes in trading_days_from(after, extended) if closes > after)
