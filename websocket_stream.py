#!/usr/bin/env python3
"""Stream live market data from Alpaca: push instead of polling (lesson 28, "faster than HTTP").

Every message is printed on stdout the moment it arrives, one line each; the log goes to
stderr. Ctrl+C stops. Your own logic goes in the handlers of part 1, just below.

    python websocket_stream.py                      # trades of SPY and TSLA, free IEX feed
    python websocket_stream.py AAPL --quotes --bars # quotes and minute bars of AAPL
    python websocket_stream.py --demo               # no keys, no network: demo data
    python websocket_stream.py --publish nats://127.0.0.1:4222   # and to a NATS broker, for
    python websocket_stream.py --source nats://127.0.0.1:4222    # more bots on one connection

exit statuses:
  0  stopped by you (Ctrl+C, SIGTERM) or by the reader (| head)
  1  something unexpected (a bug: please report it)
  2  configuration or usage error: keys, arguments, --url, alpaca-py version,
     no NATS server
  3  refused by Alpaca: wrong keys (402), symbol limit (405), feed not in your
     plan (409, 410), a token without the market data scope (411)
  130  forced by a second Ctrl+C
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import importlib.metadata
import inspect
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import runpy
import signal
import socket
import ssl
import sys
import textwrap
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from datetime import time as time_of_day
from operator import itemgetter
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, NamedTuple, NoReturn, TextIO
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import msgpack
import websockets
from dotenv import dotenv_values

try:
    from alpaca.data.live import StockDataStream
except ImportError as error:  # reported by check_alpaca_py(), with what to do
    ALPACA_IMPORT_ERROR: ImportError | None = error
else:
    ALPACA_IMPORT_ERROR = None

log = logging.getLogger("websocket_stream")

# 1. Your part: the handlers, where your trading logic goes ---------------------------------
#
# Each is called once for every message of its kind, in the order Alpaca sent them. The
# defaults print it: replace show() with your strategy (the README has an example). Keep a
# handler quick, since the next messages wait while it runs: start slow work, an order over
# HTTP say, with in_background() and return. If a handler raises, the error is logged and
# the stream goes on with the next message.
#
# A record holds what Alpaca sent, by alpaca-py's names: trade.symbol, trade.price,
# trade.size, trade.timestamp (a datetime, UTC), quote.bid_price, quote.ask_price, bar.close,
# bar.volume... Part 3 lists every kind's fields; print(trade) shows them all.

async def on_trade(trade: Trade) -> None:
    show(trade)


async def on_quote(quote: Quote) -> None:
    show(quote)


async def on_bar(bar: Bar) -> None:
    """A minute bar, just after its minute ends (only minutes with trades have one)."""
    show(bar)


async def on_updated_bar(bar: UpdatedBar) -> None:
    show(bar)


async def on_daily_bar(bar: DailyBar) -> None:
    show(bar)


async def on_status(status: TradingStatus) -> None:
    """A halt or a resumption: trading in the symbol stops or starts again."""
    show(status)


async def on_luld(luld: Luld) -> None:
    show(luld)


async def on_correction(correction: TradeCorrection) -> None:
    """Sent with trades: a trade already received was wrong (see TradeCorrection)."""
    show(correction)


async def on_cancel(cancel: TradeCancel) -> None:
    """Sent with trades: a trade already received is void (see TradeCancel)."""
    show(cancel)


async def on_imbalance(imbalance: OrderImbalance) -> None:
    show(imbalance)


Handler = Callable[[Any], Awaitable[None]]
HANDLERS: dict[str, Handler] = {
    "trade": on_trade, "quote": on_quote, "bar": on_bar, "updated_bar": on_updated_bar,
    "daily_bar": on_daily_bar, "status": on_status, "luld": on_luld,
    "correction": on_correction, "cancel": on_cancel, "imbalance": on_imbalance,
}

background_tasks: set[asyncio.Future] = set()  # asyncio keeps only a weak reference to a task


def in_background(work: Awaitable[object]) -> None:
    """Start slow work and return at once, so that the next messages do not wait for it:

        in_background(async_client.submit_order(order))               # an async client
        in_background(asyncio.to_thread(client.submit_order, order))   # a blocking one

    A failure is logged. On exit, work still waiting is cancelled, and a blocking call
    already running in its thread is waited for."""
    if not inspect.isawaitable(work):
        raise TypeError(f"in_background() needs an awaitable, not {type(work).__name__}: for a "
                        "blocking function, pass asyncio.to_thread(function, arguments...)")
    task = asyncio.ensure_future(work)
    background_tasks.add(task)
    task.add_done_callback(background_done)


def background_done(task: asyncio.Future) -> None:
    background_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        log.warning("work started with in_background() failed: %s: %s", type(error).__name__, error,
                    exc_info=error if log.isEnabledFor(logging.DEBUG) else None)


async def background_finished() -> None:
    """Wait for the work started with in_background(), in a run that ends by itself (a --replay
    file, run_handlers()): its orders are placed, not cancelled at the end."""
    while background_tasks:  # work may start more work
        await asyncio.wait(set(background_tasks))


async def subscribe(*symbols: str, channel: str = "trades") -> None:
    """Stream more from now on, on the same connection (and after a reconnect too): these
    symbols on this channel, named as the options are ("trades", "quotes", "bars",
    "updated_bars", "daily_bars", "statuses", "lulds", "imbalances"). From a handler:

        if trade.size >= 10_000:  # a block: watch the quotes of that symbol too
            await subscribe(trade.symbol, channel="quotes")

    Alpaca's answer is logged; if it refuses (405: over the free plan's 30 symbols), that
    is a warning, and the rest streams on. With --source or --replay, nothing changes."""
    await SUBSCRIPTIONS.change("subscribe", channel, symbols)


async def unsubscribe(*symbols: str, channel: str = "trades") -> None:
    """Stop streaming these symbols on this channel: the opposite of subscribe(). A few
    messages already on their way may still come."""
    await SUBSCRIPTIONS.change("unsubscribe", channel, symbols)


def run_handlers(messages: Iterable[dict[str, Any]],
                 handlers: dict[str, Handler] | None = None) -> Session:
    """Hand messages to the handlers as the stream does, with no network and no server: for
    your own tests. The same records, in the same order; a handler that raises is logged and
    the next message goes on, as on the stream; work started with in_background() is waited
    for. A message is a dict as Alpaca sends it ("T", "S", "p", ...; "t" a datetime or a
    msgpack Timestamp) or as --json prints it ("type", "symbol", "price", ...). handlers: by
    kind, in place of those above; the others stay. Returns what the summary counts:

        trade = {"type": "trade", "symbol": "SPY", "price": 600.5, "size": 100,
                 "timestamp": "2026-11-24T15:00:00+00:00", "exchange": "V", "id": 1}
        session = run_handlers([trade], {"trade": on_trade})
        assert session.received["trade"] == 1
    """
    unknown = set(handlers or {}) - set(HANDLERS)
    if unknown:
        raise ValueError(f"no such kind of message: {', '.join(sorted(unknown))} "
                         f"(one of {', '.join(HANDLERS)})")
    routes = routes_for({**HANDLERS, **(handlers or {})})
    SUBSCRIPTIONS.start([], [], offline=True)  # subscribe() in a handler changes nothing here
    wire = [as_wire(message) for message in messages]
    session = Session(started=time.monotonic())

    async def hand_over() -> None:
        await deliver(wire, routes, session)
        await background_finished()

    asyncio.run(hand_over())
    return session


def as_wire(message: dict[str, Any]) -> dict[str, Any]:
    """A message given to run_handlers(), as the stream has it: Alpaca's, times as datetimes."""
    try:
        if "T" not in message:
            return from_json(message)
        return {**message, **{key: message[key].to_datetime() for key in TIMES
                              if isinstance(message.get(key), msgpack.Timestamp)}}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError("not a message as Alpaca sends it, nor as --json prints it: "
                         f"{message!r}") from error


# The rest is the machinery: the keys, the messages, the stream and its reconnect wrapper,
# and main. A bot needs no change below this line.

ALPACA_STREAM = "wss://stream.data.alpaca.markets/v2"
FEEDS = ("iex", "sip", "delayed_sip")
DEFAULT_SYMBOLS = ("SPY", "TSLA")
TEST_STREAM_SYMBOL = "FAKEPACA"  # the only symbol on Alpaca's always-on test stream
SYMBOL = re.compile(r"\*|[A-Z][A-Z0-9.]{0,9}")  # "*" is every symbol; BRK.B has a class suffix

# alpaca-py waits 180 s for a pong; a dead connection should be noticed in 20 s at most.
PING_INTERVAL = 10.0
PING_TIMEOUT = 10.0
# Bounds closing the websocket. With the websockets default (10 s), alpaca-py's own run() took
# 10.2 s to exit after Ctrl+C; with 0.15 s, 0.3 s (both measured against the local server).
CLOSE_TIMEOUT = 0.15
CONNECT_TIMEOUT = 15.0  # connect, greeting, auth and subscribe; Alpaca itself allows 10 s for auth
QUIET_AFTER = 60.0  # seconds connected without a message before saying the market may be closed
FAILURES_EVERY = 10.0  # seconds between two lines about a handler that keeps raising
# --data-timeout's default: in market hours, a stream with no data for this long is replaced.
# A stream can stay connected, answer pings and send nothing (alpaca-py issue 740: 19 minutes at
# the open); 5 minutes catches that, and is far beyond the gaps of a symbol traded all day.
DATA_TIMEOUT = 300.0
# The channels that bring data all through market hours; statuses, LULD bands, updated bars and
# imbalances can be silent all day, so alone they arm no --data-timeout.
STEADY_CHANNELS = ("trades", "quotes", "bars", "dailyBars")
NEW_YORK = ZoneInfo("America/New_York")  # the market's clock
RETRY_MIN, RETRY_MAX = 1.0, 30.0  # reconnect backoff, seconds

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_REFUSED, EXIT_FORCED = 0, 1, 2, 3, 130


# 2. Configuration: the keys, from config.py, the environment or .env ----------------------

KEY_ENV, SECRET_ENV = "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"
PLACEHOLDERS = {"your_api_key_here", "your_secret_key_here"}  # what config.example.py ships
KEYS_IN_QUOTES = 'Keys go in quotes: API_KEY = "..."'
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9+/=_.-]{10,}")  # anything else plainly is not a key
HOW_TO_SET_KEYS = f"""\
Put your Alpaca API keys in config.py, a copy of config.example.py:
    cp config.example.py config.py        (Linux, macOS)
    copy config.example.py config.py      (Windows)
or set {KEY_ENV} and {SECRET_ENV}
in the environment or in a .env file beside the script.
No keys yet? See it work with demo data: python websocket_stream.py --demo"""


class ConfigError(Exception):
    """Bad configuration or usage: exit status 2, with a message that says what to do."""


class Keys(NamedTuple):
    key: str
    secret: str
    source: str  # where they came from, for messages; never the keys themselves


def load_keys(folder: Path) -> Keys:
    """The keys from config.py in `folder`, else the environment, else a .env file there."""
    config_file = folder / "config.py"
    if config_file.exists():
        try:
            config = runpy.run_path(str(config_file))
        except SyntaxError as error:
            # Not str(error) or the line: a key pasted without quotes would be printed.
            unquoted = re.match(r"\s*\w+\s*=\s*[^\s\"']", error.text or "")  # API_KEY = PK 12...
            raise ConfigError(f"config.py has a syntax error on line {error.lineno}: {error.msg}"
                              + (f"\n{KEYS_IN_QUOTES}" if unquoted else "")) from None
        except NameError as error:
            raise ConfigError(f"config.py line {traceback.extract_tb(error.__traceback__)[-1].lineno} uses "
                              f"a name Python does not know.\n{KEYS_IN_QUOTES}") from None
        except Exception as error:
            line = traceback.extract_tb(error.__traceback__)[-1].lineno
            raise ConfigError(f"config.py failed on line {line}: {type(error).__name__}: {error}") from None
        return Keys(config.get("API_KEY", ""), config.get("SECRET_KEY", ""), "config.py")
    if os.environ.get(KEY_ENV) or os.environ.get(SECRET_ENV):
        return Keys(os.environ.get(KEY_ENV, ""), os.environ.get(SECRET_ENV, ""), "the environment")
    dotenv = dotenv_values(folder / ".env")
    return Keys(dotenv.get(KEY_ENV) or "", dotenv.get(SECRET_ENV) or "", ".env")


def check_keys(keys: Keys) -> Keys:
    """Refuse, before any connection, keys that cannot work; return them without stray spaces."""
    names = ("API_KEY", "SECRET_KEY") if keys.source == "config.py" else (KEY_ENV, SECRET_ENV)
    key, secret = (str(value or "").strip() for value in (keys.key, keys.secret))
    if keys.source == ".env" and not (key or secret):
        raise ConfigError(f"No Alpaca API keys found: no config.py,\nand no {KEY_ENV} "
                          f"in the environment or in .env.\n{HOW_TO_SET_KEYS}")
    for name, value in zip(names, (key, secret)):
        if not value:
            problem = "is missing or empty"
        elif value in PLACEHOLDERS:
            problem = f"is still the placeholder {value!r}"
        elif not KEY_CHARACTERS.fullmatch(value):
            problem = "does not look like a key (too short, or with spaces or quotes)"
        else:
            continue
        fix = "Paste your key in place of it, in quotes." if keys.source == "config.py" else HOW_TO_SET_KEYS
        raise ConfigError(f"{name} from {keys.source}\n{problem}.\n{fix}")  # a line each: 80 columns
    return Keys(key, secret, keys.source)


# 3. The messages: what each kind of record holds, and how it is printed ----------------------

class Record(dict):
    """A message as Alpaca sent it (a dict of its wire keys: "S", "p", ...), whose attributes
    have the names of alpaca-py's models: trade.price is trade["p"]. So code written against
    them works on alpaca-py's models too. A record is the received dict, copied in one step:
    about half the cost of building a tuple field by field, and that matters on a busy stream
    (see the benchmark)."""

    __slots__ = ()
    fields: ClassVar[dict[str, Wire]] = {}  # attribute name -> where it is on the wire, in order
    symbol: str  # every kind has these two; each kind's wire() fields read them
    timestamp: datetime

    def __init_subclass__(cls) -> None:
        cls.fields = {**cls.fields, **{name: value for name, value in vars(cls).items() if isinstance(value, Wire)}}

    def named(self) -> dict[str, Any]:
        """Every field Alpaca sent, by name: the record's fields in order, then any key Alpaca
        added that has no name here (as "tks", the taker side), under its wire key."""
        named = {name: self[wire.key] for name, wire in self.fields.items() if wire.key in self}
        if len(named) < len(self) - 1:  # more than "T" and the known keys: keep them too
            known = {wire.key for wire in self.fields.values()}
            named.update((key, value) for key, value in self.items() if key not in known and key != "T")
        return named

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.named().items())
        return f"{type(self).__name__}({shown})"

    def details(self) -> str:
        """The end of the message's printed line, after its symbol: each kind has its own."""
        raise NotImplementedError


class Wire(property):
    """A record's attribute: the value Alpaca sent under `key` (None if optional and left out)."""

    def __init__(self, key: str, optional: bool) -> None:
        super().__init__(itemgetter(key) if not optional else lambda record: record.get(key))
        self.key, self.optional = key, optional


def wire(key: str, optional: bool = False) -> Any:  # Any: mypy takes the type annotated beside it
    return Wire(key, optional)


class Trade(Record):
    symbol: str = wire("S")
    price: float = wire("p")
    size: int = wire("s")
    timestamp: datetime = wire("t")  # when the exchange printed it, UTC
    exchange: str = wire("x")
    conditions: list[str] | None = wire("c", optional=True)
    id: int = wire("i")
    tape: str | None = wire("z", optional=True)

    def details(self) -> str:
        return f"{self.size:>7} @ {money(self.price):>8}  {self.exchange}"


class Quote(Record):
    """The best bid and ask. Sizes are in shares (in round lots before November 3, 2025)."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    bid_price: float = wire("bp")
    bid_size: int = wire("bs")
    bid_exchange: str | None = wire("bx", optional=True)
    ask_price: float = wire("ap")
    ask_size: int = wire("as")
    ask_exchange: str | None = wire("ax", optional=True)
    conditions: list[str] | None = wire("c", optional=True)
    tape: str | None = wire("z", optional=True)

    def details(self) -> str:
        return (f"bid {money(self.bid_price):>8} x {self.bid_size:<6} "
                f"ask {money(self.ask_price):>8} x {self.ask_size}")


class Bar(Record):
    """A minute's prices and volume; timestamp is the minute's start."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    open: float = wire("o")
    high: float = wire("h")
    low: float = wire("l")
    close: float = wire("c")
    volume: int = wire("v")
    trade_count: int | None = wire("n", optional=True)
    vwap: float | None = wire("vw", optional=True)

    def details(self) -> str:
        """Open, high, low and close, then the volume: with an O, H, L and C before them, a
        bar of five-digit prices and a volume of 999999 was 84 columns."""
        prices = (self.open, self.high, self.low, self.close)
        return " ".join(f"{money(price):>8}" for price in prices) + f" V {self.volume}"


class UpdatedBar(Bar):
    """A minute bar sent again, because trades arrived late for its minute."""


class DailyBar(Bar):
    """The day's bar so far, sent every minute while the market is open."""


class TradingStatus(Record):
    """A trading halt or resumption, with its reason (codes in Alpaca's documentation)."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    status_code: str = wire("sc")
    status_message: str = wire("sm")
    reason_code: str = wire("rc")
    reason_message: str = wire("rm")
    tape: str | None = wire("z", optional=True)

    def details(self) -> str:
        return f"{self.status_message} ({self.status_code}): {self.reason_message} ({self.reason_code})"


class Luld(Record):
    """The limit up / limit down price band: trades outside it pause trading."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    limit_up_price: float = wire("u")
    limit_down_price: float = wire("d")
    indicator: str = wire("i")
    tape: str | None = wire("z", optional=True)

    def details(self) -> str:
        return (f"down {money(self.limit_down_price):>8}  up {money(self.limit_up_price):>8}  "
                f"({self.indicator})")


class TradeCorrection(Record):
    """A trade sent earlier was wrong: original_id names it; the corrected_ fields replace it."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    exchange: str = wire("x")
    original_id: int = wire("oi")
    original_price: float = wire("op")
    original_size: int = wire("os")
    original_conditions: list[str] = wire("oc")
    corrected_id: int = wire("ci")
    corrected_price: float = wire("cp")
    corrected_size: int = wire("cs")
    corrected_conditions: list[str] = wire("cc")
    tape: str | None = wire("z", optional=True)

    def details(self) -> str:
        # Without the ids: a trade's line has none, and with them a line was 81 to 83 columns.
        return (f"{self.original_size} @ {money(self.original_price)} -> "
                f"{self.corrected_size} @ {money(self.corrected_price)}")


class OrderImbalance(Record):
    """An order imbalance, mostly before the opening and closing auctions and around halts."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    price: float = wire("p")
    tape: str | None = wire("z", optional=True)

    def details(self) -> str:
        return f"at {money(self.price):>8}"


class TradeCancel(Record):
    """A trade sent earlier was cancelled (action "C") or was an error ("E"); id names it."""

    symbol: str = wire("S")
    timestamp: datetime = wire("t")
    exchange: str = wire("x")
    price: float = wire("p")
    size: int = wire("s")
    id: int = wire("i")
    action: str = wire("a")
    tape: str | None = wire("z", optional=True)

    def details(self) -> str:
        undone = "cancelled" if self.action == "C" else "was an error"
        return f"{self.size} @ {money(self.price)} {undone}"


# Alpaca's "T" for each kind of message: the kind's name (handlers and --json go by it), and
# its record.
MESSAGE_TYPES: dict[str, tuple[str, type[Record]]] = {
    "t": ("trade", Trade), "q": ("quote", Quote), "b": ("bar", Bar), "u": ("updated_bar", UpdatedBar),
    "d": ("daily_bar", DailyBar), "s": ("status", TradingStatus), "l": ("luld", Luld),
    "i": ("imbalance", OrderImbalance), "c": ("correction", TradeCorrection), "x": ("cancel", TradeCancel),
}
KIND = {record: kind for kind, record in MESSAGE_TYPES.values()}


def money(price: float) -> str:
    """Two decimals, or up to four when there are more: sub-penny prices exist."""
    text = f"{price:.4f}"
    return text[:-2] + text[-2:].rstrip("0")


WIDTH = 80  # columns of a terminal: a text line longer than this wraps, and the screen is unreadable


def format_text(message: Record) -> str:
    """One line: when (UTC, the time of day to the millisecond), what, which symbol, and the
    details of its kind. Only a status's reason can be longer than WIDTH: it goes on, on
    lines of its own, under the details."""
    try:
        start = f"{message.timestamp.strftime('%H:%M:%S.%f')[:12]}Z {KIND[type(message)]:<11} {message.symbol:<5} "
        details = message.details()
    except (LookupError, TypeError, ValueError, AttributeError):  # a field missing, or not as documented
        # Still printed: what it has, on as many lines as it takes.
        return "\n".join(textwrap.wrap(f"{KIND[type(message)]:<10} (incomplete) {format_json(message)}",
                                       WIDTH, subsequent_indent=" " * 11, break_long_words=False))
    if len(start) + len(details) <= WIDTH:
        return start + details
    return start + f"\n{' ' * len(start)}".join(textwrap.wrap(details, WIDTH - len(start)))


def format_json(message: Record) -> str:
    """One JSON object: "type" (the kind) and every field Alpaca sent, times in ISO 8601."""
    return json.dumps({"type": KIND[type(message)], **message.named()}, default=as_json)


def as_json(value: object) -> str:
    """For json.dumps, what JSON has no type for: a time (msgpack's Timestamps arrive as
    datetimes) in ISO 8601 to the microsecond; anything else as its text, not dropped."""
    return value.isoformat(timespec="microseconds") if isinstance(value, datetime) else str(value)


# --json's "type" -> Alpaca's "T", and the kind's field names -> their wire keys.
WIRE_NAMES = {kind: (wire_type, {name: wire.key for name, wire in record.fields.items()})
              for wire_type, (kind, record) in MESSAGE_TYPES.items()}
TIMES = ("t", "r")  # the wire keys of times: the exchange's, and when Alpaca received the message


def from_json(fields: dict[str, Any]) -> dict[str, Any]:
    """A message as --json prints it (and --publish sends it) back as Alpaca sent it: "T", the
    wire keys, times as datetimes, and a field the records do not name ("tks") under its own
    key. KeyError, TypeError or ValueError for an object that is not one."""
    wire_type, keys = WIRE_NAMES[fields["type"]]
    message = {keys.get(name, name): value for name, value in fields.items()}
    del message["type"]
    message["T"] = wire_type
    for key in TIMES:
        if key in message:
            message[key] = datetime.fromisoformat(message[key])
    return message


def from_json_line(line: str | bytes) -> dict[str, Any] | None:
    """A line of --json (of a --replay file, a NATS payload) as Alpaca sent it; None if not one."""
    try:
        return from_json(json.loads(line))
    except (ValueError, KeyError, TypeError):
        return None


OUTPUT = "text"  # what show() prints: "text", "json" with --json, "none" with --quiet; main() sets it


def show(message: Record) -> None:
    """Print a message on stdout, one line: what the default handlers do."""
    if OUTPUT == "text":
        print(format_text(message))
    elif OUTPUT == "json":
        print(format_json(message))


# 4. The stream, and the reconnect wrapper around it -----------------------------------------

# Command-line option: Alpaca's name for the channel. Subscribing to trades brings their
# corrections and cancels too.
CHANNELS = {"trades": "trades", "quotes": "quotes", "bars": "bars", "updated_bars": "updatedBars",
            "daily_bars": "dailyBars", "statuses": "statuses", "lulds": "lulds", "imbalances": "imbalances"}


@dataclass
class Settings:
    url: str
    symbols: list[str]
    channels: list[str] = field(default_factory=lambda: ["trades"])  # Alpaca's names
    demo: bool = False  # from a local server started here, not from Alpaca
    heartbeat: float = 0.0  # seconds between two "alive" lines in the log; 0: none
    data_timeout: float = 0.0  # seconds without data, in market hours, before a new connection; 0: never
    market_hours: bool = True  # False: data is due at any hour (--demo, the test stream)
    publish: str = ""  # a NATS server to publish every message to (nats_bridge.py)
    source: str = ""  # a NATS server to read from, instead of Alpaca
    durable: str = ""  # with source: a name to resume from where it stopped (JetStream)
    replay: str | None = None  # a file of --json lines to read, instead of Alpaca
    replay_speed: float = 0.0  # with replay: times the recorded pace; 0: as fast as it goes
    serve: tuple[str, int] | None = None  # a host and port to serve Alpaca's protocol on


@dataclass
class Session:
    """What the summary at exit reports."""

    started: float | None = None  # time.monotonic() when streaming began
    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KIND.values(), 0))  # by kind
    reconnects: int = 0
    silent_reconnects: int = 0  # in a row, for a stream with no data (--data-timeout): each waits longer
    last_message: float = field(default_factory=time.monotonic)
    advised: set[int] = field(default_factory=set)  # refusal codes whose advice was given
    published: int | None = None  # with --publish: messages sent to the broker
    unpublished: int = 0  # and those that could not be, its buffer full or it gone at exit
    skipped: int = 0  # with --replay: lines of the file that are not messages
    served: int | None = None  # with --serve: clients that logged in
    slow_clients: int = 0  # and those cut for reading too slowly (407)
    failures: dict[str, int] = field(default_factory=dict)  # handler name -> exceptions it raised
    failures_told: dict[str, tuple[int, float]] = field(default_factory=dict)  # the count and time last logged

    def summary(self) -> str:
        took = time.monotonic() - (self.started or time.monotonic())
        lines = textwrap.wrap(f"received {counted(self.received)}", 58)  # 80 columns with the log's time
        tail = f"in {took:.1f} s; reconnects: {self.reconnects}"
        if len(lines[-1]) + len(tail) < 58:
            lines[-1] += " " + tail
        else:
            lines.append(tail)
        if self.published is not None:
            lines.append(f"published to NATS: {self.published}" + (
                f"; not published: {self.unpublished}" if self.unpublished else ""))
        if self.served is not None:
            lines.append(f"served {self.served} client{'' if self.served == 1 else 's'}" + (
                f"; cut as too slow: {self.slow_clients}" if self.slow_clients else ""))
        if self.skipped:
            plural = "s" if self.skipped > 1 else ""
            lines.append(f"skipped {self.skipped} broken line{plural} of the recording")
        if self.failures:
            lines += textwrap.wrap("handlers that raised: " + ", ".join(
                f"{name} {count} time{'s' if count > 1 else ''}" for name, count in self.failures.items()), 58)
        return "\n".join(lines)


def counted(received: dict[str, int]) -> str:
    """ "12 trades, 1 status", or "nothing"."""
    return ", ".join(f"{count} {kind}{'' if count == 1 else 'es' if kind.endswith('s') else 's'}"
                     for kind, count in received.items() if count) or "nothing"


# Alpaca's error codes that answer a subscribe or an unsubscribe: the request is refused, and
# the subscriptions stay as they were.
SUBSCRIBE_REFUSALS = (400, 405, 409, 410)
Channels = dict[str, set[str]]  # Alpaca's channel name -> symbols
Refused = Callable[[int, str], None]  # told the code and message if Alpaca refuses a request


class Subscriptions:
    """What the stream is subscribed to, by Alpaca's channel names: the script's own (its
    options, then subscribe() and unsubscribe()) and, with --serve, its clients' too. A change
    goes to Alpaca at once on the open connection; a new connection asks for all of it."""

    def __init__(self) -> None:
        self.own: Channels = {}  # for this script's handlers
        self.relay: Any = None  # --serve: a local_alpaca_server.Relay, whose clients want theirs
        self.offline = False  # --source, --replay: what comes cannot be changed
        self.websocket: Any = None  # the connection, once it has asked; None between connections
        self.asked: Channels = {}  # what the connection has been asked for
        # The requests sent and not yet answered, oldest first: the action, what it asked, and
        # whom to tell if Alpaca refuses it (None: a connection's first, refused as at startup).
        self.pending: deque[tuple[str, Channels, Refused | None]] = deque()
        self.beyond_own = False  # the connection has brought what the handlers did not ask for

    def start(self, channels: list[str], symbols: list[str], offline: bool = False) -> None:
        self.own = {channel: set(symbols) for channel in channels}
        self.offline, self.beyond_own = offline, False

    def wanted(self) -> Channels:
        """Every channel's symbols: the script's own and its clients'."""
        wanted = {channel: set(symbols) for channel, symbols in self.own.items()}
        for channel, symbols in (self.relay.subscriptions() if self.relay else {}).items():
            wanted.setdefault(channel, set()).update(symbols)
        return {channel: symbols for channel, symbols in wanted.items() if symbols}

    def first_request(self, websocket: Any) -> dict[str, Any]:
        """A new connection's subscribe message, for all of it; changes go to it from now on."""
        self.websocket, self.asked = websocket, self.wanted()
        self.pending = deque([("subscribe", self.asked, None)])
        self.beyond_own |= self.asked != {c: s for c, s in self.own.items() if s}
        return request("subscribe", self.asked)

    def disconnected(self) -> None:
        self.websocket = None
        self.pending.clear()  # their answers died with the connection

    async def change(self, action: str, channel: str, symbols: tuple[str, ...]) -> None:
        """subscribe() and unsubscribe()."""
        if channel not in CHANNELS:
            raise ValueError(f"no such channel: {channel!r}; one of:\n{', '.join(CHANNELS)}")
        bad = [s for s in symbols if not isinstance(s, str) or not SYMBOL.fullmatch(s)]
        if bad or not symbols:
            raise ValueError(f"{action}() takes stock symbols: "
                             f"{', '.join(map(repr, bad)) or 'none given'}")
        before = {name: set(names) for name, names in self.own.items()}
        mine = self.own.setdefault(CHANNELS[channel], set())
        mine.update(symbols) if action == "subscribe" else mine.difference_update(symbols)
        if self.offline:
            log.debug("%s() changes nothing with --source or --replay", action)

        def refused(code: int, message: str) -> None:
            self.own = before
            asked = f"{action}({', '.join(symbols)}, channel={channel!r})"
            log.warning("%s", textwrap.fill(f"Alpaca refused {asked}: {message} ({code})", 50))

        await self.update(refused)

    async def update(self, refused: Refused | None) -> None:
        """Ask the open connection for what changed since it last asked: one subscribe for
        what is new, one unsubscribe for what nobody wants any more. refused: called if Alpaca
        refuses it; None for what only shrinks (a client left)."""
        wanted = self.wanted()
        beyond = wanted != {c: s for c, s in self.own.items() if s}
        self.beyond_own |= beyond
        if self.offline and beyond:
            extra = "; ".join(f"{c} of {', '.join(sorted(s))}"
                              for c, s in difference(wanted, self.own).items())
            log.warning("%s", textwrap.fill(f"a client asked for what this bot does not read: "
                                            f"{extra}. It gets what this bot's options ask for.", 50))
        if self.websocket is None:
            return  # the next connection asks for all of it
        changes = {"subscribe": difference(wanted, self.asked),
                   "unsubscribe": difference(self.asked, wanted)}
        self.asked = wanted
        for action, change in changes.items():
            if change:
                self.pending.append((action, change, refused))
                with suppress(websockets.ConnectionClosed):  # the next connection asks for all
                    await self.websocket.send(msgpack.packb(request(action, change)))

    def answered(self, refusal: AlpacaRefused | None) -> bool:
        """Alpaca's answer to the oldest request: a subscription (None) or an error. True if it
        refused a change, now undone, and the stream goes on; False if the error is not a
        change's (the caller raises it: a refused first request stops the script as at startup)."""
        if not self.pending or refusal is not None and refusal.code not in SUBSCRIBE_REFUSALS:
            return False
        action, change, refused = self.pending.popleft()
        if refusal is None:
            return True
        if refused is None:
            return False
        for channel, symbols in change.items():  # Alpaca keeps what it had
            asked = self.asked.setdefault(channel, set())
            asked.difference_update(symbols) if action == "subscribe" else asked.update(symbols)
        refused(refusal.code, refusal.message)
        return True

    def relayed(self, frame: bytes, messages: list) -> list:
        """--serve: the frame to the clients, times as Alpaca sent them (msgpack Timestamps, to
        the nanosecond); the messages for this script's own handlers."""
        if self.relay.clients:
            self.relay.send(msgpack.unpackb(frame))
        # Once a client has wanted more, always: frames already on their way when it left (even
        # after Alpaca's answer, as the local server showed) bring what only it wanted.
        if not self.beyond_own:
            return messages
        return beside("local_alpaca_server", "--serve").wanted(self.own, messages, control=True)


def request(action: str, channels: Channels) -> dict[str, Any]:
    """A subscribe or an unsubscribe message, as Alpaca takes it."""
    return {"action": action, **{channel: sorted(symbols) for channel, symbols in channels.items()}}


def difference(these: Channels, those: Channels) -> Channels:
    """The symbols of these that those lack, by channel."""
    return {channel: symbols - those.get(channel, set()) for channel, symbols in these.items()
            if symbols - those.get(channel, set())}


SUBSCRIPTIONS = Subscriptions()  # the stream's, for subscribe() and unsubscribe()


class AlpacaRefused(Exception):
    """Alpaca answered with an error frame (code and message as in its documentation)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class CannotConnect(Exception):
    """The connection failed before the websocket opened: what happened, in words."""


class NoData(Exception):
    """Connected, in market hours, but no data for --data-timeout seconds: the stream went mute."""


# Refusals that retrying cannot cure (Alpaca's Go SDK gives up on these too): exit status 3.
# Every other code of Alpaca's (400, 401, 403, 404, 406, 407, 500) is retried.
FATAL_ADVICE = {
    402: "Alpaca rejected the API keys (402 auth failed).\nThey came from {source}. "
         "Check both are copied in full and belong\ntogether: paper and live accounts have different keys.",
    405: "Alpaca refused the subscription\n(405 symbol limit exceeded): the free plan allows 30 symbols\n"
         "for trades and quotes.",
    409: "Your Alpaca plan does not include this feed\n(409 insufficient subscription). "
         "The free plan has IEX: try --feed iex.",
    410: "Alpaca refused the subscription\n(410 invalid subscribe action for this feed).",
    411: "Alpaca refused the keys (411 insufficient scope).\nThey came from {source}. An OAuth or broker "
         "token needs the\nmarket data scope; the API keys of your dashboard have it.",
}
RETRY_ADVICE = {
    406: "Another connection with these keys is open to this feed: Alpaca allows one\n"
         "per endpoint per user (iex and sip are two), shared by every app using them.\n"
         "A dropped one can be held for a while (about 90 s, says Alpaca's forum).",
    407: "The server says we read too slowly.",
}
# A websocket handshake refused with these is a wrong URL, not a passing fault: exit status 2.
PERMANENT_HTTP = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found"}


class Route(NamedTuple):
    """Where one kind of message goes: the record it becomes, and its handler."""

    kind: str
    record: type[Record]
    handler: Handler


def routes_for(handlers: dict[str, Handler]) -> dict[str, Route]:
    """Alpaca's "T" -> Route, for the handlers given (by kind, as in HANDLERS)."""
    return {wire_type: Route(kind, record, handlers[kind]) for wire_type, (kind, record) in MESSAGE_TYPES.items()}


def check_alpaca_py() -> None:
    """Exit status 2, not a traceback, when the installed alpaca-py lacks what this script uses."""
    try:
        version = importlib.metadata.version("alpaca-py")
    except importlib.metadata.PackageNotFoundError:
        version = "none"
    problem = None
    if ALPACA_IMPORT_ERROR is not None:
        # Its name if a module is missing; else its message (pandas names what it lacks in it).
        missing = ALPACA_IMPORT_ERROR.name or " ".join(str(ALPACA_IMPORT_ERROR).split())
        problem = f"it fails to import:\n{missing}"
        if "pytz" in missing:  # 0.33.1 to 0.43.2 import pytz, and only pandas 2 (Python 3.10) brings it
            problem += "\n(alpaca-py 0.33.1 to 0.43.2 need it: pip install pytz)"
    else:
        parameters = inspect.signature(StockDataStream).parameters
        needed = [name for name in ("_connect", "close") if not hasattr(StockDataStream, name)]
        needed += [name for name in ("url_override", "websocket_params") if name not in parameters]
        if needed:
            problem = f"its StockDataStream has no {', '.join(needed)}"
    if problem:
        raise ConfigError(f"this script needs alpaca-py 0.33.1 to 0.44, you have {version}:\n"
                          f"{problem}.\nInstall the tested one: pip install -r requirements.txt")


def build_stream(url: str, keys: Keys) -> StockDataStream:
    # max_size None: a frame of any size is read whole. Alpaca documents no limit, and a frame
    # over websockets' default (1 MiB) would close the connection, and come again after each
    # reconnect. Alpaca's Go SDK sets no limit either ("news messages can be huge").
    return StockDataStream(keys.key, keys.secret, url_override=url, websocket_params={
        "ping_interval": PING_INTERVAL, "ping_timeout": PING_TIMEOUT,
        "close_timeout": CLOSE_TIMEOUT, "max_queue": 1024, "max_size": None})


async def connect(stream: StockDataStream, settings: Settings) -> None:
    """Open the websocket with alpaca-py's own step, authenticate, then subscribe."""
    log.debug("opening the websocket")  # to settings.url, which run() has logged
    try:
        await stream._connect()  # the websocket, with Alpaca's headers; then the greeting
    except OSError as error:
        raise CannotConnect(why_not_connected(error, settings.url)) from error
    except websockets.InvalidHandshake as error:
        status = http_status(error)
        if status in PERMANENT_HTTP:
            raise ConfigError(f"{settings.url} refused the websocket:\nHTTP {status} "
                              f"({PERMANENT_HTTP[status]}): check the URL.") from None
        raise
    log.debug("connected, and greeted; sending the keys")
    websocket: Any = stream._ws  # open since _connect() (alpaca-py types it as None)
    # Our own auth, not alpaca-py's _auth(), which raises the message of an error and drops
    # its code: the code decides between retrying and giving up.
    await websocket.send(msgpack.packb({"action": "auth", "key": stream._api_key, "secret": stream._secret_key}))
    for message in msgpack.unpackb(await websocket.recv()):
        control(message)  # an error raises AlpacaRefused, with Alpaca's code
    # Our own subscribe message, not alpaca-py's subscribe_trades() & co.: those register a
    # handler for alpaca-py's run loop, which stream_once() below replaces.
    request = SUBSCRIPTIONS.first_request(websocket)  # the options', subscribe()'s, the clients'
    log.debug("authenticated; subscribing: %s", request)
    await websocket.send(msgpack.packb(request))


def http_status(error: Exception) -> int | None:
    """The HTTP status of a refused websocket handshake: on the error itself in websockets'
    legacy client (alpaca-py's), on its response in the new one (alpaca-py issue 743)."""
    return getattr(error, "status_code", None) or getattr(getattr(error, "response", None), "status_code", None)


def why_not_connected(error: OSError, url: str) -> str:
    """What went wrong, in words that fit a terminal (each line within 80 with the log's prefix)."""
    host = urlsplit(url).hostname
    if isinstance(error, socket.gaierror):
        return f"cannot find {host}:\ncheck the internet connection and DNS"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"TLS: certificate of {host}\nnot verified: {error.verify_message}. A proxy or antivirus\n"
                "that intercepts TLS, a wrong clock or missing CA certificates do this.")
    if isinstance(error, ssl.SSLError):
        return f"TLS failed with {host}:\n{getattr(error, 'reason', None) or error}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(error, ConnectionResetError) and url.startswith("wss:"):
        return (f"TLS handshake cut by {host}:\nis it a TLS (wss://) server? "
                "A firewall or proxy can do this too.")
    return f"cannot connect to {host}:\n{error.strerror or type(error).__name__}"


async def stream_once(stream: StockDataStream, settings: Settings, routes: dict[str, Route],
                      session: Session) -> None:
    """One connection: deliver its messages until it ends. Returns when the server closes it.

    This replaces alpaca-py's own loop (_consume and _run_forever in its websocket.py), which
    builds a pydantic model for every message, only logs the error frames (so wrong keys are
    retried for ever), and loses the rest of a frame when a handler raises.
    """
    await asyncio.wait_for(connect(stream, settings), CONNECT_TIMEOUT)
    mute: list[NoData] = []  # watch_quiet() puts one here before it closes a mute stream
    quiet_watch = asyncio.create_task(watch_quiet(stream, settings, session, time.monotonic(), mute))
    try:
        async for frame in stream._ws:  # type: ignore[attr-defined]  # open since connect()
            try:
                messages = msgpack.unpackb(frame, timestamp=3)  # 3: timestamps as UTC datetimes
            except (ValueError, TypeError):  # msgpack's errors are ValueErrors; text frames TypeErrors
                log.debug("skipped a frame that is not msgpack: %r", frame[:80])
                continue
            if not isinstance(messages, list):
                log.debug("skipped a frame that is not a list: %r", messages)
                continue
            if SUBSCRIPTIONS.relay:
                messages = SUBSCRIPTIONS.relayed(frame, messages)
            await deliver(messages, routes, session)
            sys.stdout.flush()  # once a frame: piped output stays real time without a flush a line
    finally:
        quiet_watch.cancel()
    if mute:
        raise mute[0]  # the connection was closed for want of data: that ended the loop


async def deliver(messages: list, routes: dict[str, Route], session: Session) -> None:
    """Hand each message of a frame to its handler, in order. A broken message, or a handler
    that raises, costs that message only: the rest of the frame and the stream carry on.
    (One function for the whole frame, not one call a message: it is the hot loop.)"""
    received = session.received
    delivered = False
    for message in messages:
        try:
            kind, record_type, handler = routes[message["T"]]
        except (KeyError, TypeError):  # not market data
            control(message)
            continue
        record = record_type(message)
        received[kind] += 1
        delivered = True
        try:
            await handler(record)
        except BrokenPipeError:
            raise  # the reader has gone: main() ends quietly
        except Exception as error:
            handler_failed(kind, handler, record, error, session)
    if delivered:
        session.last_message = time.monotonic()


def control(message: object) -> None:
    """A message that is not market data: the subscription, an error, or something unknown."""
    kind = message.get("T") if isinstance(message, dict) else None
    if not isinstance(message, dict):
        log.debug("skipped something that is not a message: %r", message)
    elif kind == "subscription":
        SUBSCRIPTIONS.answered(None)
        log_subscription(message)
    elif kind == "error":
        refusal = AlpacaRefused(int(message.get("code") or 0), str(message.get("msg")))
        if not SUBSCRIPTIONS.answered(refusal):
            raise refusal
    elif kind == "success":
        log.debug("%s", message.get("msg"))  # "authenticated"
    else:
        log.debug("skipped a message of unknown type: %r", message)


def handler_failed(kind: str, handler: Handler, record: Record, error: Exception, session: Session) -> None:
    """Log a handler's exception, unless the message itself is broken (checked here, not for
    every message: Alpaca does not send broken messages, and a check costs 10% of the speed).
    The first in full; then, for a handler that keeps raising (a typo raises on every message),
    a line with the count every FAILURES_EVERY seconds; the summary counts them all."""
    missing = [wire.key for wire in record.fields.values() if not wire.optional and wire.key not in record]
    if missing or not isinstance(record.timestamp, datetime):
        log.debug("a broken %s (%s) failed %s: %r", kind, f"no {', '.join(missing)}" if missing else
                  "its timestamp is not a msgpack Timestamp", getattr(handler, "__name__", "its handler"), record)
        return
    name = getattr(handler, "__name__", "the handler")
    count = session.failures[name] = session.failures.get(name, 0) + 1
    told, told_at = session.failures_told.get(name, (0, 0.0))
    now = time.monotonic()
    if count == 1:
        verbose = log.isEnabledFor(logging.DEBUG)
        log.warning("%s raised %s on a %s of %s:\n%s%s", name, type(error).__name__, kind, record.symbol, error,
                    "" if verbose else "\n(-v shows where)", exc_info=verbose)
    elif now - told_at >= FAILURES_EVERY:
        log.warning("%s raised %d times more:\nthe last, %s on a %s of %s:\n%s", name, count - told,
                    type(error).__name__, kind, record.symbol, error)
    else:
        return
    session.failures_told[name] = (count, now)


def log_subscription(message: dict) -> None:
    """"subscribed to trades, quotes of SPY, TSLA; Ctrl+C to stop": the channels that have the
    same symbols together ("trades of SPY, TSLA; quotes of TSLA" when they differ)."""
    groups: dict[frozenset[str], tuple[list[str], list[str]]] = {}  # symbols -> (them, their channels)
    for channel in CHANNELS.values():
        if message.get(channel):
            groups.setdefault(frozenset(message[channel]), (message[channel], []))[1].append(channel)
    named = "; ".join(f"{', '.join(channels)} of " + (", ".join(symbols) if len(symbols) <= 6 else
                                                       f"{len(symbols)} symbols")
                      for symbols, channels in groups.values())
    lines = textwrap.wrap(f"subscribed to {named or 'nothing'};", 59)  # 80 columns
    lines[-1:] = [f"{lines[-1]} Ctrl+C to stop"] if len(lines[-1]) < 44 else [lines[-1], "Ctrl+C to stop"]
    log.info("%s", "\n".join(lines))


async def watch_quiet(stream: StockDataStream, settings: Settings, session: Session, connected_at: float,
                      mute: list[NoData]) -> None:
    """While connected and no data comes: one line per quiet spell, since that is normal when the
    market is closed; and in market hours, after --data-timeout seconds (each time in a row
    twice as long), a NoData in `mute` and the connection closed, since the stream went mute."""
    timeout = settings.data_timeout * 2 ** min(session.silent_reconnects, 4)
    opened_at = None if settings.market_hours else connected_at  # the market, as seen while connected
    warned_for = None  # the last_message of the spell already warned about
    while True:
        now = time.monotonic()
        if settings.market_hours:
            opened_at = (opened_at or now) if market_open() else None
        quiet = now - max(session.last_message, connected_at)
        if quiet >= QUIET_AFTER and warned_for != session.last_message:
            log.warning("connected, but no data for %.0f s: the market may be closed\n(regular hours "
                        "9:30-16:00 New York time); --test-stream has data any time", quiet)
            warned_for = session.last_message
        if timeout and opened_at is not None and now - max(session.last_message, opened_at) >= timeout:
            mute.append(NoData(f"no market data for {timeout:.0f} s in market hours:\nreplacing the "
                               "connection, as it may have gone mute\n(symbols that trade rarely, or a "
                               "holiday? --data-timeout sets the wait)"))
            await stream._ws.close()  # type: ignore[attr-defined]  # ends stream_once's loop
            return
        await asyncio.sleep(1.0)


async def heartbeat(session: Session, every: float, market_hours: bool = True) -> None:
    """--heartbeat: a line every so often, for a log that nobody reads until something is wrong:
    the messages since the last line, by kind, how long ago the last one came, the reconnects."""
    before = dict(session.received)
    while True:
        await asyncio.sleep(every)
        counts = {kind: count - before[kind] for kind, count in session.received.items() if count > before[kind]}
        before = dict(session.received)
        age = time.monotonic() - session.last_message
        market = "open" if market_open() or not market_hours else "closed"  # --demo's is always open
        log.info("alive: %s in %.0f s; last %.1f s ago; reconnects %d; market %s", counted(counts), every,
                 age, session.reconnects, market, extra={"fields": {
                     "received": counts, "seconds": every, "last_message_age": round(age, 3),
                     "reconnects": session.reconnects, "market": market}})


def market_open(now: datetime | None = None) -> bool:
    """Regular hours, 9:30 to 16:00 New York time on weekdays (holidays are not known here)."""
    there = (now or datetime.now(timezone.utc)).astimezone(NEW_YORK)
    return there.weekday() < 5 and time_of_day(9, 30) <= there.time() < time_of_day(16)


# Faults of the network or the server: reconnect. Anything else is a bug and ends the run.
CONNECTION_FAULTS = (OSError, asyncio.TimeoutError, websockets.WebSocketException, ValueError, LookupError,
                     CannotConnect)


async def stream_with_reconnect(stream: StockDataStream, settings: Settings, routes: dict[str, Route],
                                session: Session) -> None:
    """Run stream_once() forever: reconnect and subscribe again after every fault, with
    exponential backoff and jitter (backoff_delay), starting over once messages flow."""
    SUBSCRIPTIONS.start(settings.channels, settings.symbols)
    failures = 0
    while True:
        received_before, silent = sum(session.received.values()), False
        try:
            await stream_once(stream, settings, routes, session)
            reason = "the server closed the connection"
        except BrokenPipeError:
            raise  # an OSError, but of stdout, not of the network
        except AlpacaRefused as refusal:
            if refusal.code in FATAL_ADVICE:
                raise
            reason = f"Alpaca refused: {refusal}"
            if refusal.code in RETRY_ADVICE and refusal.code not in session.advised:
                session.advised.add(refusal.code)
                reason += "\n" + RETRY_ADVICE[refusal.code]
        except NoData as silence:
            reason, silent = str(silence), True
        except CONNECTION_FAULTS as error:
            reason = describe(error)
            log.debug("the fault in full: %r", error)
        finally:
            SUBSCRIPTIONS.disconnected()
            await stream.close()
        if sum(session.received.values()) > received_before:
            failures = session.silent_reconnects = 0
        failures += 1
        session.silent_reconnects += silent
        delay = backoff_delay(failures)
        session.reconnects += 1
        log.warning("%s", reason)
        log.info("reconnecting in %.2f s (attempt %d)", delay, failures)
        await asyncio.sleep(delay)


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before reconnect attempt 1, 2, 3...: doubling from RETRY_MIN up to
    RETRY_MAX, with "equal jitter" (between half and all of that) so that many clients cut off
    at once do not come back at once. Alpaca's SDKs do the same."""
    ceiling = min(RETRY_MAX, RETRY_MIN * 2 ** min(attempt - 1, 10))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def describe(error: BaseException) -> str:
    if isinstance(error, websockets.ConnectionClosed):
        close_frame = error.rcvd or error.sent  # sent: we closed it, e.g. "keepalive ping timeout"
        return "connection lost" + (f" ({close_frame.reason})" if close_frame and close_frame.reason else "")
    if isinstance(error, asyncio.TimeoutError):
        return "no answer from the server in time"
    status = http_status(error) if isinstance(error, websockets.InvalidHandshake) else None
    if status:
        return f"the server refused the websocket: HTTP {status}"
    if isinstance(error, OSError):
        return f"connection failed: {error.strerror or type(error).__name__}"
    return str(error) if isinstance(error, CannotConnect) else f"{type(error).__name__}: {error}"


# 5. Main: arguments, signals, exit statuses --------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        # Not argparse's usage, which keeps the line of --test-stream | --url ... whole: 99 columns.
        usage="%(prog)s [SYMBOL ...] [options]",
        description="Stream live market data from Alpaca: a line per message on stdout,\nCtrl+C to stop.",
        epilog=__doc__[__doc__.index("exit statuses"):], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("symbols", nargs="*", metavar="SYMBOL",
                        help="symbols to stream (default: SPY TSLA); '*' (quoted) for every symbol")
    channels = parser.add_argument_group("channels (trades unless you name others)")
    channels.add_argument("--trades", action="store_true", help="trades, with their corrections and cancels")
    channels.add_argument("--quotes", action="store_true", help="best bid and ask")
    channels.add_argument("--bars", action="store_true", help="minute bars")
    channels.add_argument("--updated-bars", action="store_true", help="minute bars changed by late trades")
    channels.add_argument("--daily-bars", action="store_true", help="the day's bar, every minute")
    channels.add_argument("--statuses", action="store_true", help="trading halts and resumptions")
    channels.add_argument("--lulds", action="store_true", help="limit up / limit down price bands")
    channels.add_argument("--imbalances", action="store_true", help="order imbalances (around auctions)")
    parser.add_argument("--feed", choices=FEEDS, help="iex (free plan, default), sip (paid) or delayed_sip")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--test-stream", action="store_true", help=f"Alpaca's always-on test stream "
                       f"({TEST_STREAM_SYMBOL}): data even when the market is closed")
    where.add_argument("--url", help="another endpoint (a proxy, a local server), ws:// or wss://")
    where.add_argument("--demo", action="store_true", help="no keys, no network: demo data from a local server")
    where.add_argument("--source", metavar="NATS_URL", help="read from a NATS server that a --publish feeder "
                       "publishes to, instead of Alpaca (no keys needed)")
    where.add_argument("--replay", metavar="FILE", help="read a recording of --json lines "
                       "(--json > FILE) instead of Alpaca, into the same handlers "
                       "(no keys needed)")
    parser.add_argument("--replay-speed", type=float, metavar="N", help="with --replay: N times "
                        "the recorded pace (1: as recorded); default: as fast as it goes")
    parser.add_argument("--publish", metavar="NATS_URL", help="also publish every message to a NATS server, "
                        "for more bots on one Alpaca connection: nats://127.0.0.1:4222")
    parser.add_argument("--serve", metavar="[HOST:]PORT",
                        help="also serve Alpaca's stream to your other bots, unchanged, on "
                        "this one connection (HOST: 127.0.0.1 unless named)")
    parser.add_argument("--durable", metavar="NAME", help="with --source: resume where the bot of this name "
                        "stopped, missing nothing (needs nats-server -js)")
    parser.add_argument("--json", action="store_true", help="one JSON object per message per line")
    parser.add_argument("--quiet", action="store_true", help="print no messages (the handlers still get them)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging: each step of connecting")
    parser.add_argument("--heartbeat", type=float, default=0.0, metavar="SECONDS",
                        help="an 'alive' line in the log every so often (for a server)")
    parser.add_argument("--data-timeout", type=float, metavar="SECONDS",
                        help=f"in market hours, replace a stream with no data for this long "
                        f"(default {DATA_TIMEOUT:.0f}; 0: never)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="json: one object per log line on stderr, for log collectors")
    args = parser.parse_args(argv)
    if args.symbols and all(Path(name).exists() for name in args.symbols) and \
            not all(SYMBOL.fullmatch(name.upper()) for name in args.symbols):
        parser.error("the shell expanded * into the file names here: quote it, '*'")
    args.symbols = list(dict.fromkeys(symbol.upper() for symbol in args.symbols))
    bad = [symbol for symbol in args.symbols if not SYMBOL.fullmatch(symbol)]
    if any("," in symbol for symbol in bad):
        parser.error(f"separate symbols with spaces, not commas: {' '.join(' '.join(bad).replace(',', ' ').split())}")
    if bad:
        parser.error(f"not a stock symbol: {', '.join(bad)}")
    if args.url and not re.match(r"wss?://", args.url):
        parser.error("--url must start with ws:// or wss://")
    for option, seconds in (("--heartbeat", args.heartbeat), ("--data-timeout", args.data_timeout)):
        if seconds is not None and not 0 <= seconds < math.inf:
            parser.error(f"{option} takes a number of seconds, 0 or more")
    if args.feed and (args.demo or args.url or args.test_stream or args.source):
        parser.error("--feed picks one of Alpaca's feeds: it has no effect with --demo, --url, --test-stream "
                     "or --source")
    for option, url in (("--publish", args.publish), ("--source", args.source)):
        if url is not None and not re.fullmatch(r"(nats|tls)://[^/\s]+", url):
            parser.error(f"{option} takes a NATS server's URL: nats://HOST:PORT")
    if args.publish and args.source:
        parser.error("--publish and --source: one feeder publishes, the bots read (--source)")
    if args.serve is not None:
        args.serve = serve_address(parser, args.serve, keyless=args.demo or bool(args.source))
        if args.replay is not None:
            parser.error("--serve goes with a stream: Alpaca, --url, --demo or --source")
    if args.durable is not None and not args.source:
        parser.error("--durable NAME goes with --source")
    if args.durable is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.durable):
        parser.error("--durable takes a name of letters, digits, - and _")
    chosen = args.symbols or args.feed or any(getattr(args, option) for option in CHANNELS)
    if args.replay is not None and chosen:
        parser.error("--replay plays the recording as it is:\n"
                     "symbols, channel options and --feed have no effect with it")
    if args.replay_speed is not None and args.replay is None:
        parser.error("--replay-speed goes with --replay FILE")
    if args.replay_speed is not None and not 0 < args.replay_speed < math.inf:
        parser.error("--replay-speed takes a number above 0:\n"
                     "1 is the recorded pace, 2 twice as fast")
    args.channels = [name for option, name in CHANNELS.items() if getattr(args, option)] or ["trades"]
    return args


def serve_address(parser: argparse.ArgumentParser, address: str, keyless: bool) -> tuple[str, int]:
    """--serve's [HOST:]PORT. Another address than this machine's own (loopback) only where the
    clients must log in with the script's keys: not with --demo or --source, which have none."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        parser.error(f"--serve takes a port (0 to 65535), or HOST:PORT: {address}")
    try:
        loopback = is_loopback(host)
    except ValueError:
        parser.error(f"--serve takes an IP address, or localhost: {host}")
    if not loopback and keyless:
        parser.error(f"--serve {address}: with --demo or --source, clients need no "
                     "keys, so only this machine may connect: use 127.0.0.1")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether only this machine reaches this address; ValueError if it is not an address."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def settings_from(args: argparse.Namespace) -> Settings:
    if args.test_stream:
        url, symbols = f"{ALPACA_STREAM}/test", args.symbols or [TEST_STREAM_SYMBOL]
    else:
        url, symbols = args.url or f"{ALPACA_STREAM}/{args.feed or 'iex'}", args.symbols or list(DEFAULT_SYMBOLS)
    here = args.demo or args.source or args.replay is not None  # no URL: they make or need none
    return Settings("" if here else url, symbols, args.channels, demo=args.demo,
                    heartbeat=args.heartbeat, data_timeout=data_timeout(args), market_hours=not (
                        args.demo or args.test_stream), publish=args.publish or "", source=args.source or "",
                    durable=args.durable or "", replay=args.replay,
                    replay_speed=args.replay_speed or 0.0, serve=args.serve)


def data_timeout(args: argparse.Namespace) -> float:
    """--data-timeout, or its default; 0 for channels that may be silent all day."""
    if any(channel in STEADY_CHANNELS for channel in args.channels):
        return DATA_TIMEOUT if args.data_timeout is None else args.data_timeout
    if args.data_timeout:
        log.info("--data-timeout is off: %s can be silent all day", ", ".join(args.channels))
    return 0.0


@contextmanager
def stop_on_signals(stop: Callable[[], object]) -> Iterator[None]:
    """Ctrl+C or SIGTERM calls stop(); a second one exits at once. Restores the old handlers.

    signal.signal, not loop.add_signal_handler, which Windows lacks. The handler runs between
    two bytecodes of the main thread, so it only schedules the stop on the event loop."""
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM]
    stopping = False

    def handle(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            os._exit(EXIT_FORCED)  # the first stop is stuck: skip all clean-up
        stopping = True
        loop.call_soon_threadsafe(stop_for, signum)

    def stop_for(signum: int) -> None:
        if signum == signal.SIGINT and sys.stderr.isatty():
            print(file=sys.stderr)  # the terminal echoed ^C: what follows starts a line of its own
        stop()

    originals = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield
    finally:
        for sig, original in originals.items():
            signal.signal(sig, original)


async def run(settings: Settings, keys: Keys, handlers: dict[str, Handler], session: Session) -> None:
    """Stream until stopped by a signal; raises what ends the run otherwise."""
    routes = routes_for(handlers)
    bridge = None  # nats_bridge, imported only for the broker's options
    if settings.publish or settings.source:
        bridge = beside("nats_bridge", "--publish" if settings.publish else "--source")
    try:
        async with AsyncExitStack() as stack:  # what is opened here is closed in reverse, at the end
            if settings.demo:
                server = beside("local_alpaca_server", "--demo").AlpacaStreamServer(rate=8, batch=6, record=False)
                settings.url = (await stack.enter_async_context(server)).url
                log.info("demo data from a local server, not the market")
            if bridge and settings.publish:
                publisher = await stack.enter_async_context(bridge.Publisher(settings.publish, as_json, session))
                routes = publisher.wrap(routes)
            if settings.source or settings.replay is not None:
                SUBSCRIPTIONS.start(settings.channels, settings.symbols, offline=True)
            if settings.serve:
                await stack.enter_async_context(serving(settings, keys, session))
            if bridge and settings.source:
                await until_stopped(read_broker(bridge, settings, routes, session), settings, session)
            elif settings.replay is not None:
                recording = open_recording(settings.replay)  # a bad file: exit 2, no summary
                replaying = replay(recording, settings.replay_speed, routes, session)
                await until_stopped(replaying, settings, session)
            else:
                log.info("connecting to %s", settings.url)
                stream = build_stream(settings.url, keys)
                await until_stopped(stream_with_reconnect(stream, settings, routes, session), settings, session)
    except Exception as error:
        if bridge and isinstance(error, bridge.BrokerError):
            raise ConfigError(str(error)) from None
        raise


@asynccontextmanager
async def serving(settings: Settings, keys: Keys, session: Session) -> AsyncIterator[None]:
    """--serve: Alpaca's protocol, with this script's data, to more bots (local_alpaca_server.py's
    Relay); their subscriptions join the script's own on its one connection."""
    host, port = settings.serve or ("127.0.0.1", 0)
    feed = "iex" if settings.demo else urlsplit(settings.url).path.rstrip("/").rsplit("/", 1)[-1]
    served = beside("local_alpaca_server", "--serve")
    keyless = settings.demo or settings.source  # no keys of Alpaca's to check: any will do
    relay = served.Relay(host=host, port=port, feeds=served.FEEDS if settings.source else (feed,),
                         keys=None if keyless else (keys.key, keys.secret),
                         changed=SUBSCRIPTIONS.update)
    try:
        await relay.start()
    except OSError as error:
        # asyncio's strerror is a sentence with the address in it: the system's is enough.
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(f"--serve: cannot listen on {host}:{port}:\n{reason}; "
                          "another port? (0 picks a free one)") from None
    log.info("serving Alpaca's stream to more bots, at\n%s (%s)", relay.url,
             "any keys will do" if keyless else "they log in with this script's keys")
    if not is_loopback(host):
        log.warning("clients on other machines send the keys\nunencrypted (ws://): serve them only on "
                    "a network\nyou trust, or through an SSH tunnel")
    SUBSCRIPTIONS.relay, session.served = relay, 0
    try:
        yield
    finally:
        SUBSCRIPTIONS.relay = None
        session.served, session.slow_clients = relay.served, relay.slow
        await relay.stop()


def beside(module: str, needed_by: str) -> ModuleType:
    """A module of this project, imported here, when an option needs it: the script copied
    alone works for everything else."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name == module:
            raise ConfigError(f"{needed_by} needs {module}.py\nbeside the script; the rest works without it.") from None
        if error.name in ("nats", "orjson"):
            raise ConfigError(f"{needed_by} needs nats-py and orjson: pip install -r requirements.txt") from None
        raise


async def read_broker(bridge: ModuleType, settings: Settings, routes: dict[str, Route], session: Session) -> None:
    """--source: what a --publish feeder sent through the broker, to the same handlers."""
    batches = bridge.messages(settings.source, settings.channels, settings.symbols, from_json,
                              session, settings.durable)
    async with aclosing(batches):  # on Ctrl+C too: a --durable bot says what it has had
        async for batch in batches:
            if SUBSCRIPTIONS.relay and SUBSCRIPTIONS.relay.clients:
                batch = list(batch)  # read twice: for the clients, and for the handlers
                SUBSCRIPTIONS.relay.send(batch)  # --serve: the broker's messages to the clients
            await deliver(batch, routes, session)
            sys.stdout.flush()


REPLAY_BATCH = 1000  # lines of a --replay file handed over at a time, as a frame: a flush each
PERIOD_STARTS = ("b", "u", "d")  # bars: their timestamp is the start of their minute or day


def open_recording(path: str) -> TextIO:
    """--replay's file of --json lines, open at its start; ConfigError if it cannot be read or
    if no line of it is a message."""
    try:
        with open(path, "rb") as file:
            head = file.read(2)
        # Windows PowerShell 5.1's > writes UTF-16, with a byte order mark; the rest UTF-8.
        encoding = "utf-16" if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
        # errors="replace": an undecodable line is a broken line, skipped, not a traceback;
        # replay() closes the file.
        recording = open(path, encoding=encoding, errors="replace")  # noqa: SIM115
    except OSError as error:
        raise ConfigError(f"--replay: cannot read {path}:\n{error.strerror}") from None
    if not any(from_json_line(line) for line in recording):
        recording.close()
        raise ConfigError(f"--replay: no line of {path} is a message as --json prints\n"
                          "them: it is not a recording. To record one:\n"
                          "python websocket_stream.py --demo --json > session.jsonl")
    recording.seek(0)
    return recording


async def replay(recording: TextIO, speed: float, routes: dict[str, Route],
                 session: Session) -> None:
    """--replay: the messages of a --json recording, in its order, to the same handlers; as fast
    as they take them, or with a speed, at the pace of their timestamps times that. A broken
    line is skipped and counted. Then it waits for the work started with in_background()."""
    log.info("replaying %s%s; Ctrl+C to stop", recording.name, f" at {speed:g}x" if speed else "")
    start: tuple[float, datetime] | None = None  # the first paced message: when, and its timestamp
    read = 0  # lines
    with recording:
        # At a pace, a line at a time: each message waits for its time.
        while lines := list(itertools.islice(recording, 1 if speed else REPLAY_BATCH)):
            messages, broken = from_json_lines(lines)
            if broken and not session.skipped:
                log.warning("line %d is not a --json message: skipped\n"
                            "(any more are counted in the summary)", read + broken[0] + 1)
            session.skipped += len(broken)
            read += len(lines)
            if speed and messages:
                start = await keep_pace(messages[0], speed, start)
            await deliver(messages, routes, session)
            sys.stdout.flush()
            await asyncio.sleep(0)  # so that a Ctrl+C gets in between two batches
    await background_finished()


def from_json_lines(lines: list[str]) -> tuple[list[dict[str, Any]], list[int]]:
    """Lines of --json as Alpaca sent them, and the indexes of the broken ones. Parsed in one
    call, which takes half the time of a call a line (measured); one by one if any is broken."""
    try:
        parsed = json.loads(f"[{','.join(lines)}]")
        if len(parsed) == len(lines):  # else a line held two objects, or half of one
            return [from_json(fields) for fields in parsed], []
    except (ValueError, KeyError, TypeError):
        pass
    messages = [from_json_line(line) for line in lines]
    broken = [index for index, message in enumerate(messages) if message is None]
    return [message for message in messages if message is not None], broken


async def keep_pace(message: dict[str, Any], speed: float,
                    start: tuple[float, datetime] | None) -> tuple[float, datetime] | None:
    """Wait until the message is due, at speed times the pace of the timestamps since start (the
    first paced message: when it was replayed, and its timestamp). Returns start, or this one."""
    when = message.get("t")
    if message["T"] in PERIOD_STARTS or not isinstance(when, datetime) or not when.tzinfo:
        return start
    if start is None:
        return time.monotonic(), when
    await asyncio.sleep(start[0] + (when - start[1]).total_seconds() / speed - time.monotonic())
    return start


async def until_stopped(work: Coroutine[Any, Any, None], settings: Settings, session: Session) -> None:
    session.started = time.monotonic()
    streaming = asyncio.create_task(work)
    beating = asyncio.create_task(heartbeat(session, settings.heartbeat, settings.market_hours)) \
        if settings.heartbeat else None

    def stop() -> None:
        # Cancel, and again every half second until it has ended: before Python 3.12,
        # asyncio.wait_for (in nats-py, and ours around connect()) loses a cancel that comes just
        # as what it waits for completes (CPython issue 86296). Measured, the script exits 0.3
        # to 0.6 s after SIGINT, the longest with the broker away: a second cancel then cuts
        # short a close that is failing anyway.
        if not streaming.done():
            streaming.cancel()
            asyncio.get_running_loop().call_later(0.5, stop)

    try:
        with stop_on_signals(stop):
            await streaming
    except asyncio.CancelledError:
        # Ctrl+C cancelled the stream task, and the cancel reached us through `await streaming`.
        # That is how the user asks us to stop: finish normally.
        pass
    finally:
        if beating:
            beating.cancel()


def fitted(text: str) -> str:
    """text with each line within WIDTH columns, broken at spaces (a long URL stays whole), and
    the lines after the first indented: how the log and the errors of the options print."""
    lines = text.split("\n")
    return "\n".join(textwrap.fill(line, WIDTH, initial_indent="  " if n else "", subsequent_indent="  ",
                                    break_long_words=False, break_on_hyphens=False)
                      for n, line in enumerate(lines))


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, its error messages (its own among them) fitted in WIDTH columns."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, fitted(f"{self.prog}: error: {message}") + "\n")


class LogFormatter(logging.Formatter):
    """2026-11-24 21:35:43Z warning: ..., in UTC like the data, so the two line up; fitted in
    WIDTH columns, lines after a message's first indented (a traceback's too)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = fitted(f"{when} {level}{record.getMessage()}")
        if record.exc_info:
            text += ("\n" + self.formatException(record.exc_info)).replace("\n", "\n  ")
        return text


class JsonLogFormatter(logging.Formatter):
    """--log-format json: one object a line, for log collectors: time, level, message, and the
    fields the message is about (a heartbeat's counts, say)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "message": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def main(argv: list[str] | None = None, handlers: dict[str, Handler] | None = None) -> int:
    """Run the script; the exit status. handlers: instead of HANDLERS (the tests pass their own)."""
    global OUTPUT
    args = parse_args(argv)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(JsonLogFormatter() if args.log_format == "json" else LogFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[stderr])
    # Only our logger goes to debug: websockets' debug lines would show the auth frame.
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    OUTPUT = "none" if args.quiet else "json" if args.json else "text"
    settings = settings_from(args)
    session = Session()
    status, error = EXIT_OK, ""
    try:
        offline = args.source or args.replay is not None  # NATS or a file: no alpaca-py, no keys
        if not offline:
            check_alpaca_py()
        keys = Keys("demo-key-id", "demo-secret-key", "--demo") if args.demo or offline else \
            check_keys(load_keys(Path(__file__).resolve().parent))
        asyncio.run(run(settings, keys, handlers or HANDLERS, session))
    except ConfigError as problem:
        status, error = EXIT_USAGE, str(problem)
    except AlpacaRefused as refusal:
        status, error = EXIT_REFUSED, FATAL_ADVICE[refusal.code].format(source=keys.source)
    except BrokenPipeError:
        # The reader went away (| head). Point stdout at devnull so the interpreter's final
        # flush does not fail again, as the Python docs advise for SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except Exception:
        log.exception("unexpected error: please report it, with this traceback")
        return EXIT_UNEXPECTED
    # No summary for a run that could not start (a NATS server not there, say): nothing to sum up.
    if session.started is not None and (status != EXIT_USAGE or any(session.received.values())):
        log.info("%s", session.summary(), extra={"fields": {
            "received": {kind: count for kind, count in session.received.items() if count},
            "reconnects": session.reconnects,
            **({"published": session.published, "unpublished": session.unpublished}
               if session.published is not None else {}),
            **({"served": session.served, "slow_clients": session.slow_clients}
               if session.served is not None else {}),
            **({"skipped": session.skipped} if session.skipped else {}),
            **({"handler_errors": session.failures} if session.failures else {})}})
    if error:
        log.error("%s", error)  # last, so that it is what the user reads
    return status


if __name__ == "__main__":
    sys.exit(main())
