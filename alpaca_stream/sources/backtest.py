"""--replay as a backtest: the recording's messages on their way to the handlers, through the
backtest's broker (server/backtest.py) once a handler has started it with trading_client().
While an order is open, each message is matched against the open orders of its symbol before
it is handed over, after the order updates made since the last, as the trading stream's source
hands them over. Else the messages go straight to the handlers, and the broker sees them in
bulk, up to the one being handled, when it needs to: before it answers a request. So an order
placed while a handler handles a message fills on the messages after it, at their prices, on
the recording's clock (docs/backtest.md). A replay whose handlers place no order starts no
broker, and imports none.

Work a handler leaves in the background (in_background()) is waited for before the next
message: a recording has no wall clock to race, so an order placed that way fills where the
same order placed in the handler itself does."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Generator, Iterator
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from alpaca_stream.handlers import Route, background_finished, background_tasks, deliver, one_at_a_time
from alpaca_stream.keys import Keys
from alpaca_stream.orders import Costs, trade_on_demand
from alpaca_stream.result import Ledger
from alpaca_stream.session import Session

if TYPE_CHECKING:
    from alpaca_stream.server.backtest import Backtest

log = logging.getLogger("alpaca_stream")

BACKTEST_KEYS = Keys("backtest-key-id", "backtest-secret-key", "--replay")  # fake: the run's own broker
KIND_AND_SYMBOL, TIME, KIND = itemgetter("T", "S"), itemgetter("t"), itemgetter("T")
# Messages of a batch read from its end for the last of each kind and symbol, before reading it
# all: a recording of a few symbols has them all in its last few dozen.
FROM_THE_END = 64
# A minute bar's timestamp is the start of its minute: it is known a minute later. A daily bar's
# is its day's start, and it comes every minute of the day: it does not move the clock.
MINUTE, MINUTE_BARS, BARS = timedelta(minutes=1), frozenset("bu"), frozenset("bud")
EPOCH = datetime.min.replace(tzinfo=timezone.utc)


class Feed:
    """A recording's messages through the backtest, batch after batch: what the broker needs to
    know of them (the last message of each kind and symbol, for its prices; the latest time;
    equity at each price of a symbol held), seen in bulk up to the message being handled when
    it is needed; and, while an order is open, each message matched before it is handed over,
    with the updates this made. costs: the broker's cash, and what its orders cost beyond
    their price; played: what the messages are, for the log ("recording", "history")."""

    def __init__(self, costs: Costs | None = None, played: str = "recording") -> None:
        self.costs, self.played = costs, played
        self.last: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, symbol) -> its last message
        self.first: dict[tuple[str, str], dict[str, Any]] = {}  # and its first
        self.ledger = Ledger()  # the backtest's fills, for its result
        self.latest = EPOCH  # the recording's time: the latest of the messages seen
        self.broker: Backtest | None = None
        self.lock = threading.Lock()  # the broker's requests come on its own threads
        self.batch: list[dict[str, Any]] = []
        self.at = 0  # the batch's next message to hand over
        self.seen = 0  # and the first not seen yet
        self.handed = 0  # the account's updates handed over
        self.met = False  # whether the message at `at` has met the open orders (a hand-over paused after)
        self.paused = False  # the last hand-over stopped for a handler's background work

    async def replay(self, messages: list[dict[str, Any]], routes: dict[str, Route], session: Session) -> None:
        """A batch of the recording to the handlers, each message after its updates; after a
        message whose handler left work in the background, that work is waited for."""
        if "trade_update" in set(map(KIND, messages)):  # the recording's account's: the backtest makes its own
            kept = [message for message in messages if message["T"] != "trade_update"]
            session.passed_over += len(messages) - len(kept)
            messages = kept
        self.batch, self.at, self.seen = messages, 0, 0
        while True:
            self.paused = False
            await deliver(self.handing_over(session), routes, session)
            if not self.paused or session.stopping:
                break
            await background_finished()
        with self.lock:  # a thread a handler started may be asking the broker
            self.catch_up()

    def handing_over(self, session: Session) -> Iterator[dict[str, Any]]:
        """The rest of the batch; while the broker has an order open or an update to hand
        over, each message matched first and its updates before it. It stops after a message
        that left work in the background (paused), to go on from there. (The hot loop of a
        replay: with no order open, it does nothing more than hand over.)"""
        batch = self.batch
        while self.at < len(batch):
            broker = self.broker
            if broker is not None and (self.met or broker.matched or self.handed < len(broker.account.updates)):
                if (yield from self.hand_over(broker, session)):
                    return
                continue
            self.at += 1
            yield batch[self.at - 1]
            if background_tasks:
                self.paused = True
                return

    def hand_over(self, broker: Backtest, session: Session) -> Generator[dict[str, Any], None, bool]:
        """The message at `at`, with the broker started: first the updates of the orders the
        handlers placed since the last one, then what came before it is seen, then it is seen
        and matched, then the fills it made, then itself. True if it paused for work a handler
        left in the background (resumed at the same message)."""
        message = self.batch[self.at]
        if not self.met:
            if (yield from self.updates(broker, session)):
                return True
            with self.lock:
                self.catch_up()
                self.see_one(message)
                self.seen += 1
                if self.ledger.values:  # a position held: equity moves with its price
                    broker.mark(message)
                broker.match_on(message)
            self.met = True
        if (yield from self.updates(broker, session)):
            return True
        self.met = False
        self.at += 1
        yield message
        if background_tasks:
            self.paused = True
            return True
        return False

    def catch_up(self) -> None:
        """The messages handed over and not seen yet, seen now, with equity marked at the
        prices of a symbol held: before the broker answers a request, before a message is
        matched, at the batch's end."""
        if self.seen < self.at:
            messages = self.batch[self.seen:self.at]
            self.seen = self.at
            held = self.ledger.values
            if self.broker is not None and held:  # equity at each price of a symbol held, in order
                for message in messages:
                    if message.get("S") in held:
                        self.see_one(message)
                        self.broker.mark(message)
            self.see(messages)  # the rest (those seen already are seen again: the same)

    def see(self, messages: list[dict[str, Any]]) -> None:
        """What the broker needs to know of these messages, handed over: the last and the first
        of each kind and symbol, the latest time: in bulk where it can (every message with a
        symbol and an aware time, no bar: a recording of trades and quotes), else one by one."""
        try:
            keys = set(map(KIND_AND_SYMBOL, messages))  # KeyError: news
            if not {kind for kind, _ in keys} & BARS:
                latest = max(map(TIME, messages), default=self.latest)
                known = len(self.last)
                self.see_last_of_each(messages, len(keys))
                self.latest = max(self.latest, latest)
                if len(self.last) > known:  # a kind of a symbol new to the recording: its first message
                    for message in messages:
                        self.first.setdefault(KIND_AND_SYMBOL(message), message)
                return
        except (KeyError, TypeError):  # news (no symbol), a time missing or with no zone
            pass
        for message in messages:
            self.see_one(message)

    def see_one(self, message: dict[str, Any]) -> None:
        """see() for one message: the hand-over's, once the broker has started."""
        kind, when = message["T"], message.get("t")
        if "S" in message:
            key = kind, message["S"]
            if key not in self.last:
                self.first[key] = message
            self.last[key] = message
        if isinstance(when, datetime) and when.tzinfo is not None and kind != "d":
            self.latest = max(self.latest, when + MINUTE if kind in MINUTE_BARS else when)

    def see_last_of_each(self, messages: list[dict[str, Any]], pairs: int) -> None:
        """The last message of each kind and symbol of these (pairs: how many they hold): found
        from the end, where a recording of a few symbols has them all, a Python step a message;
        else every message, in C."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for message in itertools.islice(reversed(messages), FROM_THE_END):
            found.setdefault(KIND_AND_SYMBOL(message), message)
            if len(found) == pairs:
                self.last.update(found)
                return
        self.last.update(zip(map(KIND_AND_SYMBOL, messages), messages))

    def updates(self, broker: Backtest, session: Session) -> Generator[dict[str, Any], None, bool]:
        """The account's updates not handed over yet, as the trading stream's source hands them;
        True if it stopped after one that left work in the background."""
        made = broker.account.updates
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
        """At the recording's end: the work the handlers started in the background, then the
        updates of the orders the last handlers placed (and of those their handlers place in
        turn), then the backtest's result for the summary."""
        await background_finished()
        broker = self.broker
        if broker is None:
            return
        while self.handed < len(broker.account.updates) and not session.stopping:
            await deliver(self.updates(broker, session), routes, session)
            await background_finished()
        session.backtest = broker.result()

    def result_so_far(self, session: Session | None) -> None:
        """The backtest's result, for the summary of a run stopped before the recording's end
        (finish() gives it at the end): the fills so far, open positions at the last prices."""
        if self.broker is not None and session is not None and session.backtest is None:
            session.backtest = self.broker.result()

    def open_account(self) -> tuple[str, Keys]:
        """trading_client()'s first call: the backtest's broker started, its URL and keys."""
        with self.lock:
            if self.broker is None:
                from alpaca_stream.server.backtest import Backtest

                self.catch_up()  # what came before: the batch up to the message being handled
                broker = Backtest(self.last, lambda: self.latest, keys=(BACKTEST_KEYS.key, BACKTEST_KEYS.secret),
                                  costs=self.costs, first=self.first, ledger=self.ledger,
                                  catch_up=self.caught_up)
                broker.start()
                self.broker = broker
                log.info("a backtest: orders fill at the %s's prices,\non its clock (docs/backtest.md)", self.played)
            return self.broker.url, BACKTEST_KEYS

    def caught_up(self) -> None:
        """Before the broker answers a request (on its thread, while the handler that made it
        waits, or its work in the background, which the hand-over waits for)."""
        with self.lock:
            self.catch_up()

    def open(self) -> None:
        """trading_client() opens the backtest's account from now on, at its first call; work
        started with in_background() runs one at a time, in the order started."""
        trade_on_demand(self.open_account)
        one_at_a_time(True)

    async def close(self) -> None:
        """No account for trading_client() any more; the broker stopped, --fills' file closed."""
        trade_on_demand(None)
        one_at_a_time(False)
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
        if self.ledger.csv is not None:
            self.ledger.csv.close()

