"""A backtest's broker (--replay with handlers that place orders): the local server's paper
broker (broker.py), with the account on the recording's clock and no thread of its own that
fills orders: the recording's feed (sources/backtest.py) tells it each message before the
handlers get it, and the open orders of its symbol are matched against it (fills.py). Its
prices are the recording's last up to the message being handled: an order for a symbol with
none yet is refused, as the backtest cannot read ahead. Each fill is noted in the ledger, and
equity marked at each price of a symbol held, for the result (result.py)."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from alpaca_stream.calendar import NEW_YORK, closed_because, market_open, next_close, next_open
from alpaca_stream.channels import contract_size, market_of_symbol
from alpaca_stream.orders import Costs
from alpaca_stream.result import Fill, Ledger, Result, Waiting, result
from alpaca_stream.server.broker import Broker, listed, unprocessable
from alpaca_stream.server.fills import book, fills, left, price_of, slipped, triggered
from alpaca_stream.server.trading import CLOSED, Account, stamp

log = logging.getLogger("alpaca_stream")

PRICED = ("q", "t", "b", "u", "d")  # the kinds that tell a price, the best first
BETTER = {kind: PRICED[:rank] for rank, kind in enumerate(PRICED)}  # what price() reads before each kind
TIMES_IN_FORCE = ("day", "gtc", "ioc", "fok")
MARGIN = 2.0  # Reg T: a margin account buys stocks for twice its equity, less what it holds


@dataclass
class Terms:
    """What the backtest keeps of an order beside what the account does: when it reaches the
    market (placed, plus the latency), when it expires (a day order, at the close), and whether
    its stop has been triggered."""

    reaches: datetime
    expires: datetime | None
    triggered: bool = False


class Backtest(Broker):
    """The paper broker of a recording: last, the last message of each kind ("q", "t", ...) and
    symbol handed over so far; latest(): the recording's time, the latest timestamp of those
    messages; keys: those it takes (fake: the broker is the run's own); costs: its cash, and
    what its orders cost beyond their price, a margin account, which may sell stocks short;
    first: the first message of each kind and symbol; ledger: where its fills are noted;
    catch_up(): makes last and latest() those of the messages handed over so far."""

    matches_by_itself = False
    called = "the backtest"
    order_types = ("market", "limit", "stop", "stop_limit")

    def __init__(self, last: Mapping[tuple[str, str], dict[str, Any]], latest: Callable[[], datetime],
                 keys: tuple[str, str], costs: Costs | None = None, *,
                 first: Mapping[tuple[str, str], dict[str, Any]], ledger: Ledger,
                 catch_up: Callable[[], None] = lambda: None) -> None:
        costs = costs or Costs()
        ids = random.Random(0)  # the same ids every run, as the same orders and fills
        account = Account(lambda key, secret: (key, secret) == keys, clock=lambda: stamp(latest()),
                          ids=lambda: uuid.UUID(int=ids.getrandbits(128), version=4))
        account.cash = costs.cash
        super().__init__(account, {}, lambda: 0)
        self.last, self.latest, self.costs = last, latest, costs
        self.terms: dict[str, Terms] = {}  # by order id
        self.open_by_symbol: dict[str, dict[str, None]] = {}  # matched, by symbol: a message meets its own
        self.fees = 0.0  # dollars taken from the cash
        self.next_expiry: datetime | None = None  # the earliest close an open day order expires at
        self.first = first  # for buying and holding
        self.ledger = ledger
        self.catch_up = catch_up

    def answering(self) -> None:
        """The recording seen up to the message being handled: the feed sees it only when
        needed, and before a request (docs/performance.md)."""
        self.catch_up()

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
        """GET /v2/clock: the recording's time, and the market's regular hours then, by its
        calendar (calendar.py)."""
        when = self.latest()
        return {"timestamp": stamp(when), "is_open": market_open(when), "next_open": stamp(next_open(when)),
                "next_close": stamp(next_close(when))}

    # -- the orders it takes ------------------------------------------------------------------

    def check_terms(self, order_type: str, time_in_force: str, extended_hours: bool) -> None:
        if time_in_force not in TIMES_IN_FORCE:
            raise unprocessable(f"{self.called} takes time in force {listed(TIMES_IN_FORCE)}, not {time_in_force}")
        if extended_hours and (order_type, time_in_force) != ("limit", "day"):
            raise unprocessable("extended hours order must be DAY limit orders")

    def margin(self, cash: float, equity: float, exposure: float) -> dict[str, float | str | bool]:
        """A margin account, by Reg T's rule (multiplier 2): half of what it holds,
        long or short, is its initial margin, and its buying power twice the equity beyond
        that; a pair or an option is bought with cash (not marginable). A stock may be sold
        short (check_funds())."""
        power = max(MARGIN * equity - exposure, 0.0)
        return {"buying_power": power, "regt_buying_power": power,
                "non_marginable_buying_power": max(min(cash, power), 0.0), "initial_margin": exposure / MARGIN,
                "multiplier": "2", "shorting_enabled": True}

    def accepted(self, order: dict) -> None:
        """Its terms noted: when it reaches the market, and when a day order of a stock or an
        option expires: at the first close after it is placed, of extended hours for an order
        that may fill in them (Alpaca's day is over then); a pair trades at any hour."""
        placed = self.latest()
        expires = None
        if order["time_in_force"] == "day" and market_of_symbol(order["symbol"]) != "crypto":
            expires = next_close(placed, extended=order["extended_hours"])
            self.next_expiry = min(self.next_expiry or expires, expires)
        self.terms[order["id"]] = Terms(placed + timedelta(seconds=self.costs.latency), expires)
        self.open_by_symbol.setdefault(order["symbol"], {})[order["id"]] = None

    def unmatched(self, order: dict) -> None:
        """An order placed here, closed: matched no more, nor among its symbol's."""
        super().unmatched(order)
        of_symbol = self.open_by_symbol[order["symbol"]]
        del of_symbol[order["id"]]
        if not of_symbol:
            del self.open_by_symbol[order["symbol"]]

    # -- the fills ----------------------------------------------------------------------------

    def match_on(self, message: dict[str, Any]) -> None:
        """The open orders of the message's symbol, placed before it, matched against it: each
        fill booked, and its update made, for the feed to hand over before the message. First,
        the day orders of any symbol whose close this message is at or after expire."""
        if not self.matched:
            return
        now = self.latest()
        with self.account.lock:
            if self.next_expiry is not None and now >= self.next_expiry:
                self.expire(now)
            placed = self.account.orders
            hours: dict[bool, bool] = {}  # the calendar's answers for this message
            orders = [placed[order_id] for order_id in self.open_by_symbol.get(message.get("S", ""), ())
                      if self.terms[order_id].reaches <= now and in_its_hours(placed[order_id], now, hours)]
            if orders:
                self.match_ready(orders, message)

    def match_ready(self, orders: list[dict], message: dict[str, Any]) -> None:
        """The orders that can fill on this message matched against it: a stop triggered by it
        fills from the next message on (no look-ahead inside the message that triggered it); an
        order immediate-or-cancel ("ioc") or fill-or-kill ("fok") is canceled on the first
        message that prices it, once it has taken what it could."""
        symbol = message["S"]
        quoted, traded = ("q", symbol) in self.last, ("t", symbol) in self.last
        ready = []
        for order in orders:
            terms = self.terms[order["id"]]
            if order["stop_price"] is None or terms.triggered:
                ready.append(order)
            else:
                terms.triggered = triggered(order, message, quoted, traded)
        offered = book(message, quoted, traded)
        if offered is None:  # it prices no order: a trade of a symbol quoted, say
            return
        for order_id, price, qty in fills(ready, message, offered):
            order = self.account.orders[order_id]
            paid = slipped(price, order, self.costs.slippage_bps)
            self.fill(order_id, paid, min(qty, left(order, paid)))  # a notional buy's dollars buy less then
        for order in ready:
            if order["time_in_force"] in ("ioc", "fok") and order["status"] not in CLOSED:
                self.update("canceled", order["id"])

    def fill(self, order_id: str, price: float, qty: float) -> None:
        """A fill booked, its fee taken from the cash, then noted in the ledger, with equity
        after it."""
        account = self.account
        with account.lock:
            symbol, side = account.orders[order_id]["symbol"], account.orders[order_id]["side"]
            size, cash = contract_size(symbol), account.cash
            fee = price * qty * size * self.costs.fee_bps / 10_000
            account.cash -= fee
            self.fees += fee
            super().fill(order_id, price, qty)
            held = account.positions.get(symbol, 0.0)
            self.ledger.filled(Fill(self.latest(), symbol, side, qty, price, order_id, account.updates[-1]["event"],
                                    held, account.cash), cash, held * self.price(symbol) * size)

    def expire(self, now: datetime) -> None:
        """The open day orders whose close has come expire, stamped at that close."""
        self.next_expiry = None
        for order_id in list(self.matched):  # every symbol's, in the order placed
            expires = self.terms[order_id].expires
            if expires is None:
                continue
            if expires <= now:
                self.update("expired", order_id, at=stamp(expires))
            else:
                self.next_expiry = min(self.next_expiry or expires, expires)

    def mark(self, message: dict[str, Any]) -> None:
        """A message that moves the price of a symbol held, the last seen of its kind: equity
        at it, for the drawdown. It moves the price if price() reads it now: if no kind that
        price() reads before its kind is known. (Cash and positions move only with a fill, on
        this thread: read without the lock.)"""
        symbol = message.get("S", "")
        held = self.account.positions.get(symbol)
        if held is None:  # not held
            return
        kind = message["T"]
        if kind != PRICED[0]:  # a quote moves it: nothing is read before it (asked first: a hot path)
            # A message of no price (a status) is as if read after every kind: a symbol held has
            # one known, its fills'.
            for known in BETTER.get(kind, PRICED):
                if (known, symbol) in self.last:  # price() reads that one: a trade of a symbol quoted, say
                    return
        self.ledger.moved(symbol, held * price_of(message) * contract_size(symbol), self.account.cash)

    def result(self) -> Result:
        """What the backtest made, at the recording's end (result.py)."""
        account = self.account
        with account.lock:
            ordered = {order["symbol"] for order in account.orders.values()}
            still_open = [order for order in account.orders.values() if order["status"] not in CLOSED]
            # Prices per unit held: an option's premium times its 100 shares.
            entry = {symbol: price * contract_size(symbol) for symbol, price in account.entry_prices.items()}
            first = {symbol: self.price_in(self.first, symbol) * contract_size(symbol) for symbol in ordered}
            last = {symbol: self.price(symbol) * contract_size(symbol) for symbol in ordered}
            return result(account.orders.values(), len(still_open), account.cash, account.positions, entry, first,
                          last, self.ledger, fees=self.fees, fee_bps=self.costs.fee_bps,
                          slippage_bps=self.costs.slippage_bps, waiting=self.waiting_for_open(still_open))

    def waiting_for_open(self, still_open: list[dict]) -> list[Waiting]:
        """Of the orders open at the recording's end, those its time is outside the hours of
        (regular, or extended for those placed for them): a recording of the evening or a
        weekend fills no stock's market order, which a student who made it on --demo, whose
        broker fills at any hour, does not expect."""
        now = self.latest()
        hours: dict[bool, bool] = {}
        waiting = []
        for extended in (False, True):
            kept = [order for order in still_open
                    if order["extended_hours"] == extended and not in_its_hours(order, now, hours)]
            if kept:
                types = {order["type"] for order in kept}
                waiting.append(Waiting(len(kept), types.pop() if len(types) == 1 else None,
                                       next_open(now, extended), outside_hours(now, extended)))
        return waiting


def outside_hours(now: datetime, extended: bool) -> str:
    """Why the market is closed at the recording's end, in words: "the recording ends on a
    Saturday, outside regular hours", "... at 19:25 New York, ...". """
    there = now.astimezone(NEW_YORK)
    closed_all_day = closed_because(there.date())
    when = f"on {closed_all_day}" if closed_all_day else f"at {there:%H:%M} New York"
    return f"the recording ends {when}, outside {'extended' if extended else 'regular'} hours"


def in_its_hours(order: dict, now: datetime, known: dict[bool, bool]) -> bool:
    """Whether an order may fill now: a pair's at any hour, the others in the market's hours of
    a trading day, extended hours for an order placed for them (a day limit order alone, as
    check_terms() takes it), regular hours else (one placed outside them waits for the open,
    as Alpaca's does). known: whether the market is open now, by extended_hours, as asked so
    far: the calendar is asked once for each (0.6 to 1.6 µs a call), not once an order."""
    if order["asset_class"] == "crypto":
        return True
    extended = order["extended_hours"]
    if extended not in known:
        known[extended] = market_open(now, extended=extended)
    return known[extended]
