"""The trading API's side of the local server, enough for order updates (--trade-updates) and
for alpaca-py's TradingStream and TradingClient's reads: the account's orders, its stream of
trade updates at /stream (JSON in binary frames, as Alpaca's paper API sends them), and the
REST reads that recovery needs, GET /v2/orders and GET /v2/orders/{id}. Its own protocol, not
the market data's: no greeting, {"stream": ..., "data": ...} messages, a refusal as an answer.
Orders are made here by the tests (and the demo) with place() and update(); placing them over
REST is the paper broker's."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidState
from websockets.http11 import Request, Response

from alpaca_stream.channels import STATUS_OF_EVENT, SYMBOL
from alpaca_stream.server.market import start_price
from alpaca_stream.server.protocol import Endpoint
from alpaca_stream.times import rfc3339

log = logging.getLogger("local_alpaca_server")

TRADING_PATH = "/stream"
DEMO_SYMBOLS = ("SPY", "TSLA", "AAPL")  # what the demo's made-up orders trade
TRADING = Endpoint("trading", (), SYMBOL)  # what /stream serves: not market data, no channels
ORDERS_PATH = "/v2/orders"
EPOCH, FOREVER = datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc)
CLOSED = ("filled", "canceled", "expired", "rejected", "replaced", "done_for_day")  # an order's end states
# The fields of an order as the REST API gives it, and as an update's "order" holds it.
ORDER_FIELDS = ("id", "client_order_id", "created_at", "updated_at", "submitted_at", "filled_at", "expired_at",
                "canceled_at", "failed_at", "replaced_at", "replaced_by", "replaces", "asset_id", "symbol",
                "asset_class", "notional", "qty", "filled_qty", "filled_avg_price", "order_class", "order_type",
                "type", "side", "time_in_force", "limit_price", "stop_price", "status", "extended_hours", "legs",
                "trail_percent", "trail_price", "hwm")


def now() -> str:
    """A time as the trading API writes it: RFC 3339 with nanoseconds, UTC."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def frame(stream: str, data: dict) -> bytes:
    """A message of the trading stream, as the paper API sends it: JSON text in a binary frame."""
    return json.dumps({"stream": stream, "data": data}).encode()


class Account:
    """The orders of the one account the local server plays, and the trading stream's clients
    that listen to its trade updates."""

    def __init__(self, keys_accepted: Callable[[str, str], bool]) -> None:
        self.keys_accepted = keys_accepted
        self.orders: dict[str, dict] = {}  # by id, in the order they were placed
        self.listening: set[ServerConnection] = set()
        self.updates: list[dict] = []  # every update sent, in order (for tests)
        self.positions: dict[str, float] = {}  # shares (coins) held, by symbol: what fills add up to

    # -- orders ---------------------------------------------------------------------------------

    def place(self, symbol: str, qty: float, side: str = "buy", order_type: str = "market",
              limit_price: float | None = None) -> dict:
        """A new order, accepted: its "new" update sent to the listeners."""
        order: dict = dict.fromkeys(ORDER_FIELDS)
        stamp, order_id = now(), str(uuid.uuid4())
        order.update(id=order_id, client_order_id=str(uuid.uuid4()), created_at=stamp, updated_at=stamp,
                     submitted_at=stamp, asset_id=str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)), symbol=symbol,
                     asset_class="crypto" if "/" in symbol else "us_equity", qty=number(qty), filled_qty="0",
                     order_class="", order_type=order_type, type=order_type, side=side, time_in_force="day",
                     limit_price=None if limit_price is None else number(limit_price), status="new",
                     extended_hours=False)
        self.orders[order_id] = order
        self.update("new", order_id)
        return order

    def update(self, event: str, order_id: str, *, price: float | None = None, qty: float | None = None,
               position_qty: float | None = None, status: str | None = None, send: bool = True) -> dict:
        """An event of an order: its state changed as the event says (a fill adds to filled_qty
        at price), then sent to the listeners, unless send is False (a stream that is down)."""
        order = self.orders[order_id]
        stamp = now()
        order["updated_at"] = stamp
        data: dict = {"event": event, "timestamp": stamp, "order": order}
        if event in ("fill", "partial_fill") and price is not None and qty is not None:
            held = self.positions.get(order["symbol"], 0.0) + (qty if order["side"] == "buy" else -qty)
            self.positions[order["symbol"]] = held if position_qty is None else position_qty
            filled = float(order["filled_qty"]) + qty
            average = float(order["filled_avg_price"] or 0)
            order["filled_avg_price"] = number((average * float(order["filled_qty"]) + price * qty) / filled)
            order["filled_qty"] = number(filled)
            order["status"] = "filled" if filled >= float(order["qty"]) else "partially_filled"
            if order["status"] == "filled":
                order["filled_at"] = stamp
            data.update(execution_id=str(uuid.uuid4()), price=number(price), qty=number(qty),
                        position_qty=number(self.positions[order["symbol"]]))
        else:
            order["status"] = status or STATUS_OF_EVENT.get(event, order["status"])
            if event in ("canceled", "expired"):
                order[f"{event}_at"] = stamp
        data["order"] = dict(order)  # as it was then
        self.updates.append(data)
        if send:
            for client in list(self.listening):
                try:  # in order, without waiting for a slow client
                    client.protocol.send_binary(frame("trade_updates", data))
                    client.send_data()
                except InvalidState:  # it has gone
                    self.listening.discard(client)
        return data

    async def make_up_orders(self, prices: dict[str, float], rng: random.Random, every: float) -> None:
        """--demo: an order of a made-up bot every so often, filled a second later at the price
        of the moment, so that --trade-updates has something to show on the demo."""
        while True:
            await asyncio.sleep(every)
            symbol, qty = rng.choice(DEMO_SYMBOLS), rng.choice((1, 5, 10))
            order = self.place(symbol, qty, side=rng.choice(("buy", "sell")))
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

    # -- the REST reads -------------------------------------------------------------------------

    def rest(self, request: Request) -> Response | None:
        """GET /v2/orders (status open, closed or all; after, until; direction; limit) and GET
        /v2/orders/{id}, with the keys in the headers; None for another path."""
        url = urlsplit(request.path)
        if url.path.rstrip("/") != ORDERS_PATH and not url.path.startswith(ORDERS_PATH + "/"):
            return None
        if not self.keys_accepted(request.headers.get("APCA-API-KEY-ID", ""),
                                  request.headers.get("APCA-API-SECRET-KEY", "")):
            return answer(HTTPStatus.UNAUTHORIZED, {"code": 40110000, "message": "request is not authorized"})
        order_id = url.path[len(ORDERS_PATH) + 1:].strip("/")
        if order_id:
            order = self.orders.get(order_id)
            return answer(HTTPStatus.OK, order) if order else \
                answer(HTTPStatus.NOT_FOUND, {"code": 40410000, "message": "order not found"})
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        status, symbols = query.get("status", "open"), query.get("symbols")
        after, until = moment(query.get("after")), moment(query.get("until"))
        orders = [order for order in self.orders.values()
                  if (status == "all" or (order["status"] in CLOSED) == (status == "closed"))
                  and (after or EPOCH) < rfc3339(order["submitted_at"]) <= (until or FOREVER)
                  and (not symbols or order["symbol"] in symbols.split(","))
                  and query.get("side", order["side"]) == order["side"]]
        if query.get("direction", "desc") == "desc":
            orders.reverse()
        return answer(HTTPStatus.OK, orders[:min(int(query.get("limit", 50)), 500)])


def moment(text: str | None) -> datetime | None:
    return rfc3339(text) if text else None


def number(value: float) -> str:
    """A number as the trading API writes it: a string, without a needless .0."""
    return f"{value:.10f}".rstrip("0").rstrip(".")


def answer(status: HTTPStatus, body: object) -> Response:
    data = json.dumps(body).encode()
    return Response(status.value, status.phrase, Headers({"Content-Type": "application/json", "Connection": "close",
                                                          "Content-Length": str(len(data))}), data)
