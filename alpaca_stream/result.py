"""A backtest's result (--replay with orders, run_handlers(..., trading="simulated")): what its
account made of the recording, to the cent (docs/backtest.md). The backtest's broker
(server/backtest.py) notes each fill in a Ledger as it books it, with equity after it and at
every price of a symbol held (the drawdown's path), and --fills' CSV row; at the end it gives
the account's orders, cash, positions and prices to result(). Plain data in, plain data out:
no import of the server, which a replay with no order does not start.

- realized: what the fills of a symbol made on the average-cost basis the account keeps: a
  sale of a long at p realizes (p - entry) x qty, a short covered the other way; fees in;
- unrealized: an open position marked at the symbol's last price in the recording;
- equity: cash plus the positions at their last prices;
- drawdown: the largest fall of equity from a peak to a later trough, in dollars, and as a
  percent of that peak;
- buy and hold: the starting cash split equally across the symbols ordered, each bought at its
  first price in the recording and marked at its last;
- waiting: the orders open at the end that the market's hours kept from filling (a recording
  made in the evening, say), when the market opens for them, and why.
"""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, TextIO

from alpaca_stream.calendar import NEW_YORK
from alpaca_stream.orders import number

WIDTH = 58  # the summary's lines, as session.py wraps them: 80 columns with the log's time


class Fill(NamedTuple):
    """One fill of a backtest's order, as --fills writes it: the recording's time; the
    position held and the cash after it."""

    time: datetime
    symbol: str
    side: str
    qty: float
    price: float
    order_id: str
    event: str  # "fill", or "partial_fill"
    position_after: float
    cash_after: float


class FillsCsv:
    """--fills FILE.csv: a header, then a row for each fill as the broker books it."""

    def __init__(self, file: TextIO) -> None:
        self.file, self.writer = file, csv.writer(file)
        self.writer.writerow(Fill._fields)

    def write(self, fill: Fill) -> None:
        self.writer.writerow((fill.time.isoformat(), fill.symbol, fill.side, number(fill.qty), number(fill.price),
                              fill.order_id, fill.event, number(fill.position_after),
                              number(round(fill.cash_after, 6))))

    def close(self) -> None:
        self.file.close()


class Ledger:
    """What the result needs that the account does not keep: the fills, the cash each symbol's
    fills moved, and the path of equity (its peak so far, its largest fall). Equity is marked
    after each fill and at each price of a symbol held, only while one is held (values)."""

    def __init__(self) -> None:
        self.fills: list[Fill] = []
        self.csv: FillsCsv | None = None  # --fills
        self.marked: Callable[[float], object] | None = None  # given each equity marked (--report's curve)
        self.cash_moved: dict[str, float] = {}  # by symbol: + sales, - purchases, - fees
        self.values: dict[str, float] = {}  # by symbol held: the position at its last price
        self.peak: float | None = None  # equity's highest so far; None until the first fill
        self.drawdown = (0.0, 0.0)  # the largest fall of equity so far, and the peak it fell from

    def filled(self, fill: Fill, cash_before: float, value: float) -> None:
        """A fill booked: cash_before it, value: the symbol's position after it at its price."""
        self.fills.append(fill)
        if self.csv is not None:
            self.csv.write(fill)
        symbol = fill.symbol
        self.cash_moved[symbol] = self.cash_moved.get(symbol, 0.0) + fill.cash_after - cash_before
        if self.peak is None:
            self.peak = cash_before  # equity until the first fill: nothing was held
        self.moved(symbol, value, fill.cash_after)  # a position closed is worth 0
        if not fill.position_after:
            del self.values[symbol]  # held no more

    def moved(self, symbol: str, value: float, cash: float) -> None:
        """A symbol held has a new price: its position is worth value. Equity marked: cash and
        the positions at their prices."""
        self.values[symbol] = value
        equity = cash + sum(self.values.values())
        assert self.peak is not None  # marked only after a fill
        if self.marked is not None:
            self.marked(equity)
        if equity > self.peak:
            self.peak = equity
        elif self.peak - equity > self.drawdown[0]:
            self.drawdown = (self.peak - equity, self.peak)


class Waiting(NamedTuple):
    """Orders open at the recording's end that wait for the market to open for them."""

    orders: int
    order_type: str | None  # "market", "limit", ...; None if of more than one type
    opens: datetime  # the next open, of regular hours (or of extended hours, for orders placed for them)
    why: str  # "the recording ends at 19:25 New York, outside regular hours"

    def line(self) -> str:
        kind = f"{self.order_type.replace('_', '-')} " if self.order_type else ""
        there = self.opens.astimezone(NEW_YORK)
        return (f"{self.orders} {kind}order{'s' if self.orders > 1 else ''} waiting for the open "
                f"({there:%H:%M} New York, {there:%Y-%m-%d}): {self.why}; docs/backtest.md")

    def fields(self) -> dict:
        return {"orders": self.orders, "type": self.order_type, "opens": self.opens.astimezone(NEW_YORK).isoformat(),
                "why": self.why}


@dataclass
class SymbolResult:
    """One symbol's part of the result."""

    orders: int = 0
    fills: int = 0
    position: float = 0.0  # held at the end: shares (coins, contracts), negative if short
    realized: float = 0.0
    unrealized: float = 0.0


@dataclass
class Result:
    """What a backtest made: Session.backtest after the run, in the summary at exit."""

    orders: int
    open_orders: int  # left open at the recording's end
    start: float  # equity at the start: the cash
    equity: float  # at the end
    drawdown: float  # the largest fall of equity, in dollars
    drawdown_pct: float  # and as a percent of the peak it fell from
    buy_and_hold_equity: float
    fees: float
    fee_bps: float = 0.0  # the costs asked (--fee-bps, --slippage)
    slippage_bps: float = 0.0
    symbols: dict[str, SymbolResult] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)  # of the open orders, those the market's hours kept

    def lines(self) -> list[str]:
        """The summary's lines."""
        costs = (f", fee {self.fee_bps:g} bps" if self.fee_bps else "") + (
            f", slippage {self.slippage_bps:g} bps" if self.slippage_bps else "")
        said = [f"backtest: orders {self.orders}, fills {len(self.fills)}, open at the end {self.open_orders}{costs}"]
        said += [waiting.line() for waiting in self.waiting]
        for symbol, part in self.symbols.items():
            held = f", holding {part.position:g}" if part.position else ""
            said.append(f"{symbol}: realized {part.realized:+,.2f}, unrealized {part.unrealized:+,.2f}{held}")
        fees = f", fees {self.fees:,.2f} in it" if self.fees else ""
        said.append(f"equity {self.equity:,.2f} ({self.equity - self.start:+,.2f}{fees}); largest drawdown "
                    f"{self.drawdown:,.2f} ({self.drawdown_pct:.2f}%)")
        if self.symbols:
            said.append(f"buy and hold {', '.join(self.symbols)}: equity "
                        f"{self.buy_and_hold_equity:,.2f} ({self.buy_and_hold_equity - self.start:+,.2f})")
        return [line for text in said for line in textwrap.wrap(text, WIDTH, subsequent_indent="  ")]

    def fields(self) -> dict:
        """The result for --log-format json's summary."""
        return {"orders": self.orders, "fills": len(self.fills), "open_orders": self.open_orders,
                "symbols": {symbol: {"realized": part.realized, "unrealized": part.unrealized,
                                     "position": part.position} for symbol, part in self.symbols.items()},
                "equity": self.equity, "drawdown": self.drawdown, "drawdown_pct": self.drawdown_pct,
                "buy_and_hold_equity": self.buy_and_hold_equity, "fees": self.fees, "fee_bps": self.fee_bps,
                "slippage_bps": self.slippage_bps, "waiting_for_open": [waiting.fields() for waiting in self.waiting]}


def result(orders: Iterable[dict], still_open: int, cash: float, positions: Mapping[str, float],
           entry_prices: Mapping[str, float], first: Mapping[str, float], last: Mapping[str, float],
           ledger: Ledger, fees: float = 0.0, fee_bps: float = 0.0, slippage_bps: float = 0.0,
           waiting: list[Waiting] | None = None) -> Result:
    """The result of an account: its orders (as the account keeps them, in the order placed),
    those still open, its cash, positions and their entry prices at the end; each ordered
    symbol's first and last price in the recording; its ledger; the fees it paid (in its
    cash already); the open orders that wait for the market to open."""
    symbols: dict[str, SymbolResult] = {}
    for order in orders:
        symbols.setdefault(order["symbol"], SymbolResult()).orders += 1
    for fill in ledger.fills:
        symbols[fill.symbol].fills += 1
    for symbol, part in symbols.items():
        held, entry = positions.get(symbol, 0.0), entry_prices.get(symbol, 0.0)
        part.position = held
        # On the average-cost basis, what the fills made is the cash they moved, plus what the
        # shares still held cost: the rest of the cost is the unrealized part.
        part.realized = cents(ledger.cash_moved.get(symbol, 0.0) + held * entry)
        part.unrealized = cents(held * (last[symbol] - entry))
    start = cash - sum(ledger.cash_moved.values())
    equity = cash + sum(held * last[symbol] for symbol, held in positions.items())
    fall, peak = ledger.drawdown
    share = start / len(symbols) if symbols else 0.0
    buy_and_hold = sum(share / first[symbol] * last[symbol] for symbol in symbols) if symbols else start
    return Result(orders=sum(part.orders for part in symbols.values()), open_orders=still_open, start=cents(start),
                  equity=cents(equity), drawdown=cents(fall), drawdown_pct=round(100 * fall / peak, 4) if peak else 0.0,
                  buy_and_hold_equity=cents(buy_and_hold), fees=cents(fees),
                  fee_bps=fee_bps, slippage_bps=slippage_bps, symbols=symbols,
                  fills=list(ledger.fills), waiting=waiting or [])


def cents(value: float) -> float:
    return round(value, 2) + 0.0  # + 0.0: never -0.0
