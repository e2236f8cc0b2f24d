"""A local server that speaks Alpaca's stock market-data stream protocol (v2), for --demo,
the tests and the benchmark.

It is a real peer for alpaca-py, not a mock: msgpack binary frames, the "connected" greeting,
auth within 10 s, the "subscription" answer, trades whose "t" is a msgpack Timestamp, several
trades per frame, and Alpaca's error frames. It can also misbehave the ways a real network and
a real broker do (see Faults). It listens on 127.0.0.1 only. The facts it follows are in
../shared/alpaca-stream-protocol.md of the project.

Run it alone:  python local_alpaca_server.py --port 8765 --rate 50
and point the script at it:  python websocket_stream.py --url ws://127.0.0.1:8765/v2/iex
(any keys are accepted, so made-up ones do).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

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
    500: "internal error",
}
CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
SYMBOL = re.compile(r"\*|[A-Z][A-Z0-9.]{0,9}")
# Alpaca's free plan allows 30 symbols; error 405 past that, existing subscriptions stay.
FREE_PLAN_SYMBOL_LIMIT = 30
# What "*" (every symbol) streams here.
WILDCARD_SYMBOLS = ("SPY", "TSLA", "AAPL", "NVDA", "QQQ", "AMZN")

START_PRICES = {"SPY": 600.0, "TSLA": 350.0, "AAPL": 230.0, "NVDA": 180.0, "QQQ": 520.0,
                "AMZN": 220.0, "MSFT": 510.0, "FAKEPACA": 100.0}
# SPY and QQQ print on tape B (NYSE Arca listings), Nasdaq listings on tape C.
TAPES = {"SPY": "B", "QQQ": "B"}
EXCHANGES = "VVVPPKQQQZNDDDDXBJYAHUM"  # IEX (V), Nasdaq (Q) and the FINRA TRF (D) print most
CONDITIONS = (["@"], ["@"], ["@", "I"], ["@", "F"], ["@", "F", "I"], ["@", "T"])


def start_price(symbol: str) -> float:
    """A plausible price for any symbol, the same every run."""
    return START_PRICES.get(symbol) or random.Random(symbol).uniform(20, 400)


class TradeGenerator:
    """Trades as Alpaca sends them: a random walk per symbol, realistic sizes and ids that only grow."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.prices: dict[str, float] = {}
        self.ids = itertools.count(1)
        self.pool: list[dict] = []
        self.pool_symbols: list[str] = []

    def trades(self, symbols: list[str], count: int, *, fast: bool = False) -> list[dict]:
        """`count` trades of random symbols. fast: reuse a pool of trades made once, with new ids
        and one timestamp a frame; five times cheaper, so a benchmark measures the client."""
        if not fast:
            return [self.trade(self.rng.choice(symbols)) for _ in range(count)]
        if self.pool_symbols != symbols or len(self.pool) <= count:
            self.pool = [self.trade(self.rng.choice(symbols)) for _ in range(max(1000, 2 * count))]
            self.pool_symbols = symbols
        start = self.rng.randrange(len(self.pool) - count)
        now = msgpack.Timestamp.from_unix_nano(time.time_ns())
        return [{**trade, "i": next(self.ids), "t": now} for trade in self.pool[start:start + count]]

    def trade(self, symbol: str) -> dict:
        rng = self.rng
        price = self.prices.get(symbol) or start_price(symbol)
        price = max(0.01, price * math.exp(rng.gauss(0, 0.0002)))
        self.prices[symbol] = price
        # Mostly round lots, many odd lots, now and then a block.
        size = rng.choice((100, 100, 200, 300, 500, 1000, 5000)) if rng.random() < 0.6 else rng.randint(1, 99)
        return {
            "T": "t",
            "S": symbol,
            "i": next(self.ids),
            "x": rng.choice(EXCHANGES),
            "p": round(price, 2),
            "s": size,
            "c": rng.choice(CONDITIONS),
            "t": msgpack.Timestamp.from_unix_nano(time.time_ns()),
            "z": TAPES.get(symbol, "C"),
        }


@dataclass
class Faults:
    """What the server does wrong on one connection. The default does nothing wrong."""

    refuse: bool = False  # answer the websocket handshake with HTTP 503
    auth_error: int | None = None  # answer auth with this error code (402, 406, 409, ...), then close
    drop_after: int | None = None  # after this many trades, cut the TCP connection: no close frame
    dead_after: int | None = None  # after this many trades, read and send nothing: pings go unanswered
    garbage_after: int | None = None  # after this many trades, send a malformed frame, unknown types
    #                                   and a broken trade beside good ones, then carry on
    silent: bool = False  # accept the subscription, then send no trades (a closed market)


@dataclass
class ConnectionRecord:
    """What happened on one connection, for tests and the benchmark to check."""

    opened_at: float  # time.monotonic()
    faults: Faults
    authenticated: bool = False
    symbols: list[str] = field(default_factory=list)
    trade_ids: list[int] = field(default_factory=list)  # every trade sent, in order
    closed_at: float | None = None


class AlpacaStreamServer:
    """Alpaca's stock stream on ws://127.0.0.1:PORT/v2/{feed}. Use as `async with`, or start()/stop().

    rate: trades per second over all subscribed symbols, with bursts; None sends as fast as the
    client reads. batch: most trades in one frame. total: stop sending after this many trades.
    keys: (key, secret) to accept, or None to accept any non-empty keys.
    faults: for every connection; plan() sets faults for the next connections, one each.
    record: keep the id of every trade sent (for tests; a demo may run for days).
    """

    def __init__(self, *, port: int = 0, rate: float | None = 20.0, batch: int = 20,
                 total: int | None = None, keys: tuple[str, str] | None = None,
                 faults: Faults | None = None, auth_timeout: float = 10.0, seed: int | None = None,
                 record: bool = True) -> None:
        self.port = port
        self.rate = rate
        self.batch = batch
        self.total = total
        self.keys = keys
        self.faults = faults or Faults()
        self.auth_timeout = auth_timeout
        self.record = record
        self.generator = TradeGenerator(seed)
        self.planned: deque[Faults] = deque()
        self.attempts: list[float] = []  # time.monotonic() of every handshake, refused ones too
        self.connections: list[ConnectionRecord] = []
        self.trades_sent = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v2/iex"

    def plan(self, *faults: Faults) -> None:
        """Give the next connections these faults, one each; later ones get self.faults."""
        self.planned.extend(faults)

    async def start(self) -> None:
        # Our own pings are off: a client must be able to test its keepalive against us.
        self._server = await serve(self._session, "127.0.0.1", self.port, ping_interval=None,
                                   process_request=self._handshake, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening (new connections are refused) and cut the open ones."""
        if self._server:
            self._server.close(close_connections=False)
            for connection in self._server.connections:
                connection.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> AlpacaStreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        self.attempts.append(time.monotonic())
        faults = self.planned.popleft() if self.planned else self.faults
        record = ConnectionRecord(time.monotonic(), faults)
        self.connections.append(record)
        connection.record = record  # type: ignore[attr-defined]
        if faults.refuse:
            record.closed_at = time.monotonic()
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "refused by the test server\n")
        return None

    async def _session(self, ws: ServerConnection) -> None:
        record: ConnectionRecord = ws.record  # type: ignore[attr-defined]
        sender: asyncio.Task | None = None
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
                if record.symbols and sender is None and not record.faults.silent:
                    sender = asyncio.create_task(self._send_trades(ws, record))
        except ConnectionClosed:
            pass
        finally:
            if sender:
                sender.cancel()
            record.closed_at = time.monotonic()

    async def _answer(self, ws: ServerConnection, record: ConnectionRecord, request: object) -> bool:
        """Answer one client message as Alpaca does. False: the connection is to be closed."""
        action = request.get("action") if isinstance(request, dict) else None
        if action == "auth":
            if record.authenticated:
                await send_error(ws, 403)
                return True
            code = record.faults.auth_error
            if code is None and not self._keys_accepted(request):
                code = 402
            if code is not None:
                await send_error(ws, code)
                await ws.close()
                return False
            record.authenticated = True
            await send(ws, {"T": "success", "msg": "authenticated"})
        elif action in ("subscribe", "unsubscribe"):
            if not record.authenticated:
                await send_error(ws, 401)
                return True
            lists = {channel: request.get(channel) or [] for channel in CHANNELS}
            if not all(isinstance(symbols, list) and all(isinstance(s, str) and SYMBOL.fullmatch(s) for s in symbols)
                       for symbols in lists.values()):
                await send_error(ws, 400)
                return True
            if action == "subscribe":
                wanted = record.symbols + [s for s in lists["trades"] if s not in record.symbols]
                if len(wanted) > FREE_PLAN_SYMBOL_LIMIT:
                    await send_error(ws, 405)
                    return True
            else:
                wanted = [s for s in record.symbols if s not in lists["trades"]]
            record.symbols = wanted
            # Only trades are generated here; the other channels are acknowledged as empty.
            await send(ws, {"T": "subscription", **{channel: [] for channel in CHANNELS},
                            "trades": wanted, "corrections": wanted, "cancelErrors": wanted})
        else:
            await send_error(ws, 400)
        return True

    def _keys_accepted(self, request: dict) -> bool:
        key, secret = request.get("key"), request.get("secret")
        if self.keys is not None:
            return (key, secret) == self.keys
        return bool(key) and bool(secret)

    async def _send_trades(self, ws: ServerConnection, record: ConnectionRecord) -> None:
        faults = record.faults
        rng = self.generator.rng
        loop = asyncio.get_running_loop()
        started, sent = loop.time(), 0
        while self.total is None or self.trades_sent < self.total:
            symbols = [s for s in record.symbols if s != "*"] or list(WILDCARD_SYMBOLS)
            if self.rate is None:
                count = self.batch
            else:
                due = int((loop.time() - started) * self.rate) - sent
                # A burst sends trades early; the average rate stays the same.
                if rng.random() < 0.05:
                    due = max(due, rng.randint(2, self.batch))
                if due <= 0:
                    await asyncio.sleep(min(1 / self.rate, 0.05))
                    continue
                count = min(due, self.batch)
            for limit in (faults.drop_after, faults.dead_after, faults.garbage_after):
                if limit is not None and sent < limit:
                    count = min(count, limit - sent)
            if self.total is not None:
                count = min(count, self.total - self.trades_sent)
            trades = self.generator.trades(symbols, count, fast=self.rate is None)
            await ws.send(msgpack.packb(trades))
            if self.record:
                record.trade_ids.extend(trade["i"] for trade in trades)
            sent += count
            self.trades_sent += count
            if sent == faults.drop_after:
                ws.transport.abort()
                return
            if sent == faults.dead_after:
                ws.transport.pause_reading()  # pings pile up unread, so no pong goes back
                return
            if sent == faults.garbage_after:
                await self._send_garbage(ws, record, symbols[0])

    async def _send_garbage(self, ws: ServerConnection, record: ConnectionRecord, symbol: str) -> None:
        """What a client must survive: a frame that is not msgpack, one that is not a list,
        unknown message types, and a trade without a price between two good trades."""
        good = [self.generator.trade(symbol) for _ in range(2)]
        broken = self.generator.trade(symbol)
        del broken["p"]
        await ws.send(b"\xc1 this is not msgpack")
        await ws.send(msgpack.packb({"T": "t", "not": "a list"}))
        await ws.send(msgpack.packb([{"T": "zz", "S": "SPY"}, "not a message", good[0], broken, good[1]]))
        record.trade_ids.extend((good[0]["i"], good[1]["i"]))
        self.trades_sent += 2


def pack(message: dict) -> bytes:
    return msgpack.packb([message])  # every server frame is an array


def unpack(frame: bytes | str) -> object:
    try:
        return msgpack.unpackb(frame) if isinstance(frame, bytes) else None
    except ValueError:
        return None


async def send(ws: ServerConnection, message: dict) -> None:
    await ws.send(pack(message))


async def send_error(ws: ServerConnection, code: int) -> None:
    await send(ws, {"T": "error", "code": code, "msg": ERRORS[code]})


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local server speaking Alpaca's stock data stream.")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--rate", type=float, default=20.0, help="trades per second; 0: as fast as the client reads")
    parser.add_argument("--batch", type=int, default=20, help="most trades per frame")
    parser.add_argument("--total", type=int, help="stop sending after this many trades")
    parser.add_argument("--drop-after", type=int, help="cut every connection after this many trades")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    server = AlpacaStreamServer(port=args.port, rate=args.rate or None, batch=args.batch, total=args.total,
                                faults=Faults(drop_after=args.drop_after), seed=args.seed, record=False)
    async with server:
        print(server.url, flush=True)  # the benchmark reads the port from here
        await asyncio.Future()  # serve until interrupted


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
