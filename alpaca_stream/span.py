"""--history's span of past days: its text read into the first and the last moment its queries
ask (both included), and what is refused, saying what is wrong: a day the market was closed (for
a run of stocks and options alone: crypto trades, and news comes, every day), a day to come, a
range the wrong way round, a span that starts before Alpaca's history begins.

    DAY          2026-12-01: that day; New York's 4:00 to 20:00 (Alpaca's extended hours) for
                 stocks and options, or UTC's whole day for a run of crypto pairs alone
    DAY..DAY     2026-12-01..2026-12-03: from the first day's start to the last one's end
    TIME..TIME   2026-12-01T14:30..15:00: UTC (Z, if said), or New York's time with NY
                 (2026-12-01T09:30NY..10:00); seconds if wanted (14:30:15); the end takes the
                 start's day and zone unless it gives its own (..2026-12-02T15:00Z)
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import NamedTuple

from alpaca_stream.calendar import EXTENDED_HOURS, NEW_YORK, closed_because

UTC = timezone.utc
SIDE = re.compile(r"(\d{4}-\d\d-\d\d)?(?:(?:^|T)(\d\d:\d\d(?::\d\d)?)(Z|NY)?)?", re.IGNORECASE)
ZONES = {"Z": UTC, "NY": NEW_YORK}
SYNTAX = ("--history takes a day (2026-12-01), days (2026-12-01..2026-12-03) or a time range "
          "(2026-12-01T14:30..15:00 in UTC, 2026-12-01T09:30NY..10:00 in New York's time)")


class Side(NamedTuple):
    """One side of the span's "..", as written: a day, a time of day, a zone (each if given)."""

    day: date | None
    at: time | None
    zone: tzinfo | None


def read_side(text: str, span: str) -> Side:
    """A side of the span; ValueError with the syntax if it is not one."""
    shape = SIDE.fullmatch(text)
    if shape is None or not any(shape.groups()):
        raise ValueError(f"{SYNTAX}: {span}")
    day, at, zone = shape.groups()
    try:
        return Side(date.fromisoformat(day) if day else None, time.fromisoformat(at) if at else None,
                    ZONES[zone.upper()] if zone else None)
    except ValueError:
        raise ValueError(f"--history {span}: {text} is not a date or a time of day") from None


def read_span(text: str, new_york: bool, every_day: bool, begins: tuple[date, str],
              now: datetime | None = None) -> tuple[datetime, datetime]:
    """The first and the last moment of the span, in UTC; ValueError saying what is wrong.
    new_york: a day is New York's extended hours (a run of stocks or options), else UTC's;
    every_day: the run has what comes on a day the market is closed (crypto pairs, news);
    begins: the first day of the history asked, and what it is."""
    now = now or datetime.now(UTC)
    zone = NEW_YORK if new_york else UTC
    first, dots, last = text.partition("..")
    start = read_side(first, text)
    end = read_side(last, text) if dots else Side(start.day, None, None)
    if start.day is None or (start.at is None) != (end.at is None) or (start.at is None and end.day is None):
        raise ValueError(f"{SYNTAX}: {text}")
    if start.at is None:  # days
        assert end.day is not None  # as checked above
        opens = datetime.combine(start.day, EXTENDED_HOURS[0] if new_york else time(), zone)
        closes = datetime.combine(end.day, EXTENDED_HOURS[1], zone) if new_york else \
            datetime.combine(end.day + timedelta(days=1), time(), zone) - timedelta(microseconds=1)
        named = [start.day, end.day]
    else:
        assert end.at is not None
        opens = datetime.combine(start.day, start.at, start.zone or UTC)
        closes = datetime.combine(end.day or start.day, end.at, end.zone or start.zone or UTC)
        named = []
    if closes <= opens:
        raise ValueError(f"--history {text} is the wrong way round: "
                         f"it ends {'where' if closes == opens else 'before'} it starts")
    today = now.astimezone(zone).date()
    for day in named:
        if day > today:
            raise ValueError(f"--history: {day} is in the future (today is {today})")
    if opens > now:  # today's, before 4:00 in New York; or a time to come
        raise ValueError(f"--history: {first} {'is in the future' if start.at else 'has not begun yet'}")
    if opens.astimezone(zone).date() < begins[0]:
        raise ValueError(f"--history: {begins[1]} begins on {begins[0]}: {first} is before it")
    if new_york and not every_day:
        first_day, last_day = (moment.astimezone(NEW_YORK).date() for moment in (opens, closes))
        days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
        if all(closed_because(day) for day in days):
            raise ValueError(f"--history: the market was closed on {first_day} ({closed_because(first_day)})"
                             if len(days) == 1 else
                             f"--history: the market was closed on every day\nfrom {first_day} to {last_day}")
    return opens.astimezone(UTC), closes.astimezone(UTC)
