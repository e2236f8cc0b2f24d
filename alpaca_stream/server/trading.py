"""The trading API's side of the local server: the one account it plays, its orders and
positions, and its stream of trade updates at /stream (JSON in binary frames, as Alpaca's paper
API sends them), for --trade-updates and alpaca-py's TradingStream. Its own protocol, not the
market data's: no greeting, {"stream": ..., "data": ...} messages, a refusal as an answer. The
REST API that places and reads orders is the paper broker's (broker.py), on a thread of its own:
the account is changed from both, under its lock, and its updates are sent from the loop."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidState

from alpaca_stream.booking import booked
from alpaca_stream.channels import STATUS_OF_EVENT, SYMBOL, contract_size, market_of_symbol
from alpaca_stream.orders import PAPER_CASH, number
from alpaca_stream.server.market import start_price
from alpaca_stream.server.protocol import Endpoint

log = logging.getLogger("local_alpaca_server")

DEMO_SYMBOLS = ("SPY", "TSLA", "AAPL")  # what the demo's made-up orders trade
TRADING = Endpoint("trading", (), SYMBOL)  # what /stream serves: not market data, no channels
CLOSED = ("filled", "canceled", "expired", "rejected", "replaced", "done_for_day")  # an order's end states
# The fields of an order as the REST API gives it, and as an update's "order" holds it.
ORDER_FIELDS = ("id", "client_order_id", "created_at", "updated_at", "submitted_at", "filled_at", "expired_at",
                "canceled_at", "failed_at", "replaced_at", "replaced_by", "replaces", "asset_id", "symbol",
                "asset_class", "notional", "qty", "filled_qty", "filled_avg_price", "order_class", "order_type",
                "type", "side", "time_in_force", "limit_price", "stop_price", "status", "extended_hours", "legs",
                "trail_percent", "trail_price", "hwm")


def now(later: timedelta = timedelta()) -> str:
    """A time as the trading API writes it, now or later by so much: RFC 3339 with nanoseconds, UTC."""
    return stamp(datetime.now(timezone.utc) + later)


def stamp(when: datetime) -> str:
    """A time as the trading API writes it: RFC 3339 with nanoseconds, UTC."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


ASSET_CLASSES = {"stocks": "us_equity", "crypto": "crypto", "options": "us_option"}


def frame(stream: str, data: dict) -> bytes:
    """A message of the trading stream, as the paper API sends it: JSON text in a binary frame."""
    return json.dumps({"stream": stream, "data": data}).encode()


class Account:
    """The orders, cash and positions of the one account the local server plays, and the
    trading stream's clients that listen to its trade updates. Changed from the server's loop
    and from the broker's threads: under its lock; sent from the loop, in the order made. Its
    times are clock()'s: the wall clock's, or a backtest's, the recording's."""

    def __init__(self, keys_accepted: Callable[[str, str], bool], clock: Callable[[], str] = now,
                 ids: Callable[[], uuid.UUID] = uuid.uuid4) -> None:
        self.keys_accepted, self.clock = keys_accepted, clock
        self.ids = ids  # of orders and their executions: a backtest's are the same every run
        self.lock = threading.RLock()
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once it has started
        self.orders: dict[str, dict] = {}  # by id, in the order they were placed
        self.listening: set[ServerConnection] = set()
        self.updates: list[dict] = []  # every update sent, in order (for tests)
        self.unsent: list[bytes] = []  # updates made, for the loop to send in order
        self.cash = PAPER_CASH  # as a new paper account
        self.positions: dict[str, float] = {}  # shares (coins) held, by symbol: what fills add up to
        self.entry_prices: dict[str, float] = {}  # what a position's shares cost on average, by symbol

    # -- orders ---------------------------------------------------------------------------------

    def place(self, symbol: str, qty: float | None, side: str = "buy", order_type: str = "market",
              limit_price: float | None = None, client_order_id: str | None = None,
              time_in_force: str = "day", stop_price: float | None = None, extended_hours: bool = False,
              notional: float | None = None) -> dict:
        """A new order, accepted: its "new" update sent to the listeners. An order for a
        notional amount (dollars) has no qty, as Alpaca's: it is known as the order fills."""
        order: dict = dict.fromkeys(ORDER_FIELDS)
        placed_at, order_id = self.clock(), str(self.ids())
        order.update(id=order_id, client_order_id=client_order_id or str(self.ids()), created_at=placed_at,
                     updated_at=placed_at, submitted_at=placed_at, asset_id=str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
                     symbol=symbol, asset_class=ASSET_CLASSES[market_of_symbol(symbol)],
                     qty=None if qty is None else number(qty), notional=None if notional is None else number(notional),
                     filled_qty="0", order_class="", order_type=order_type, type=order_type, side=side,
                     time_in_force=time_in_force,
                     limit_price=None if limit_price is None else number(limit_price),
                     stop_price=None if stop_price is None else number(stop_price), status="new",
                     extended_hours=extended_hours)
        with self.lock:
            self.orders[order_id] = order
            self.update("new", order_id)
            return dict(order)

    def update(self, event: str, order_id: str, *, price: float | None = None, qty: float | None = None,
               position_qty: float | None = None, send: bool = True, at: str | None = None) -> dict:
        """An event of an order: its state changed as the event says (its status the event's; a
        fill adds to filled_qty at price, and to the position), then sent to the listeners,
        unless send is False (a stream that is down). at: when it happened, if not now (a day
        order's expiry)."""
        with self.lock:
            order = self.orders[order_id]
            happened_at = at or self.clock()
            order["updated_at"] = happened_at
            # A fill's too: its maker chose "fill" or "partial_fill" (the broker, by fills_up()).
            order["status"] = STATUS_OF_EVENT.get(event, order["status"])
            data: dict = {"event": event, "timestamp": happened_at, "order": order}
            if event in ("fill", "partial_fill") and price is not None and qty is not None:
                self.fill(order, price, qty, position_qty)
                if event == "fill":
                    order["filled_at"] = happened_at
                data.update(execution_id=str(self.ids()), price=number(price), qty=number(qty),
                            position_qty=number(self.positions.get(order["symbol"], 0.0)))
            elif event in ("canceled", "expired"):
                order[f"{event}_at"] = happened_at
            data["order"] = dict(order)  # as it was then
            self.updates.append(data)
            log.info("order %s: %s %s %s (%s of %s filled)", order_id[:8], event, order["side"], order["symbol"],
                     order["filled_qty"], order["qty"] or f"${order['notional']}")
            if send and self.loop is not None:
                self.unsent.append(frame("trade_updates", data))
                if in_loop(self.loop):
                    self.send()
                else:
                    self.loop.call_soon_threadsafe(self.send)
            return data

    def fill(self, order: dict, price: float, qty: float, position_qty: float | None) -> None:
        """What a fill changes: the order's filled quantity and average price, the cash, the
        position and what its shares cost on average."""
        symbol, signed = order["symbol"], qty if order["side"] == "buy" else -qty
        now_held, entry, _ = booked(self.positions.get(symbol, 0.0), self.entry_prices.get(symbol, 0.0), signed, price)
        if position_qty is not None:  # as its maker says (a test's)
            now_held = position_qty
        if now_held:
            self.positions[symbol], self.entry_prices[symbol] = now_held, entry
        else:
            self.positions.pop(symbol, None)
            self.entry_prices.pop(symbol, None)
        self.cash -= price * signed * contract_size(symbol)
        filled = float(order["filled_qty"]) + qty
        average = float(order["filled_avg_price"] or 0)
        order["filled_avg_price"] = number((average * float(order["filled_qty"]) + price * qty) / filled)
        order["filled_qty"] = number(filled)

    def send(self) -> None:
        """The updates not sent yet to every listener, from the loop: in order, without waiting
        for a slow one."""
        with self.lock:
            messages = list(self.unsent)
            self.unsent.clear()
        for client in list(self.listening):
            try:
                for message in messages:
                    client.protocol.send_binary(message)
                client.send_data()
            except InvalidState:  # it has gone
                self.listening.discard(client)

    async def make_up_orders(self, prices: dict[str, float], rng: random.Random, every: float,
                             bot_trades: Callable[[], bool]) -> None:
        """--demo: an order of a made-up bot every so often, filled a second later at the price
        of the moment, so that --trade-updates has something to show on the demo; until a bot
        places its own (bot_trades() is true), whose fills are then all it sees. Of the stocks
        the server makes prices of (the run's: --chart has their candles), else of DEMO_SYMBOLS."""
        while True:
            await asyncio.sleep(every)
            if bot_trades():
                return
            streamed = [symbol for symbol in list(prices) if market_of_symbol(symbol) == "stocks"]
            symbol, qty = rng.choice(streamed or DEMO_SYMBOLS), rng.choice((5, 10))  # not 1: the README's bot buys 1
            # A cash account: it sells only what it holds.
            side = rng.choice(("buy", "sell")) if self.positions.get(symbol, 0) >= qty else "buy"
            order = self.place(symbol, qty, side=side)
            await asyncio.sleep(1.0)
            self.update("fill", order["id"], price=round(prices.get(symbol) or start_price(symbol), 2), qty=qty)

    # -- the stream -----------------------------------------------------------------------------

    async def serve(self, ws: ServerConnection) -> None:
        """One client of /stream: auth (the current form, or the older "authenticate"), then
        listen; answered as Alpaca answers them."""
        authorized = False
        try:
            async for message in ws:
                try:
                    request = json.loads(message)
                except ValueError:
                    continue
                action = request.get("action") if isinstance(request, dict) else None
                data = request.get("data") or {} if isinstance(request, dict) else {}
                if action in ("auth", "authenticate"):
                    key = request.get("key") or data.get("key_id") or ""
                    secret = request.get("secret") or data.get("secret_key") or ""
                    authorized = self.keys_accepted(str(key), str(secret))
                    status = "authorized" if authorized else "unauthorized"
                    await ws.send(frame("authorization", {"status": status, "action": "authenticate"}))
                    if not authorized:
                        log.info("trading stream: keys refused")
                        return
                elif action == "listen":
                    if not authorized:
                        await ws.send(frame("authorization", {"status": "unauthorized", "action": "listen"}))
                        continue
                    streams = [name for name in data.get("streams") or [] if name == "trade_updates"]
                    (self.listening.add if streams else self.listening.discard)(ws)
                    await ws.send(frame("listening", {"streams": streams}))
                else:  # Alpaca's fatal error, then it closes
                    await ws.send(json.dumps({"action": "error", "data": {"error_message": "invalid action"}}).encode())
                    return
        except ConnectionClosed:
            pass
        finally:
            self.listening.discard(ws)


def in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this is loop's own thread, in which it runs."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False

