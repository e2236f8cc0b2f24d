"""A backtest's broker (--replay with handlers that place orders): the local server's paper
broker (broker.py), with the account on the recording's clock and no thread of its own that
fills orders: the recording's feed (sources/backtest.py) tells it each message before the
handlers get it, and the open orders of its symbol are matched against it (fills.py). Its
prices are the recording's last up to the message being handled: an order for a symbol with
none yet is refused, as the backtest cannot read ahead."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from alpaca_stream.server.broker import Broker, unprocessable
from alpaca_stream.server.fills import fills, price_of
from alpaca_stream.server.trading import CLOSED, Account, stamp
from alpaca_stream.session import CLOSES, OPENS, market_open, next_on_a_weekday

log = logging.getLogger("alpaca_stream")

FILLED = ("fill", "partial_fill")
PRICED = ("q", "t", "b", "u", "d")  # the kinds that tell a price, the best first


class Backtest(Broker):
    """The paper broker of a recording: last, the last message of each kind ("q", "t", ...) and
    symbol handed over so far; latest(): the recording's time, the latest timestamp of those
    messages; keys: those it takes (fake: the broker is the run's own)."""

    matches_by_itself = False
    called = "the backtest"

    def __init__(self, last: Mapping[tuple[str, str], dict[str, Any]], latest: Callable[[], datetime],
                 keys: tuple[str, str]) -> None:
        account = Account(lambda key, secret: (key, secret) == keys, clock=lambda: stamp(latest()))
        super().__init__(account, {}, lambda: 0)
        self.last, self.latest = last, latest

    def price(self, symbol: str) -> float:
        """The symbol's price as the recording has told it so far: its last quote's midpoint,
        else its last trade's price, else its last bar's close (the same order the fills go
        by); a refusal if it has told none."""
        for kind in PRICED:
            message = self.last.get((kind, symbol))
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

    def tally(self) -> tuple[int, int, int]:
        """The orders placed, their fills (parts too), and the orders still open."""
        with self.account.lock:
            filled = sum(update["event"] in FILLED for update in self.account.updates)
            still_open = sum(order["status"] not in CLOSED for order in self.account.orders.values())
        return self.placed, filled, still_open
