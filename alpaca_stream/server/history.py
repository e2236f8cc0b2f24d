"""Alpaca's historical market data API, as the local server answers it on its streams' port (a
plain HTTP GET, not a websocket upgrade): stock trades, quotes and bars (/v2/stocks/...), crypto's
(/v1beta3/crypto/us/...), option trades and bars (/v1beta1/options/...) and news
(/v1beta1/news), with Alpaca's parameters, answers, paging and errors (the project's
../shared/alpaca-historical-data.md).

The days are made up, the same on every query and every run: a symbol's day is the demo
market's random walk (its step() every WALK_STEP seconds), seeded by the symbol and the day,
from the day's level near its start price to the next trading day's (so a day opens where the
day before closed), and its trades and quotes are the demo market's own (market.py, crypto.py,
options.py), made around that walk CHUNK at a time from their place in the day. So a page is
made from where it starts, never the whole day: a day of a million trades takes no more memory
than one of a thousand. Stocks trade 4:00 to 20:00 New York on the days the calendar says
(calendar.py), options in regular hours, crypto and news every day of UTC; nothing later than now.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import functools
import hashlib
import heapq
import itertools
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from datetime import time as clock
from http import HTTPStatus
from urllib.parse import parse_qs

import msgpack
import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from alpaca_stream.calendar import HISTORY_FROM, NEW_YORK, OPTIONS_FROM, hours_of
from alpaca_stream.channels import PAIR, SYMBOL, option_symbol
from alpaca_stream.server.crypto import CryptoMarket
from alpaca_stream.server.market import BarBuilder, Market
from alpaca_stream.server.news import NEWS_SYMBOLS, NewsMarket
from alpaca_stream.server.options import OptionMarket
from alpaca_stream.server.protocol import rfc3339

DEFAULT_TRADES = 2_000  # a symbol's trades a day, and as many quotes, unless the server is told
WALK_STEP = 10  # seconds between two steps of a day's random walk
DAY_OPEN_SPREAD = 0.02  # a day opens near the demo's start price: this is the spread of its log
LEVEL_DAYS = 20  # draws a day's level is made of: a day shares all but one with the day before
DAYS_CLOSED = 10  # a stock's or an option's trading day comes within this many days of the last
CHUNK = 1_000  # messages made at a time (a page of 10,000 from anywhere makes at most 11,000)
# Trades a page of bars is made of, at most (but for its first bar, whole): it ends there, with
# a token, as a page of a limit does. A page is answered within the websocket handshake's 10 s,
# and the bars of a day of 1,000,000 trades took 13.0 s to make as one page; this many, 1.4 s.
PAGE_TRADES = 100_000
STOCK_SHARES = (0.1, 0.8, 0.1)  # a stock day's messages before, in and after regular hours
ARTICLES_A_DAY = 8  # news about each symbol, every day
RECENT_SIP = 15 * 60  # seconds: SIP data this recent is not for a free plan (403)
FEEDS = ("iex", "sip", "delayed_sip", "otc", "boats", "overnight")  # stocks' (all the same day here)
ADJUSTMENTS = ("raw", "split", "dividend", "all")  # no splits nor dividends here: all the same
NS = 1_000_000_000
UTC = timezone.utc
GOLDEN = (math.sqrt(5) - 1) / 2  # spreads the messages' places in their slots evenly, none twice
TIMEFRAME = re.compile(r"([1-9]\d?)(Min|T|Hour|H|Day|D)")
TIME = re.compile(r"(\d{4}-\d\d-\d\d)(?:T(\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d))?", re.IGNORECASE)

Segment = tuple[int, int, float]  # hours of a day with messages (start and end, ns) and their share of them


def moment(day: date, at: clock, zone: tzinfo) -> int:
    """A time of a day, in ns since the epoch."""
    return round(datetime.combine(day, at, zone).timestamp()) * NS


def stock_hours(symbol: str, day: date) -> list[Segment]:
    """A trading day's extended hours, with most messages in its regular hours; none on a closed day."""
    extended, regular = hours_of(day, extended=True), hours_of(day)
    if extended is None or regular is None:
        return []
    edges = [moment(day, at, NEW_YORK) for at in (extended[0], regular[0], regular[1], extended[1])]
    return list(zip(edges, edges[1:], STOCK_SHARES))


def option_hours(contract: str, day: date) -> list[Segment]:
    """A trading day's regular hours, from Alpaca's first option day to the contract's expiry."""
    regular = hours_of(day)
    if regular is None or not OPTIONS_FROM <= day <= option_symbol(contract).expires():
        return []
    return [(moment(day, regular[0], NEW_YORK), moment(day, regular[1], NEW_YORK), 1.0)]


def whole_day(symbol: str, day: date) -> list[Segment]:
    """Every day, all day, UTC's: crypto's."""
    return [(moment(day, clock(), UTC), moment(day + timedelta(days=1), clock(), UTC), 1.0)]


def stock_symbol(symbol: str) -> bool:
    return symbol != "*" and bool(SYMBOL.fullmatch(symbol))


def pair(symbol: str) -> bool:
    return symbol != "*" and bool(PAIR.fullmatch(symbol))


def contract(symbol: str) -> bool:
    """An option's OCC symbol, with an expiry that is a date."""
    try:
        option_symbol(symbol).expires()
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Asset:
    """One of Alpaca's asset classes, as its history is made here: its market (the demo's), the
    shape of its symbols, whose day it is (New York's or UTC's) and the hours of a day that have
    messages."""

    market: type[Market]
    symbol: Callable[[str], bool]
    zone: tzinfo
    hours: Callable[[str, date], list[Segment]]


STOCKS = Asset(Market, stock_symbol, NEW_YORK, stock_hours)
CRYPTO = Asset(CryptoMarket, pair, UTC, whole_day)
OPTIONS = Asset(OptionMarket, contract, NEW_YORK, option_hours)
NEWS = Asset(NewsMarket, lambda symbol: stock_symbol(symbol) or pair(symbol), UTC, whole_day)
ROUTES = {"/v2/stocks/trades": (STOCKS, "trades"), "/v2/stocks/quotes": (STOCKS, "quotes"),
          "/v2/stocks/bars": (STOCKS, "bars"), "/v1beta3/crypto/us/trades": (CRYPTO, "trades"),
          "/v1beta3/crypto/us/quotes": (CRYPTO, "quotes"), "/v1beta3/crypto/us/bars": (CRYPTO, "bars"),
          "/v1beta1/options/trades": (OPTIONS, "trades"), "/v1beta1/options/bars": (OPTIONS, "bars"),
          "/v1beta1/news": (NEWS, "news")}
LIMITS = {"news": (10, 50)}  # (default, most) a page: Alpaca's news; the rest (1000, 10000)


@functools.lru_cache(maxsize=256)
def level(asset: Asset, symbol: str, day: date) -> float:
    """Where the symbol's day opens: near the demo's start price, by the draws of this day and
    the LEVEL_DAYS - 1 before it, each seeded by the symbol and its day; so the next day's level
    is near this one (a day's move of its log has a standard deviation of DAY_OPEN_SPREAD *
    sqrt(2 / LEVEL_DAYS), 0.6%)."""
    draws = (random.Random(f"{symbol} {day - timedelta(days=n)} open").gauss(0, 1) for n in range(LEVEL_DAYS))
    start = asset.market(random.Random(symbol), {}, itertools.count(), {}).last_price(symbol)
    return start * math.exp(DAY_OPEN_SPREAD * sum(draws) / math.sqrt(LEVEL_DAYS))


def next_trading_day(asset: Asset, symbol: str, day: date) -> date | None:
    """The first day after this one with messages; None if there is none soon (an option expired)."""
    later = (day + timedelta(days=n) for n in range(1, DAYS_CLOSED + 1))
    return next((after for after in later if asset.hours(symbol, after)), None)


@functools.lru_cache(maxsize=64)
def walk(asset: Asset, symbol: str, day: date) -> tuple[float, ...]:
    """The symbol's price every WALK_STEP seconds of the day's hours: the demo market's random
    walk from the day's level, bent (a drift of its log, the same each step) to end at the next
    trading day's, so that a day opens where the one before it closed, each day still made
    without the days before it."""
    hours = asset.hours(symbol, day)
    steps = (hours[-1][1] - hours[0][0]) // (WALK_STEP * NS) + 2
    rng = random.Random(f"{symbol} {day} walk")
    market = asset.market(rng, {}, itertools.count(), {})
    market.prices[symbol] = level(asset, symbol, day)
    prices = (market.prices[symbol], *(market.step(symbol) for _ in range(steps - 1)))
    after = next_trading_day(asset, symbol, day)
    if after is None:
        return prices
    drift = math.log(level(asset, symbol, after) / prices[-1]) / (steps - 1)
    return tuple(price * math.exp(drift * step) for step, price in enumerate(prices))


@dataclass(frozen=True)
class Series:
    """One symbol's trades or quotes of one day: `count` of them over the day's hours (none on a
    closed day), the index-th at time_of(index), made CHUNK at a time (chunk())."""

    asset: Asset
    symbol: str
    day: date
    channel: str  # "trades" or "quotes"
    count: int

    @functools.cached_property
    def hours(self) -> list[Segment]:
        return self.asset.hours(self.symbol, self.day)

    def time_of(self, index: int) -> int:
        """When the index-th message is, in ns: somewhere in its own slot of the day's hours, so
        the times only grow, and never twice the same (quotes fall between trades)."""
        phase = 0.5 if self.channel == "quotes" else 0.0
        place = (index + 0.05 + 0.9 * ((index * GOLDEN + phase) % 1)) / self.count
        for start, end, share in self.hours:
            if place < share or end == self.hours[-1][1]:
                return start + int(place / share * (end - start))
            place -= share
        raise AssertionError("a day without hours has no messages")

    def index_at(self, at: int) -> int:
        """The index of the first message at or after this time (ns); count if none is."""
        place = 0.0
        for start, end, share in self.hours:
            if at < end:
                place += share * max(0, at - start) / (end - start)
                break
            place += share
        index = max(0, int(place * self.count) - 1)  # time_of()'s inverse, give or take one
        while index < self.count and self.time_of(index) < at:
            index += 1
        return index

    def price_at(self, at: int) -> float:
        """The day's walk at this time (ns), between its two steps."""
        prices = walk(self.asset, self.symbol, self.day)
        place = (at - self.hours[0][0]) / (WALK_STEP * NS)
        step = int(place)
        return prices[step] * (prices[step + 1] / prices[step]) ** (place - step)

    def messages(self, first: int, stop: int, descending: bool = False) -> Iterator[tuple[int, dict]]:
        """Messages first to stop (not included), each with its time in ns, the other way round
        if descending."""
        for index in range(stop - 1, first - 1, -1) if descending else range(first, stop):
            yield chunk(self, index // CHUNK)[index % CHUNK]


@functools.lru_cache(maxsize=32)
def chunk(series: Series, number: int) -> tuple[tuple[int, dict], ...]:
    """The series' messages number * CHUNK on, CHUNK of them, as the history answers them, each
    with its time in ns: the demo market's trades or quotes at the walk's price of their time,
    from a random generator seeded by the series and the chunk. Trade ids are the day's and the
    index's: unique within a symbol."""
    symbol, first = series.symbol, number * CHUNK
    rng = random.Random(f"{symbol} {series.day} {series.channel} {number}")
    ids = itertools.count(2 * ((series.day - HISTORY_FROM).days * 10**9 + first))  # two a trade at most (a correction)
    market = series.asset.market(rng, {}, ids, {"trades": [symbol]})
    made = []
    for index in range(first, min(series.count, first + CHUNK)):
        at = series.time_of(index)
        market.prices[symbol] = series.price_at(at)
        trades = series.channel == "trades"
        message = market.trade(symbol, at=at / NS)[0] if trades else market.quote(symbol, at=at / NS)
        made.append((at, answered(message, at)))
    return tuple(made)


def answered(message: dict, at: int) -> dict:
    """A stream's message as the history answers it: the same letters, without its type and
    symbol (the symbol is the key its list is under) or when Alpaca received it; its time in ns."""
    return {**{key: value for key, value in message.items() if key not in ("T", "S", "r")}, "t": time_text(at)}


def time_text(at: int) -> str:
    return rfc3339(msgpack.Timestamp.from_unix_nano(at))


@dataclass
class Work:
    """The trades a page has made bars of."""

    trades: int = 0


def bars(series: Series, width: int | None, low: int, high: int, until: int,
         descending: bool, work: Work) -> Iterator[tuple[int, dict | None]]:
    """The day's bars of `width` ns (None: the whole day's, from its midnight) that start from
    low to high (ns, both included), built from the series' trades before `until` (now); a
    time without a trade has no bar. A bar past the page's work is not made: None in its
    place ends the page there."""
    if width is None:
        midnight = moment(series.day, clock(), series.asset.zone)
        starts = range(midnight, midnight + 1)
        width = moment(series.day + timedelta(days=1), clock(), series.asset.zone) - midnight
    else:
        starts = range(series.hours[0][0] // width * width, series.hours[-1][1], width)
    for start in reversed(starts) if descending else starts:
        if not low <= start <= high:
            continue
        first, stop = series.index_at(start), series.index_at(min(start + width, until))
        if first < stop:
            if work.trades and work.trades + stop - first > PAGE_TRADES:  # a page's first bar is made whole
                yield start, None
                return
            work.trades += stop - first
            bar = BarBuilder(start / NS)
            for _, trade in series.messages(first, stop):
                bar.add(trade["p"], trade["s"])
            yield start, answered(bar.message("b", series.symbol), start)


def articles(symbol: str, day: date, content: bool) -> list[tuple[int, int, dict]]:
    """The day's news about the symbol, as the history answers it (its content only if asked),
    each with its time (ns) and id, oldest first: the demo's articles, at made-up times of the
    day, ARTICLES_A_DAY of them, with ids unique across symbols (but by a chance of 2 ** -40)."""
    return [(at, number, {**article, "content": article["content"] if content else ""})
            for at, number, article in made_articles(symbol, day)]


@functools.lru_cache(maxsize=256)
def made_articles(symbol: str, day: date) -> tuple[tuple[int, int, dict], ...]:
    rng = random.Random(f"{symbol} {day} news")
    first_id = int.from_bytes(hashlib.sha256(f"{symbol} {day}".encode()).digest()[:5], "big") * ARTICLES_A_DAY
    market = NewsMarket(rng, {}, itertools.count(first_id), {})
    midnight, slot = moment(day, clock(), UTC), 24 * 3600 * NS // ARTICLES_A_DAY
    made = []
    for number in range(ARTICLES_A_DAY):
        at = midnight + number * slot + rng.randrange(slot)
        article = market.article(symbol, at / NS)
        made.append((at, article["id"], {**{key: value for key, value in article.items() if key != "T"},
                                         "created_at": time_text(at), "updated_at": time_text(at + NS), "images": []}))
    return tuple(made)


class Refused(Exception):
    """A request Alpaca refuses: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Query:
    """What a request asks, read and checked (read())."""

    asset: Asset
    channel: str  # "trades", "quotes", "bars" or "news"
    symbols: tuple[str, ...]  # sorted, as Alpaca answers them
    low: int  # ns, included
    high: int  # ns, included, never later than now
    now: int  # ns
    descending: bool
    limit: int
    width: int | None  # bars: ns a bar, None for a day's
    content: bool  # news: with its content
    token: tuple[str, int] | None  # where the page starts: (symbol, ns); for news (id, ns)
    count: int  # a symbol's trades (and quotes) a day

    def page(self) -> dict:
        """The page asked, as Alpaca answers it."""
        if self.channel == "news":
            news, token = self.news()
            return {"news": news, "next_page_token": token}
        found, token = self.market_data()
        return {self.channel: found, "next_page_token": token}

    def market_data(self) -> tuple[dict[str, list[dict]], str | None]:
        """Up to limit messages, by symbol then time, and the token of the next one (if any)."""
        found: dict[str, list[dict]] = {}
        taken, work = 0, Work()
        for symbol in self.symbols:
            low, high = self.low, self.high
            if self.token:
                after, at = self.token
                if symbol < after:
                    continue
                if symbol == after:
                    low, high = (low, at) if self.descending else (at, high)
            for at, message in self.items(symbol, low, high, work):
                if taken == self.limit or message is None:  # None: a bar past the page's work
                    return found, token_text(symbol, at)
                found.setdefault(symbol, []).append(message)
                taken += 1
        return found, None

    def news(self) -> tuple[list[dict], str | None]:
        """Up to limit articles about any of the symbols, by time, and the token of the next one."""
        low, high = self.low, self.high
        if self.token:
            low, high = (low, self.token[1]) if self.descending else (self.token[1], high)
        merged: Iterator[tuple[int, int, dict]] = heapq.merge(
            *(self.items(symbol, low, high, Work()) for symbol in self.symbols),  # type: ignore[arg-type]
            key=lambda article: article[:2], reverse=self.descending)
        if self.token:
            start = (self.token[1], int(self.token[0]))
            merged = itertools.dropwhile(lambda article: (article[:2] > start) if self.descending
                                         else (article[:2] < start), merged)
        taken = list(itertools.islice(merged, self.limit + 1))
        token = token_text(str(taken[-1][1]), taken[-1][0]) if len(taken) > self.limit else None
        return [article for *_, article in taken[:self.limit]], token

    def items(self, symbol: str, low: int, high: int, work: Work) -> Iterator[tuple]:
        """The symbol's messages from low to high (ns, both included), each after its time (and
        for news its id), in the order asked; bars within the page's work."""
        first, last = (datetime.fromtimestamp(at / NS, self.asset.zone).date() for at in (low, high))
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        for day in reversed(days) if self.descending else days:
            if self.channel == "news":
                found = [article for article in articles(symbol, day, self.content) if low <= article[0] <= high]
                yield from reversed(found) if self.descending else found
                continue
            series = Series(self.asset, symbol, day, "quotes" if self.channel == "quotes" else "trades", self.count)
            if not series.hours:
                continue
            if self.channel == "bars":
                yield from bars(series, self.width, low, high, self.now + 1, self.descending, work)
            else:
                yield from series.messages(series.index_at(low), series.index_at(high + 1), self.descending)


def read(asset: Asset, channel: str, params: dict[str, str], now: int, count: int) -> Query:
    """The query a request's parameters ask; Refused with Alpaca's status and message if wrong."""
    symbols = tuple(sorted({symbol for symbol in params.get("symbols", "").split(",") if symbol}))
    if channel == "news" and not symbols:
        symbols = NEWS_SYMBOLS  # any news
    if not symbols:
        raise Refused(400, "missing symbols")
    wrong = [symbol for symbol in symbols if not asset.symbol(symbol)]
    if wrong:
        raise Refused(400, f"invalid symbol: {wrong[0]}")
    today = datetime.fromtimestamp(now / NS, asset.zone).date()
    low = max(read_time(params, "start", moment(today, clock(), asset.zone)),  # Alpaca's default: today
              moment(HISTORY_FROM, clock(), UTC))
    high = min(read_time(params, "end", now), now)
    default, most = LIMITS.get(channel, (1000, 10_000))
    limit = params.get("limit", str(default))
    if not limit.isdigit() or not 1 <= int(limit) <= most:
        raise Refused(422, f"invalid limit: {limit} (from 1 to {most})")
    sort = params.get("sort", "desc" if channel == "news" else "asc")  # Alpaca's news: newest first
    for name, value, allowed in (("sort", sort, ("asc", "desc")), ("feed", params.get("feed", "iex"), FEEDS),
                                 ("adjustment", params.get("adjustment", "raw"), ADJUSTMENTS)):
        if value not in allowed:
            raise Refused(422, f"invalid {name}: {value}")
    width = read_timeframe(params.get("timeframe", "")) if channel == "bars" else None
    return Query(asset, channel, symbols, low, high, now, sort == "desc", int(limit), width,
                 params.get("include_content") == "true", read_token(params.get("page_token")), count)


def read_time(params: dict[str, str], name: str, default: int) -> int:
    """A time parameter (RFC 3339, to the nanosecond, or a date: its midnight, UTC) in ns."""
    if name not in params:
        return default
    shape = TIME.fullmatch(params[name])
    if shape is None:
        raise Refused(422, f"invalid {name}: {params[name]} (RFC 3339 or YYYY-MM-DD)")
    day, at, fraction, zone = shape.groups()
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    try:
        when = datetime.fromisoformat(f"{day}T{at or '00:00:00'}{zone}")
    except ValueError:
        raise Refused(422, f"invalid {name}: {params[name]}") from None
    return round(when.timestamp()) * NS + int((fraction or "").ljust(9, "0"))


def read_timeframe(timeframe: str) -> int | None:
    """A bar's width in ns (None: a day), of Alpaca's minutes (1 to 59), hours (1 to 23) or one
    day; its weeks and months are not served here."""
    shape = TIMEFRAME.fullmatch(timeframe)
    amount, unit = (int(shape[1]), shape[2][0]) if shape else (0, "")
    if unit == "D" and amount == 1:
        return None
    if (unit == "M" and amount <= 59) or (unit == "T" and amount <= 59):
        return amount * 60 * NS
    if unit == "H" and amount <= 23:
        return amount * 3600 * NS
    raise Refused(422, f"invalid timeframe: {timeframe} (the local server serves 1Min to 59Min, 1Hour to 23Hour "
                       "and 1Day)")


def token_text(key: str, at: int) -> str:
    """A page token: where the next page starts, opaque to the client."""
    return base64.urlsafe_b64encode(f"{key}|{at}".encode()).decode()


def read_token(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    try:
        key, at = base64.urlsafe_b64decode(text.encode()).decode().split("|")
        return key, int(at)
    except (binascii.Error, UnicodeError, ValueError):
        raise Refused(422, "invalid page_token") from None


@dataclass
class RateLimit:
    """Alpaca's limit on historical calls (its free plan: 200 a minute), for the tests: `calls`
    requests a `window` of seconds, from the window's first; past them, 429 until it ends. Every
    answer says where the window stands, in Alpaca's headers."""

    calls: int
    window: float = 60.0
    ends: float = 0.0  # when the window ends (Unix seconds)
    used: int = 0
    refused: int = 0  # calls answered 429, for the tests to check
    most_refused: int | None = None  # after this many 429s, none: a test of one retry, whatever the paging

    def take(self) -> tuple[bool, list[tuple[str, str]]]:
        """Whether one more call is allowed now, and the headers that say so."""
        now = time.time()
        if now >= self.ends:
            self.ends, self.used = now + self.window, 0
        self.used += 1
        allowed = self.used <= self.calls or self.most_refused is not None and self.refused >= self.most_refused
        self.refused += not allowed
        return allowed, [("X-RateLimit-Limit", str(self.calls)),
                                         ("X-RateLimit-Remaining", str(max(0, self.calls - self.used))),
                                         ("X-RateLimit-Reset", str(math.ceil(self.ends)))]


class History:
    """The historical API's answers, for the local server: `trades` a symbol a day (and as many
    quotes), keys as keys_accepted() says (crypto's history needs none: any given are checked),
    the paid plan's recent SIP data if `sip`, and a rate limit if given."""

    def __init__(self, keys_accepted: Callable[[object, object], bool], *, trades: int = DEFAULT_TRADES,
                 sip: bool = False, rate_limit: RateLimit | None = None) -> None:
        self.keys_accepted = keys_accepted
        self.trades = trades
        self.sip = sip
        self.rate_limit = rate_limit

    async def answer(self, request: Request) -> Response | None:
        """The answer to a request of the historical API; None for any other path."""
        path, _, query = request.path.partition("?")
        route = ROUTES.get(path.rstrip("/"))
        if route is None:
            return None
        asset, channel = route
        headers: list[tuple[str, str]] = []
        if self.rate_limit:
            allowed, headers = self.rate_limit.take()
            if not allowed:
                return respond(429, {"message": "too many requests."}, headers)
        key, secret = (request.headers.get(name) for name in ("APCA-API-KEY-ID", "APCA-API-SECRET-KEY"))
        if key is None and secret is None and asset is not CRYPTO:
            return respond(401, {"message": "unauthorized."}, headers)
        if (key is not None or secret is not None) and not self.keys_accepted(key, secret):
            return respond(403, {"message": "forbidden."}, headers)
        params = {name: values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}
        now = time.time_ns()
        try:
            asked = read(asset, channel, params, now, self.trades)
            if params.get("feed") == "sip" and not self.sip and asked.high > now - RECENT_SIP * NS:
                raise Refused(403, "subscription does not permit querying recent SIP data")
        except Refused as refused:
            return respond(refused.status, {"message": refused.message}, headers)
        # In a thread: a page of 10,000 takes the event loop's streams no more than a switch's wait.
        return respond(200, await asyncio.to_thread(asked.page), headers)


def respond(status: int, body: dict, headers: list[tuple[str, str]]) -> Response:
    """An HTTP answer with a JSON body; the connection closes after it, as websockets' do."""
    data = orjson.dumps(body)
    return Response(status, HTTPStatus(status).phrase, Headers([
        ("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
        ("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(data))), *headers]), data)
