"""A local server that speaks Alpaca's stock market-data stream protocol (v2), for --demo,
the tests and the benchmark; and the same protocol with a feeder's data, for --serve.

The server side of the protocol is written once, in ProtocolServer; AlpacaStreamServer makes
up the market data, and Relay hands on what websocket_stream.py --serve receives from Alpaca.

It is a real peer for alpaca-py, not a mock: msgpack binary frames (JSON text frames for a
client that does not ask for msgpack, as Alpaca), the "connected" greeting,
auth within 10 s, the "subscription" answer, and market data whose "t" is a msgpack Timestamp,
several messages per frame, on every stock channel: trades (with corrections and cancels),
quotes, minute bars, updated and daily bars, trading statuses (halts), LULD bands and order
imbalances, with keys Alpaca adds that a client may not know ("r", "tks"). It compresses
(permessage-deflate), allows one connection per key and feed (406), refuses sip to a plan
without it (409) and cuts a client too slow to keep up (407), as Alpaca does. It sends Alpaca's
error frames, and it can misbehave the ways a real network and a real broker do (see Faults).
The local server listens on 127.0.0.1 only. The facts it follows are in ../shared/alpaca-stream-protocol.md
of the project.

Run it alone:  python local_alpaca_server.py --port 8765 --rate 50
and point the script at it:  python websocket_stream.py --url ws://127.0.0.1:8765/v2/iex
(any keys are accepted, so made-up ones do). A connection lost without a close keeps its place
--hold-dropped seconds (90, as Alpaca; 0 lets a client reconnect at once); --sip serves /v2/sip
as to a paid plan; --no-compression sends frames as they are (faster, for a benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hashlib
import hmac
import itertools
import json
import logging
import math
import random
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import TypeVar
from zoneinfo import ZoneInfo

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger("local_alpaca_server")

ERRORS = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    411: "insufficient scope",
    500: "internal error",
}
CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "imbalances")
FEEDS = ("iex", "sip", "delayed_sip", "test")  # the paths /v2/{feed}; any other path gets HTTP 404
SYMBOL = re.compile(r"\*|[A-Z][A-Z0-9.]{0,9}")
# Alpaca's free plan: 30 symbols for trades and quotes; bars and statuses have no such limit.
# Error 405 past that, and the existing subscriptions stay.
FREE_PLAN_SYMBOL_LIMIT = 30
# What "*" (every symbol) streams here.
WILDCARD_SYMBOLS = ("SPY", "TSLA", "AAPL", "NVDA", "QQQ", "AMZN")

START_PRICES = {"SPY": 600.0, "TSLA": 350.0, "AAPL": 230.0, "NVDA": 180.0, "QQQ": 520.0,
                "AMZN": 220.0, "MSFT": 510.0, "FAKEPACA": 100.0}
# SPY and QQQ print on tape B (NYSE Arca listings), Nasdaq listings on tape C.
TAPES = {"SPY": "B", "QQQ": "B"}
EXCHANGES = "VVVPPKQQQZNDDDDXBJYAHUM"  # IEX (V), Nasdaq (Q) and the FINRA TRF (D) print most
CONDITIONS = (["@"], ["@"], ["@", "I"], ["@", "F"], ["@", "F", "I"], ["@", "T"])
BLOCK_SIZE = 10_000  # shares: a block trade
BLOCK_EVERY = 5.0  # seconds: a trade stream sees a block at least this often
# Halts as Alpaca reports them, by tape: CTA (A, B) and UTP (C) use different codes.
HALTS = {
    "B": [("2", "Trading Halt", "M", "Limit Up-Limit Down (LULD) Trading Pause", "3", "Resume"),
          ("2", "Trading Halt", "P", "News Pending", "3", "Resume")],
    "C": [("P", "Volatility Trading Pause", "LUDP", "Volatility Trading Pause", "T", "Trading Resumption"),
          ("H", "Trading Halt", "T1", "Halt News Pending", "T", "Trading Resumption")],
}
HALT_SECONDS = (5.0, 20.0)  # how long a random halt lasts
HALTS_PER_MINUTE = 1.0  # random halts, over the symbols subscribed to statuses
IMBALANCES_PER_MINUTE = 3.0  # random imbalances, over the symbols subscribed to imbalances; halts bring more
LULD_PERCENT = 5.0  # band around the reference price (tier 1 stocks over $3)
NEW_YORK = ZoneInfo("America/New_York")  # the daily bar starts at midnight there
# Keys Alpaca adds that a client may not know: "r" (when Alpaca received it) on some trades and
# quotes, "tks" (taker side) on some trades.
RECEIVED_SHARE = 1 / 3
TAKER_SIDE_SHARE = 1 / 3
SEND_BUFFER = 16_384  # bytes the kernel holds for a client, with a rate (Linux doubles it)
CLOSE_TIMEOUT = 2.0  # seconds a slow client has to take its 407 and the close before it is cut
BIG_FRAME_TRADES = 30_000  # well over websockets' default max_size of 1 MiB, packed
CUES = ("block", "correction", "cancel", "halt", "resume", "luld", "bar", "updated_bar", "daily_bar",
        "imbalance", "big_frame")


def start_price(symbol: str) -> float:
    """A plausible price for any symbol, the same every run."""
    return START_PRICES.get(symbol) or random.Random(symbol).uniform(20, 400)


def round_lot(price: float) -> int:
    """Shares in a round lot since November 2025 (SEC Regulation NMS tiers): quote sizes, in
    shares, are multiples of it."""
    return 100 if price <= 250 else 40 if price <= 1000 else 10 if price <= 10_000 else 1


def timestamp(seconds: float | None = None) -> msgpack.Timestamp:
    return msgpack.Timestamp.from_unix_nano(time.time_ns() if seconds is None else int(seconds * 1e9))


@dataclass
class BarBuilder:
    """One symbol's open, high, low, close and volume over a minute or a day."""

    start: float  # seconds since the epoch
    open: float = 0.0
    high: float = 0.0
    low: float = math.inf
    close: float = 0.0
    volume: int = 0
    trade_count: int = 0
    value: float = 0.0  # sum of price x size, for the VWAP

    def add(self, price: float, size: int) -> None:
        if not self.trade_count:
            self.open = price
        self.high, self.low, self.close = max(self.high, price), min(self.low, price), price
        self.volume += size
        self.trade_count += 1
        self.value += price * size

    def message(self, kind: str, symbol: str) -> dict:
        return {"T": kind, "S": symbol, "o": self.open, "h": self.high, "l": self.low, "c": self.close,
                "v": self.volume, "n": self.trade_count, "vw": round(self.value / self.volume, 4),
                "t": timestamp(self.start)}


def subscribed(symbol: str, symbols: list[str]) -> bool:
    return symbol in symbols or "*" in symbols


class Market:
    """The market one connection watches: a random walk per symbol, and what comes of it.

    Trades (now and then a block, a correction or a cancel of a trade already sent), quotes
    around the price with the bid below the ask, minute bars built from its trades at each
    minute mark, late trades and the updated bars they cause at the next half-minute, daily bars,
    halts and resumptions, and LULD bands. Every method returns the messages to send.
    """

    def __init__(self, rng: random.Random, prices: dict[str, float], ids: itertools.count,
                 subscriptions: dict[str, list[str]]) -> None:
        self.rng = rng
        self.prices = prices  # shared by the server's connections, so a reconnect carries on
        self.ids = ids
        self.subscriptions = subscriptions  # channel -> symbols, updated as the client asks
        now = time.time()
        self.minute = int(now // 60)  # the minute the bars are being built for
        self.bars: dict[str, BarBuilder] = {}
        self.days: dict[str, BarBuilder] = {}
        self.closed: dict[str, BarBuilder] = {}  # each symbol's latest finished minute
        self.updates_due: dict[str, float] = {}  # symbol -> when its updated bar is sent
        self.halted: dict[str, tuple[float, tuple[str, ...]]] = {}  # symbol -> (resume at, halt)
        self.bands: dict[str, float] = {}  # symbol -> LULD reference price
        self.recent: deque[dict] = deque(maxlen=50)  # trades sent, for corrections and cancels
        self.last_block = now
        self.last_clock = now
        self.pool: list[tuple[list[dict], bytes]] = []
        self.pool_key: tuple = ()

    def symbols(self, *channels: str) -> list[str]:
        """The symbols subscribed on these channels ("*" stands for WILDCARD_SYMBOLS)."""
        found: dict[str, None] = {}
        for channel in channels:
            for symbol in self.subscriptions.get(channel, []):
                for one in (WILDCARD_SYMBOLS if symbol == "*" else (symbol,)):
                    found[one] = None
        return list(found)

    def last_price(self, symbol: str) -> float:
        return self.prices.get(symbol) or start_price(symbol)

    def step(self, symbol: str) -> float:
        price = self.last_price(symbol)
        price = max(0.01, price * math.exp(self.rng.gauss(0, 0.0002)))
        self.prices[symbol] = price
        return price

    # -- what the client sees as it streams: trades and quotes ---------------------------------

    def ticks(self, count: int) -> list[dict]:
        """`count` ticks of random symbols: a trade where trades or bars are subscribed, a quote
        where quotes are."""
        traded = self.symbols("trades", "bars", "updatedBars", "dailyBars")
        quoted = self.symbols("quotes")
        active = [s for s in dict.fromkeys(traded + quoted) if s not in self.halted]
        messages: list[dict] = []
        for _ in range(count if active else 0):
            symbol = self.rng.choice(active)
            if symbol in traded:
                messages.extend(self.trade(symbol))
            if symbol in quoted:  # around the price just traded, if it traded
                messages.append(self.quote(symbol, step=symbol not in traded))
        return messages

    def replay(self, count: int) -> tuple[list[dict], bytes]:
        """For the benchmark: frames of `count` trades and quotes, made and packed once, then
        sent again and again (so ids repeat, and timestamps are old), so that a benchmark
        measures the client, not this server: packing costs about as much as unpacking. 1024
        frames (0.19 s to make): one comes again after 0.15 s at 140,000 messages a second,
        past JetStream's shortest duplicate window (0.1 s), so each is stored."""
        key = (count, self.symbols("trades"), self.symbols("quotes"))
        if self.pool_key != key:
            ticks = (message for _ in itertools.count() for message in self.ticks(1))
            plain = (message for message in ticks if message["T"] in "tq")  # no corrections
            self.pool = [(frame, msgpack.packb(frame)) for frame in
                         (list(itertools.islice(plain, count)) for _ in range(1024))]
            self.pool_key = key
        self.pool.append(self.pool.pop(0))
        return self.pool[-1]

    def trade(self, symbol: str, *, size: int | None = None, at: float | None = None,
              bar: BarBuilder | None = None) -> list[dict]:
        """A trade, counted in the bars (of this minute unless `bar` is given); [] if the client
        does not watch this symbol's trades. Now and then a correction or a cancel of a recent
        trade comes with it."""
        rng = self.rng
        price = round(self.step(symbol), 2)
        if size is None:
            if time.time() - self.last_block > BLOCK_EVERY or rng.random() < 0.005:
                size = rng.randrange(BLOCK_SIZE, 5 * BLOCK_SIZE, 100)
            elif rng.random() < 0.6:  # round lots, many odd lots
                size = rng.choice((100, 100, 200, 300, 500, 1000, 5000))
            else:
                size = rng.randint(1, 99)
        if size >= BLOCK_SIZE:
            self.last_block = time.time()
        (bar or self.bars.setdefault(symbol, BarBuilder(self.minute * 60))).add(price, size)
        self.days.setdefault(symbol, BarBuilder(start_of_day())).add(price, size)
        if not subscribed(symbol, self.subscriptions.get("trades", [])):
            return []
        trade = {"T": "t", "S": symbol, "i": next(self.ids), "x": rng.choice(EXCHANGES), "p": price, "s": size,
                 "c": rng.choice(CONDITIONS), "t": timestamp(at), "z": TAPES.get(symbol, "C")}
        if rng.random() < TAKER_SIDE_SHARE:
            trade["tks"] = rng.choice("BS")
        messages = [self.received(trade)]
        if self.recent and rng.random() < 0.005:
            messages.extend(self.correction())
        elif self.recent and rng.random() < 0.005:
            messages.extend(self.cancel())
        self.recent.append(trade)
        return messages

    def quote(self, symbol: str, *, step: bool = True) -> dict:
        rng = self.rng
        price = self.step(symbol) if step else self.prices[symbol]
        spread = 0.01 * rng.choice((1, 1, 1, 2, 2, 3))
        bid = math.floor((price - spread / 2) * 100) / 100
        lot = round_lot(price)
        quote = {"T": "q", "S": symbol, "bx": rng.choice(EXCHANGES), "bp": bid, "bs": lot * rng.randint(1, 12),
                 "ax": rng.choice(EXCHANGES), "ap": round(bid + spread, 2), "as": lot * rng.randint(1, 12),
                 "c": ["R"], "t": timestamp(), "z": TAPES.get(symbol, "C")}
        return self.received(quote)

    def received(self, message: dict) -> dict:
        """Now and then "r", as Alpaca adds it: when it received the message, just after "t"."""
        if self.rng.random() < RECEIVED_SHARE:
            delay = self.rng.randint(3_000, 1_000_000)  # ns: a few microseconds to a millisecond
            message["r"] = msgpack.Timestamp.from_unix_nano(message["t"].to_unix_nano() + delay)
        return message

    def correction(self) -> list[dict]:
        """A correction of a recent trade: its price or its size was wrong."""
        original = self.rng.choice(self.recent)
        self.recent.remove(original)
        price, size = original["p"], original["s"]
        if self.rng.random() < 0.5:
            price = round(price + self.rng.choice((-0.01, 0.01)), 2)
        else:
            size = max(1, size + self.rng.choice((-100, 100)))
        return [{"T": "c", "S": original["S"], "x": original["x"], "oi": original["i"], "op": original["p"],
                 "os": original["s"], "oc": original["c"], "ci": next(self.ids), "cp": price, "cs": size,
                 "cc": original["c"], "t": timestamp(), "z": original["z"]}]

    def cancel(self) -> list[dict]:
        original = self.rng.choice(self.recent)
        self.recent.remove(original)
        return [{"T": "x", "S": original["S"], "i": original["i"], "x": original["x"], "p": original["p"],
                 "s": original["s"], "a": "C", "t": timestamp(), "z": original["z"]}]

    # -- what the clock brings ----------------------------------------------------------------

    def clock(self) -> list[dict]:
        """Minute bars and daily bars at each minute mark, updated bars at the half-minute after
        a late trade, random halts and their resumptions, random imbalances, and new LULD bands."""
        now = time.time()
        elapsed, self.last_clock = now - self.last_clock, now
        messages = []
        if int(now // 60) > self.minute:
            messages += self.close_minute(next_minute=int(now // 60))
        for symbol, due in list(self.updates_due.items()):
            if now >= due:
                del self.updates_due[symbol]
                messages += self.updated_bar(symbol)
        for symbol, (resume_at, _) in list(self.halted.items()):
            if now >= resume_at:
                messages += self.resume(symbol)
        watched = [s for s in self.symbols("statuses") if s not in self.halted]
        if watched and self.rng.random() < elapsed * HALTS_PER_MINUTE / 60:
            messages += self.halt(self.rng.choice(watched), lasting=self.rng.uniform(*HALT_SECONDS))
        imbalanced = self.symbols("imbalances")
        if imbalanced and self.rng.random() < elapsed * IMBALANCES_PER_MINUTE / 60:
            messages += self.imbalance(self.rng.choice(imbalanced))
        for symbol in self.symbols("lulds"):
            reference = self.last_price(symbol)
            if symbol not in self.bands or abs(reference / self.bands[symbol] - 1) >= 0.01:
                messages += self.luld(symbol)
        return messages

    def close_minute(self, next_minute: int | None = None) -> list[dict]:
        """The minute's bars (only symbols that traded), and the daily bars so far. Now and then
        a trade of the closed minute arrives late: it comes now, and its updated bar in 30 s."""
        messages = []
        for symbol, bar in self.bars.items():
            if subscribed(symbol, self.subscriptions.get("bars", [])):
                messages.append(bar.message("b", symbol))
            self.closed[symbol] = bar
            if self.rng.random() < 0.2:
                messages += self.late_trade(symbol)
        for symbol in self.symbols("dailyBars"):
            if symbol in self.days:
                messages.append(self.days[symbol].message("d", symbol))
        self.bars = {}
        self.minute = next_minute if next_minute is not None else self.minute + 1
        return messages

    def late_trade(self, symbol: str) -> list[dict]:
        """A trade timestamped in the closed minute, arriving after it: that bar changes, and
        its updated bar is due after the next half-minute mark."""
        bar = self.closed[symbol]
        self.updates_due[symbol] = bar.start + 90
        return self.trade(symbol, size=self.rng.randint(1, 99), at=bar.start + 59.99, bar=bar)

    def updated_bar(self, symbol: str) -> list[dict]:
        if not subscribed(symbol, self.subscriptions.get("updatedBars", [])) or symbol not in self.closed:
            return []
        return [self.closed[symbol].message("u", symbol)]

    def halt(self, symbol: str, lasting: float = math.inf) -> list[dict]:
        tape = TAPES.get(symbol, "C")
        halt = self.rng.choice(HALTS["C" if tape == "C" else "B"])
        self.halted[symbol] = (time.time() + lasting, halt)
        return self.status(symbol, *halt[:4]) + self.imbalance(symbol)  # a halt draws orders to its reopening

    def resume(self, symbol: str) -> list[dict]:
        _, halt = self.halted.pop(symbol)
        return self.status(symbol, halt[4], halt[5], halt[2], halt[3])

    def status(self, symbol: str, code: str, message: str, reason_code: str, reason: str) -> list[dict]:
        if not subscribed(symbol, self.subscriptions.get("statuses", [])):
            return []
        return [{"T": "s", "S": symbol, "sc": code, "sm": message, "rc": reason_code, "rm": reason,
                 "t": timestamp(), "z": TAPES.get(symbol, "C")}]

    def imbalance(self, symbol: str) -> list[dict]:
        if not subscribed(symbol, self.subscriptions.get("imbalances", [])):
            return []
        return [{"T": "i", "S": symbol, "p": round(self.last_price(symbol) * (1 + self.rng.gauss(0, 0.002)), 2),
                 "z": TAPES.get(symbol, "C"), "t": timestamp()}]

    def luld(self, symbol: str) -> list[dict]:
        reference = self.last_price(symbol)
        self.bands[symbol] = reference
        return [{"T": "l", "S": symbol, "u": round(reference * (1 + LULD_PERCENT / 100), 2),
                 "d": round(reference * (1 - LULD_PERCENT / 100), 2), "i": "B", "t": timestamp(),
                 "z": TAPES.get(symbol, "C")}]

    # -- on cue, for the tests ------------------------------------------------------------------

    def cue(self, event: str) -> list[dict]:
        """One event now, on a symbol the client watches for it (see CUES)."""
        traded = self.symbols("trades") or ["SPY"]
        if event == "block":
            return self.trade(self.rng.choice(traded), size=BLOCK_SIZE * self.rng.randint(1, 5))
        if event in ("correction", "cancel"):
            messages = [] if self.recent else self.trade(self.rng.choice(traded))
            return messages + (self.correction() if event == "correction" else self.cancel())
        if event == "halt":
            watched = [s for s in self.symbols("statuses") if s not in self.halted]
            return self.halt(self.rng.choice(watched)) if watched else []
        if event == "resume":
            return self.resume(next(iter(self.halted))) if self.halted else []
        if event == "luld":
            return [message for symbol in self.symbols("lulds") for message in self.luld(symbol)]
        if event == "imbalance":
            return [message for symbol in self.symbols("imbalances") for message in self.imbalance(symbol)]
        if event == "big_frame":
            return [message for _ in range(BIG_FRAME_TRADES) for message in self.trade(self.rng.choice(traded))]
        if event not in ("bar", "daily_bar", "updated_bar"):
            raise ValueError(f"no such cue: {event} (one of {', '.join(CUES)})")
        barred = self.symbols("bars", "updatedBars", "dailyBars") or traded
        messages = []
        if event != "updated_bar" or not any(symbol in self.closed for symbol in barred):
            if not any(symbol in self.bars for symbol in barred):
                messages += self.trade(barred[0])  # a bar needs a trade in its minute
            messages += self.close_minute()
        if event == "updated_bar":
            symbol = next(s for s in barred if s in self.closed)
            messages += self.late_trade(symbol)
            del self.updates_due[symbol]  # sent now, not at the half-minute
            messages += self.updated_bar(symbol)
        return messages


def start_of_day() -> float:
    """Midnight in New York, where Alpaca's daily bars start, as seconds since the epoch."""
    now = datetime.now(NEW_YORK)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass
class Faults:
    """What the server does wrong on one connection. The default does nothing wrong."""

    refuse: int | None = None  # answer the websocket handshake with this HTTP status (503, 404, ...)
    auth_error: int | None = None  # answer auth with this error code (402, 406, 409, ...), then close
    drop_after: int | None = None  # after this many messages, cut the TCP connection: no close frame
    dead_after: int | None = None  # after this many messages, read and send nothing: pings go unanswered
    garbage_after: int | None = None  # after this many messages, send a malformed frame, unknown types
    #                                   and a broken trade beside good ones, then carry on
    mute_after: int | None = None  # after this many messages, send no more data, but answer pings and requests
    #                                (alpaca-py #740: connected for hours in market hours, and nothing came)
    error_after: int | None = None  # after this many messages, send the error frame of error_code, then carry on
    error_code: int = 500
    silent: bool = False  # accept the subscription, then send nothing (a closed market)


@dataclass
class ConnectionRecord:
    """What happened on one connection, for tests and the benchmark to check."""

    opened_at: float  # time.monotonic()
    faults: Faults
    feed: str = ""  # the path's last part: iex, sip, ...
    codec: str = "msgpack"  # what the client asked for with its Content-Type: "msgpack" or "json"
    compressed: bool = False  # permessage-deflate negotiated
    authenticated: bool = False
    # The place this connection holds, one per keys and feed: (feed, a digest of the key), never
    # the key itself; None once the place is free.
    place: tuple[str, str] | None = field(default=None, repr=False)
    subscriptions: dict[str, list[str]] = field(default_factory=dict)  # channel -> symbols
    messages: list[dict] = field(default_factory=list)  # every data message sent, in order, if recorded
    slow: bool = False  # cut with 407: it did not read fast enough
    lost_at: float | None = None  # when it ended, or went dead, without a close frame from the client
    closed_at: float | None = None

    @property
    def trade_ids(self) -> list[int]:
        return [message["i"] for message in self.messages if message["T"] == "t"]


Served = TypeVar("Served", bound="ProtocolServer")


class ProtocolServer:
    """The server side of Alpaca's stream protocol, whatever the data: the handshake on
    /v2/{feed}, the greeting, auth within auth_timeout seconds, subscribe and unsubscribe with
    Alpaca's answer, and Alpaca's error frames for what a client does wrong; msgpack frames, or
    JSON text frames to a client that does not ask for msgpack, as Alpaca does. Use as
    `async with`, or start()/stop(). Subclasses bring the data, and decide on auth:
    AlpacaStreamServer makes it up; Relay passes on a feeder's (websocket_stream.py --serve).

    feeds: the paths served (any other gets HTTP 404). faults: for every connection; plan()
    sets faults for the next connections, one each. symbol_limit: most symbols for trades and
    quotes together (error 405 past it); None for no limit.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, feeds: tuple[str, ...] = FEEDS,
                 faults: Faults | None = None, auth_timeout: float = 10.0, compression: bool = True,
                 ping_interval: float | None = None, symbol_limit: int | None = FREE_PLAN_SYMBOL_LIMIT) -> None:
        self.host = host
        self.port = port
        self.feeds = feeds
        self.faults = faults or Faults()
        self.auth_timeout = auth_timeout
        self.compression = compression
        self.ping_interval = ping_interval
        self.symbol_limit = symbol_limit
        self.planned: deque[Faults] = deque()
        self.attempts: list[float] = []  # time.monotonic() of every handshake, refused ones too
        self.connections: list[ConnectionRecord] = []
        self._server: Server | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/v2/{self.feeds[0]}"

    def plan(self, *faults: Faults) -> None:
        """Give the next connections these faults, one each; later ones get self.faults."""
        self.planned.extend(faults)

    async def start(self) -> None:
        self._server = await serve(self._session, self.host, self.port, ping_interval=self.ping_interval,
                                   process_request=self._handshake,
                                   compression="deflate" if self.compression else None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening (new connections are refused) and cut the open ones."""
        if self._server:
            self._server.close(close_connections=False)
            for connection in self._server.connections:
                connection.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self: Served) -> Served:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        self.attempts.append(time.monotonic())
        faults = self.planned.popleft() if self.planned else self.faults
        codec = "msgpack" if "msgpack" in request.headers.get("Content-Type", "") else "json"
        record = ConnectionRecord(time.monotonic(), faults, feed=request.path.rstrip("/").rsplit("/", 1)[-1],
                                  codec=codec)
        self.connections.append(record)
        connection.record = record  # type: ignore[attr-defined]
        status = faults.refuse or (None if request.path.rstrip("/") in {f"/v2/{f}" for f in self.feeds} else 404)
        if status:
            record.closed_at = time.monotonic()
            log.info("refused a connection to %s: HTTP %d", request.path, status)
            return connection.respond(HTTPStatus(status), f"{HTTPStatus(status).phrase}\n")
        log.info("connection %d opened on %s", len(self.connections), request.path)
        return None

    async def _session(self, ws: ServerConnection) -> None:
        record: ConnectionRecord = ws.record  # type: ignore[attr-defined]
        record.compressed = "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions", "")
                                                     if ws.response else "")
        try:
            await send(ws, {"T": "success", "msg": "connected"})
            while True:
                timeout = None if record.authenticated else self.auth_timeout
                try:
                    request = unpack(await asyncio.wait_for(ws.recv(), timeout))
                except asyncio.TimeoutError:
                    await send_error(ws, 404)
                    return
                if not await self._answer(ws, record, request):
                    return
        except ConnectionClosed:
            pass
        finally:
            record.closed_at = time.monotonic()
            if ws.protocol.close_rcvd is None and record.lost_at is None:  # no close frame from the client
                record.lost_at = record.closed_at
            await self.ended(ws, record)
            log.info("connection %d closed after %.1f s", self.connections.index(record) + 1,
                     record.closed_at - record.opened_at)

    async def _answer(self, ws: ServerConnection, record: ConnectionRecord, request: object) -> bool:
        """Answer one client message as Alpaca does. False: the connection is to be closed."""
        if not isinstance(request, dict):
            await send_error(ws, 400)
            return True
        action = request.get("action")
        if action == "auth":
            if record.authenticated:
                await send_error(ws, 403)
                return True
            code = record.faults.auth_error or self.auth_refusal(record, request)
            if code is not None:
                log.info("auth refused with %d %s", code, ERRORS[code])
                await close_with_error(ws, code)
                return False
            record.authenticated = True
            await send(ws, {"T": "success", "msg": "authenticated"})
        elif action in ("subscribe", "unsubscribe"):
            if not record.authenticated:
                await send_error(ws, 401)
                return True
            asked = {channel: request.get(channel) or [] for channel in CHANNELS}
            if not all(isinstance(symbols, list) and all(isinstance(s, str) and SYMBOL.fullmatch(s) for s in symbols)
                       for symbols in asked.values()):
                await send_error(ws, 400)
                return True
            current = record.subscriptions
            before = {channel: list(symbols) for channel, symbols in current.items()}
            if action == "subscribe":
                wanted = {c: current.get(c, []) + [s for s in asked[c] if s not in current.get(c, [])]
                          for c in CHANNELS}
                if self.symbol_limit is not None and \
                        len(set(wanted["trades"] + wanted["quotes"])) > self.symbol_limit:
                    await send_error(ws, 405)
                    return True
            else:
                wanted = {c: [s for s in current.get(c, []) if s not in asked[c]] for c in CHANNELS}
            current.update(wanted)  # in place: the data's sender reads it as it goes
            log.info("subscriptions: %s", "; ".join(f"{c} {', '.join(s)}" for c, s in current.items() if s) or "none")
            await send_subscription(ws, current)
            await self.subscribed(ws, record, before)
        else:
            await send_error(ws, 400)
        return True

    # What a subclass decides and does.

    def auth_refusal(self, record: ConnectionRecord, request: dict) -> int | None:
        """The error code refusing this auth request, or None to accept it."""
        return None if request.get("key") and request.get("secret") else 402

    async def subscribed(self, ws: ServerConnection, record: ConnectionRecord,
                         before: dict[str, list[str]]) -> None:
        """After a subscribe or unsubscribe, answered; before: the subscriptions it changed."""

    async def ended(self, ws: ServerConnection, record: ConnectionRecord) -> None:
        """After the connection has ended, whoever ended it."""


class AlpacaStreamServer(ProtocolServer):
    """Alpaca's stock stream on ws://127.0.0.1:PORT/v2/{feed}, with market data made up here.

    rate: ticks per second (a trade and/or a quote of a random subscribed symbol each), with
    bursts; None sends as fast as the client reads. batch: most ticks in one frame. total: stop
    sending after this many messages. keys: (key, secret) to accept, or None to accept any
    non-empty keys. cue() sends events (a halt, a bar, a correction, ...) at once. record: keep
    every message sent (for tests; a demo may run for days). Faults and the rest: ProtocolServer.

    As Alpaca: one connection per key and feed (error 406 for a second one); a connection that
    ended without a close frame from the client keeps its place hold_dropped seconds (Alpaca:
    about 90). sip: the keys' plan has the sip feed (else 409 at auth on /v2/sip). compression:
    offer permessage-deflate. slow_after: with a rate, a send that waits this many seconds for
    the client to read gets error 407 and the connection closed; None never does (as rate=None).
    """

    def __init__(self, *, port: int = 0, rate: float | None = 20.0, batch: int = 20,
                 total: int | None = None, keys: tuple[str, str] | None = None,
                 faults: Faults | None = None, auth_timeout: float = 10.0, seed: int | None = None,
                 record: bool = True, hold_dropped: float = 0.0, sip: bool = False, compression: bool = True,
                 slow_after: float | None = 5.0) -> None:
        # Our own pings are off: a client must be able to test its keepalive against us.
        super().__init__(port=port, faults=faults, auth_timeout=auth_timeout, compression=compression)
        self.rate = rate
        self.batch = batch
        self.total = total
        self.keys = keys
        self.record = record
        self.hold_dropped = hold_dropped
        self.sip = sip
        self.slow_after = slow_after if rate is not None else None  # as fast as the client reads: never slow
        self.rng = random.Random(seed)
        self.prices: dict[str, float] = {}
        self.ids = itertools.count(1)
        self.cued: deque[str] = deque()
        self.senders: dict[int, asyncio.Task] = {}  # by id() of the connection's record
        self.sent = 0  # data messages, over every connection

    def cue(self, *events: str) -> None:
        """Send these events (see CUES) in the next frame of the connection streaming then."""
        unknown = set(events) - set(CUES)
        if unknown:
            raise ValueError(f"no such cue: {', '.join(sorted(unknown))} (one of {', '.join(CUES)})")
        self.cued.extend(events)

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        refused = super()._handshake(connection, request)
        if refused is None and self.slow_after is not None:
            # Loopback's send buffer grows to megabytes: a client would be minutes behind before a send waits.
            connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        return refused

    def auth_refusal(self, record: ConnectionRecord, request: dict) -> int | None:
        place = (record.feed, hashlib.sha256(str(request.get("key")).encode()).hexdigest())
        if not self._keys_accepted(request):
            return 402
        if record.feed == "sip" and not self.sip:
            return 409
        if self._place_taken(place):
            return 406
        record.place = place
        return None

    async def subscribed(self, ws: ServerConnection, record: ConnectionRecord,
                         before: dict[str, list[str]]) -> None:
        if any(record.subscriptions.values()) and id(record) not in self.senders and not record.faults.silent:
            self.senders[id(record)] = asyncio.create_task(self._send_market_data(ws, record))

    async def ended(self, ws: ServerConnection, record: ConnectionRecord) -> None:
        sender = self.senders.pop(id(record), None)
        if sender:
            sender.cancel()
            # It may have ended by itself: a send to the client that has just gone raised.
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
        if ws.protocol.close_rcvd is not None:  # the client closed properly: its place is free at once
            record.place = None

    def _place_taken(self, place: tuple[str, str]) -> bool:
        """Whether a connection holds this place: open, or lost less than hold_dropped s ago. One
        that went dead (reading paused) and has had its time is cut now: it is gone."""
        now = time.monotonic()
        for other in self.connections:
            if other.place != place:
                continue
            if other.lost_at is None or now < other.lost_at + self.hold_dropped:
                return True
            other.place = None
            if other.closed_at is None and self._server:
                for connection in self._server.connections:
                    if connection.record is other:  # type: ignore[attr-defined]
                        connection.transport.abort()
        return False

    def _keys_accepted(self, request: dict) -> bool:
        key, secret = request.get("key"), request.get("secret")
        if self.keys is not None:
            return (key, secret) == self.keys
        return bool(key) and bool(secret)

    async def _send_market_data(self, ws: ServerConnection, record: ConnectionRecord) -> None:
        faults = record.faults
        market = Market(self.rng, self.prices, self.ids, record.subscriptions)
        loop = asyncio.get_running_loop()
        started, ticks, sent = loop.time(), 0, 0
        while self.total is None or self.sent < self.total:
            messages = [] if self.rate is None else market.clock()
            while self.cued:
                messages += market.cue(self.cued.popleft())
            packed = None
            if self.rate is None:
                frame, packed = market.replay(self.batch)
                packed = None if messages or record.codec != "msgpack" else packed  # cued events go in the frame too
                messages += frame
            else:
                due = int((loop.time() - started) * self.rate) - ticks
                # A burst sends ticks early; the average rate stays the same.
                if self.rng.random() < 0.05:
                    due = max(due, self.rng.randint(2, self.batch))
                count = max(0, min(due, self.batch))
                ticks += count
                messages += market.ticks(count)
            if not messages:
                await asyncio.sleep(min(1 / self.rate, 0.05) if self.rate else 0.05)
                continue
            limits = (faults.drop_after, faults.dead_after, faults.garbage_after, faults.mute_after, faults.error_after)
            room = [limit - sent for limit in limits if limit is not None and limit > sent]
            if self.total is not None:
                room.append(self.total - self.sent)
            if room and min(room) < len(messages):
                messages, packed = messages[:min(room)], None
            try:
                await asyncio.wait_for(ws.send(packed or encode(messages, record.codec)), self.slow_after)
            except asyncio.TimeoutError:  # the frame is written, and waits for the client to read
                record.slow = True
            if self.record:
                record.messages.extend(messages)
            sent += len(messages)
            self.sent += len(messages)
            if record.slow:  # a market's pace does not wait for a client
                log.info("connection %d is a slow client", self.connections.index(record) + 1)
                await cut_as_slow(ws)
                return
            if sent == faults.drop_after:
                ws.transport.abort()
                return
            if sent == faults.dead_after:
                ws.transport.pause_reading()  # pings pile up unread, so no pong goes back
                record.lost_at = time.monotonic()
                return
            if sent == faults.mute_after:
                return  # the session still reads, so pings and requests are answered
            if sent == faults.error_after:
                await send_error(ws, faults.error_code)
            if sent == faults.garbage_after:
                await self._send_garbage(ws, record, market)

    async def _send_garbage(self, ws: ServerConnection, record: ConnectionRecord, market: Market) -> None:
        """What a client must survive: a frame that is not msgpack, one that is not a list,
        unknown message types, and a trade without a price between two good trades."""
        traded = market.symbols("trades")
        good = [market.trade(traded[0], size=100)[0] for _ in range(2)] if traded else []
        broken = {**good[0], "i": next(self.ids)} if good else {"T": "t", "S": "SPY"}
        broken.pop("p", None)
        await ws.send(b"\xc1 this is not msgpack")
        await ws.send(msgpack.packb({"T": "t", "not": "a list"}))
        await ws.send(msgpack.packb([{"T": "zz", "S": "SPY"}, "not a message", *good[:1], broken, *good[1:]]))
        if self.record:
            record.messages.extend(good)
        self.sent += len(good)


TYPE_CHANNELS = {"t": "trades", "c": "trades", "x": "trades", "q": "quotes", "b": "bars", "u": "updatedBars",
                 "d": "dailyBars", "s": "statuses", "l": "lulds", "i": "imbalances"}  # corrections and
#                 cancels come with trades
CLIENT_BUFFER = 4 * 2**20  # bytes of frames waiting for one Relay client before it is cut as slow (407)
REFUSED_EVERY = 60.0  # seconds: a Relay logs clients refused at most this often (one may retry in a loop)
STOP_CLOSE = 0.25  # seconds the Relay's clients have to answer its close when it stops


def wanted(subscriptions: Mapping[str, Collection[str]], messages: list, *, control: bool = False) -> list:
    """The data messages these subscriptions (channel -> symbols, "*" for all) ask for, in order;
    with control, the rest too (what is not market data: a subscription answer, an error)."""
    chosen = []
    for message in messages:
        channel = TYPE_CHANNELS.get(message.get("T", "")) if isinstance(message, dict) else None
        if channel is None:
            if control:
                chosen.append(message)
            continue
        symbols = subscriptions.get(channel)
        if symbols and (message.get("S") in symbols or "*" in symbols):
            chosen.append(message)
    return chosen


@dataclass
class Client:
    """One client of a Relay: its connection, what it wants, and the frames waiting for it."""

    ws: ServerConnection
    record: ConnectionRecord
    wants: dict[str, set[str]] = field(default_factory=dict)  # its subscriptions, as sets
    frames: deque[bytes | str] = field(default_factory=deque)
    waiting: int = 0  # bytes in frames
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task | None = None


Refused = Callable[[int, str], None]  # told Alpaca's error code and message when upstream refuses a change


class Relay(ProtocolServer):
    """websocket_stream.py --serve: Alpaca's protocol, with the data of the feeder's one
    connection, to any number of clients (alpaca-py, Alpaca's other SDKs, unmodified). Each
    gets exactly its own channels and symbols, every message, in the feeder's order, times as
    Alpaca sent them. The feeder hands over each frame with send(), which never waits for a
    client: one that falls `buffer` bytes behind gets error 407 and is cut, the others go on.

    keys: (key, secret) that clients must log in with, or None for any non-empty ones.
    changed: awaited after a client's subscriptions change (it subscribed, unsubscribed or left),
    with a function to call if the feeder's upstream refuses the change; None when it left.
    """

    def __init__(self, *, host: str, port: int, feeds: tuple[str, ...], keys: tuple[str, str] | None,
                 changed: Callable[[Refused | None], Coroutine[object, object, None]],
                 buffer: int = CLIENT_BUFFER) -> None:
        # No compression: deflating every frame for every client would cost the feeder CPU
        # that a client on the same machine gains nothing from. Pings find clients that vanish.
        super().__init__(host=host, port=port, feeds=feeds, compression=False, ping_interval=20.0,
                         symbol_limit=None)  # the upstream's limit applies, and its 405
        self.keys = keys
        self.changed = changed
        self.buffer = buffer
        self.clients: dict[int, Client] = {}  # by id() of the connection's record
        self.served = 0  # clients that logged in
        self.slow = 0  # clients cut with 407
        self.refused = 0  # logins refused (402)
        self.refused_told = -math.inf  # when that was last logged
        self._cutting: set[asyncio.Task] = set()  # the tasks of _cut_slow(), while they run

    async def stop(self) -> None:
        """As ProtocolServer's, the clients first sent a close (1001, going away): to them, the
        feeder stopped, not the network."""
        if self._server:
            closing = [asyncio.wait_for(connection.close(1001, "the feeder stopped"), STOP_CLOSE)
                       for connection in self._server.connections]
            await asyncio.gather(*closing, return_exceptions=True)
        await super().stop()

    def subscriptions(self) -> dict[str, set[str]]:
        """What the clients want, together: channel -> symbols."""
        together: dict[str, set[str]] = {}
        for client in self.clients.values():
            for channel, symbols in client.wants.items():
                together.setdefault(channel, set()).update(symbols)
        return together

    def send(self, messages: list) -> None:
        """One frame of the feeder's: to each client, the part it wants, in one frame."""
        frames: dict[tuple, bytes | str] = {}  # clients who want the same get the same frame, encoded once
        for client in list(self.clients.values()):
            mine = wanted(client.wants, messages)
            if not mine:
                continue
            key = (client.record.codec, *map(id, mine))
            frame = frames.get(key)
            if frame is None:
                frame = frames[key] = encode(mine, client.record.codec)
            if client.waiting + len(frame) > self.buffer:
                self._cut_slow(client)
                continue
            self._queue(client, frame)

    def auth_refusal(self, record: ConnectionRecord, request: dict) -> int | None:
        key, secret = str(request.get("key") or ""), str(request.get("secret") or "")
        if self.keys is None:
            accepted = bool(key and secret)
        else:  # in constant time: a client must not learn a key a character at a time
            accepted = hmac.compare_digest(key, self.keys[0]) & hmac.compare_digest(secret, self.keys[1])
        self.served += accepted
        if accepted:
            return None
        self.refused += 1
        now = time.monotonic()
        if now - self.refused_told >= REFUSED_EVERY:
            self.refused_told = now
            log.warning("--serve refused a bot's keys (402): %s;\n%d refused so far",
                        "it sent none" if self.keys is None else "they must be this script's", self.refused)
        return 402

    async def subscribed(self, ws: ServerConnection, record: ConnectionRecord,
                         before: dict[str, list[str]]) -> None:
        client = self.clients.get(id(record))
        if client is None:
            if record.slow:
                return
            client = self.clients[id(record)] = Client(ws, record)
            client.writer = asyncio.create_task(self._write(client))
        client.wants = {channel: set(symbols) for channel, symbols in record.subscriptions.items() if symbols}

        def refused(code: int, message: str) -> None:
            """Upstream refused what this client asked: as Alpaca, its error, and the
            subscriptions it had before."""
            record.subscriptions.update(before)
            client.wants = {channel: set(symbols) for channel, symbols in before.items() if symbols}
            log.info("upstream refused connection %d's request with %d", self.connections.index(record) + 1, code)
            self._queue(client, encode([{"T": "error", "code": code, "msg": message}], record.codec))

        await self.changed(refused)

    async def ended(self, ws: ServerConnection, record: ConnectionRecord) -> None:
        client = self.clients.pop(id(record), None)
        if client and client.writer:
            client.writer.cancel()
        if client and client.wants:
            await self.changed(None)  # what nobody wants any more goes

    def _queue(self, client: Client, frame: bytes | str) -> None:
        client.frames.append(frame)
        client.waiting += len(frame)
        client.ready.set()

    async def _write(self, client: Client) -> None:
        """Send a client's frames as fast as it reads them."""
        with contextlib.suppress(ConnectionClosed):  # it left: ended() sees to the rest
            while True:
                await client.ready.wait()
                client.ready.clear()
                while client.frames:
                    frame = client.frames.popleft()
                    client.waiting -= len(frame)
                    await client.ws.send(frame)

    def _cut_slow(self, client: Client) -> None:
        client.record.slow = True
        self.slow += 1
        log.warning("--serve cut a bot that read too slowly (407),\nas Alpaca does; the others go on")
        del self.clients[id(client.record)]
        client.frames.clear()
        if client.writer:
            client.writer.cancel()  # between two frames or after one: it waits for the client to read
        for work in (cut_as_slow(client.ws), self.changed(None)):  # what nobody wants any more goes
            task = asyncio.create_task(work)
            self._cutting.add(task)
            task.add_done_callback(self._cutting.discard)


def encode(messages: list[dict], codec: str) -> bytes | str:
    """A frame (every server frame is an array): msgpack, or JSON text with RFC 3339 times."""
    if codec == "msgpack":
        return msgpack.packb(messages, datetime=True)
    return json.dumps(messages, default=rfc3339, separators=(",", ":"))


def rfc3339(value: object) -> str:
    """A time as Alpaca's JSON frames give it: 2026-11-24T15:00:00.123456789Z."""
    if isinstance(value, datetime):
        value = msgpack.Timestamp.from_datetime(value)
    if not isinstance(value, msgpack.Timestamp):
        raise TypeError(f"not JSON: {value!r}")
    fraction = f".{value.nanoseconds:09d}".rstrip("0") if value.nanoseconds else ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(value.seconds)) + fraction + "Z"


def unpack(frame: bytes | str) -> object:
    """A client's message: msgpack in a binary frame, JSON in a text frame; None if neither."""
    try:
        return msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)
    except ValueError:
        return None


async def send(ws: ServerConnection, message: dict) -> None:
    await ws.send(encode([message], ws.record.codec))  # type: ignore[attr-defined]


async def send_error(ws: ServerConnection, code: int) -> None:
    await send(ws, {"T": "error", "code": code, "msg": ERRORS[code]})


async def send_subscription(ws: ServerConnection, subscriptions: dict[str, list[str]]) -> None:
    """Alpaca's answer to a subscribe or an unsubscribe: every channel's symbols, now."""
    trades = subscriptions.get("trades", [])
    await send(ws, {"T": "subscription", **{channel: subscriptions.get(channel, []) for channel in CHANNELS},
                    "corrections": trades, "cancelErrors": trades})


async def close_with_error(ws: ServerConnection, code: int) -> None:
    await send_error(ws, code)
    await ws.close()


async def cut_as_slow(ws: ServerConnection) -> None:
    """Error 407 and the close, as far as a client that reads slowly takes them, then cut."""
    with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):  # it may read nothing more
        await asyncio.wait_for(close_with_error(ws, 407), CLOSE_TIMEOUT)
    ws.transport.abort()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local server speaking Alpaca's stock data stream.")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--rate", type=float, default=20.0, help="ticks per second; 0: as fast as the client reads")
    parser.add_argument("--batch", type=int, default=20, help="most ticks per frame")
    parser.add_argument("--total", type=int, help="stop sending after this many messages")
    parser.add_argument("--drop-after", type=int, help="cut every connection after this many messages")
    parser.add_argument("--hold-dropped", type=float, default=90.0,
                        help="seconds a connection lost without a close keeps its place (default 90, as Alpaca)")
    parser.add_argument("--sip", action="store_true", help="the keys' plan has the sip feed (else 409 on /v2/sip)")
    parser.add_argument("--no-compression", action="store_true", help="no permessage-deflate (faster)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the URL, not each connection")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    server = AlpacaStreamServer(port=args.port, rate=args.rate or None, batch=args.batch, total=args.total,
                                faults=Faults(drop_after=args.drop_after), seed=args.seed, record=False,
                                hold_dropped=args.hold_dropped, sip=args.sip, compression=not args.no_compression)
    try:
        await server.start()
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        print(f"port {args.port} is in use: choose another with --port (0 picks a free one)", file=sys.stderr)
        return 2
    print(server.url, flush=True)  # the benchmark reads the port from here
    try:
        await asyncio.Future()  # serve until interrupted
    finally:
        await server.stop()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how it stops
        sys.exit(asyncio.run(main()))
