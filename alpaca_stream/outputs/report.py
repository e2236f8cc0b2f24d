"""--report FILE.html: a backtest's report, one HTML file complete alone (TradingView's Lightweight
Charts inlined, with its license): each symbol's price as candles with the fills marked on it,
the equity curve, and the summary's figures (result.py's Result) as a table. It opens in any
browser, with no network. The candles and the equity are kept in buckets of a minute, coarser
as the run grows past CANDLES_KEPT of them: bounded whatever its length."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from alpaca_stream.calendar import NEW_YORK
from alpaca_stream.handlers import Handlers, unhandled
from alpaca_stream.outputs.chart import CANDLES_KEPT, FILES, FOLDER, Chart
from alpaca_stream.records import Record
from alpaca_stream.result import Result

# The buckets' sizes in seconds, from a minute to a week: each a multiple of the one before, so
# that a bucket grown holds whole buckets of the size before. 5,000 weeks: 96 years.
STEPS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 604800)
# The kinds a symbol's price is read from, the worst first: Alpaca's bars where they come, else
# the trades, else the quotes' midpoints; a better kind's first message drops the worse one's.
KINDS = ("quote", "trade", "bar")
QUOTE, TRADE, BAR = range(len(KINDS))
MARKERS = re.compile(r"/\*LIBRARY\*/|/\*CHARTS\*/|/\*DATA\*/|<!--SUMMARY-->")  # in the page, where its parts go
PAGE = FOLDER / "report.html"
LIBRARY, CHARTS = (FOLDER / FILES[path][0] for path in ("/lightweight-charts.js", "/charts.js"))  # as the live page's
T = TypeVar("T")


class Buckets(Generic[T]):
    """Values by time in buckets of step seconds (a minute to start with), a value in a bucket
    merged with the one there (merge(old, new), new the later; None: the later stays); past
    CANDLES_KEPT buckets, all are merged into buckets of the next of STEPS."""

    def __init__(self, merge: Callable[[T, T], T] | None = None) -> None:
        self.merge = merge
        self.step = STEPS[0]
        self.values: dict[int, T] = {}  # a bucket's start (UTC, s) -> its value

    def add(self, seconds: float, value: T) -> None:
        start = self.at(seconds)
        old = self.values.get(start)
        if old is not None:
            self.values[start] = value if self.merge is None else self.merge(old, value)
            return
        self.values[start] = value
        if len(self.values) > CANDLES_KEPT and self.step < STEPS[-1]:
            self.step = STEPS[STEPS.index(self.step) + 1]
            kept, self.values = sorted(self.values.items()), {}
            for start, value in kept:
                self.add(start, value)

    def clear(self) -> None:
        self.step, self.values = STEPS[0], {}

    def at(self, seconds: float) -> int:
        """The start of the bucket of this time."""
        return int(seconds) // self.step * self.step


def merged(candle: list[float], later: list[float]) -> list[float]:
    """Two candles (open, high, low, close, volume) as one: later's after candle's."""
    candle[1], candle[2], candle[3] = max(candle[1], later[1]), min(candle[2], later[2]), later[3]
    candle[4] += later[4]
    return candle


@dataclass
class Prices:
    """One symbol's candles, and the kind of message they are read from (KINDS' index)."""

    kind: int = 0
    candles: Buckets[list[float]] = field(default_factory=lambda: Buckets(merged))


class Report:
    """--report: wrap() the handlers, so that their trades, quotes and bars make the candles;
    marked() is the ledger's hook (result.Ledger.marked), each equity it marks at clock()'s
    time, the recording's; write() at the end. name: what was played (no path: the file goes
    anywhere); asked: a history's span, as asked."""

    def __init__(self, path: str, name: str, clock: Callable[[], datetime],
                 asked: tuple[datetime, datetime] | None = None) -> None:
        self.path, self.name, self.clock, self.asked = path, name, clock, asked
        self.first: datetime | None = None  # the first price's time: where the run's span starts
        self.symbols: dict[str, Prices] = {}
        self.equity: Buckets[float] = Buckets()  # each bucket's last

    def wrap(self, handlers: Handlers) -> Handlers:
        folds = {"quote": self.quote, "trade": self.trade, "bar": self.bar}
        return {**handlers, **{kind: Chart.folding(fold, handlers.get(kind, unhandled))
                               for kind, fold in folds.items()}}

    def quote(self, quote: Record) -> None:
        if quote["bp"] > 0 and quote["ap"] > 0:  # both sides: a midpoint
            middle = (quote["bp"] + quote["ap"]) / 2
            self.price(quote["S"], QUOTE, quote["t"], [middle, middle, middle, middle, 0.0])

    def trade(self, trade: Record) -> None:
        price = trade["p"]
        self.price(trade["S"], TRADE, trade["t"], [price, price, price, price, trade["s"]])

    def bar(self, bar: Record) -> None:
        self.price(bar["S"], BAR, bar["t"], [bar["o"], bar["h"], bar["l"], bar["c"], bar["v"]])

    def price(self, symbol: str, kind: int, when: datetime, candle: list[float]) -> None:
        if self.first is None or when < self.first:
            self.first = when
        prices = self.symbols.get(symbol)
        if prices is None:
            prices = self.symbols[symbol] = Prices()
        if kind < prices.kind:
            return
        if kind > prices.kind:
            prices.kind = kind
            prices.candles.clear()
        prices.candles.add(when.timestamp(), candle)

    def marked(self, equity: float) -> None:
        self.equity.add(self.clock().timestamp(), equity)

    def title(self, stopped: bool) -> str:
        """What was played and the span it covered, in New York's time: a history's as asked,
        unless it was stopped before its end."""
        if self.asked and not stopped:
            return f"{self.name}, {span(*self.asked)}, New York time"
        if self.first is None:
            return self.name
        return f"{self.name}, {span(self.first, self.clock())}, New York time"

    def write(self, result: Result | None, stopped: bool = False) -> int:
        """The file, from the candles, the equity marked and the backtest's result (None: no
        order was placed), and whether the run was stopped before its end (Ctrl+C, SIGTERM);
        its size in bytes. OSError if it cannot be written."""
        said = ""
        if stopped:
            asked = f", of a run asked for {span(*self.asked)}" if self.asked else ""
            said = (f'<p id="stopped">Stopped (Ctrl+C or SIGTERM) at {moment(self.clock())}, New York time, the '
                    f"recording's{asked}: the figures are those of the run so far.</p>\n")
        data = {"title": self.title(stopped), "symbols": {symbol: self.shown(symbol, prices, result)
                                                 for symbol, prices in self.symbols.items()},
                "equity": self.curve(result)}
        # The library with its notice and license, as the license asks of a copy; every < of the
        # data escaped, as a "</script" in it would end its <script> element.
        notice = "\n".join((FOLDER / name).read_text(encoding="utf-8") for name in ("NOTICE", "LICENSE"))
        parts = {"/*LIBRARY*/": f"/*\n{notice}*/\n{LIBRARY.read_text(encoding='utf-8')}",
                 "/*CHARTS*/": CHARTS.read_text(encoding="utf-8"),
                 "/*DATA*/": json.dumps(data, separators=(",", ":")).replace("<", "\\u003c"),
                 "<!--SUMMARY-->": said + summary(result)}
        page = MARKERS.sub(lambda marker: parts[marker.group()], PAGE.read_text(encoding="utf-8"))
        with open(self.path, "w", encoding="utf-8") as file:
            return file.write(page)

    @staticmethod
    def shown(symbol: str, prices: Prices, result: Result | None) -> dict:
        """A symbol's candles, and its fills: each at its bucket's time, side, qty and price."""
        candles = prices.candles
        fills = [[candles.at(fill.time.timestamp()), fill.side, fill.qty, fill.price]
                 for fill in (result.fills if result else []) if fill.symbol == symbol]
        return {"kind": KINDS[prices.kind], "step": candles.step, "fills": fills,
                "candles": [[start, *values] for start, values in sorted(candles.values.items())]}

    def curve(self, result: Result | None) -> list[list[float]]:
        """Equity as marked, from the start's (its cash, at the first price) to the result's at
        the recording's end."""
        if result is None or not result.fills:
            return []
        points = dict(self.equity.values)
        first = min((start for prices in self.symbols.values() for start in prices.candles.values), default=None)
        if first is not None:
            points.setdefault(self.equity.at(first), result.start)
        points[self.equity.at(self.clock().timestamp())] = result.equity
        return [[start, round(value, 2)] for start, value in sorted(points.items())]


def unwritable(path: Path) -> str | None:
    """Why the report's file cannot be written (the system's words), or None: tried before the
    run, as the system refuses more than permissions say (/proc, a read-only disk), and found at
    the end, a long run's result would be lost. A file made for the trial is removed."""
    made = not path.exists()
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as error:
        return error.strerror
    if made:
        path.unlink()
    return None


def moment(when: datetime) -> str:
    """A time in New York's: Jun 15, 2026 10:12."""
    there = when.astimezone(NEW_YORK)
    return f"{there:%b} {there.day}, {there:%Y %H:%M}"


def span(start: datetime, end: datetime) -> str:
    """From start to end in New York's time, the day once if it is one: Dec 2, 2026 09:30 to 16:00."""
    if start.astimezone(NEW_YORK).date() == end.astimezone(NEW_YORK).date():
        return f"{moment(start)} to {end.astimezone(NEW_YORK):%H:%M}"
    return f"{moment(start)} to {moment(end)}"


def summary(result: Result | None) -> str:
    """The summary's figures, as the log prints them (Result.lines()), as a table; the orders
    waiting for the open, and why there is no equity curve where there is none."""
    if result is None:
        return "<p>The handlers placed no order: no fills, no equity.</p>"
    said = [waiting.line() for waiting in result.waiting]
    said += [] if result.fills else ["No order filled: no equity curve (the equity stayed the cash)."]
    rows = [("orders", f"{result.orders}"), ("fills", f"{len(result.fills)}"),
            ("open at the end", f"{result.open_orders}")]
    rows += [("fee, bps", f"{result.fee_bps:g}")] if result.fee_bps else []
    rows += [("slippage, bps", f"{result.slippage_bps:g}")] if result.slippage_bps else []
    for symbol, part in result.symbols.items():
        rows += [(f"{symbol} realized", f"{part.realized:+,.2f}"), (f"{symbol} unrealized", f"{part.unrealized:+,.2f}"),
                 (f"{symbol} holding", f"{part.position:g}")]
    rows += [("equity", f"{result.equity:,.2f}"), ("change", f"{result.equity - result.start:+,.2f}")]
    rows += [("fees in it", f"{result.fees:,.2f}")] if result.fees else []
    rows += [("largest drawdown", f"{result.drawdown:,.2f}"), ("largest drawdown, %", f"{result.drawdown_pct:.2f}")]
    if result.symbols:
        rows.append(("buy and hold equity", f"{result.buy_and_hold_equity:,.2f}"))
    cells = "\n".join(f"<tr><th>{html.escape(name)}</th><td>{value}</td></tr>" for name, value in rows)
    lines = "".join(f'\n<p class="said">{html.escape(line)}</p>' for line in said)
    return f'<table id="summary">\n{cells}\n</table>{lines}'
