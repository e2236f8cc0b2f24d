"""--chart: a page in the browser with each symbol's 1-minute candles and volume, the bot's fills
marked on them, and its position and realized P&L, served from the script's own event loop
(websockets' server: the page and its script over plain HTTP, the data over a websocket). Each
message is folded in as its handler gets it; the pages get the changes at most every
UPDATES_EVERY seconds, and a page that falls behind is cut: the stream never waits for one."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import hmac
import json
import logging
import secrets
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from alpaca_stream.booking import booked
from alpaca_stream.channels import contract_size
from alpaca_stream.handlers import Handler, Handlers, unhandled
from alpaca_stream.outputs.serve import cannot_listen, is_loopback
from alpaca_stream.records import Record, TradeUpdate

log = logging.getLogger("alpaca_stream")

UPDATES_EVERY = 0.1  # seconds: at most 10 updates a second to each page
CANDLES_KEPT = 5000  # a symbol's latest minutes, for a page opened late: 3.5 days of a pair's
FILLS_KEPT = 1000  # a symbol's latest fills, for a page opened late
PAGE_BUFFER = 4 * 2**20  # bytes of updates waiting for a page before it is cut as too slow
TOO_SLOW = 4000  # the close code a page cut as too slow gets (it opens again, afresh)
REFUSED = 4001  # and one whose token is wrong (it asks for the token)
CLOSE_TIMEOUT = 1.0  # seconds a page has to answer a close
DATA_PATH = "/data"  # the websocket's
FOLDER = Path(__file__).with_name("chart_page")  # the page and TradingView's library (package data)
FILES = {"/": ("index.html", "text/html"),
         "/lightweight-charts.js": ("lightweight-charts.standalone.production.js", "text/javascript"),
         "/charts.js": ("charts.js", "text/javascript"),  # what the report draws alike (report.py)
         "/LICENSE": ("LICENSE", "text/plain"), "/NOTICE": ("NOTICE", "text/plain")}


@dataclass
class Holding:
    """The bot's position in a symbol, from the fills seen: its size (negative: short), its
    average price, and the P&L realized by the fills that reduced it."""

    qty: float = 0.0
    price: float = 0.0
    realized: float = 0.0

    def fill(self, qty: float, price: float, multiplier: int) -> None:
        """qty: bought (negative: sold) at price; multiplier: the contract's size."""
        self.qty, self.price, realized = booked(self.qty, self.price, qty, price)
        self.realized += realized * multiplier


@dataclass
class Symbol:
    """What the pages show of one symbol; changed: the minutes and fills not yet sent."""

    candles: dict[int, list[float]] = field(default_factory=dict)  # minute (UTC, s) -> o, h, l, c, volume
    from_bars: bool = False  # Alpaca's bars came for it: they are its candles, not its trades
    fills: deque[dict] = field(default_factory=lambda: deque(maxlen=FILLS_KEPT))
    holding: Holding = field(default_factory=Holding)
    changed_minutes: set[int] = field(default_factory=set)
    changed_fills: list[dict] = field(default_factory=list)

    def candle(self, minute: int, values: list[float]) -> None:
        if minute not in self.candles and len(self.candles) >= CANDLES_KEPT:
            del self.candles[next(iter(self.candles))]  # the first made: the oldest but for a late trade
        self.candles[minute] = values

    def shown(self, minutes: Iterable[int], fills: Iterable[dict]) -> dict:
        return {"candles": [[minute, *self.candles[minute]] for minute in sorted(minutes) if minute in self.candles],
                "fills": list(fills), "position": self.holding.qty, "realized": round(self.holding.realized, 2)}


@dataclass(eq=False)  # each page is itself, in a set
class Page:
    """One browser's page: the frames waiting for it, up to allowance bytes."""

    ws: ServerConnection
    allowance: int
    frames: deque[str] = field(default_factory=deque)
    waiting: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Chart:
    """--chart on host:port (0: any free one): use as `async with`, and wrap() the handlers.
    Beyond this machine (not loopback), a page must give the token the log prints."""

    def __init__(self, host: str, port: int, symbols: Iterable[str] = (), *, buffer: int = PAGE_BUFFER) -> None:
        self.host, self.port, self.buffer = host, port, buffer
        self.token = "" if is_loopback(host) else secrets.token_urlsafe(12)
        self.symbols = {symbol: Symbol() for symbol in symbols}  # the run's, in its order; others as they come
        self.held_before: dict[str, Holding] = {}  # the account's positions at the start, of symbols not shown yet
        self.pages: set[Page] = set()
        self.server: Server | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.sent_at = 0.0  # the loop's time of the last update
        self.fills_seen = 0
        self.stopping = False
        self.over = False  # the run has ended on its own (a replay, a history): its pages say so
        self.pages_cut = 0
        self.cutting: set[asyncio.Task] = set()  # the closes of pages cut, while they run
        self.opened: weakref.WeakSet[ServerConnection] = weakref.WeakSet()  # the server's, while it keeps them

    @property
    def address(self) -> str:
        """The page's address, to open: this machine's own when served on all its networks
        (0.0.0.0 or ::, which a browser cannot open)."""
        host = self.host
        if everywhere(host):
            host = "::1" if ":" in host else "127.0.0.1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def __aenter__(self) -> Chart:
        try:
            # create_connection: "a wrapper or a subclass", websockets' docs say; its type, a class
            self.server = await serve(self.page, self.host, self.port, process_request=self.http,
                                      compression=None, ping_interval=20.0,
                                      create_connection=cast(type[ServerConnection], self.connection))
        except OSError as error:
            raise cannot_listen("--chart", self.host, self.port, error) from None
        self.port = self.server.sockets[0].getsockname()[1]
        if self.token:
            elsewhere = f", and from other machines at this one's address (served on {self.host})" * everywhere(
                self.host)
            log.info("charting at %s%s: the page asks for this token:\n%s", self.address, elsewhere, self.token)
            log.warning("the page and its data go unencrypted (http://): serve it on a network you trust, "
                        "or through an SSH tunnel")
        else:
            log.info("charting at %s (open it in your browser)", self.address)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """The last changes sent, then each page told that the script stopped (1001)."""
        self.send_changes()
        self.stopping = True
        for page in self.pages:
            page.ready.set()
        if self.server:
            self.server.close(close_connections=False)
            for connection in self.opened:
                if connection.state is State.CONNECTING:  # has asked for nothing: no page to tell
                    connection.transport.abort()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2 * CLOSE_TIMEOUT)
            for connection in self.server.connections:
                connection.transport.abort()
        if self.pages_cut:
            log.info("--chart cut %d page%s as too slow", self.pages_cut, "s" * (self.pages_cut > 1))

    def connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        """Each connection, known from its start: one that has asked for nothing yet (a socket
        a browser opens ahead of need, a page's request on its way) is waited for by websockets'
        server at its close as a page is (2 * CLOSE_TIMEOUT: a silent socket made Ctrl+C take
        2.1 to 2.2 s, measured), so it is cut at the end."""
        made = ServerConnection(*args, **kwargs)
        self.opened.add(made)
        return made

    def wrap(self, handlers: Handlers) -> Handlers:
        """The handlers, the trades, bars and order updates first folded into the chart."""
        folds = {"trade": self.trade, "bar": self.bar, "trade_update": self.update}
        return {**handlers, **{kind: self.folding(fold, handlers.get(kind, unhandled)) for kind, fold in folds.items()}}

    @staticmethod
    def folding(fold: Callable[[Record], None], handler: Handler) -> Handler:
        @functools.wraps(handler)  # its name, for the log when it raises
        def fold_then_handle(record: Record) -> Awaitable[None]:
            fold(record)
            return handler(record)  # its coroutine, which deliver() awaits: no frame of ours around it

        return fold_then_handle

    def of(self, symbol: str) -> Symbol:
        shown = self.symbols.get(symbol)
        if shown is None:
            shown = self.symbols[symbol] = Symbol(holding=self.held_before.pop(unslashed(symbol), Holding()))
        return shown

    def trade(self, trade: Record) -> None:
        # Paid for every trade: written for speed (with a page open, 0.78 us a trade against
        # 1.11 written plainly, measured; the benchmark's chart figure asks 0.8x of printing).
        shown = self.symbols.get(trade["S"]) or self.of(trade["S"])
        if shown.from_bars:
            return
        minute = int(trade["t"].timestamp()) // 60 * 60
        price = trade["p"]
        candle = shown.candles.get(minute)
        if candle is None:
            shown.candle(minute, [price, price, price, price, trade["s"]])
        else:
            if price > candle[1]:
                candle[1] = price
            elif price < candle[2]:
                candle[2] = price
            candle[3] = price
            candle[4] += trade["s"]
        self.changed(shown, minute)

    def bar(self, bar: Record) -> None:
        shown = self.of(bar["S"])
        if not shown.from_bars:  # Alpaca's bars from now on: the candles built from trades go
            shown.from_bars = True
            shown.candles.clear()
        minute = int(bar["t"].timestamp())
        shown.candle(minute, [bar["o"], bar["h"], bar["l"], bar["c"], bar["v"]])
        self.changed(shown, minute)

    def update(self, update: Record) -> None:
        """A fill (or a part of one): marked at its price and time, and booked."""
        if not isinstance(update, TradeUpdate) or update.event not in ("fill", "partial_fill") \
                or update.price is None or not update.qty:
            return
        symbol, side = update.symbol, str(update.order.get("side") or "")
        shown = self.of(symbol)
        seconds = update.timestamp.timestamp()
        self.fills_seen += 1
        fill = {"id": self.fills_seen, "side": side, "price": update.price, "qty": update.qty, "time": seconds,
                "minute": int(seconds) // 60 * 60}
        shown.fills.append(fill)
        shown.holding.fill(update.qty if side == "buy" else -update.qty, update.price,
                           contract_size(symbol))
        if self.pages:
            shown.changed_fills.append(fill)
            self.due()

    def held(self, positions: Iterable[dict]) -> None:
        """The account's positions as the run starts (Alpaca's GET /v2/positions), which the
        fills then change: a symbol's shown once the run has its prices or fills."""
        for position in positions:
            qty, price = float(position["qty"]), float(position["avg_entry_price"])
            signed = -abs(qty) if position.get("side") == "short" else qty
            self.held_before[unslashed(str(position["symbol"]))] = Holding(signed, price)
        for symbol, shown in self.symbols.items():
            shown.holding = self.held_before.pop(unslashed(symbol), shown.holding)

    def changed(self, shown: Symbol, minute: int) -> None:
        if self.pages:  # else nothing to send: a page opened later gets the whole
            shown.changed_minutes.add(minute)
            self.due()

    def due(self) -> None:
        """An update to send: now, or UPDATES_EVERY after the last."""
        if self.timer is None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_at(max(loop.time(), self.sent_at + UPDATES_EVERY), self.send_changes)

    def send_changes(self) -> None:
        """One update to every page: the candles and fills changed since the last."""
        self.timer = None
        changed = {symbol: shown.shown(shown.changed_minutes, shown.changed_fills)
                   for symbol, shown in self.symbols.items() if shown.changed_minutes or shown.changed_fills}
        for shown in self.symbols.values():
            shown.changed_minutes, shown.changed_fills = set(), []
        if not changed or not self.pages:
            return
        self.sent_at = asyncio.get_running_loop().time()
        frame = json.dumps({"type": "update", "symbols": changed}, separators=(",", ":"))
        for page in list(self.pages):
            if page.waiting + len(frame) > page.allowance:
                self.cut(page)
            else:
                queue(page, frame)

    def snapshot(self) -> str:
        """What came before, for a page that opens: every symbol's candles and fills kept, and
        whether the run is over."""
        symbols = {symbol: shown.shown(shown.candles, shown.fills) for symbol, shown in self.symbols.items()}
        return json.dumps({"type": "snapshot", "symbols": symbols, "over": self.over}, separators=(",", ":"))

    def run_over(self) -> None:
        """The run has ended on its own: its last changes, then each page told so."""
        self.send_changes()
        self.over = True
        for page in list(self.pages):
            queue(page, json.dumps({"type": "update", "symbols": {}, "over": True}))

    def cut(self, page: Page) -> None:
        self.pages.discard(page)
        self.pages_cut += 1
        page.frames.clear()
        page.ready.set()  # its writer, if waiting, ends
        log.warning("--chart cut a page that read too slowly;\nthe stream goes on")
        task = asyncio.create_task(closed(page.ws, TOO_SLOW, "too slow"))
        self.cutting.add(task)
        task.add_done_callback(self.cutting.discard)

    async def http(self, connection: ServerConnection, request: Request) -> Response | None:
        """The page and its files over plain HTTP; the data's websocket goes on to page()."""
        path = urlsplit(request.path).path
        if path == DATA_PATH and "Upgrade" in request.headers:
            return None
        if path not in FILES:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        name, kind = FILES[path]
        body = (FOLDER / name).read_bytes()
        return Response(200, "OK", Headers([
            ("Date", email.utils.formatdate(usegmt=True)), ("Content-Type", f"{kind}; charset=utf-8"),
            ("Content-Length", str(len(body))), ("Cache-Control", "no-cache"), ("Connection", "close")]), body)

    async def page(self, ws: ServerConnection) -> None:
        """One page's websocket: the token checked, what came before, then each update."""
        given = parse_qs(urlsplit(ws.request.path if ws.request else "").query).get("token", [""])[0]
        if self.token and not hmac.compare_digest(given.encode(), self.token.encode()):
            await closed(ws, REFUSED, "token refused")
            return
        snapshot = self.snapshot()
        page = Page(ws, allowance=self.buffer + len(snapshot))
        queue(page, snapshot)
        self.pages.add(page)
        try:
            with contextlib.suppress(ConnectionClosed):
                while page in self.pages:
                    while page.frames:
                        frame = page.frames.popleft()
                        page.waiting -= len(frame)
                        await ws.send(frame)
                    if self.stopping:
                        await closed(ws, 1001, "the script stopped")
                        return
                    await page.ready.wait()
                    page.ready.clear()
        finally:
            self.pages.discard(page)


def everywhere(host: str) -> bool:
    """Whether host is all of this machine's networks: 0.0.0.0, or ::."""
    return host in ("0.0.0.0", "::")  # noqa: S104  # what the user asked for, said in the log


def unslashed(symbol: str) -> str:
    """A symbol as Alpaca's positions name it: a pair's without its slash (BTCUSD)."""
    return symbol.replace("/", "")


def queue(page: Page, frame: str) -> None:
    page.frames.append(frame)
    page.waiting += len(frame)
    page.ready.set()


async def closed(ws: ServerConnection, code: int, reason: str) -> None:
    """Close with this code, as far as the page takes it, then cut."""
    with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):
        await asyncio.wait_for(ws.close(code, reason), CLOSE_TIMEOUT)
    ws.transport.abort()
