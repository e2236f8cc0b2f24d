"""--replay as a backtest: the recording's messages on their way to the handlers, each first
told to the backtest's broker (server/backtest.py), if a handler has started it with
trading_client(), so that the open orders of its symbol fill against it; then the order
updates this made, as the trading stream's source hands them over, then the message. So an
order placed while a handler handles a message fills on the messages after it, at their
prices, on the recording's clock (docs/backtest.md). A replay whose handlers place no order
starts no broker, and imports none.

Work a handler leaves in the background (in_background()) is waited for before the next
message: a recording has no wall clock to race, so an order placed that way fills where the
same order placed in the handler itself does."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Generator, Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from alpaca_stream.handlers import Route, background_finished, background_tasks, deliver
from alpaca_stream.keys import Keys
from alpaca_stream.session import Session

if TYPE_CHECKING:
    from alpaca_stream.server.backtest import Backtest

log = logging.getLogger("alpaca_stream")

BACKTEST_KEYS = Keys("backtest-key-id", "backtest-secret-key", "--replay")  # fake: the run's own broker
PRICED = frozenset("qtbud")  # the kinds of message that tell a symbol's price: quotes, trades, bars
# A minute bar's timestamp is the start of its minute: it is known a minute later. A daily bar's
# is its day's start, and it comes every minute of the day: it does not move the clock.
MINUTE, MINUTE_BARS = timedelta(minutes=1), frozenset("bu")
EPOCH = datetime.min.replace(tzinfo=timezone.utc)


class Feed:
    """A recording's messages through the backtest, batch after batch: what the broker needs to
    know of them (the last price of each symbol, whether it had quotes or trades, the latest
    time) and, once it has started, the matching and the updates before each message."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, Any]] = {}  # symbol -> its last quote, trade or bar
        self.quoted: set[str] = set()
        self.traded: set[str] = set()
        self.latest = EPOCH  # the recording's time: the latest of the messages handed over
        self.broker: Backtest | None = None
        self.starting = threading.Lock()  # trading_client() may be called from two threads at once
        self.handed = 0  # the account's updates handed over
        self.waiting: dict[str, Any] | None = None  # a message matched, still to be handed over
        self.paused = False  # the last hand-over stopped for a handler's background work

    async def replay(self, messages: list[dict[str, Any]], routes: dict[str, Route], session: Session) -> None:
        """A batch of the recording to the handlers, each message after its updates; after a
        message whose handler left work in the background, that work is waited for."""
        batch = iter(messages)
        while True:
            self.paused = False
            await deliver(self.handing_over(batch, session), routes, session)
            if not self.paused or session.stopping:
                return
            await background_finished()

    def handing_over(self, batch: Iterator[dict[str, Any]], session: Session) -> Iterator[dict[str, Any]]:
        """The messages of the batch, each told to the broker first, its updates before it; it
        stops after a message that left work in the background (paused), to go on from there.
        (The hot loop of a replay: a run that places no order must not be slowed by it.)"""
        if self.waiting is not None:  # paused among the updates before it
            if (yield from self.updates(session)):
                return
            message, self.waiting = self.waiting, None
            yield message
            if background_tasks:
                self.paused = True
                return
        last, quoted, traded, latest = self.last, self.quoted, self.traded, self.latest
        for message in batch:
            kind = message["T"]
            if kind in PRICED:
                symbol = message["S"]
                last[symbol] = message
                if kind == "q":
                    quoted.add(symbol)
                elif kind == "t":
                    traded.add(symbol)
            elif kind == "trade_update":  # the recording's account's: the backtest's makes its own
                session.passed_over += 1
                continue
            when = message.get("t")
            if when.__class__ is datetime and when.tzinfo is not None and kind != "d":
                if kind in MINUTE_BARS:
                    when += MINUTE
                if when > latest:
                    latest = self.latest = when
            if self.broker is not None:
                self.broker.match_on(message)
                self.waiting = message
                if (yield from self.updates(session)):
                    return
                self.waiting = None
            yield message
            if background_tasks:
                self.paused = True
                return

    def updates(self, session: Session) -> Generator[dict[str, Any], None, bool]:
        """The account's updates not handed over yet, as the trading stream's source hands them;
        True if it stopped after one that left work in the background."""
        assert self.broker is not None
        made = self.broker.account.updates
        while self.handed < len(made):
            update = {**made[self.handed], "T": "trade_update"}
            self.handed += 1
            session.order_events[update["event"]] += 1
            yield update
            if background_tasks:
                self.paused = True
                return True
        return False

    async def finish(self, routes: dict[str, Route], session: Session) -> None:
        """At the recording's end: the updates of the orders the last handlers placed (and of
        those their handlers place in turn), then the backtest's tally for the summary."""
        if self.broker is None:
            return
        while self.handed < len(self.broker.account.updates) and not session.stopping:
            await deliver(self.updates(session), routes, session)
            await background_finished()
        session.backtest = self.broker.tally()

    def open_account(self) -> tuple[str, Keys]:
        """trading_client()'s first call: the backtest's broker started, its URL and keys."""
        with self.starting:
            if self.broker is None:
                from alpaca_stream.server.backtest import Backtest

                broker = Backtest(self.last, self.quoted, self.traded, lambda: self.latest,
                                  keys=(BACKTEST_KEYS.key, BACKTEST_KEYS.secret))
                broker.start()
                self.broker = broker
                log.info("a backtest: orders fill at the recording's prices,\non its clock (docs/backtest.md)")
            return self.broker.url, BACKTEST_KEYS

    async def close(self) -> None:
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
