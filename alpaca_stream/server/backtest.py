"""A backtest's broker (--replay with handlers that place orders): the local server's paper
broker (broker.py), with the account on the recording's clock and no thread of its own that
fills orders: the recording's feed (sources/backtest.py) tells it each message before the
handlers get it, and the open orders of its symbol are matched against it (fills.py). Its
prices are the recording's last up to the message being handled: an order for a symbol with
none yet is refused, as the backtest cannot read ahead. Each fill is noted in the ledger, and
equity marked at each price of a symbol held, for the result (result.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from alpaca_stream.result import Fill, Ledger, Result, result
from alpaca_stream.server.broker import Broker, unprocessable
from alpaca_stream.server.fills import fills, price_of
from alpaca_stream.server.trading import CLOSED, Account, stamp
from alpaca_stream.session import CLOSES, OPENS, market_open, next_on_a_weekday

log = logging.getLogger("alpaca_stream")

PRICED = ("q", "t", "b", "u", "d")  # the kinds that tell a price, the best first


class Backtest(Broker):
    """The paper broker of a recording: last, the last message of each kind ("q", "t", ...) and
    symbol handed over so far; latest(): the recording's time, the latest timestamp of those
    messages; keys: those it takes (fake: the broker is the run's own); first: the first
    message of each kind and symbol; ledger: where its fills are noted."""

    matches_by_itself = False
    called = "the backtest"

    def __init__(self, last: Mapping[tuple[str, str], dict[str, Any]], latest: Callable[[], datetime],
                 keys: tuple[str, str], *, first: Mapping[tuple[str, str], dict[str, Any]],
                 ledger: Ledger) -> None:
        account = Account(lambda key, secret: (key, secret) == keys, clock=lambda: stamp(latest()))
        super().__init__(account, {}, lambda: 0)
        self.last, self.latest = last, latest
        self.first = first  # for buying and holding
        self.ledger = ledger

    def price(self, symbol: str) -> float:
        """The symbol's price as the recording has told it so far: its last quote's midpoint,
        else its last trade's price, else its last bar's close (the same order the fills go
        by); a refusal if it has told none."""
        return self.price_in(self.last, symbol)

    @staticmethod
    def price_in(messages: Mapping[tuple[str, str], dict[str, Any]], symbol: str) -> float:
        """The symbol's price by these messages, by (kind, symbol): price()'s order."""
        for kind in PRICED:
            message = messages.get((kind, symbol))
            if message is not None:
                return price_of(message)
        raise unprocessable(f"no price of {symbol} yet in the recording: the backtest cannot read ahead")

    def clock(self) -> dict:
        """GET /v2/clock: the recording's time, and regular hours then (holidays aside)."""
        when = self.latest()
        return {"timestamp": stamp(when), "is_open": market_open(when),
                "next_open": stamp(next_on_a_weekday(when, OPENS)),
                "next_close": stamp(next_on_a_weekday(when, CLOSES))}

    def match_on(self, message: dict[str, Any]) -> None:
        """The open orders of the message's symbol, placed before it, matched against it: each
        fill booked, and its update made, for the feed to hand over before the message."""
        if not self.matched:
            return
        symbol = message.get("S")
        with self.account.lock:
            orders = []
            for order_id in list(self.matched):
                order = self.account.orders[order_id]
                if order["status"] in CLOSED:
                    del self.matched[order_id]
                elif order["symbol"] == symbol:
                    orders.append(order)
            if orders:
                quoted, traded = ("q", symbol) in self.last, ("t", symbol) in self.last
                for order_id, price, qty in fills(orders, message, quoted, traded):
                    self.fill(order_id, price, qty)

    def fill(self, order_id: str, price: float, qty: float) -> None:
        """A fill booked, then noted in the ledger, with equity after it."""
        account = self.account
        with account.lock:
            cash = account.cash
            super().fill(order_id, price, qty)
            symbol, side = account.orders[order_id]["symbol"], account.orders[order_id]["side"]
            held = account.positions.get(symbol, 0.0)
            self.ledger.filled(Fill(self.latest(), symbol, side, qty, price, order_id, account.updates[-1]["event"],
                                    held, account.cash), cash, held * self.price(symbol))

    def mark(self, message: dict[str, Any]) -> None:
        """A message that moves the price of a symbol held: equity at it, for the drawdown.
        (Cash moves only with a fill, on this thread: read without the lock.)"""
        symbol = message.get("S", "")
        if symbol not in self.ledger.values:  # not held (the account's positions are these)
            return
        kind, last = message["T"], self.last
        if kind == "q" or kind == "t" and ("q", symbol) not in last:  # price()'s, sooner
            price = price_of(message)
        elif kind in PRICED and ("q", symbol) not in last and ("t", symbol) not in last:  # a bar's
            price = self.price(symbol)
        else:  # a trade of a symbol quoted, a status: the price has not moved
            return
        self.ledger.moved(symbol, self.account.positions[symbol] * price, self.account.cash)

    def result(self) -> Result:
        """What the backtest made, at the recording's end (result.py)."""
        account = self.account
        with account.lock:
            ordered = {order["symbol"] for order in account.orders.values()}
            still_open = sum(order["status"] not in CLOSED for order in account.orders.values())
            return result(account.orders.values(), still_open, account.cash, account.positions,
                          account.entry_prices, {symbol: self.price_in(self.first, symbol) for symbol in ordered},
                          {symbol: self.price(symbol) for symbol in ordered}, self.ledger,
                          fees=getattr(account, "fees", 0.0))
