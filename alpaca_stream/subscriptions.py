"""What a stream is subscribed to, and subscribe() and unsubscribe() to change it from a
handler: the change goes to Alpaca at once, on the open connection, and a new connection asks
for all of it."""

from __future__ import annotations

import logging
import re
import textwrap
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import msgpack
import websockets

from alpaca_stream.channels import CHANNELS, PAIR, SAID, SYMBOL, Channels, difference, request, wanted
from alpaca_stream.errors import AlpacaRefused

log = logging.getLogger("alpaca_stream")

# Alpaca's error codes that answer a subscribe or an unsubscribe: the request is refused, and
# the subscriptions stay as they were.
SUBSCRIBE_REFUSALS = (400, 405, 409, 410)
Refused = Callable[[int, str], None]  # told the code and message if Alpaca refuses a request


async def subscribe(*symbols: str, channel: str = "trades") -> None:
    """Stream more from now on, on the same connection (and after a reconnect too): these
    symbols on this channel, named as the options are ("trades", "quotes", "bars",
    "updated_bars", "daily_bars", "statuses", "lulds", "imbalances"). From a handler:

        if trade.size >= 10_000:  # a block: watch the quotes of that symbol too
            await subscribe(trade.symbol, channel="quotes")

    Alpaca's answer is logged; if it refuses (405: over the free plan's 30 symbols), that
    is a warning, and the rest streams on. With --source or --replay, nothing changes."""
    await running_for(symbols).change("subscribe", channel, symbols)


async def unsubscribe(*symbols: str, channel: str = "trades") -> None:
    """Stop streaming these symbols on this channel: the opposite of subscribe(). A few
    messages already on their way may still come."""
    await running_for(symbols).change("unsubscribe", channel, symbols)


class Clients(Protocol):
    """--serve's relay, as the subscriptions see it: clients who want more than the script."""

    @property
    def clients(self) -> dict: ...

    def subscriptions(self) -> Channels: ...

    def send(self, messages: list) -> None: ...

    def seen(self, messages: list) -> None: ...


class Subscriptions:
    """What the stream is subscribed to, by Alpaca's channel names: the script's own (its
    options, then subscribe() and unsubscribe()) and, with --serve, its clients' too. A change
    goes to Alpaca at once on the open connection; a new connection asks for all of it."""

    def __init__(self, channels: Iterable[str] = (), symbols: Iterable[str] = (), *, offline: bool = False,
                 symbol: re.Pattern[str] = SYMBOL) -> None:
        self.own: Channels = {channel: set(symbols) for channel in channels}  # for this script's handlers
        self.symbol = symbol  # the symbols its stream takes: stocks (SPY), or crypto pairs (BTC/USD)
        self.relay: Clients | None = None  # --serve: the relay, whose clients want theirs
        self.offline = offline  # --source, --replay: what comes cannot be changed
        self.websocket: Any = None  # the connection, once it has asked; None between connections
        self.asked: Channels = {}  # what the connection has been asked for
        # The requests sent and not yet answered, oldest first: the action, what it asked, and
        # whom to tell if Alpaca refuses it (None: a connection's first, refused as at startup).
        self.pending: deque[tuple[str, Channels, Refused | None]] = deque()
        self.beyond_own = False  # the connection has brought what the handlers did not ask for
        self.told: set[str] = set()  # what the log has said once a run ("how to stop"), shared by its streams

    def wanted(self) -> Channels:
        """Every channel's symbols: the script's own and its clients'."""
        wanted = {channel: set(symbols) for channel, symbols in self.own.items()}
        for channel, symbols in (self.relay.subscriptions() if self.relay else {}).items():
            wanted.setdefault(channel, set()).update(symbols)
        return {channel: symbols for channel, symbols in wanted.items() if symbols}

    def first_request(self, websocket: Any) -> dict[str, Any]:
        """A new connection's subscribe message, for all of it; changes go to it from now on."""
        self.websocket, self.asked = websocket, self.wanted()
        self.pending = deque([("subscribe", self.asked, None)])
        self.beyond_own |= self.asked != {c: s for c, s in self.own.items() if s}
        return request("subscribe", self.asked)

    def disconnected(self) -> None:
        self.websocket = None
        self.pending.clear()  # their answers died with the connection

    async def change(self, action: str, channel: str, symbols: tuple[str, ...]) -> None:
        """subscribe() and unsubscribe()."""
        if channel not in CHANNELS:
            raise ValueError(f"no such channel: {channel!r}; one of:\n{', '.join(CHANNELS)}")
        bad = [s for s in symbols if not isinstance(s, str) or not self.symbol.fullmatch(s)]
        if bad or not symbols:
            takes = "crypto pairs (BTC/USD)" if self.symbol is PAIR else "stock symbols"
            raise ValueError(f"{action}() takes {takes}: "
                             f"{', '.join(map(repr, bad)) or 'none given'}")
        before = {name: set(names) for name, names in self.own.items()}
        mine = self.own.setdefault(CHANNELS[channel], set())
        mine.update(symbols) if action == "subscribe" else mine.difference_update(symbols)
        if self.offline:
            log.debug("%s() changes nothing with --source or --replay", action)

        def refused(code: int, message: str) -> None:
            self.own = before
            asked = f"{action}({', '.join(symbols)}, channel={channel!r})"
            log.warning("%s", textwrap.fill(f"Alpaca refused {asked}: {message} ({code})", 50))

        await self.update(refused)

    async def update(self, refused: Refused | None) -> None:
        """Ask the open connection for what changed since it last asked: one subscribe for
        what is new, one unsubscribe for what nobody wants any more. refused: called if Alpaca
        refuses it; None for what only shrinks (a client left)."""
        wanted = self.wanted()
        beyond = wanted != {c: s for c, s in self.own.items() if s}
        self.beyond_own |= beyond
        if self.offline and beyond:
            extra = "; ".join(f"{c} of {', '.join(sorted(s))}"
                              for c, s in difference(wanted, self.own).items())
            log.warning("%s", textwrap.fill(f"a client asked for what this bot does not read: "
                                            f"{extra}. It gets what this bot's options ask for.", 58))
        if self.websocket is None:
            return  # the next connection asks for all of it
        changes = {"subscribe": difference(wanted, self.asked),
                   "unsubscribe": difference(self.asked, wanted)}
        self.asked = wanted
        for action, change in changes.items():
            if change:
                self.pending.append((action, change, refused))
                with suppress(websockets.ConnectionClosed):  # the next connection asks for all
                    await self.websocket.send(msgpack.packb(request(action, change)))

    def answered(self, refusal: AlpacaRefused | None) -> bool:
        """Alpaca's answer to the oldest request: a subscription (None) or an error. True if it
        refused a change, now undone, and the stream goes on; False if the error is not a
        change's (the caller raises it: a refused first request stops the script as at startup)."""
        if not self.pending or refusal is not None and refusal.code not in SUBSCRIBE_REFUSALS:
            return False
        action, change, refused = self.pending.popleft()
        if refusal is None:
            return True
        if refused is None:
            return False
        for channel, symbols in change.items():  # Alpaca keeps what it had
            asked = self.asked.setdefault(channel, set())
            asked.difference_update(symbols) if action == "subscribe" else asked.update(symbols)
        refused(refusal.code, refusal.message)
        return True

    def control(self, message: object) -> None:
        """A message that is not market data: Alpaca's answer to a request (the subscriptions
        now, or an error), or something unknown. AlpacaRefused for an error that refuses no
        change of subscriptions (wrong keys, say): the source's reconnect wrapper decides."""
        kind = message.get("T") if isinstance(message, dict) else None
        if not isinstance(message, dict):
            log.debug("skipped something that is not a message: %r", message)
        elif kind == "subscription":
            self.answered(None)
            log_subscription(message, how_to_stop="how to stop" not in self.told)
            self.told.add("how to stop")
        elif kind == "error":
            refusal = AlpacaRefused(int(message.get("code") or 0), str(message.get("msg")))
            if not self.answered(refusal):
                raise refusal
        elif kind == "success":
            log.debug("%s", message.get("msg"))  # "authenticated"
        else:
            log.debug("skipped a message of unknown type: %r", message)

    def relayed(self, frame: bytes, messages: list) -> list:
        """--serve: the frame to the clients, times as Alpaca sent them (msgpack Timestamps, to
        the nanosecond); the messages for this script's own handlers."""
        assert self.relay is not None  # called only with --serve
        self.relay.seen(messages)  # a crypto stream's order books, for a client who asks later
        if self.relay.clients:
            self.relay.send(msgpack.unpackb(frame))
        # Once a client has wanted more, always: frames already on their way when it left (even
        # after Alpaca's answer, as the local server showed) bring what only it wanted.
        if not self.beyond_own:
            return messages
        return wanted(self.own, messages, control=True)


# The running streams' subscriptions, for subscribe(): the stock stream's, the crypto stream's;
# none running: one that is offline.
STREAMING: tuple[Subscriptions, ...] = (Subscriptions(offline=True),)


@contextmanager
def streaming(*subscriptions: Subscriptions) -> Iterator[None]:
    """subscribe() and unsubscribe() change these while the streams run."""
    global STREAMING
    before, STREAMING = STREAMING, subscriptions
    try:
        yield
    finally:
        STREAMING = before


def running_for(symbols: tuple[str, ...]) -> Subscriptions:
    """The running stream whose symbols these are: the crypto stream's for pairs (BTC/USD), the
    stock stream's for the rest; else the first, whose change() says what it takes."""
    for subscriptions in STREAMING:
        if symbols and all(isinstance(s, str) and subscriptions.symbol.fullmatch(s) for s in symbols):
            return subscriptions
    return STREAMING[0]


def log_subscription(message: dict, how_to_stop: bool = True) -> None:
    """"subscribed to trades, quotes of SPY, TSLA; Ctrl+C to stop": the channels that have the
    same symbols together ("trades of SPY, TSLA; quotes of TSLA" when they differ); how to stop
    only if how_to_stop (the first time)."""
    groups: dict[frozenset[str], tuple[list[str], list[str]]] = {}  # symbols -> (them, their channels)
    for channel, said in SAID.items():  # in words: updated bars
        if message.get(channel):
            groups.setdefault(frozenset(message[channel]), (message[channel], []))[1].append(said)
    named = "; ".join(f"{', '.join(channels)} of " + (", ".join(symbols) if len(symbols) <= 6 else
                                                       f"{len(symbols)} symbols")
                      for symbols, channels in groups.values())
    if not how_to_stop:
        log.info("%s", "\n".join(textwrap.wrap(f"subscribed to {named or 'nothing'}", 59)))  # 80 columns
        return
    lines = textwrap.wrap(f"subscribed to {named or 'nothing'};", 59)
    lines[-1:] = [f"{lines[-1]} Ctrl+C to stop"] if len(lines[-1]) < 44 else [lines[-1], "Ctrl+C to stop"]
    log.info("%s", "\n".join(lines))


