"""The local server: Alpaca's stock stream on ws://127.0.0.1:PORT/v2/{feed}, its crypto, options
and news streams beside it, with market data made up here (market.py, crypto.py, options.py,
news.py), and its trading API on a port of its own (trading_url: the paper broker, broker.py),
for --demo, the tests and the benchmark. It is a real peer for alpaca-py, not a mock: it speaks
the protocol (protocol.py), compresses (permessage-deflate), allows one connection per key and
feed (406), refuses sip to a plan without it (409) and cuts a client too slow to keep up (407),
as Alpaca does; and it can misbehave the ways a real network and a real broker do
(protocol.Faults). It listens on 127.0.0.1 only.

Run it alone:  python -m alpaca_stream.server --port 8765 --rate 50
and point the script at it:  python websocket_stream.py --url ws://127.0.0.1:8765/v2/iex
(any keys are accepted, so made-up ones do). A connection lost without a close keeps its place
--hold-dropped seconds (90, as Alpaca; 0 lets a client reconnect at once); --sip serves /v2/sip
and /v1beta1/opra as to a paid plan; --no-compression sends frames as they are (faster, for a benchmark).
On the same port, over plain HTTP, it answers Alpaca's historical data API (history.py): made-up
days of --history-trades trades a symbol (and as many quotes), paged as Alpaca pages them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hashlib
import itertools
import logging
import random
import socket
import sys
import time
from collections import deque

import msgpack
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from alpaca_stream.channels import CRYPTO_PATH, NEWS_PATH, OPTIONS_PATH, TRADING_PATH
from alpaca_stream.server.broker import Broker
from alpaca_stream.server.crypto import CryptoMarket
from alpaca_stream.server.history import DEFAULT_TRADES, History, RateLimit
from alpaca_stream.server.market import CUES, Market
from alpaca_stream.server.news import NewsMarket
from alpaca_stream.server.options import OptionMarket
from alpaca_stream.server.protocol import (
    ConnectionRecord,
    Faults,
    ProtocolServer,
    cut_as_slow,
    encode,
    log,
    send_error,
)
from alpaca_stream.server.trading import TRADING, Account

SEND_BUFFER = 16_384  # bytes the kernel holds for a client, with a rate (Linux doubles it)
MARKETS: dict[str, type[Market]] = {"stocks": Market, "crypto": CryptoMarket, "options": OptionMarket,
                                    "news": NewsMarket}  # by endpoint


class AlpacaStreamServer(ProtocolServer):
    """Alpaca's stock stream on ws://127.0.0.1:PORT/v2/{feed}, and its crypto, options and news
    streams (crypto_url, options_url, news_url), with market data made up here.

    rate: ticks per second (a trade and/or a quote of a random subscribed symbol each), with
    bursts; None sends as fast as the client reads. batch: most ticks in one frame. total: each
    connection stops sending after this many messages. keys: (key, secret) to accept, or None
    to accept any non-empty keys. cue() sends events (a halt, a bar, a correction, ...) at once.
    record: keep every message sent (for tests; a demo may run for days). orders_every: seconds
    between two orders that the account places and fills by itself (--demo). Faults and the
    rest: ProtocolServer.

    As Alpaca: one connection per key and feed (error 406 for a second one); a connection that
    ended without a close frame from the client keeps its place hold_dropped seconds (Alpaca:
    about 90). sip: the keys' plan has the paid feeds, sip and opra (else 409 at auth on /v2/sip
    and /v1beta1/opra). compression: offer permessage-deflate. slow_after: with a rate, a send
    that waits this many seconds for the client to read gets error 407 and the connection
    closed; None never does (as rate=None).

    Alpaca's historical data API on the same port (history_url), plain HTTP: history_trades a
    symbol a day, and as many quotes; history_rate_limit: Alpaca's 429 past so many calls.
    """

    def __init__(self, *, port: int = 0, rate: float | None = 20.0, batch: int = 20,
                 total: int | None = None, keys: tuple[str, str] | None = None,
                 faults: Faults | None = None, auth_timeout: float = 10.0, seed: int | None = None,
                 record: bool = True, hold_dropped: float = 0.0, sip: bool = False, compression: bool = True,
                 slow_after: float | None = 5.0, orders_every: float | None = None,
                 history_trades: int = DEFAULT_TRADES, history_rate_limit: RateLimit | None = None) -> None:
        # Our own pings are off: a client must be able to test its keepalive against us.
        super().__init__(port=port, all_markets=True, faults=faults, auth_timeout=auth_timeout, compression=compression)
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
        self.markets: dict[int, Market] = {}  # the market each sender streams, by id() of the record
        self.account = Account(self.keys_accepted)  # the trading API's side: orders, their updates
        self.broker = Broker(self.account, self.prices, lambda: self.port)  # its REST, on threads of its own
        self.endpoints[TRADING_PATH] = TRADING
        self.orders_every = orders_every  # --demo: seconds between two orders made up (none if None)
        self.making_orders: asyncio.Task | None = None
        self.history = History(self.keys_accepted, trades=history_trades, sip=sip, rate_limit=history_rate_limit)

    async def start(self) -> None:
        await super().start()
        self.account.loop = asyncio.get_running_loop()
        self.broker.start()
        if self.orders_every:
            self.making_orders = asyncio.create_task(self.account.make_up_orders(self.prices, self.rng,
                                                                                self.orders_every,
                                                                                lambda: self.broker.placed > 0))

    async def stop(self) -> None:
        if self.making_orders:
            self.making_orders.cancel()
        await asyncio.to_thread(self.broker.stop)
        await super().stop()

    @property
    def trading_url(self) -> str:
        """The trading API's base URL, the paper broker's: http://127.0.0.1:PORT (its REST
        under /v2/; its stream at /stream, passed to trading_stream_url)."""
        return self.broker.url

    @property
    def trading_stream_url(self) -> str:
        """The trading stream's URL: ws://127.0.0.1:PORT/stream."""
        return self.url_of(TRADING_PATH)

    async def _session(self, ws: ServerConnection) -> None:
        record: ConnectionRecord = ws.record  # type: ignore[attr-defined]
        if record.endpoint is not TRADING:
            await super()._session(ws)
            return
        try:
            await self.account.serve(ws)
        finally:
            record.closed_at = time.monotonic()
            self.log_closed(record)

    @property
    def history_url(self) -> str:
        """The historical data API's base URL, for alpaca-py's url_override: http://127.0.0.1:PORT."""
        return self.url_of("").replace("ws://", "http://", 1)

    async def http(self, request: Request) -> Response | None:
        return await self.history.answer(request)

    @property
    def crypto_url(self) -> str:
        """The URL of the crypto stream: ws://127.0.0.1:PORT/v1beta3/crypto/us."""
        return self.url_of(CRYPTO_PATH)

    @property
    def options_url(self) -> str:
        """The URL of the options stream: ws://127.0.0.1:PORT/v1beta1/indicative."""
        return self.url_of(OPTIONS_PATH.format(feed="indicative"))

    @property
    def news_url(self) -> str:
        """The URL of the news stream: ws://127.0.0.1:PORT/v1beta1/news."""
        return self.url_of(NEWS_PATH)

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
        if record.feed in ("sip", "opra") and not self.sip:  # the paid plan's feeds
            return 409
        if self._place_taken(place):
            return 406
        record.place = place
        return None

    async def subscribed(self, ws: ServerConnection, record: ConnectionRecord,
                         before: dict[str, list[str]]) -> None:
        market = self.markets.get(id(record))
        if market:
            market.subscriptions_changed()
        elif any(record.subscriptions.values()) and not record.faults.silent:
            market = self.markets[id(record)] = MARKETS[record.market](self.rng, self.prices, self.ids,
                                                                       record.subscriptions)
            self.senders[id(record)] = asyncio.create_task(self._send_market_data(ws, record, market))

    async def ended(self, ws: ServerConnection, record: ConnectionRecord) -> None:
        self.markets.pop(id(record), None)
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
        return self.keys_accepted(request.get("key"), request.get("secret"))

    def keys_accepted(self, key: object, secret: object) -> bool:
        """The keys given, or any non-empty ones if none were."""
        if self.keys is not None:
            return (key, secret) == self.keys
        return bool(key) and bool(secret)

    async def _send_market_data(self, ws: ServerConnection, record: ConnectionRecord, market: Market) -> None:
        faults = record.faults
        loop = asyncio.get_running_loop()
        started, ticks, sent = loop.time(), 0, 0
        while self.total is None or sent < self.total:
            messages = [] if self.rate is None else market.clock()
            while self.cued:
                messages += market.cue(self.cued.popleft())
            packed = None
            if self.rate is None:
                frame, packed = await market.replay(self.batch)
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
                room.append(self.total - sent)
            if room and min(room) < len(messages):
                messages, packed = messages[:min(room)], None
            try:
                await asyncio.wait_for(ws.send(packed or encode(messages, record.codec)), self.slow_after)
            except asyncio.TimeoutError:  # the frame is written, and waits for the client to read
                record.slow = True
            if self.record:
                record.messages.extend(messages)
            sent += len(messages)
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


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alpaca_stream.server",
                                     description="A local server speaking Alpaca's stock, crypto, options and "
                                                 "news streams with made-up data, and its trading API as a "
                                                 "paper broker (docs/local-server.md).")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--rate", type=float, default=20.0, help="ticks per second; 0: as fast as the client reads")
    parser.add_argument("--batch", type=int, default=20, help="most ticks per frame")
    parser.add_argument("--total", type=int, help="each connection stops sending after this many messages")
    parser.add_argument("--drop-after", type=int, help="cut every connection after this many messages")
    parser.add_argument("--hold-dropped", type=float, default=90.0,
                        help="seconds a connection lost without a close keeps its place (default 90, as Alpaca)")
    parser.add_argument("--sip", action="store_true", help="the keys' plan has the paid feeds "
                        "(else 409 on /v2/sip and /v1beta1/opra)")
    parser.add_argument("--no-compression", action="store_true", help="no permessage-deflate (faster)")
    parser.add_argument("--history-trades", type=int, default=DEFAULT_TRADES, metavar="N",
                        help=f"the historical API's trades a symbol a day, and as many quotes "
                             f"(default {DEFAULT_TRADES})")
    parser.add_argument("--history-rate-limit", type=int, metavar="CALLS",
                        help="the historical API answers 429 past this many calls a minute (Alpaca's free plan: 200)")
    parser.add_argument("--seed", type=int, help="the same made-up data on every run with the same seed")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the URL, not each connection")
    args = parser.parse_args(argv)
    rate_limit = RateLimit(args.history_rate_limit) if args.history_rate_limit else None
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    server = AlpacaStreamServer(port=args.port, rate=args.rate or None, batch=args.batch, total=args.total,
                                faults=Faults(drop_after=args.drop_after), seed=args.seed, record=False,
                                hold_dropped=args.hold_dropped, sip=args.sip, compression=not args.no_compression,
                                history_trades=args.history_trades,
                                history_rate_limit=rate_limit)
    try:
        await server.start()
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        print(f"port {args.port} is in use: choose another with --port (0 picks a free one)", file=sys.stderr)
        return 2
    print(server.url, flush=True)  # the benchmark reads the port from here
    log.info("trading API (orders, their updates at /stream): %s", server.trading_url)
    try:
        await asyncio.Future()  # serve until interrupted
    finally:
        await server.stop()
    return 0


