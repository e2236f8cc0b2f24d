"""The paper broker of the local server: the trading API's REST as alpaca-py's TradingClient uses
it (place, list, get and cancel orders; the account; its positions, and closing one; the clock,
always open, as the made-up market is), for --demo and the tests. It takes any symbol.
Market orders fill at the made-up market's price of the moment, limit orders once that price
crosses them, more than PART shares in parts; each change goes out on /stream as a trade update.

It runs on threads of its own, not in the server's event loop: under --demo that loop is the
script's, and a handler that calls the blocking TradingClient.submit_order directly (alpaca-py's
REST client has no timeout) holds it, so a broker in it could never answer. Its URL is the
trading API's base: a websocket handshake for /stream there is passed through to the stream."""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from alpaca_stream.channels import TRADING_PATH, contract_size, market_of_symbol
from alpaca_stream.orders import number
from alpaca_stream.server import crypto, market
from alpaca_stream.server.fills import fills_up, left
from alpaca_stream.server.trading import ASSET_CLASSES, CLOSED, Account, now
from alpaca_stream.times import rfc3339

log = logging.getLogger("local_alpaca_server")

PART = 100  # shares (or coins) an order fills at most at once: a larger one fills in parts
MATCH_EVERY = 0.2  # seconds between two looks at the open orders
EPOCH, FOREVER = datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc)


class Refused(Exception):
    """A request the trading API refuses: its HTTP status, Alpaca's code and message."""

    def __init__(self, status: HTTPStatus, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.body = status, {"code": code, "message": message}


def not_found(what: str) -> Refused:
    return Refused(HTTPStatus.NOT_FOUND, 40410000, f"{what} not found")


def unprocessable(message: str) -> Refused:
    return Refused(HTTPStatus.UNPROCESSABLE_ENTITY, 42210000, message)


class Broker:
    """The REST API of the account, at http://127.0.0.1:PORT (url), with the market's prices
    (symbol -> price, as the server's markets leave them). stream_port: the port of the
    websocket server that serves /stream. start() and stop() keep the port."""

    matches_by_itself = True  # a thread looks at the open orders every MATCH_EVERY seconds
    order_types: tuple[str, ...] = ("market", "limit")
    called = "the local broker"  # in its refusals

    def __init__(self, account: Account, prices: Mapping[str, float], stream_port: Callable[[], int]) -> None:
        self.account, self.prices, self.stream_port = account, prices, stream_port
        self.port = 0
        # The open orders placed here, in that order: the broker fills them (update() drops one it closes).
        self.matched: dict[str, None] = {}
        self.placed = 0  # orders placed here
        self.cash_at_start = account.cash
        self.http: ThreadingHTTPServer | None = None
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.http = ThreadingHTTPServer(("127.0.0.1", self.port), BrokerRequest)
        self.http.broker = self  # type: ignore[attr-defined]
        self.port = self.http.server_address[1]
        self.stopping.clear()
        self.threads = [threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True)]
        if self.matches_by_itself:
            self.threads.append(threading.Thread(target=self.keep_matching, daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        if self.http is None:
            return
        self.stopping.set()
        self.http.shutdown()
        self.http.server_close()
        for thread in self.threads:
            thread.join()
        self.http = None

    # -- what the requests do -------------------------------------------------------------------

    def answering(self) -> None:
        """Before a request is answered, on its thread (a backtest's catches up with its feed)."""

    def place(self, request: Any) -> dict:
        """POST /v2/orders: an order for a quantity or a notional amount (dollars), of the types
        this broker takes, checked as Alpaca checks it (check_fraction(); buying power, shares
        held to sell)."""
        if not isinstance(request, dict) or not isinstance(request.get("symbol"), str) or not request["symbol"]:
            raise unprocessable("symbol is required")
        order_type, side = request.get("type", "market"), request.get("side")
        if order_type not in self.order_types:
            raise unprocessable(f"{self.called} takes {listed(self.order_types)} orders, not {order_type}")
        if request.get("order_class", "simple") not in ("simple", ""):
            raise unprocessable(f"{self.called} takes simple orders, not {request['order_class']}")
        if side not in ("buy", "sell"):
            raise unprocessable("side must be buy or sell")
        if (request.get("qty") is None) == (request.get("notional") is None):
            raise unprocessable("qty or notional is required, not both")
        by_dollars = request.get("qty") is None  # a notional amount
        amount = positive(request, "notional" if by_dollars else "qty")
        limit_price = positive(request, "limit_price") if order_type in ("limit", "stop_limit") else None
        stop_price = positive(request, "stop_price") if order_type in ("stop", "stop_limit") else None
        time_in_force, extended_hours = str(request.get("time_in_force", "day")), bool(request.get("extended_hours"))
        self.check_terms(order_type, time_in_force, extended_hours)
        symbol = request["symbol"]
        fractional = by_dollars or not amount.is_integer()
        if fractional:
            check_fraction(symbol, order_type, time_in_force, by_dollars)
        with self.account.lock:
            # The price of the moment, for every order: a backtest refuses a symbol it has none of
            # yet. A notional order's shares are known as it fills: checked at this price.
            price = self.price(symbol)
            shares = amount / price if by_dollars else amount
            self.check_funds(symbol, side, shares, limit_price or stop_price or price)
            if fractional and side == "sell" \
                    and shares > self.account.positions.get(symbol, 0.0) - self.selling(symbol):
                raise unprocessable("fractional orders cannot be sold short")
            order = self.account.place(symbol, None if by_dollars else amount, side, order_type, limit_price,
                                       client_order_id=request.get("client_order_id"), time_in_force=time_in_force,
                                       stop_price=stop_price, extended_hours=extended_hours,
                                       notional=amount if by_dollars else None)
            self.matched[order["id"]] = None
            self.placed += 1
            self.accepted(order)
        return order

    def check_terms(self, order_type: str, time_in_force: str, extended_hours: bool) -> None:
        """Refuses the terms of an order this broker cannot keep (none here: it fills at once)."""

    def check_funds(self, symbol: str, side: str, qty: float, price: float) -> None:
        """Refuses an order the account cannot pay for, as Alpaca does, by what GET /v2/account
        says of its margin (margin()): a sale of more than it holds (and has not offered
        already), unless it may sell short and the symbol is a stock (a pair or an option,
        never); what the order opens or adds to a position, beyond its buying power (a pair's
        or an option's: its non-marginable buying power). What it closes of one needs none."""
        funds, stock = self.whole_account(), market_of_symbol(symbol) == "stocks"
        held = self.account.positions.get(symbol, 0.0)
        if side == "sell":
            held -= self.selling(symbol)
            if qty > held and not (stock and funds["shorting_enabled"]):
                raise short_of(qty, held)
        opening = qty - max(held if side == "sell" else -held, 0.0)
        power = float(funds["buying_power" if stock else "non_marginable_buying_power"])
        if opening > 0 and opening * price * contract_size(symbol) > power:
            raise Refused(HTTPStatus.FORBIDDEN, 40310000, "insufficient buying power")

    def accepted(self, order: dict) -> None:
        """What the broker notes of an order it has just placed (nothing here)."""

    def selling(self, symbol: str) -> float:
        """What open sell orders of the symbol are still to sell (a notional one's at the price now)."""
        return sum(left(order, self.price(symbol) if order["notional"] else 0.0)
                   for order in self.account.orders.values()
                   if order["symbol"] == symbol and order["side"] == "sell" and order["status"] not in CLOSED)

    def cancel(self, order_id: str) -> None:
        """DELETE /v2/orders/{id}: an open order canceled."""
        with self.account.lock:
            order = self.account.orders.get(order_id)
            if order is None:
                raise not_found("order")
            if order["status"] in CLOSED:
                raise unprocessable(f'order is already in "{order["status"]}" state')
            self.update("canceled", order_id)

    def cancel_all(self) -> list[dict]:
        """DELETE /v2/orders: every open order canceled, each with its status, as Alpaca answers."""
        with self.account.lock:
            open_ids = [order_id for order_id, order in self.account.orders.items() if order["status"] not in CLOSED]
            return [{"id": order_id, "status": 200, "body": self.update("canceled", order_id)["order"]}
                    for order_id in open_ids]

    def orders(self, query: dict[str, str]) -> list[dict]:
        """GET /v2/orders: status open (the default), closed or all; after, until; symbols;
        side; direction (desc, the newest first, by default); limit (50, at most 500)."""
        status, symbols = query.get("status", "open"), query.get("symbols")
        after, until = moment(query.get("after")), moment(query.get("until"))
        with self.account.lock:
            orders = [dict(order) for order in self.account.orders.values()
                      if (status == "all" or (order["status"] in CLOSED) == (status == "closed"))
                      and (after or EPOCH) < rfc3339(order["submitted_at"]) <= (until or FOREVER)
                      and (not symbols or order["symbol"] in symbols.split(","))
                      and query.get("side", order["side"]) == order["side"]]
        if query.get("direction", "desc") == "desc":
            orders.reverse()
        return orders[:min(int(query.get("limit", 50)), 500)]

    def order(self, order_id: str) -> dict:
        with self.account.lock:
            order = self.account.orders.get(order_id)
            if order is None:
                raise not_found("order")
            return dict(order)

    def positions(self) -> list[dict]:
        with self.account.lock:
            return [self.position(symbol) for symbol in self.account.positions]

    def held(self, symbol: str) -> str:
        """The name a position is held under: a pair's, with its slash or not (BTCUSD), as
        Alpaca's positions name it."""
        names = {name.replace("/", ""): name for name in self.account.positions}
        if symbol.replace("/", "") not in names:
            raise not_found("position")
        return names[symbol.replace("/", "")]

    def position(self, symbol: str) -> dict:
        """A position as GET /v2/positions/{symbol} gives it."""
        with self.account.lock:
            name = self.held(symbol)
            qty, entry = self.account.positions[name], self.account.entry_prices[name]
            price, pair, size = self.price(name), "/" in name, contract_size(name)
            return {"asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "symbol": name.replace("/", ""),
                    "exchange": "CRYPTO" if pair else "NASDAQ", "asset_class": ASSET_CLASSES[market_of_symbol(name)],
                    "asset_marginable": False, "avg_entry_price": number(entry), "qty": number(qty),
                    "qty_available": number(qty), "side": "long" if qty > 0 else "short",
                    "market_value": number(qty * price * size), "cost_basis": number(qty * entry * size),
                    "unrealized_pl": number(qty * (price - entry) * size),
                    "unrealized_plpc": number((price - entry) / entry if entry else 0),
                    "current_price": number(price)}

    def close(self, symbol: str) -> dict:
        """DELETE /v2/positions/{symbol}: a market order for the whole position, the other way."""
        with self.account.lock:
            name = self.held(symbol)
            qty = self.account.positions[name]
            return self.place({"symbol": name, "qty": abs(qty), "side": "sell" if qty > 0 else "buy"})

    def whole_account(self) -> dict:
        """GET /v2/account: what it holds, valued at the prices of the moment, and what it may
        buy (margin())."""
        with self.account.lock:
            held = {symbol: qty * self.price(symbol) * contract_size(symbol)
                    for symbol, qty in self.account.positions.items()}
            cash = self.account.cash
        long_value = sum(value for value in held.values() if value > 0)
        short_value = sum(value for value in held.values() if value < 0)
        equity = cash + long_value + short_value
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "local account")), "account_number": "PALOCAL01",
                "status": "ACTIVE", "crypto_status": "ACTIVE", "currency": "USD", "daytrading_buying_power": "0",
                "cash": number(cash), "accrued_fees": "0",
                "portfolio_value": number(equity), "equity": number(equity), "last_equity": number(self.cash_at_start),
                "long_market_value": number(long_value), "short_market_value": number(short_value),
                "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0",
                "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
                "account_blocked": False, "trade_suspended_by_user": False, "daytrade_count": 0,
                "created_at": self.account.clock(),
                **{name: number(value) if isinstance(value, float) else value
                   for name, value in self.margin(cash, equity, long_value - short_value).items()}}

    def margin(self, cash: float, equity: float, exposure: float) -> dict[str, float | str | bool]:
        """The account's fields of margin: a cash account (multiplier 1) buys with its cash."""
        return {"buying_power": cash, "regt_buying_power": cash, "non_marginable_buying_power": cash,
                "initial_margin": 0.0, "multiplier": "1", "shorting_enabled": False}

    def clock(self) -> dict:
        """GET /v2/clock: the made-up market is always open."""
        return {"timestamp": now(), "is_open": True, "next_open": now(), "next_close": now(timedelta(days=1))}

    # -- the fills ------------------------------------------------------------------------------

    def price(self, symbol: str) -> float:
        """The made-up market's price of the moment (a symbol it does not stream stays put)."""
        price = self.prices.get(symbol) or (crypto if "/" in symbol else market).start_price(symbol)
        return round(price, 2 if price >= 1 else 6)

    def keep_matching(self) -> None:
        while not self.stopping.wait(MATCH_EVERY):
            self.match()

    def match(self) -> None:
        """Fill what can be of each open order placed here: a market order at the price, a limit
        order once the price is at its limit or better; PART at most at once."""
        with self.account.lock:
            for order_id in list(self.matched):
                order = self.account.orders[order_id]
                price, limit = self.price(order["symbol"]), order["limit_price"]
                if limit is not None and (price > float(limit) if order["side"] == "buy" else price < float(limit)):
                    continue
                self.fill(order_id, price, min(left(order, price), PART))

    def fill(self, order_id: str, price: float, qty: float) -> None:
        """qty of an open order filled at price: the order's fill, or a part of it."""
        event = "fill" if fills_up(self.account.orders[order_id], price, qty) else "partial_fill"
        self.update(event, order_id, price=price, qty=qty)

    def update(self, event: str, order_id: str, **details: Any) -> dict:
        """An event of an order, made by the account (Account.update()); an order placed here
        that it closes is matched no more (the demo's made-up orders are not placed here)."""
        data = self.account.update(event, order_id, **details)
        if data["order"]["status"] in CLOSED and order_id in self.matched:
            self.unmatched(data["order"])
        return data

    def unmatched(self, order: dict) -> None:
        """An order placed here, closed: the broker fills it no more."""
        del self.matched[order["id"]]


def short_of(qty: float, held: float) -> Refused:
    """Alpaca's refusal of a sell of more than is held, in an account that cannot sell short."""
    return Refused(HTTPStatus.FORBIDDEN, 40310000, "insufficient qty available for order "
                   f"(requested: {number(qty)}, available: {number(max(held, 0))})")


def check_fraction(symbol: str, order_type: str, time_in_force: str, by_dollars: bool) -> None:
    """Refuses a fractional qty, or a notional amount (by_dollars), where Alpaca does: a
    stock's only in a market order for the day, an option's never (whole contracts); a pair's
    qty in any order, its notional in a market order. The messages are the broker's own, but
    for Alpaca's "qty must be integer" and "fractional orders must be DAY orders"."""
    asset = market_of_symbol(symbol)
    if asset == "options":
        raise unprocessable("options are ordered in whole contracts" if by_dollars else "qty must be integer")
    if order_type != "market" and (by_dollars or asset == "stocks"):
        raise unprocessable(f"{'notional' if by_dollars else 'fractional'} orders must be market orders")
    if asset == "stocks" and time_in_force != "day":
        raise unprocessable("fractional orders must be DAY orders")


def listed(names: tuple[str, ...]) -> str:
    """ "a, b and c"."""
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def positive(request: dict, field: str) -> float:
    """A field of an order that must be a number over 0 (Alpaca's are strings or numbers)."""
    try:
        value = float(request[field])
    except (KeyError, TypeError, ValueError):
        raise unprocessable(f"{field} is required, a number") from None
    if not value > 0:
        raise unprocessable(f"{field} must be over 0")
    return value


def moment(text: str | None) -> datetime | None:
    return rfc3339(text) if text else None


class BrokerRequest(BaseHTTPRequestHandler):
    """One request to the broker: keys checked, then the method and path to what it does."""

    rbufsize = 0  # unbuffered: after a websocket handshake, the bytes that follow are the stream's
    # An answer's headers and body go in two writes: with Nagle's algorithm, the body waited for
    # the client's delayed acknowledgement of the headers, 40 ms an order (measured: 43.6 ms
    # through alpaca-py's TradingClient, the median of 50; 1.8 ms without it).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.pass_to_stream()
        else:
            self.answer("GET")

    def do_POST(self) -> None:
        self.answer("POST")

    def do_DELETE(self) -> None:
        self.answer("DELETE")

    def answer(self, method: str) -> None:
        broker: Broker = self.server.broker  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        path = unquote(url.path).rstrip("/")
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        broker.answering()
        try:
            if not broker.account.keys_accepted(self.headers.get("APCA-API-KEY-ID", ""),
                                                self.headers.get("APCA-API-SECRET-KEY", "")):
                raise Refused(HTTPStatus.UNAUTHORIZED, 40110000, "request is not authorized")
            result = self.route(broker, method, path, query, body)
            status = HTTPStatus.NO_CONTENT if result is None else HTTPStatus.OK
            if (method, path) == ("DELETE", "/v2/orders"):  # a status for each order, as Alpaca answers
                status = HTTPStatus.MULTI_STATUS
        except Refused as refused:
            status, result = refused.status, refused.body
        except ValueError:  # a body that is not JSON, a limit that is not a number
            status, result = HTTPStatus.UNPROCESSABLE_ENTITY, {"code": 42210000, "message": "malformed request"}
        data = b"" if status == HTTPStatus.NO_CONTENT else json.dumps(result).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def route(broker: Broker, method: str, path: str, query: dict[str, str], body: bytes) -> object:
        parts = path.split("/")[2:]  # "/v2/orders/ID" -> ["orders", "ID"]
        resource, name = (parts[0] if parts else ""), "/".join(parts[1:])
        if (method, resource) == ("GET", "account") and not name:
            return broker.whole_account()
        if resource == "orders":
            if method == "POST" and not name:
                return broker.place(json.loads(body or b"null"))
            if method == "DELETE" and name:
                broker.cancel(name)
                return None
            if method == "DELETE":
                return broker.cancel_all()
            return broker.order(name) if name else broker.orders(query)
        if (method, resource) == ("GET", "positions"):
            return broker.position(name) if name else broker.positions()
        if (method, resource) == ("DELETE", "positions") and name:
            return broker.close(name)
        if (method, resource) == ("GET", "clock") and not name:
            return broker.clock()
        raise Refused(HTTPStatus.NOT_FOUND, 40410000, f"{broker.called} does not serve {method} {path}")

    def pass_to_stream(self) -> None:
        """A websocket handshake (for /stream) passed to the stream server, then the bytes both
        ways until either side closes."""
        broker: Broker = self.server.broker  # type: ignore[attr-defined]
        if urlsplit(self.path).path != TRADING_PATH:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        head = f"{self.requestline}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        self.close_connection = True
        with socket.create_connection(("127.0.0.1", broker.stream_port())) as stream:
            stream.sendall(head.encode("latin-1") + b"\r\n")
            other = {self.connection: stream, stream: self.connection}
            while not broker.stopping.is_set():
                ready, _, _ = select.select(list(other), [], [], 0.5)
                for side in ready:
                    data = side.recv(65536)
                    if not data:
                        return
                    other[side].sendall(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # the base class's name
        log.debug("broker: " + format, *args)
