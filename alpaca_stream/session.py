"""What a run counts, and what it says of itself: the summary at exit, and --heartbeat's
"alive" lines for a log that nobody reads until something is wrong."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field

from alpaca_stream.calendar import market_open
from alpaca_stream.records import KIND
from alpaca_stream.result import Result

log = logging.getLogger("alpaca_stream")

NOUNS = {"news": "article", "trade_update": "order update"}  # 3 articles, not 3 newses
MARKETS = ("stocks", "crypto", "options", "news", "trading")  # the order the heartbeat counts them in


@dataclass
class Session:
    """What the summary at exit reports."""

    started: float | None = None  # time.monotonic() when streaming began
    ended: float | None = None  # and when a run that ends on its own ended, if it then waits (--chart)
    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KIND.values(), 0))  # by kind
    markets: Counter[str] = field(default_factory=Counter)  # messages by market: "stocks", "crypto", "news"
    order_events: Counter[str] = field(default_factory=Counter)  # the account's order updates, by event
    reconnects: int = 0
    connected: bool = True  # False for a recording alone, which has no connection to lose
    last_message: float = field(default_factory=time.monotonic)  # from any source
    advised: set[int] = field(default_factory=set)  # refusal codes whose advice was given
    publishing: bool = False  # with --publish
    published: int = 0  # messages sent to the broker
    unpublished: int = 0  # and those that could not be, its buffer full or it gone at exit
    skipped: int = 0  # with --replay: lines of the file that are not messages, broken
    printed: int = 0  # and those that are printed text: a handler's print(), say
    passed_over: int = 0  # and its own order updates: a backtest's account makes its own
    backtest: Result | None = None  # a backtest's: its orders, fills, P&L, drawdown (result.py)
    served: int | None = None  # with --serve: clients that logged in
    slow_clients: int = 0  # and those cut for reading too slowly (407)
    failures: dict[str, int] = field(default_factory=dict)  # handler name -> exceptions it raised
    failures_told: dict[str, tuple[int, float]] = field(default_factory=dict)  # the count and time last logged
    slow_told: set[str] = field(default_factory=set)  # handlers named for holding the stream
    stopping: bool = False  # Ctrl+C or SIGTERM came: no message is handed over after it

    def summary(self) -> str:
        took = (self.ended or time.monotonic()) - (self.started or time.monotonic())
        lines = textwrap.wrap(f"received {counted(self.received)}", 58)  # 80 columns with the log's time
        tail = f"in {took:.1f} s" + (f"; reconnects: {self.reconnects}" if self.connected else "")
        if len(lines[-1]) + len(tail) < 58:
            lines[-1] += " " + tail
        else:
            lines.append(tail)
        if self.order_events:
            lines += textwrap.wrap("order updates: " + ", ".join(
                f"{event} {count}" for event, count in self.order_events.items()), 58)
        if self.publishing:
            lines.append(f"published to NATS: {self.published}" + (
                f"; not published: {self.unpublished}" if self.unpublished else ""))
        if self.served is not None:
            lines.append(f"served {self.served} client{'' if self.served == 1 else 's'}" + (
                f"; cut as too slow: {self.slow_clients}" if self.slow_clients else ""))
        if self.skipped:
            plural = "s" if self.skipped > 1 else ""
            lines.append(f"skipped {self.skipped} broken line{plural} of the recording")
        if self.printed:
            plural = "s" if self.printed > 1 else ""
            lines.append(f"skipped {self.printed} printed line{plural} of the recording")
        if self.passed_over:
            lines.append(f"passed over the recording's {self.passed_over} order updates")
        if self.backtest:
            lines += self.backtest.lines()
        if self.failures:
            lines += textwrap.wrap("handlers that raised: " + ", ".join(
                f"{name} {count} time{'s' if count > 1 else ''}" for name, count in self.failures.items()), 58)
        return "\n".join(lines)


def counted(received: dict[str, int]) -> str:
    """ "12 trades, 1 status, 3 articles", or "nothing"."""
    named = ((count, NOUNS.get(kind, kind)) for kind, count in received.items() if count)
    return ", ".join(f"{count:,} {noun}{'' if count == 1 else 'es' if noun.endswith('s') else 's'}"
                     for count, noun in named) or "nothing"


async def heartbeat(session: Session, every: float) -> None:
    """--heartbeat: a line every so often, for a log that nobody reads until something is wrong:
    the messages since the last line, by kind, and by market when the run has more than one (a
    stream gone quiet beside a busy one shows), how long ago the last one came, the reconnects,
    and whether New York's market is open now (under --demo too: its data is made up, the
    clock is not)."""
    before, markets_before = dict(session.received), Counter(session.markets)
    while True:
        await asyncio.sleep(every)
        counts = {kind: count - before[kind] for kind, count in session.received.items() if count > before[kind]}
        by_market = {market: session.markets[market] - markets_before[market]
                     for market in sorted(session.markets, key=MARKETS.index)}
        before, markets_before = dict(session.received), Counter(session.markets)
        age = round(time.monotonic() - session.last_message, 3)  # once: the line and its field agree
        market = "open" if market_open() else "closed"
        shown = ", ".join(f"{name} {count}" for name, count in by_market.items())
        markets = f" ({shown})" if len(by_market) > 1 else ""
        reconnects = f"; reconnects {session.reconnects}" if session.connected else ""  # a recording has none
        log.info("alive: %s in %.0f s%s; last %.1f s ago%s; market %s", counted(counts), every, markets, age,
                 reconnects, market, extra={"fields": {
                     "received": counts, "seconds": every, **({"by_market": by_market} if markets else {}),
                     "last_message_age": age, **({"reconnects": session.reconnects} if session.connected else {}),
                     "market": market}})
