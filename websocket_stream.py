#!/usr/bin/env python3
"""Stream live trades from Alpaca: push instead of polling (lesson 28, "faster than HTTP").

Every trade is printed to stdout the moment it arrives; messages go to stderr. Ctrl+C stops.

    python websocket_stream.py                  # SPY and TSLA on the free IEX feed
    python websocket_stream.py AAPL NVDA --json # one JSON object per trade
    python websocket_stream.py --demo           # no keys, no network: a local server's demo data

exit statuses:
  0  stopped by you (Ctrl+C, SIGTERM) or by the reader (| head)
  1  something unexpected (a bug: please report it)
  2  configuration or usage error: missing or placeholder keys, bad arguments
  3  refused by Alpaca: wrong keys (402), symbol limit (405), feed not in your plan (409, 410)
  130  forced by a second Ctrl+C
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import runpy
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import msgpack
import websockets
from alpaca.common.utils import reconnect_delay
from alpaca.data.live import StockDataStream
from dotenv import dotenv_values

log = logging.getLogger("websocket_stream")

ALPACA_STREAM = "wss://stream.data.alpaca.markets/v2"
FEEDS = ("iex", "sip", "delayed_sip")
DEFAULT_SYMBOLS = ("SPY", "TSLA")
TEST_STREAM_SYMBOL = "FAKEPACA"  # the only symbol on Alpaca's always-on test stream
SYMBOL = re.compile(r"\*|[A-Z][A-Z0-9.]{0,9}")  # "*" is every symbol; BRK.B has a class suffix

# alpaca-py waits 180 s for a pong; a dead connection should be noticed in 20 s at most.
PING_INTERVAL = 10.0
PING_TIMEOUT = 10.0
# Bounds the close handshake (the websockets client may take 5x this): Ctrl+C must exit within 1 s.
CLOSE_TIMEOUT = 0.15
CONNECT_TIMEOUT = 15.0  # connect, greeting, auth and subscribe; Alpaca itself allows 10 s for auth
QUIET_AFTER = 60.0  # seconds connected without a trade before saying the market may be closed
RETRY_MIN, RETRY_MAX = 1.0, 30.0  # reconnect backoff, seconds

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_REFUSED, EXIT_FORCED = 0, 1, 2, 3, 130


# 1. Configuration: the keys ----------------------------------------------------------------

KEY_ENV, SECRET_ENV = "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"
PLACEHOLDERS = {"your_api_key_here", "your_secret_key_here"}  # what config.example.py ships
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9+/=_.-]{10,}")  # anything else plainly is not a key
HOW_TO_SET_KEYS = f"""\
Put your Alpaca API keys in config.py:
    cp config.example.py config.py        (Windows: copy config.example.py config.py)
and paste them in, or set {KEY_ENV} and {SECRET_ENV} in the environment or in a .env file.
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
        except Exception as error:
            line = error.lineno if isinstance(error, SyntaxError) else traceback.extract_tb(error.__traceback__)[-1].lineno
            # Not str(error) for these: a key pasted without quotes would be printed.
            hint = 'keys go in quotes, API_KEY = "..."' if isinstance(error, (NameError, SyntaxError)) else error
            raise ConfigError(f"config.py has an error on line {line} ({type(error).__name__}): {hint}") from None
        return Keys(config.get("API_KEY", ""), config.get("SECRET_KEY", ""), "config.py")
    if os.environ.get(KEY_ENV) or os.environ.get(SECRET_ENV):
        return Keys(os.environ.get(KEY_ENV, ""), os.environ.get(SECRET_ENV, ""), "the environment")
    dotenv = dotenv_values(folder / ".env")
    return Keys(dotenv.get(KEY_ENV) or "", dotenv.get(SECRET_ENV) or "", ".env")


def check_keys(keys: Keys) -> Keys:
    """Refuse, before any connection, keys that cannot work; return them without stray spaces."""
    names = ("API_KEY", "SECRET_KEY") if keys.source == "config.py" else (KEY_ENV, SECRET_ENV)
    values = [str(value or "").strip() for value in (keys.key, keys.secret)]
    if keys.source == ".env" and not any(values):
        raise ConfigError(f"No Alpaca API keys found: no config.py, and no {KEY_ENV} in the environment or .env.\n"
                          f"{HOW_TO_SET_KEYS}")
    for name, value in zip(names, values):
        if not value:
            problem = "is missing or empty"
        elif value in PLACEHOLDERS:
            problem = f"is still the placeholder {value!r}"
        elif not KEY_CHARACTERS.fullmatch(value):
            problem = "does not look like a key (too short, or with spaces or quotes)"
        else:
            continue
        raise ConfigError(f"{name} from {keys.source} {problem}.\n{HOW_TO_SET_KEYS}")
    return Keys(*values, keys.source)


# 2. A trade, and how it is printed ----------------------------------------------------------

class Trade(NamedTuple):
    """One trade. A tuple, not alpaca-py's pydantic Trade: building that model costs more than
    printing the line, and this script must keep up with a busy market (see the benchmark)."""

    symbol: str
    price: float
    size: int
    timestamp: datetime  # when the exchange printed it, UTC
    exchange: str
    conditions: list[str]
    id: int
    tape: str


def parse_trade(message: dict) -> Trade:
    """A trade as Alpaca sends it ("T": "t"); KeyError, TypeError or ValueError if it is broken."""
    timestamp = message["t"]
    if not isinstance(timestamp, datetime):
        raise TypeError(f"timestamp is not a msgpack Timestamp: {timestamp!r}")
    return Trade(message["S"], float(message["p"]), message["s"], timestamp,
                 message["x"], message.get("c", []), message["i"], message.get("z", ""))


def format_text(trade: Trade) -> str:
    decimals = 2 if trade.price >= 1 else 4  # sub-dollar stocks trade in hundredths of a cent
    return (f"{trade.timestamp.isoformat(' ', 'microseconds')}  {trade.symbol:<8} {trade.size:>7} @ "
            f"{trade.price:>10.{decimals}f}  {trade.exchange}")


def format_json(trade: Trade) -> str:
    return json.dumps({"symbol": trade.symbol, "price": trade.price, "size": trade.size,
                       "timestamp": trade.timestamp.isoformat(timespec="microseconds"),
                       "exchange": trade.exchange, "conditions": trade.conditions,
                       "id": trade.id, "tape": trade.tape})


# 3. The handler: your trading logic goes here -----------------------------------------------

TradeHandler = Callable[[Trade], Awaitable[None]]


def make_trade_printer(as_json: bool) -> TradeHandler:
    format_trade = format_json if as_json else format_text

    async def on_trade(trade: Trade) -> None:
        # Called for every trade, in the order Alpaca sent them. Replace or extend the print
        # with your own logic. Keep it quick: trades wait while it runs.
        print(format_trade(trade))

    return on_trade


# 4. The stream, and the reconnect wrapper around it -----------------------------------------

@dataclass
class Settings:
    url: str
    symbols: list[str]
    as_json: bool = False
    feed_label: str = ""  # for the banner: "feed iex", "demo data", ...


@dataclass
class Session:
    """What the summary at exit reports."""

    started: float = field(default_factory=time.monotonic)
    trades: Counter = field(default_factory=Counter)
    reconnects: int = 0
    last_trade: float = field(default_factory=time.monotonic)


class AlpacaRefused(Exception):
    """Alpaca answered with an error frame (code and message as in its documentation)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code


# Refusals that retrying cannot cure (Alpaca's Go SDK gives up on these too): exit status 3.
FATAL_ADVICE = {
    402: "Alpaca rejected the API keys from {source} (402 auth failed). Check both are copied in "
         "full and belong together: paper and live accounts have different keys.",
    405: "Alpaca refused the subscription (405 symbol limit exceeded): the free plan allows 30 symbols.",
    409: "Your Alpaca plan does not include this feed (409 insufficient subscription): "
         "the free plan has IEX, try --feed iex.",
    410: "Alpaca refused the subscription (410 invalid subscribe action for this feed).",
}
RETRY_ADVICE = {
    406: "another connection with these keys is open (usually one is allowed per account, shared "
         "by every app using the keys; a dropped one is held for about 90 s)",
    407: "the server says we read too slowly",
}
# alpaca-py's auth raises ValueError(message) and drops the code; these give it back.
CODES_BY_MESSAGE = {"auth failed": 402, "auth timeout": 404, "symbol limit exceeded": 405,
                    "connection limit exceeded": 406, "insufficient subscription": 409,
                    "invalid subscribe action for this feed": 410}


def build_stream(url: str, keys: Keys, symbols: list[str], on_trade: TradeHandler) -> StockDataStream:
    # raw_data: the trades arrive as dicts, and parse_trade makes the light Trade above.
    stream = StockDataStream(keys.key, keys.secret, raw_data=True, url_override=url, websocket_params={
        "ping_interval": PING_INTERVAL, "ping_timeout": PING_TIMEOUT,
        "close_timeout": CLOSE_TIMEOUT, "max_queue": 1024})
    # alpaca-py builds its subscribe message from the handlers it holds. Its own run loop is
    # replaced by stream_once() below, which calls on_trade with a parsed Trade.
    stream.subscribe_trades(on_trade, *symbols)
    return stream


async def connect(stream: StockDataStream) -> None:
    """Open the websocket, authenticate, subscribe: alpaca-py's own steps, with the error code kept."""
    try:
        await stream._start_ws()  # connect, read the greeting, send the keys
    except ValueError as error:
        code = CODES_BY_MESSAGE.get(str(error))
        if code is None:
            raise
        raise AlpacaRefused(code, str(error)) from None
    await stream._send_subscribe_msg()


async def stream_once(stream: StockDataStream, settings: Settings, on_trade: TradeHandler,
                      session: Session) -> None:
    """One connection: deliver its trades until it ends. Returns when the server closes it.

    This replaces alpaca-py's _consume(), which polls for a stop every 5 s (so Ctrl+C took
    10 s), logs error frames instead of acting on them, and drops the rest of a frame when a
    handler raises. Pinned to alpaca-py 0.44 in requirements.txt, as it uses these internals.
    """
    await asyncio.wait_for(connect(stream), CONNECT_TIMEOUT)
    quiet_watch = asyncio.create_task(warn_when_quiet(session, connected_at=time.monotonic()))
    try:
        async for frame in stream._ws:
            try:
                messages = msgpack.unpackb(frame, timestamp=3)  # 3: timestamps as UTC datetimes
            except ValueError:  # msgpack's errors are ValueErrors
                log.debug("skipped a frame that is not msgpack: %r", frame[:80])
                continue
            if not isinstance(messages, list):
                log.debug("skipped a frame that is not a list: %r", messages)
                continue
            for message in messages:
                kind = message.get("T") if isinstance(message, dict) else None
                if kind == "t":
                    await deliver(message, on_trade, session)
                elif kind == "subscription":
                    log.info("subscribed to trades: %s (%s); Ctrl+C to stop",
                             ", ".join(message.get("trades", [])), settings.feed_label)
                elif kind == "error":
                    raise AlpacaRefused(message.get("code"), str(message.get("msg")))
                else:
                    log.debug("skipped a message of unknown type: %r", message)
            sys.stdout.flush()  # once a frame: piped output stays real time without a flush a line
    finally:
        quiet_watch.cancel()


async def deliver(message: dict, on_trade: TradeHandler, session: Session) -> None:
    """Hand one trade to the handler. A broken trade, or a handler that raises, costs that
    trade only: the rest of the frame and the stream carry on."""
    try:
        trade = parse_trade(message)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        log.debug("skipped a trade that does not parse (%r): %r", error, message)
        return
    try:
        await on_trade(trade)
    except BrokenPipeError:
        raise  # the reader has gone: main() ends quietly
    except Exception as error:
        log.warning("the trade handler raised %s: %s (%s trade %s skipped)", type(error).__name__, error,
                    trade.symbol, trade.id, exc_info=log.isEnabledFor(logging.DEBUG))
        return
    session.trades[trade.symbol] += 1
    session.last_trade = time.monotonic()


async def warn_when_quiet(session: Session, connected_at: float) -> None:
    """One line per quiet spell while connected: no trades is normal when the market is closed."""
    warned_for = None  # the last_trade of the spell already warned about
    while True:
        idle = time.monotonic() - max(session.last_trade, connected_at)
        if idle < QUIET_AFTER:
            await asyncio.sleep(QUIET_AFTER - idle)
        elif warned_for == session.last_trade:
            await asyncio.sleep(1.0)  # until a trade starts the next spell
        else:
            log.warning("connected, but no trade for %.0f s: the market may be closed (regular hours "
                        "9:30-16:00 New York time); --test-stream shows data any time", idle)
            warned_for = session.last_trade


# Faults of the network or the server: reconnect. Anything else is a bug and ends the run.
CONNECTION_FAULTS = (OSError, asyncio.TimeoutError, websockets.WebSocketException, ValueError, LookupError)


async def stream_with_reconnect(stream: StockDataStream, settings: Settings, on_trade: TradeHandler,
                                session: Session) -> None:
    """Run stream_once() forever: reconnect and resubscribe after every fault, with exponential
    backoff and jitter (first retry within 1 s, at most 30 s), starting over once trades flow."""
    failures = 0
    while True:
        trades_before = sum(session.trades.values())
        try:
            await stream_once(stream, settings, on_trade, session)
            reason = "the server closed the connection"
        except BrokenPipeError:
            raise  # an OSError, but of stdout, not of the network
        except AlpacaRefused as refusal:
            if refusal.code in FATAL_ADVICE:
                raise
            reason = f"Alpaca refused: {refusal}" + (f": {RETRY_ADVICE[refusal.code]}" if refusal.code in RETRY_ADVICE else "")
        except CONNECTION_FAULTS as error:
            reason = describe(error)
        finally:
            await stream.close()
        if sum(session.trades.values()) > trades_before:
            failures = 0
        failures += 1
        delay = reconnect_delay(failures, RETRY_MIN, RETRY_MAX)
        log.warning("%s; reconnecting in %.1f s (attempt %d)", reason, delay, failures)
        await asyncio.sleep(delay)
        session.reconnects += 1


def describe(error: BaseException) -> str:
    if isinstance(error, websockets.ConnectionClosed):
        close_frame = error.rcvd or error.sent  # sent: we closed it, e.g. "keepalive ping timeout"
        return "connection lost" + (f" ({close_frame.reason})" if close_frame and close_frame.reason else "")
    if isinstance(error, asyncio.TimeoutError):
        return "no answer from the server in time"
    return f"cannot connect: {error}" if isinstance(error, OSError) else f"{type(error).__name__}: {error}"


# 5. Main: arguments, signals, exit statuses --------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Stream live trades from Alpaca: one line per trade on stdout, Ctrl+C to stop.",
        epilog=__doc__[__doc__.index("exit statuses"):], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("symbols", nargs="*", metavar="SYMBOL", help="symbols to stream (default: SPY TSLA)")
    parser.add_argument("--feed", choices=FEEDS, default="iex", help="iex (free plan, default), sip (paid) or delayed_sip")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--test-stream", action="store_true",
                       help=f"Alpaca's always-on test stream ({TEST_STREAM_SYMBOL}): data even when the market is closed")
    where.add_argument("--url", help="another endpoint (a proxy, a local server), ws:// or wss://")
    where.add_argument("--demo", action="store_true", help="no keys, no network: demo data from a local server")
    parser.add_argument("--json", action="store_true", help="one JSON object per trade per line")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    args.symbols = list(dict.fromkeys(symbol.upper() for symbol in args.symbols))
    bad = [symbol for symbol in args.symbols if not SYMBOL.fullmatch(symbol)]
    if bad:
        parser.error(f"not a stock symbol: {', '.join(bad)}")
    if args.url and not re.match(r"wss?://", args.url):
        parser.error("--url must start with ws:// or wss://")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    if args.test_stream:
        return Settings(f"{ALPACA_STREAM}/test", args.symbols or [TEST_STREAM_SYMBOL], args.json, "Alpaca's test stream")
    symbols = args.symbols or list(DEFAULT_SYMBOLS)
    if args.demo:
        return Settings("", symbols, args.json, "demo data from a local server, not the market")
    if args.url:
        return Settings(args.url, symbols, args.json, args.url)
    return Settings(f"{ALPACA_STREAM}/{args.feed}", symbols, args.json, f"feed {args.feed}")


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
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
        loop.call_soon_threadsafe(stop)

    originals = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield
    finally:
        for sig, original in originals.items():
            signal.signal(sig, original)


async def run(settings: Settings, keys: Keys, demo: bool) -> None:
    if demo:
        # Imported here so that this script, with a config.py, still works when copied alone.
        from local_alpaca_server import AlpacaStreamServer
        async with AlpacaStreamServer(rate=8, batch=6, record=False) as server:
            settings.url = server.url
            return await stream_until_stopped(settings, keys)
    await stream_until_stopped(settings, keys)


async def stream_until_stopped(settings: Settings, keys: Keys) -> None:
    session = Session()
    on_trade = make_trade_printer(settings.as_json)
    stream = build_stream(settings.url, keys, settings.symbols, on_trade)
    log.info("connecting to %s", settings.url)
    streaming = asyncio.create_task(stream_with_reconnect(stream, settings, on_trade, session))
    try:
        with stop_on_signals(streaming.cancel):
            await streaming
    except asyncio.CancelledError:
        # Ctrl+C cancelled the stream task, and the cancel reached us through `await streaming`.
        # That is how the user asks us to stop: finish normally.
        pass
    finally:
        counts = ", ".join(f"{symbol} {count}" for symbol, count in session.trades.most_common())
        log.info("received %d trades in %.1f s%s; reconnects: %d", sum(session.trades.values()),
                 time.monotonic() - session.started, f" ({counts})" if counts else "", session.reconnects)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
    # Only our logger goes to debug: websockets' debug lines would show the auth frame.
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    settings = settings_from(args)
    try:
        keys = Keys("demo-key-id", "demo-secret-key", "--demo") if args.demo else check_keys(
            load_keys(Path(__file__).resolve().parent))
        asyncio.run(run(settings, keys, args.demo))
    except ConfigError as error:
        log.error("%s", error)
        return EXIT_USAGE
    except AlpacaRefused as refusal:
        log.error(FATAL_ADVICE[refusal.code].format(source=keys.source))
        return EXIT_REFUSED
    except BrokenPipeError:
        # The reader went away (| head). Point stdout at devnull so the interpreter's final
        # flush does not fail again, as the Python docs advise for SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception:
        log.exception("unexpected error: please report it, with this traceback")
        return EXIT_UNEXPECTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
