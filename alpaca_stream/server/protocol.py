"""The server side of Alpaca's stream protocol, written once: the local server (local.py) and
--serve's relay (relay.py) both speak it. ProtocolServer takes the handshake on /v2/{feed}
(stocks) and, if asked, on /v1beta3/crypto/us and /v1beta1/news (the same session, their own
channels and symbols), greets, takes auth within auth_timeout seconds, answers subscribe and
unsubscribe as Alpaca does, and sends Alpaca's error frames for what a client does wrong:
msgpack frames, or JSON text frames to a client that does not ask for msgpack. Its subclasses
bring the data.

Faults say what a connection does wrong, for the tests; ConnectionRecord keeps what happened
on one, for the tests and the benchmark to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import TypeVar

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from alpaca_stream.channels import (
    ALPACA_CHANNELS,
    CRYPTO_CHANNELS,
    CRYPTO_PATH,
    NEWS_PATH,
    OPTION,
    OPTION_CHANNELS,
    OPTION_FEEDS,
    OPTIONS_PATH,
    PAIR,
    STOCK_PATH_FEEDS,
    SYMBOL,
    market_at,
)

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
    412: "option messages are only available in MsgPack format",
    413: "star subscription is not allowed for option quotes",
    500: "internal error",
}
FEEDS = STOCK_PATH_FEEDS  # the paths /v2/{feed}; any other path gets HTTP 404
# Alpaca's free plan: 30 symbols for trades and quotes; bars and statuses have no such limit.
# Error 405 past that, and the existing subscriptions stay.
FREE_PLAN_SYMBOL_LIMIT = 30
FREE_PLAN_ORDERBOOK_LIMIT = 10  # crypto's order books, by an older page of Alpaca's documentation
CLOSE_TIMEOUT = 2.0  # seconds a slow client has to take its 407 and the close before it is cut


@dataclass(frozen=True)
class Endpoint:
    """What a path serves: its market, the channels a client may subscribe to there, and the
    symbols they take (any other symbol is refused with 400)."""

    market: str  # "stocks", "crypto" or "news"
    channels: tuple[str, ...]
    symbol: re.Pattern[str]
    # Keys of the subscription answer that list the trades' symbols: a stock trade subscription
    # brings the trades' corrections and cancels too, and Alpaca's answer says so.
    with_trades: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # channels that a subscription naming them is refused for: 410
    no_star: tuple[str, ...] = ()  # channels that take no "*": 413
    msgpack_only: bool = False  # a client that does not ask for msgpack gets 412, and is closed


STOCKS = Endpoint("stocks", ALPACA_CHANNELS, SYMBOL, ("corrections", "cancelErrors"))
CRYPTO = Endpoint("crypto", CRYPTO_CHANNELS, PAIR)
OPTIONS = Endpoint("options", OPTION_CHANNELS, re.compile(rf"\*|{OPTION.pattern}"),
                   refused=("bars", "updatedBars", "dailyBars"), no_star=("quotes",), msgpack_only=True)
NEWS = Endpoint("news", ("news",), SYMBOL)  # crypto without the slash, as Alpaca's news names it: BTCUSD


def endpoint_at(path: str) -> Endpoint | None:
    """What Alpaca serves at a path (channels.market_at()); None for any other."""
    return {"stocks": STOCKS, "crypto": CRYPTO, "options": OPTIONS, "news": NEWS}.get(market_at(path) or "")


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
    feed: str = ""  # the path's last part: iex, sip, ... ("us" for crypto)
    endpoint: Endpoint = STOCKS  # what the path serves (a refused path's record keeps the default)
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

    @property
    def market(self) -> str:
        """"stocks", "crypto" or "news": what this connection's path serves."""
        return self.endpoint.market


Served = TypeVar("Served", bound="ProtocolServer")


class ProtocolServer:
    """The server side of Alpaca's stream protocol, whatever the data: the handshake on
    /v2/{feed} (and with all_markets, on /v1beta3/crypto/us, /v1beta1/indicative and opra,
    and /v1beta1/news), the greeting, auth within auth_timeout seconds, subscribe and
    unsubscribe with Alpaca's answer (the channels of the connection's endpoint), and Alpaca's
    error frames for what a client does wrong; msgpack frames, or JSON text frames to a client
    that does not ask for msgpack, as Alpaca does. Use as `async with`, or start()/stop().
    Subclasses bring the data, and decide on auth: AlpacaStreamServer makes it up; Relay
    passes on a feeder's (websocket_stream.py --serve).

    feeds: the stock paths served, /v2/{feed}; all_markets: crypto's, options' and news' too;
    or paths: the paths served, each Alpaca's (endpoint_at()). Any other path gets HTTP 404.
    faults: for every connection; plan() sets faults for the next connections, one each.
    symbol_limit: most symbols for trades and quotes together (error 405 past it, and past 10
    crypto order books); None for no limit.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, feeds: tuple[str, ...] = FEEDS,
                 all_markets: bool = False, faults: Faults | None = None, auth_timeout: float = 10.0,
                 compression: bool = True, ping_interval: float | None = None,
                 symbol_limit: int | None = FREE_PLAN_SYMBOL_LIMIT, paths: Iterable[str] | None = None) -> None:
        self.host = host
        self.port = port
        if paths is None:
            others = (CRYPTO_PATH, *(OPTIONS_PATH.format(feed=feed) for feed in OPTION_FEEDS), NEWS_PATH)
            paths = [f"/v2/{feed}" for feed in feeds] + (list(others) if all_markets else [])
        self.endpoints = {path: endpoint for path in paths if (endpoint := endpoint_at(path))}
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
        """The URL of the first path served: the first stock feed's, unless paths says."""
        return self.url_of(next(iter(self.endpoints)))

    def url_of(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{path}"

    def plan(self, *faults: Faults) -> None:
        """Give the next connections these faults, one each; later ones get self.faults."""
        self.planned.extend(faults)

    async def start(self) -> None:
        self._server = await serve(self._session, self.host, self.port, ping_interval=self.ping_interval,
                                   process_request=self._request,
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

    async def _request(self, connection: ServerConnection, request: Request) -> Response | None:
        """A request that is not a websocket upgrade is answered by http(), if it answers it;
        any other goes on to the handshake."""
        if "Upgrade" not in request.headers:
            answer = await self.http(request)
            if answer is not None:
                return answer
        return self._handshake(connection, request)

    async def http(self, request: Request) -> Response | None:
        """The answer to a plain HTTP request (not an upgrade), or None to take it as a
        handshake (which refuses it): the local server answers Alpaca's historical API here."""
        return None

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        self.attempts.append(time.monotonic())
        faults = self.planned.popleft() if self.planned else self.faults
        codec = "msgpack" if "msgpack" in request.headers.get("Content-Type", "") else "json"
        path = request.path.rstrip("/")
        endpoint = self.endpoints.get(path)
        record = ConnectionRecord(time.monotonic(), faults, feed=path.rsplit("/", 1)[-1], codec=codec,
                                  endpoint=endpoint or STOCKS)
        self.connections.append(record)
        connection.record = record  # type: ignore[attr-defined]
        status = faults.refuse or (None if endpoint else 404)
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
            if record.endpoint.msgpack_only and record.codec != "msgpack":
                await close_with_error(ws, 412)
                return
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
            self.log_closed(record)

    def log_closed(self, record: ConnectionRecord) -> None:
        log.info("connection %d closed after %.1f s", self.connections.index(record) + 1,
                 (record.closed_at or time.monotonic()) - record.opened_at)

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
            endpoint = record.endpoint
            channels, symbol = endpoint.channels, endpoint.symbol
            if any(request.get(channel) for channel in endpoint.refused):
                await send_error(ws, 410)
                return True
            if any("*" in (request.get(channel) or []) for channel in endpoint.no_star):
                await send_error(ws, 413)
                return True
            asked = {channel: request.get(channel) or [] for channel in channels}
            if not all(isinstance(symbols, list) and all(isinstance(s, str) and symbol.fullmatch(s) for s in symbols)
                       for symbols in asked.values()):
                await send_error(ws, 400)
                return True
            current = record.subscriptions
            before = {channel: list(symbols) for channel, symbols in current.items()}
            if action == "subscribe":
                wanted = {c: current.get(c, []) + [s for s in asked[c] if s not in current.get(c, [])]
                          for c in channels}
                if self.symbol_limit is not None and (
                        len(set(wanted.get("trades", []) + wanted.get("quotes", []))) > self.symbol_limit
                        or len(wanted.get("orderbooks", [])) > FREE_PLAN_ORDERBOOK_LIMIT):
                    await send_error(ws, 405)
                    return True
            else:
                wanted = {c: [s for s in current.get(c, []) if s not in asked[c]] for c in channels}
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
    """Alpaca's answer to a subscribe or an unsubscribe: every channel's symbols, now, of the
    connection's endpoint."""
    endpoint: Endpoint = ws.record.endpoint  # type: ignore[attr-defined]
    trades = subscriptions.get("trades", [])
    await send(ws, {"T": "subscription", **{channel: subscriptions.get(channel, []) for channel in endpoint.channels},
                    **dict.fromkeys(endpoint.with_trades, trades)})


async def close_with_error(ws: ServerConnection, code: int) -> None:
    await send_error(ws, code)
    await ws.close()


async def cut_as_slow(ws: ServerConnection) -> None:
    """Error 407 and the close, as far as a client that reads slowly takes them, then cut."""
    with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):  # it may read nothing more
        await asyncio.wait_for(close_with_error(ws, 407), CLOSE_TIMEOUT)
    ws.transport.abort()


